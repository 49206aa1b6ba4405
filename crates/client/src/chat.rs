//! The chat flow: resolve the target, get the password, start the session (offering to create
//! a missing room), then feed stdin lines to it until end of input or `/quit`.

use std::sync::Arc;
use std::time::Duration;

use crate::commands::{parse_line, Command, Input as Line, HELP};
use crate::config::{read_password_file, Config};
use crate::passphrase;
use chatroom_session::crypto::{load_or_create_identity, ContentKind, ErrorCode, Zeroizing};
use chatroom_session::display::neutralize;
use chatroom_session::invite::Invite;
use chatroom_session::session::{Limits, RoomKeyCache, Session, SessionConfig, SessionEnd, SessionHandle};
use chatroom_session::trust::RelayPin;

use crate::app_error::AppError;
use crate::cli::{ChatArgs, Cli};
use crate::plain::PlainUi;
use crate::prompt::{same_secret, Input};
use crate::setup::{complete, resolve, Paths};

/// How long end of input or `/quit` waits for the relay to acknowledge pending messages.
pub(crate) const FLUSH_ON_EXIT: Duration = Duration::from_secs(10);

/// Warns about a weak room password at creation and, when the password was typed (not read
/// from a file by a script), asks whether to create the room with it anyway.
pub(crate) fn confirm_if_weak(
    input: &mut Input,
    password: &str,
    room: &str,
    nick: &str,
    typed: bool,
) -> Result<(), AppError> {
    let s = passphrase::strength(password, &[room, nick]);
    if !s.is_weak() {
        return Ok(());
    }
    eprintln!(
        "-!- WARNING: this room password is weak: about 10^{} guesses (zxcvbn score {}/4), roughly {} \
         for one attacker at 10^4 guesses per second. Anyone who obtains the relay's ciphertext can guess \
         offline. Leave the password empty at the prompt for a generated one, or run: chatroom passphrase",
        s.guesses_log10, s.score, s.crack_time
    );
    if typed && !input.confirm("Create the room with this weak password anyway? [y/N] ")? {
        return Err(AppError::new(
            "nothing was created; run chatroom again and leave the password empty for a generated one, or \
             choose a stronger one",
        ));
    }
    Ok(())
}

/// Asks for a new room password twice; an empty answer generates a strong passphrase instead
/// (shown once, to give to the members out of band).
pub(crate) fn new_password(input: &mut Input, first: Option<&str>) -> Result<Zeroizing<String>, AppError> {
    let first = match first {
        Some(p) => Zeroizing::new(p.to_owned()),
        None => {
            let typed = input.secret("New room password (leave empty for a generated one): ")?;
            if typed.is_empty() {
                let generated = passphrase::generate();
                eprintln!(
                    "-!- generated room password: {}\n-!- it is shown only now: give it to the members out of band, \
                     never in the chat",
                    generated.as_str()
                );
                return Ok(generated);
            }
            typed
        }
    };
    if first.is_empty() {
        return Err(AppError::new(
            "the room password is empty; choose one (chatroom passphrase makes a strong one)",
        ));
    }
    let again = input.secret("Repeat the room password: ")?;
    if !same_secret(&first, &again) {
        return Err(AppError::new("the two passwords differ; nothing was created. Run chatroom again"));
    }
    Ok(first)
}

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

/// The room's invite URL (`/invite`), from the relay key this session verified.
pub(crate) fn invite_url(fingerprint_hex: &str, config: &SessionConfig, keys: &RoomKeyCache) -> String {
    let mut fingerprint = [0u8; 32];
    if hex::decode_to_slice(fingerprint_hex, &mut fingerprint).is_err() {
        return "unknown (the relay's fingerprint is not 64 hex digits)".into();
    }
    Invite { fingerprint, relay: config.relay.clone(), room: config.room.clone(), kdf: keys.params() }
        .to_string()
}

