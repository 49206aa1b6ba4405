//! The chat flow: resolve the target, get the password, start the session (offering to create
//! a missing room), then feed stdin lines to it until end of input or `/quit`.

use std::sync::Arc;

use crate::commands::{parse_line, Command, Input as Line, HELP};
use crate::config::{read_password_file, Config};
use chatroom_session::crypto::{load_or_create_identity, ContentKind, ErrorCode, Identity, Zeroizing};
use chatroom_session::display::neutralize;
use chatroom_session::session::{
    Limits, RoomKeyCache, SendError, Session, SessionConfig, SessionEnd, SessionHandle,
};
use chatroom_session::trust::RelayPin;

use crate::app_error::AppError;
use crate::cli::{ChatArgs, Cli};
use crate::flow::{confirm_if_weak, invite_url, new_password, FLUSH_ON_EXIT};
use crate::plain::PlainUi;
use crate::prompt::Input;
use crate::setup::{complete, resolve, Paths};
use crate::version::Chosen;
use chatroom_session::crypto::RoomName;
use chatroom_session::error::SessionError;

/// Session limits, with the pacing given on the command line.
fn limits(chat: &ChatArgs) -> Result<Limits, AppError> {
    let mut limits = Limits::default();
    if let Some((burst, rate)) = &mut limits.send_rate {
        if let Some(r) = chat.send_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(AppError::new(format!(
                    "--send-rate {r} is not a positive number of messages per second"
                )));
            }
            *rate = r;
        }
        if let Some(b) = chat.send_burst {
            *burst = b.max(1);
        }
    }
    Ok(limits)
}

/// What a chat needs once the target, identity and password are settled.
pub(crate) struct Prepared {
    pub(crate) config: SessionConfig,
    pub(crate) keys: Arc<RoomKeyCache>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) password: Zeroizing<String>,
    pub(crate) from_file: bool,
    pub(crate) relay_label: String,
    pub(crate) input: Input,
    pub(crate) config_file: Config,
    /// The room's protocol version (1 or 2) and why.
    pub(crate) chosen: Chosen,
}

/// Resolves the target, loads the identity, checks the relay and asks for the password.
async fn prepare(cli: &Cli, paths: &Paths) -> Result<Prepared, AppError> {
    let mut input = Input::new();
    let config_file = Config::load(&paths.config)?;
    let chat = &cli.chat;
    let mut target = resolve(&chat.target, &config_file, &paths.config)?;
    complete(&mut target, chat, &mut input)?;
    let (Some(relay), Some(room), Some(nick)) =
        (target.relay.clone(), target.room.clone(), target.nick.clone())
    else {
        return Err(AppError::new("relay, room and nickname are required"));
    };
    let (identity, created) = load_or_create_identity(&paths.identity())?;
    if created {
        eprintln!("-!- created a new identity in {}", paths.identity().display());
    }

    // The relay before the password: a changed key is offered for acceptance, and a relay
    // that would be refused is refused before a password is typed.
    for addr in relay.as_slice() {
        crate::relay_check::accept_new_key(&target, addr, paths, &mut input)?;
    }
    // After the pin is settled: the client's state for the room is found under the relay's key.
    let chosen = crate::version::choose(&target, paths);
    let limits = limits(chat)?;
    let (expected, expected_source) = match target.fingerprint.clone() {
        Some((key, source)) => (Some(key), source),
        None => (None, String::new()),
    };
    let relay_pin = RelayPin { expected, expected_source, known: Some(paths.known_relays()) };
    let from_file = target.password_file.is_some();
    if !from_file {
        crate::relay_check::check_before_password(&relay, target.proxy.as_ref(), &relay_pin, &limits).await?;
    }
    let password = match &target.password_file {
        Some(file) => read_password_file(file)?,
        None if chat.create => new_password(&mut input, None)?,
        None => input.secret("Room password: ")?,
    };
    if password.is_empty() {
        return Err(AppError::new("the room password is empty"));
    }
    if chat.create {
        confirm_if_weak(&mut input, &password, room.as_str(), nick.as_str(), !from_file)?;
    }
    let keys =
        Arc::new(RoomKeyCache::new(Zeroizing::new(password.as_bytes().to_vec()), room.clone(), target.kdf)?);
    let relay_label = match &target.proxy {
        Some(p) => format!("{relay} via {p}"),
        None => relay.to_string(),
    };
    let config = SessionConfig {
        relay,
        proxy: target.proxy.clone(),
        room,
        nick,
        create: chat.create,
        relay_pin,
        data_dir: Some(paths.data_dir.clone()),
        limits,
    };
    let identity = Arc::new(identity);
    Ok(Prepared { config, keys, identity, password, from_file, relay_label, input, config_file, chosen })
}

