//! `group_info_open`: the sealed GroupInfo a v2 client fetches from the relay
//! (`chatroom_group::open_group_info`), opened with a fixed GroupInfo key.
//!
//! Input: `mode(u8) | rest`.
//! - Even modes (`RAW`): `rest` is what the relay returned. `open` must fail unless `rest` is
//!   exactly the one object this target sealed ([`known`]), and then return what was sealed.
//! - Odd modes (`SEAL`): `epoch(u64) | nonce(24) | bytes16(group_info) | edits | resize(u8)`.
//!   The target seals it (for the fixed room, under another key than the raw mode's), requires `open` to return the same generation,
//!   epoch and bytes, requires another key, room or relay to fail, then applies the edits and
//!   requires `open` to fail unless the bytes are unchanged.

use std::sync::OnceLock;

use chatroom_crypto::{GroupInfoKey, RoomName};
use chatroom_group::{open_group_info, seal_group_info_with_nonce, GroupError, RoomRef};

use crate::{mutate, Input};

/// Mode byte: open raw bytes.
pub const RAW: u8 = 0;
/// Mode byte: seal from the input, then alter.
pub const SEAL: u8 = 1;

fn key() -> GroupInfoKey {
    GroupInfoKey::from_bytes([0x4b; 32])
}

/// The key of the seal mode: another than the raw mode's, because libFuzzer learns the bytes
/// the seal mode compares and replays them as raw inputs, which would then open.
fn seal_key() -> GroupInfoKey {
    GroupInfoKey::from_bytes([0x47; 32])
}

fn room(name: &str, relay_key: [u8; 32]) -> RoomRef {
    let room = RoomName::new(name).unwrap_or_else(|_| panic!("a valid room name"));
    RoomRef { room, relay_key, psk_generation: 3 }
}

/// The target's room: `general` on relay key `[9; 32]`, password generation 3.
pub fn home() -> RoomRef {
    room("general", [9; 32])
}

/// The object the raw mode may open: `"group info"` as epoch 5 under nonce `[0x24; 24]`.
pub fn known() -> &'static [u8] {
    static KNOWN: OnceLock<Vec<u8>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        seal_group_info_with_nonce(&key(), &home(), 5, b"group info", &[0x24; 24])
            .unwrap_or_else(|e| panic!("sealing the known object: {e}"))
    })
}

/// The target's check.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8() % 2 == RAW {
        let raw = input.rest();
        if let Ok(opened) = open_group_info(&key(), &home(), raw) {
            assert_eq!(raw, known(), "opened bytes the target never sealed");
            assert_eq!((opened.psk_generation, opened.epoch), (3, 5));
            assert_eq!(opened.group_info, b"group info");
        }
        return;
    }
    let epoch = input.u64();
    let nonce: [u8; 24] = input.array();
    let body = input.bytes16().to_vec();
    let sealed = match seal_group_info_with_nonce(&seal_key(), &home(), epoch, &body, &nonce) {
        Ok(sealed) => sealed,
        Err(e) => panic!("a {}-byte GroupInfo must seal: {e}", body.len()),
    };
    let opened = open_group_info(&seal_key(), &home(), &sealed).unwrap_or_else(|e| panic!("own seal: {e}"));
    assert_eq!((opened.psk_generation, opened.epoch, &opened.group_info), (3, epoch, &body));
    for (other_key, other_room) in
        [(key(), home()), (seal_key(), room("other", [9; 32])), (seal_key(), room("general", [10; 32]))]
    {
        let refused = open_group_info(&other_key, &other_room, &sealed);
        assert!(matches!(refused, Err(GroupError::GroupInfoKey)), "opened elsewhere: {refused:?}");
    }
    let edits = input.edits();
    let altered = mutate(&sealed, &edits, input.u8());
    if altered != sealed {
        assert!(open_group_info(&seal_key(), &home(), &altered).is_err(), "an altered seal opened");
    }
}