pub(crate) async fn run(cli: Cli, paths: Paths) -> Result<(), AppError> {
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
    crate::relay_check::accept_new_key(&target, &relay, &paths, &mut input)?;
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
    let mut config = SessionConfig {
        relay: relay.clone(),
        proxy: target.proxy.clone(),
        room: room.clone(),
        nick: nick.clone(),
        create: chat.create,
        relay_pin,
        data_dir: Some(paths.data_dir.clone()),
        limits,
    };
    let shown_relay = match &target.proxy {
        Some(p) => format!("{relay} via {p}"),
        None => relay.to_string(),
    };
    let identity = Arc::new(identity);
    if crate::tui::wanted(chat.plain) {
        config.limits.context_on_start = crate::tui::RECENT_CONTEXT;
        let start = crate::tui::Start {
            config,
            keys,
            identity,
            relay_label: shown_relay,
            password,
            from_file,
            input,
            highlight: config_file.highlight.clone(),
            bell: config_file.bell,
            config_path: paths.config.clone(),
            config_file,
        };
        return crate::tui::run(start).await;
    }
    let ui = Arc::new(PlainUi::new(shown_relay, chat.plain, chat.no_history));
    let handle = match Session::start(config.clone(), keys.clone(), identity.clone(), ui.clone()).await {
        Ok(h) => h,
        Err(e) if e.refusal() == Some(ErrorCode::NoSuchRoom) && !config.create => {
            ui.notice(&format!("room {room} does not exist on {relay}"));
            if !input.confirm(&format!("Create room {room}? [y/N] "))? {
                return Err(AppError::new(
                    "nothing was created; check the room name, or answer y to create it",
                ));
            }
            if !from_file {
                new_password(&mut input, Some(&password))?;
            }
            confirm_if_weak(&mut input, &password, room.as_str(), nick.as_str(), !from_file)?;
            config.create = true;
            Session::start(config.clone(), keys.clone(), identity, ui.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    drop(password);
    let invite = invite_url(handle.relay_fingerprint(), &config, &keys);
    talk(handle, input, &ui, &invite).await
}

/// Messages handed to the session and not yet answered, at most: beyond it line mode stops
/// reading input until the relay catches up, so any amount of piped input is delivered.
const WINDOW: u64 = 1000;

async fn talk(mut handle: SessionHandle, input: Input, ui: &PlainUi, invite: &str) -> Result<(), AppError> {
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

/// Acts on one line of input. Commands for the relay are awaited: a refusal has been printed
/// (and counted by the front end) by the time this returns.
/// Hands a message to the session: queued, or failed with the reason shown.
async fn queue(
    handle: &mut SessionHandle,
    kind: ContentKind,
    text: &str,
    failed: &impl Fn(&dyn std::fmt::Display) -> Outcome,
) -> Outcome {
    match handle.send(kind, text).await {
        Ok(_) => Outcome::Queued,
        Err(e) => failed(&e),
    }
}

async fn line_action(handle: &mut SessionHandle, line: &str, ui: &PlainUi, invite: &str) -> Outcome {
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
            ui.notice(&format!("safety code: {}", handle.safety_code()));
            ui.notice(&format!("relay fingerprint: {}", handle.relay_fingerprint()));
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
        Command::Me(text) => return queue(handle, ContentKind::Action, &text, &failed).await,
        Command::Topic(text) => return queue(handle, ContentKind::Topic, &text, &failed).await,
        Command::Whois(nick) => handle.whois(nick).await,
        Command::Who => handle.who().await,
        Command::Kick(nick) => handle.kick(nick).await,
        Command::Ban(nick) => handle.ban(nick).await,
        Command::Unban(nick) => handle.unban(nick).await,
    };
    if let Err(e) = sent {
        return failed(&e);
    }
    if !handle.sync().await {
        return failed(&"the relay did not answer the command (not connected, or the connection was lost); it may not have been done");
    }
    Outcome::Done
}