pub(crate) async fn run(cli: Cli, paths: Paths) -> Result<(), AppError> {
    let mut p = prepare(&cli, &paths).await?;
    let chat = &cli.chat;
    if crate::tui::wanted(chat.plain) {
        p.config.limits.context_on_start = crate::tui::RECENT_CONTEXT;
        let v2_limits = crate::chat_v2::limits(chat, &p.config_file);
        let protocol = match p.chosen.version {
            2 => crate::tui::Protocol::V2 {
                limits: v2_limits.clone(),
                password: Arc::new(Zeroizing::new(p.password.as_bytes().to_vec())),
            },
            _ => crate::tui::Protocol::V1,
        };
        let start = crate::tui::Start {
            config: p.config,
            protocol,
            chosen: p.chosen,
            v2_limits,
            keys: p.keys,
            identity: p.identity,
            relay_label: p.relay_label,
            password: p.password,
            from_file: p.from_file,
            input: p.input,
            highlight: p.config_file.highlight.clone(),
            bell: p.config_file.bell,
            config_path: paths.config.clone(),
            config_file: p.config_file,
        };
        return crate::tui::run(start).await;
    }
    if p.chosen.version == 2 {
        return crate::chat_v2::run(p, chat).await;
    }
    let ui = Arc::new(PlainUi::new(p.relay_label.clone(), chat.plain, chat.no_history));
    let handle = start_plain(&mut p, &ui).await?;
    drop(p.password);
    let invite = invite_url(handle.relay_fingerprint(), &p.config, &p.keys, 1);
    talk(handle, p.input, &ui, &invite).await
}

/// Starts the line-mode session; a missing room is created after asking.
async fn start_plain(p: &mut Prepared, ui: &Arc<PlainUi>) -> Result<SessionHandle, AppError> {
    let (config, keys, identity) = (&mut p.config, &p.keys, &p.identity);
    match Session::start(config.clone(), keys.clone(), identity.clone(), ui.clone()).await {
        Ok(h) => Ok(h),
        Err(e) if e.refusal() == Some(ErrorCode::NoSuchRoom) && !config.create => {
            let (room, nick) = (config.room.clone(), config.nick.clone());
            ui.notice(&format!("room {room} does not exist on {}", config.relay));
            if !p.input.confirm(&format!("Create room {room}? [y/N] "))? {
                return Err(AppError::new(
                    "nothing was created; check the room name, or answer y to create it",
                ));
            }
            if !p.from_file {
                new_password(&mut p.input, Some(&p.password))?;
            }
            confirm_if_weak(&mut p.input, &p.password, room.as_str(), nick.as_str(), !p.from_file)?;
            config.create = true;
            let started = Session::start(config.clone(), keys.clone(), identity.clone(), ui.clone()).await;
            started.map_err(|e| start_error(e, p.chosen, &p.config.room))
        }
        Err(e) => Err(start_error(e, p.chosen, &p.config.room)),
    }
}

