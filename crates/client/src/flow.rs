//! Steps of the chat flow that line mode (`chat.rs`) and the full-screen UI (`tui/`) share: a
//! new room's password and the weak-password check, the invite URL, the exit flush.

use std::time::Duration;

use chatroom_session::crypto::Zeroizing;
use chatroom_session::invite::Invite;
use chatroom_session::session::{RoomKeyCache, SessionConfig};

use crate::app_error::AppError;
use crate::passphrase;
use crate::prompt::{same_secret, Input};

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

/// The room's invite URL (`/invite`), from the relay key this session verified.
pub(crate) fn invite_url(
    fingerprint_hex: &str,
    config: &SessionConfig,
    keys: &RoomKeyCache,
    version: u8,
) -> String {
    let mut fingerprint = [0u8; 32];
    if hex::decode_to_slice(fingerprint_hex, &mut fingerprint).is_err() {
        return "unknown (the relay's fingerprint is not 64 hex digits)".into();
    }
    let (relay, room) = (config.relay.clone(), config.room.clone());
    Invite { fingerprint, relay, room, kdf: keys.params(), version: Some(version) }.to_string()
}
