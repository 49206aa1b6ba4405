//! Which protocol version a room is joined with, and what a refusal means for it.
//!
//! What the client knows about the room decides, in this order: `--protocol`, the saved
//! room's `protocol` or the invite's `v=`, this client's own state for the room (a protocol 2
//! state file means 2, else a protocol 1 state file means 1), and only then the default, 2.
//! An invite without `v=` (older invites, and those built from the relay's invite prefix)
//! says nothing about the version. The relay has no say:
//! a refusal ends the program with what to do, and the client never tries the other version
//! by itself (the relay is not trusted, and protocol 1 seals messages under a key derived
//! from the password).

use std::path::Path;

use chatroom_session::crypto::{ErrorCode, RoomName};
use chatroom_session::display::neutralize_short;
use chatroom_session::error::SessionError;
use chatroom_session::state::{room_state_path, v2_room_state_path};
use chatroom_session::trust::KnownRelays;

use crate::setup::{Paths, Target};

/// The version new rooms and rooms the client knows nothing about are joined with.
pub(crate) const DEFAULT: u8 = 2;

/// Where the chosen version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `--protocol N`.
    Flag,
    /// `protocol = N` in the saved room of config.toml.
    SavedRoom,
    /// The invite's `v=N`.
    Invite,
    /// This client's saved state for the room.
    State,
    /// Nothing known, and the invite names no version (no `v=`): the default.
    OldInvite,
    /// Nothing known about the room.
    Default,
}

/// A protocol version and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// 1 or 2.
    pub(crate) version: u8,
    /// Why this version.
    pub(crate) source: Source,
}

impl Chosen {
    /// Why this version, as a clause ("as --protocol says").
    fn because(self) -> &'static str {
        match self.source {
            Source::Flag => "as --protocol says",
            Source::SavedRoom => "as the saved room's protocol says",
            Source::Invite => "as the invite says",
            Source::State => "as this client's saved state for the room says",
            Source::OldInvite => {
                "the default: the invite names no version, as invites written before they carried it do"
            }
            Source::Default => "the default for a room this client knows nothing about",
        }
    }
}

/// The version to join `target` with (see the module's order).
pub(crate) fn choose(target: &Target, paths: &Paths) -> Chosen {
    choose_in(target, Some(&paths.data_dir), Some(&paths.known_relays()))
}

/// `choose` with the data directory and known relays of a session's configuration.
pub(crate) fn choose_in(target: &Target, data_dir: Option<&Path>, known: Option<&KnownRelays>) -> Chosen {
    if let Some(chosen) = target.protocol {
        return chosen;
    }
    if let Some(version) = data_dir.and_then(|dir| from_state(target, dir, known)) {
        return Chosen { version, source: Source::State };
    }
    let source = if target.old_invite { Source::OldInvite } else { Source::Default };
    Chosen { version: DEFAULT, source }
}

/// The version of this client's saved state for the room, if it has any: found under the
/// relay's key, from the target or pinned earlier.
fn from_state(target: &Target, data_dir: &Path, known: Option<&KnownRelays>) -> Option<u8> {
    let (relay, room) = (target.relay.as_ref()?, target.room.as_ref()?);
    let key = match &target.fingerprint {
        Some((key, _)) => *key,
        None => known?.lookup(&relay.first().to_string()).ok().flatten()?,
    };
    state_version(data_dir, &key, room)
}

/// 2 if a protocol 2 state file of the room exists, else 1 if a protocol 1 one does.
pub(crate) fn state_version(data_dir: &Path, relay_key: &[u8; 32], room: &RoomName) -> Option<u8> {
    if v2_room_state_path(data_dir, relay_key, room).exists() {
        Some(2)
    } else if room_state_path(data_dir, relay_key, room).exists() {
        Some(1)
    } else {
        None
    }
}