/// A failed start, worded for the user: a refusal that may mean a room of the other protocol
/// version says so.
pub(crate) fn start_error(e: SessionError, chosen: Chosen, room: &RoomName) -> AppError {
    match crate::version::refused(&e, chosen, room) {
        Some(text) => AppError::new(text),
        None => e.into(),
    }
}

/// Messages handed to the session and not yet answered, at most: beyond it line mode stops
/// reading input until the relay catches up, so any amount of piped input is delivered.
const WINDOW: u64 = 1000;

/// What line mode needs of a session, whichever the protocol version.
pub(crate) trait ChatHandle {
    /// Queues a message.
    async fn send(&mut self, kind: ContentKind, body: &str) -> Result<u64, SendError>;
    /// Sends a command to the relay (or answers it locally).
    async fn command(&mut self, command: Command) -> Result<(), SendError>;
    /// Waits until the relay answered everything sent before.
    async fn sync(&self) -> bool;
    /// The lines `/safety` prints.
    async fn safety(&self) -> Vec<String>;
    /// Owner only, protocol 2: rotates the room's password to the one in `file`; the lines
    /// to print, or why nothing was done.
    async fn rotate_password_from(&mut self, file: &std::path::Path) -> Result<Vec<String>, String> {
        let _ = file;
        Err("/rotate-password is for protocol 2 rooms (chatroom --protocol 2); nothing was done".into())
    }
    /// Waits until the session ends on its own.
    async fn ended(&mut self) -> SessionEnd;
    /// Closes the session after flushing.
    async fn close(self, flush: std::time::Duration) -> SessionEnd;
}

impl ChatHandle for SessionHandle {
    async fn send(&mut self, kind: ContentKind, body: &str) -> Result<u64, SendError> {
        SessionHandle::send(self, kind, body).await
    }
    async fn command(&mut self, command: Command) -> Result<(), SendError> {
        match command {
            Command::Whois(nick) => self.whois(nick).await,
            Command::Who => self.who().await,
            Command::Kick(nick) => self.kick(nick).await,
            Command::Ban(nick) => self.ban(nick).await,
            Command::Unban(nick) => self.unban(nick).await,
            _ => Ok(()),
        }
    }
    async fn sync(&self) -> bool {
        SessionHandle::sync(self).await
    }
    async fn safety(&self) -> Vec<String> {
        vec![
            format!("safety code: {}", self.safety_code()),
            format!("relay fingerprint: {}", self.relay_fingerprint()),
        ]
    }
    async fn ended(&mut self) -> SessionEnd {
        SessionHandle::ended(self).await
    }
    async fn close(self, flush: std::time::Duration) -> SessionEnd {
        SessionHandle::close(self, flush).await
    }
}

pub(crate) async fn talk<H: ChatHandle>(
    mut handle: H,
    input: Input,
    ui: &PlainUi,
    invite: &str,
) -> Result<(), AppError> {
    let mut lines = input.into_lines();
    let mut queued: u64 = 0;
    let mut failed = 0usize;
    let ended = loop {
        tokio::select! {
            line = lines.recv(), if queued.saturating_sub(ui.settled()) < WINDOW => {
                let Some(Some(line)) = line else { break None };
                match line_action(&mut handle, &line, ui, invite).await {
                    Outcome::Done => {}
                    Outcome::Queued => queued += 1,
                    Outcome::Failed => failed += 1,
                    Outcome::Quit => break None,
                }
            }
            () = ui.progressed() => {}
            end = handle.ended() => break Some(end),
            _ = tokio::signal::ctrl_c() => break None,
        }
    };
    let end = match ended {
        Some(end) => end,
        None => handle.close(FLUSH_ON_EXIT).await,
    };
    let failed = failed + ui.failures();
    match end {
        SessionEnd::Closed { unacknowledged: 0 } if failed == 0 => Ok(()),
        SessionEnd::Closed { unacknowledged: 0 } => Err(AppError::new(format!(
            "{failed} line(s) of input failed (the reasons are above); everything else was delivered"
        ))),
        SessionEnd::Closed { unacknowledged } => {
            let (count, them) = if unacknowledged == 1 {
                ("1 message".to_owned(), "it")
            } else {
                (format!("{unacknowledged} messages"), "them")
            };
            Err(AppError::new(format!(
                "the relay did not acknowledge the last {count} and answered nothing for {} s, so {them} may not \
                 have been delivered. Send again what matters once connected.",
                FLUSH_ON_EXIT.as_secs()
            )))
        }
        SessionEnd::Failed(e) => Err(AppError::new(neutralize(&crate::advice::session(&e)))),
        _ => Ok(()),
    }
}

