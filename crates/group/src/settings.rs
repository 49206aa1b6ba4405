//! The room's settings in the MLS group context: the `chatroom_room` extension
//! (docs/PROTOCOL.md section 20), `owner: 32 | history_share: u16 | heal_messages: u32 |
//! heal_seconds: u32`, set by the creator.

use chatroom_crypto::PublicIdentity;
use mls_rs::extension::ExtensionType;
use mls_rs::{Extension, ExtensionList};

/// The extension's type, from MLS's private-use range (RFC 9420 section 17.3); fixed by the
/// protocol.
pub const ROOM_EXTENSION: ExtensionType = ExtensionType::new(0xF0C1);
const LEN: usize = 32 + 2 + 4 + 4;

/// What the creator sets for the room; members refuse removals by anyone but `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    /// The identity whose commits may remove other members.
    pub owner: PublicIdentity,
    /// Messages re-sent to a newcomer (0 = off, the default).
    pub history_share: u16,
    /// A member updates after this many of its messages (default 100).
    pub heal_messages: u32,
    /// ... or after this many seconds (default 86 400).
    pub heal_seconds: u32,
}

impl RoomSettings {
    /// The protocol's defaults (docs/PROTOCOL.md section 21), with `owner` as the owner.
    pub fn defaults(owner: PublicIdentity) -> Self {
        Self { owner, history_share: 0, heal_messages: 100, heal_seconds: 86_400 }
    }

    pub(crate) fn to_extensions(self) -> ExtensionList {
        let mut data = Vec::with_capacity(LEN);
        data.extend_from_slice(&self.owner.0);
        data.extend_from_slice(&self.history_share.to_be_bytes());
        data.extend_from_slice(&self.heal_messages.to_be_bytes());
        data.extend_from_slice(&self.heal_seconds.to_be_bytes());
        let mut list = ExtensionList::new();
        list.set(Extension::new(ROOM_EXTENSION, data));
        list
    }

    /// The settings in a group context's extensions, if present and exactly 42 bytes.
    pub(crate) fn from_extensions(list: &ExtensionList) -> Option<Self> {
        let ext = list.get(ROOM_EXTENSION)?;
        let d: &[u8; LEN] = ext.extension_data.as_slice().try_into().ok()?;
        let mut owner = [0u8; 32];
        owner.copy_from_slice(&d[..32]);
        Some(Self {
            owner: PublicIdentity(owner),
            history_share: u16::from_be_bytes([d[32], d[33]]),
            heal_messages: u32::from_be_bytes([d[34], d[35], d[36], d[37]]),
            heal_seconds: u32::from_be_bytes([d[38], d[39], d[40], d[41]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_length_refused() {
        let s = RoomSettings {
            owner: PublicIdentity([3; 32]),
            history_share: 7,
            heal_messages: 9,
            heal_seconds: 11,
        };
        assert_eq!(RoomSettings::from_extensions(&s.to_extensions()), Some(s));
        let mut short = ExtensionList::new();
        short.set(Extension::new(ROOM_EXTENSION, vec![0; LEN - 1]));
        assert_eq!(RoomSettings::from_extensions(&short), None);
        assert_eq!(RoomSettings::from_extensions(&ExtensionList::new()), None);
    }

    /// The `v2.extension.` vectors of docs/PROTOCOL.md (the other names are checked by
    /// `crates/crypto/tests/vectors.rs` and `crates/group/tests/vectors.rs`).
    #[test]
    fn protocol_md_extension_vectors_match_the_code() {
        let doc = crate::test_vectors::documented("v2.extension.");
        let owner = chatroom_crypto::Identity::from_seed(&[0x11; 32]).public();
        let s = RoomSettings { owner, history_share: 50, heal_messages: 100, heal_seconds: 86_400 };
        let list = s.to_extensions();
        let data = &list.get(ROOM_EXTENSION).expect("the extension is set").extension_data;
        let computed = [
            ("v2.extension.type", format!("{:04x}", ROOM_EXTENSION.raw_value())),
            ("v2.extension.room", hex::encode(data)),
        ];
        crate::test_vectors::check(&doc, &computed);
        assert_eq!(RoomSettings::from_extensions(&list), Some(s));
    }
}