/// What a refused join means when the room may be of the other version, worded for the
/// user; `None` when the refusal has nothing to do with the version.
pub(crate) fn refused(e: &SessionError, chosen: Chosen, room: &RoomName) -> Option<String> {
    let SessionError::Refused { code, detail } = e else { return None };
    let (v, because) = (chosen.version, chosen.because());
    let other = if v == 2 { 1 } else { 2 };
    match code {
        // A room of the other version holds another verifier: the relay refuses the join as
        // a wrong password, so the client cannot tell the two apart.
        ErrorCode::WrongPassword => Some(format!(
            "the relay refused the password of room {room} for protocol {v} ({because}). Either the password \
             is wrong, or {room} is a protocol {other} room: a room of the other version refuses a join as a \
             wrong password. Check the password with the other members; if {room} is a protocol {other} \
             room, run again with --protocol {other}"
        )),
        ErrorCode::UnsupportedVersion if v == 2 => Some(format!(
            "the relay says it does not speak protocol 2 (\"{}\"); if so, room {room} on it can only be a \
             protocol 1 room. To join it, run again with --protocol 1 (messages are then sealed under a key \
             derived from the password, without forward secrecy), or ask the relay's operator to update it",
            neutralize_short(detail)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::Target;

    fn paths(dir: &Path) -> Paths {
        Paths { data_dir: dir.to_path_buf(), config: dir.join("config.toml") }
    }

    fn target(protocol: Option<Chosen>, old_invite: bool) -> Target {
        Target {
            relay: Some("127.0.0.1:1".parse().unwrap()),
            room: Some(RoomName::new("general").unwrap()),
            fingerprint: Some(([7; 32], "the invite".into())),
            protocol,
            old_invite,
            ..Target::default()
        }
    }

    #[test]
    fn what_the_client_knows_decides_before_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let room = RoomName::new("general").unwrap();
        let said = Chosen { version: 1, source: Source::Flag };
        assert_eq!(choose(&target(None, false), &paths), Chosen { version: 2, source: Source::Default });
        assert_eq!(choose(&target(None, true), &paths), Chosen { version: 2, source: Source::OldInvite });
        std::fs::create_dir_all(dir.path().join("rooms")).unwrap();
        std::fs::write(room_state_path(dir.path(), &[7; 32], &room), "").unwrap();
        let v1 = Chosen { version: 1, source: Source::State };
        assert_eq!(
            choose(&target(None, true), &paths),
            v1,
            "the client's v1 state decides for an old invite"
        );
        std::fs::write(v2_room_state_path(dir.path(), &[7; 32], &room), "").unwrap();
        let v2 = Chosen { version: 2, source: Source::State };
        assert_eq!(choose(&target(None, true), &paths), v2, "a v2 state wins over a v1 state");
        assert_eq!(choose(&target(Some(said), false), &paths), said, "a flag or saved room wins over state");
        let elsewhere = Target { fingerprint: Some(([8; 32], "x".into())), ..target(None, false) };
        assert_eq!(choose(&elsewhere, &paths).source, Source::Default, "state is per relay key");
    }

    #[test]
    fn a_refusal_names_the_other_version_and_never_claims_more_than_known() {
        let room = RoomName::new("general").unwrap();
        let wrong = SessionError::Refused { code: ErrorCode::WrongPassword, detail: String::new() };
        let default = Chosen { version: 2, source: Source::Default };
        let shown = refused(&wrong, default, &room).unwrap();
        assert!(shown.contains("for protocol 2 (the default"), "{shown}");
        assert!(shown.ends_with("run again with --protocol 1"), "{shown}");
        let v1 = refused(&wrong, Chosen { version: 1, source: Source::Flag }, &room).unwrap();
        assert!(v1.contains("(as --protocol says)") && v1.ends_with("--protocol 2"), "{v1}");
        let old = SessionError::Refused { code: ErrorCode::UnsupportedVersion, detail: "no\u{1b}[2J".into() };
        let shown = refused(&old, default, &room).unwrap();
        assert!(
            shown.starts_with("the relay says it does not speak protocol 2") && !shown.contains('\u{1b}')
        );
        let full = SessionError::Refused { code: ErrorCode::RoomFull, detail: String::new() };
        assert_eq!(refused(&full, default, &room), None);
    }
}
