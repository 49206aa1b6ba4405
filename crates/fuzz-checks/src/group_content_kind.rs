//! `group_content_kind`: the clear content type of an MLSMessage (`chatroom_group::content_kind`),
//! which every v2 client reads from each log entry before decrypting anything.
//!
//! Input: `mode(u8) | rest`.
//! - Even modes (`RAW`): `rest` is the message. No panic; an answer needs at least the 14
//!   bytes of the shortest header; the parser reads a prefix, so bytes appended after a
//!   message never change a `Some` answer.
//! - Odd modes (`KNOWN`): `index(u8) | edits | resize(u8)`: a real message of the fixture
//!   ([`crate::group_fixture`]) altered by the edits. Unchanged, its kind is exactly the one it
//!   was built as (`None` for the GroupInfo); changed, the prefix rule above still holds.

use chatroom_group::content_kind;

use crate::group_fixture::fixture;
use crate::{mutate, Input};

/// Mode byte: raw bytes.
pub const RAW: u8 = 0;
/// Mode byte: a fixture message, altered.
pub const KNOWN: u8 = 1;

/// version (2) | wire_format (2) | group_id length (1, empty) | epoch (8) | content_type (1).
const SHORTEST_HEADER: usize = 14;

/// The target's check.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8() % 2 == RAW {
        prefix_rule(input.rest());
        return;
    }
    let known = &fixture().known;
    let message = &known[usize::from(input.u8()) % known.len()];
    let edits = input.edits();
    let altered = mutate(&message.mls, &edits, input.u8());
    if altered == message.mls {
        assert_eq!(content_kind(&altered), message.kind, "a real message's kind");
    }
    prefix_rule(&altered);
}

fn prefix_rule(mls: &[u8]) {
    let Some(kind) = content_kind(mls) else {
        return;
    };
    assert!(mls.len() >= SHORTEST_HEADER, "a kind from {} bytes", mls.len());
    let mut longer = mls.to_vec();
    longer.extend_from_slice(&[0xff; 9]);
    assert_eq!(content_kind(&longer), Some(kind), "appended bytes changed the kind");
}