/// What one input line did.
enum Outcome {
    /// Nothing to count (an empty line, a local command, a command the relay accepted).
    Done,
    /// A message handed to the session.
    Queued,
    /// Refused (locally, or by the relay for a command); the reason was printed.
    Failed,
    /// `/quit`.
    Quit,
}

/// Hands a message to the session: queued, or failed with the reason shown.
async fn queue<H: ChatHandle>(
    handle: &mut H,
    kind: ContentKind,
    text: &str,
    failed: &impl Fn(&dyn std::fmt::Display) -> Outcome,
) -> Outcome {
    match handle.send(kind, text).await {
        Ok(_) => Outcome::Queued,
        Err(e) => failed(&e),
    }
}

/// Acts on one line of input. Commands for the relay are awaited: a refusal has been printed
/// (and counted by the front end) by the time this returns.
async fn line_action<H: ChatHandle>(handle: &mut H, line: &str, ui: &PlainUi, invite: &str) -> Outcome {
    let failed = |e: &dyn std::fmt::Display| {
        ui.notice(&format!("error: {e}"));
        Outcome::Failed
    };
    let command = match parse_line(line) {
        Ok(Line::Empty) => return Outcome::Done,
        Ok(Line::Text(text)) => return queue(handle, ContentKind::Text, &text, &failed).await,
        Ok(Line::Command(command)) => command,
        Err(e) => return failed(&e),
    };
    let sent = match command {
        Command::Help => {
            for l in HELP.lines() {
                ui.notice(l);
            }
            return Outcome::Done;
        }
        Command::Safety => {
            for line in handle.safety().await {
                ui.notice(&line);
            }
            return Outcome::Done;
        }
        Command::Invite => {
            ui.notice(&format!("invite: {invite}"));
            return Outcome::Done;
        }
        Command::Topic(text) if text.is_empty() => {
            ui.notice("the topic is shown when the owner sets it; /topic TEXT sets it (owner only)");
            return Outcome::Done;
        }
        Command::Ignore(_) | Command::Clear | Command::Join(_) | Command::Part | Command::Window(_) => {
            return failed(
                &"/ignore, /clear and windows (/join, /part, /window) are for the full-screen UI; line mode \
                  stays in one room, nothing was done",
            );
        }
        Command::Quit => return Outcome::Quit,
        Command::RotatePassword(file) => {
            return match handle.rotate_password_from(&file).await {
                Ok(lines) => {
                    for line in lines {
                        ui.notice(&line);
                    }
                    Outcome::Done
                }
                Err(e) => failed(&e),
            };
        }
        Command::Me(text) => return queue(handle, ContentKind::Action, &text, &failed).await,
        Command::Topic(text) => return queue(handle, ContentKind::Topic, &text, &failed).await,
        command @ (Command::Whois(_)
        | Command::Who
        | Command::Kick(_)
        | Command::Ban(_)
        | Command::Unban(_)) => handle.command(command).await,
    };
    if let Err(e) = sent {
        return failed(&e);
    }
    if !handle.sync().await {
        return failed(&"the relay did not answer the command (not connected, or the connection was lost); it may not have been done");
    }
    Outcome::Done
}
