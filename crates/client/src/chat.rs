//! The chat flow: resolve the target, get the password, start the session (offering to create
//! a missing room), then feed stdin lines to it until end of input or `/quit`.

use std::sync::Arc;
use std::time::Duration;

use chatroom_client::commands::{parse_line, Command, Input as Line, HELP};
use chatroom_client::config::{read_password_file, Config};
use chatroom_client::crypto::{load_or_create_identity, ContentKind, ErrorCode, Zeroizing};
use chatroom_client::display::neutralize;
use chatroom_client::invite::Invite;
use chatroom_client::passphrase;
use chatroom_client::session::{Limits, RoomKeyCache, Session, SessionConfig, SessionEnd, SessionHandle};
use chatroom_client::trust::RelayPin;

use crate::app_error::AppError;
use crate::cli::Cli;
use crate::plain::PlainUi;
use crate::prompt::{same_secret, Input};
use crate::setup::{complete, resolve, Paths};

/// How long end of input or `/quit` waits for the relay to acknowledge pending messages.
pub(crate) const FLUSH_ON_EXIT: Duration = Duration::from_secs(10);

pub(crate) fn warn_if_weak(password: &str, room: &str, nick: &str) {
    let s = passphrase::strength(password, &[room, nick]);
    if s.is_weak() {
        eprintln!(
            "-!- WARNING: this room password is weak: about 10^{} guesses (zxcvbn score {}/4), roughly {} \
             for one attacker at 10^4 guesses per second. Anyone who obtains the relay's ciphertext can guess \
             offline. Consider a generated one: chatroom passphrase",
            s.guesses_log10, s.score, s.crack_time
        );
    }
}

pub(crate) fn new_password(input: &mut Input, first: Option<&str>) -> Result<Zeroizing<String>, AppError> {
    let first = match first {
        Some(p) => Zeroizing::new(p.to_owned()),
        None => input.secret("New room password: ")?,
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

    let from_file = target.password_file.is_some();
    let password = match &target.password_file {
        Some(file) => read_password_file(file)?,
        None if chat.create => new_password(&mut input, None)?,
        None => input.secret("Room password: ")?,
    };
    if password.is_empty() {
        return Err(AppError::new("the room password is empty"));
    }
    if chat.create {
        warn_if_weak(&password, room.as_str(), nick.as_str());
    }
    let keys =
        Arc::new(RoomKeyCache::new(Zeroizing::new(password.as_bytes().to_vec()), room.clone(), target.kdf)?);
    let (expected, expected_source) = match target.fingerprint {
        Some((key, source)) => (Some(key), source),
        None => (None, String::new()),
    };
    let mut config = SessionConfig {
        relay: relay.clone(),
        proxy: target.proxy.clone(),
        room: room.clone(),
        nick: nick.clone(),
        create: chat.create,
        relay_pin: RelayPin { expected, expected_source, known: Some(paths.known_relays()) },
        data_dir: Some(paths.data_dir.clone()),
        limits: Limits::default(),
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
    let ui = Arc::new(PlainUi::new(shown_relay, chat.plain));
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
            warn_if_weak(&password, room.as_str(), nick.as_str());
            config.create = true;
            Session::start(config.clone(), keys.clone(), identity, ui.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    drop(password);
    let invite = invite_url(handle.relay_fingerprint(), &config, &keys);
    talk(handle, input, &ui, &invite).await
}

async fn talk(mut handle: SessionHandle, input: Input, ui: &PlainUi, invite: &str) -> Result<(), AppError> {
    let mut lines = input.into_lines();
    let ended = loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(Some(line)) = line else { break None };
                match parse_line(&line) {
                    Ok(Line::Empty) => {}
                    Ok(Line::Text(text)) => {
                        if let Err(e) = handle.send(ContentKind::Text, &text).await {
                            ui.notice(&format!("error: {e}"));
                        }
                    }
                    Ok(Line::Command(command)) => {
                        let result = match command {
                            Command::Help => {
                                for l in HELP.lines() {
                                    ui.notice(l);
                                }
                                Ok(())
                            }
                            Command::Safety => {
                                ui.notice(&format!("safety code: {}", handle.safety_code()));
                                ui.notice(&format!("relay fingerprint: {}", handle.relay_fingerprint()));
                                Ok(())
                            }
                            Command::Invite => {
                                ui.notice(&format!("invite: {}", invite));
                                Ok(())
                            }
                            Command::Topic(text) if text.is_empty() => {
                                ui.notice("the topic is shown when the owner sets it; /topic TEXT sets it (owner only)");
                                Ok(())
                            }
                            Command::Topic(text) => handle.send(ContentKind::Topic, &text).await.map(|_| ()),
                            Command::Ignore(_)
                            | Command::Clear
                            | Command::Join(_)
                            | Command::Part
                            | Command::Window(_) => {
                                ui.notice(
                                    "error: /ignore, /clear and windows (/join, /part, /window) are for the full-screen \
                                     UI; line mode stays in one room, nothing was done",
                                );
                                Ok(())
                            }
                            Command::Quit => break None,
                            Command::Who => handle.who().await,
                            Command::Me(text) => handle.send(ContentKind::Action, &text).await.map(|_| ()),
                            Command::Kick(nick) => handle.kick(nick).await,
                            Command::Ban(nick) => handle.ban(nick).await,
                            Command::Unban(nick) => handle.unban(nick).await,
                        };
                        if let Err(e) = result {
                            ui.notice(&format!("error: {e}"));
                        }
                    }
                    Err(e) => ui.notice(&format!("error: {e}")),
                }
            }
            end = handle.ended() => break Some(end),
            _ = tokio::signal::ctrl_c() => break None,
        }
    };
    let end = match ended {
        Some(end) => end,
        None => handle.close(FLUSH_ON_EXIT).await,
    };
    match end {
        SessionEnd::Closed { unacknowledged: 0 } => Ok(()),
        SessionEnd::Closed { unacknowledged } => {
            let (count, them) = if unacknowledged == 1 {
                ("1 message".to_owned(), "it")
            } else {
                (format!("{unacknowledged} messages"), "them")
            };
            Err(AppError::new(format!(
                "the relay did not acknowledge the last {count} within {} s, so {them} may not have been delivered. \
                 Send again what matters once connected.",
                FLUSH_ON_EXIT.as_secs()
            )))
        }
        SessionEnd::Failed(e) => Err(AppError::new(neutralize(&e.to_string()))),
        _ => Ok(()),
    }
}
