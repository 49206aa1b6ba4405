//! Line mode on protocol version 2 (`--protocol 2`): the same prompts and commands as v1, the
//! session being `chatroom_session::v2_session`. Messages carry the MLS-authenticated sender's
//! key tag; `/safety` shows the room code, the epoch and its epoch code.

use std::sync::Arc;
use std::time::Duration;

use chatroom_session::crypto::{ContentKind, ErrorCode, Zeroizing};
use chatroom_session::error::SessionError;
use chatroom_session::session::{SendError, SessionEnd};
use chatroom_session::v2_session::{RotateError, V2Handle, V2Limits, V2Session};

use crate::app_error::AppError;
use crate::chat::{talk, ChatHandle, Prepared};
use crate::cli::ChatArgs;
use crate::commands::Command;
use crate::config::{read_password_file, Config};
use crate::flow::{confirm_if_weak, invite_url, new_password};
use crate::plain::PlainUi;

impl ChatHandle for V2Handle {
    async fn send(&mut self, kind: ContentKind, body: &str) -> Result<u64, SendError> {
        V2Handle::send(self, kind, body).await
    }
    async fn command(&mut self, command: Command) -> Result<(), SendError> {
        match command {
            Command::Who => self.who().await,
            Command::Kick(nick) => self.kick(nick).await,
            Command::Ban(nick) => self.ban(nick).await,
            Command::Unban(nick) => self.unban(nick).await,
            // Nicknames are pinned to the MLS-authenticated sender, as in v1.
            Command::Whois(nick) => self.whois(nick).await,
            _ => Ok(()),
        }
    }
    async fn sync(&self) -> bool {
        V2Handle::sync(self).await
    }
    async fn safety(&self) -> Vec<String> {
        let mut lines = match V2Handle::safety(self).await {
            Some(s) => vec![
                format!("room code: {} (the same for everyone with this password)", s.room_code),
                format!("epoch {} code: {}", s.epoch, s.epoch_code),
                "compare the epoch code with the other members out of band: equal codes at one epoch mean one \
                 group, which the relay cannot fork unnoticed"
                    .into(),
            ],
            None => vec!["not yet in the room's group: the codes are shown once you have entered".into()],
        };
        lines.push(format!("relay fingerprint: {}", self.relay_fingerprint()));
        lines
    }
    async fn rotate_password_from(&mut self, file: &std::path::Path) -> Result<Vec<String>, String> {
        let password = read_password_file(file).map_err(|e| {
            format!("{e}; the password was not changed (write the new one on the first line of the file, mode 0600)")
        })?;
        let mut lines = Vec::new();
        let strength = crate::passphrase::strength(&password, &[]);
        if strength.is_weak() {
            lines.push(format!(
                "warning: the new password is weak (about 10^{} guesses): whoever obtains the relay's data can \
                 guess it offline; `chatroom passphrase` makes a strong one, and /rotate-password can change it again",
                strength.guesses_log10
            ));
        }
        let shown = chatroom_session::display::neutralize(&file.display().to_string());
        match V2Handle::rotate_password(self, Zeroizing::new(password.as_bytes().to_vec())).await {
            Ok(generation) => {
                // A Ping after the new verifier and GroupInfo, answered: the relay applied them.
                if !V2Handle::sync(self).await {
                    lines.push(
                        "warning: the connection to the relay was lost right after the change; once connected \
                         again, check that the old password no longer enters"
                            .into(),
                    );
                }
                lines.push(format!(
                    "the room's password is now the one in {shown} (generation {generation}); the old one no longer \
                     enters"
                ));
                lines.push(
                    "tell the members who may enter later the new password out of band (never in this room); \
                     members inside stay without it, and your saved room state holds it too"
                        .into(),
                );
                Ok(lines)
            }
            Err(RotateError::NotOwner) => {
                Err("only the room's owner can rotate its password; nothing was done".into())
            }
            Err(e) => Err(format!("{e}; the password was not changed")),
        }
    }
    async fn ended(&mut self) -> SessionEnd {
        V2Handle::ended(self).await
    }
    async fn close(self, flush: std::time::Duration) -> SessionEnd {
        V2Handle::close(self, flush).await
    }
}

/// What a failed v2 start means, in words that say what to do.
fn start_error(e: SessionError, p: &Prepared) -> AppError {
    match crate::version::refused(&e, p.chosen, &p.config.room) {
        Some(text) => AppError::new(text),
        None => AppError::new(chatroom_session::display::neutralize(&crate::advice::session(&e))),
    }
}

pub(crate) async fn run(mut p: Prepared, chat: &ChatArgs) -> Result<(), AppError> {
    let ui = Arc::new(PlainUi::new(p.relay_label.clone(), chat.plain, chat.no_history).for_protocol_2());
    let limits = limits(chat, &p.config_file);
    let handle = start(&mut p, &ui, limits).await?;
    drop(p.password);
    let invite = invite_url(handle.relay_fingerprint(), &p.config, &p.keys, 2);
    talk(handle, p.input, &ui, &invite).await
}

/// The driver's limits: healing as the flags say, else the config file, else the defaults
/// (both already checked: at least 1 message, 1 to 8760 hours).
pub(crate) fn limits(chat: &ChatArgs, file: &Config) -> V2Limits {
    let defaults = V2Limits::default();
    let messages = chat.heal_messages.or(file.heal_messages).unwrap_or(defaults.heal_messages);
    let heal_after = match chat.heal_hours.or(file.heal_hours) {
        Some(hours) => Duration::from_secs(u64::from(hours) * 3600),
        None => defaults.heal_after,
    };
    let create_history_share = chat.history_share.unwrap_or(0);
    V2Limits { heal_messages: messages.max(1), heal_after, create_history_share, ..defaults }
}

/// Starts the v2 session; a missing room is created after asking, as in v1.
async fn start(p: &mut Prepared, ui: &Arc<PlainUi>, limits: V2Limits) -> Result<V2Handle, AppError> {
    let params = p.keys.params();
    let attempt = |p: &Prepared| {
        V2Session::start(
            p.config.clone(),
            limits.clone(),
            Zeroizing::new(p.password.as_bytes().to_vec()),
            params,
            p.identity.clone(),
            ui.clone(),
        )
    };
    match attempt(p).await {
        Ok(h) => Ok(h),
        Err(e) if e.refusal() == Some(ErrorCode::NoSuchRoom) && !p.config.create => {
            let (room, nick) = (p.config.room.clone(), p.config.nick.clone());
            ui.notice(&format!("room {room} does not exist on {}", p.config.relay));
            if !p.input.confirm(&format!("Create room {room}? [y/N] "))? {
                return Err(AppError::new(
                    "nothing was created; check the room name, or answer y to create it",
                ));
            }
            if !p.from_file {
                new_password(&mut p.input, Some(&p.password))?;
            }
            confirm_if_weak(&mut p.input, &p.password, room.as_str(), nick.as_str(), !p.from_file)?;
            p.config.create = true;
            attempt(p).await.map_err(|e| start_error(e, p))
        }
        Err(e) => Err(start_error(e, p)),
    }
}
