//! `group_process`: `chatroom_group::Room::process`, the v2 client's state machine over the
//! room's log, fed arbitrary MLS bytes and real messages under any signer and kind.
//!
//! Each input starts from alice's saved state at epoch 1 ([`crate::group_fixture`]; loading it
//! is itself part of the target). Input: up to [`MAX_OPS`] operations, each
//! `op(u8) | sender(u8) | kind(u8) | ...`; `sender` 0 means the message's real signer, else
//! one of alice, bob, carol, dave; `kind` 0 the message's real kind, else commit, application
//! or proposal.
//! - Even `op`: `bytes16(mls)`, raw bytes.
//! - Odd `op`: `index(u8) | edits | resize(u8)`, a fixture message, altered.
//!
//! Invariants: no panic; a refused entry changes nothing (same epoch, same epoch code, same
//! membership); the only message ever shown is bob's, as bob, with its real plaintext; the
//! only commit ever merged takes epoch 1 to 2 and names its envelope signer, bob or carol;
//! alice is never removed nor entering; an untouched fixture message at epoch 1, under its
//! real signer and kind and fed for the first time, yields exactly what the fixture says.

use chatroom_group::{Event, Kind, LogEntry, Room};

use crate::group_fixture::{fixture, room_ref, Expect, Fixture, HELLO};
use crate::{mutate, Input};

/// Operations per input.
pub const MAX_OPS: usize = 8;

/// How many operations of an input ended each way (seeds are tested to reach them all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Messages shown.
    pub shown: usize,
    /// Commits merged.
    pub merged: usize,
    /// Entries refused with an error.
    pub refused: usize,
    /// Entries skipped (or to be re-sent).
    pub skipped: usize,
}

/// The target's check.
pub fn check(data: &[u8]) {
    tally(data);
}

/// Runs the check and counts the outcomes.
pub fn tally(data: &[u8]) -> Tally {
    let mut tally = Tally::default();
    let f = fixture();
    let mut room = Room::load_state(&f.alice, room_ref(), &f.keys.room_psk, &f.alice_state)
        .unwrap_or_else(|e| panic!("alice's saved state must load: {e}"));
    let mut input = Input::new(data);
    let mut used = vec![false; f.known.len()];
    for _ in 0..MAX_OPS {
        if input.rest_len() == 0 {
            break;
        }
        step(f, &mut room, &mut input, (&mut tally, &mut used));
    }
    tally
}

struct Op {
    sender: u8,
    kind: u8,
    mls: Vec<u8>,
    known: Option<usize>,
    /// The fixture message it was made from, altered or not.
    source: Option<usize>,
}

fn read_op(f: &Fixture, input: &mut Input<'_>) -> Op {
    let (op, sender, kind) = (input.u8(), input.u8(), input.u8());
    if op % 2 == 0 {
        return Op { sender, kind, mls: input.bytes16().to_vec(), known: None, source: None };
    }
    let index = usize::from(input.u8()) % f.known.len();
    let edits = input.edits();
    let mls = mutate(&f.known[index].mls, &edits, input.u8());
    let untouched = mls == f.known[index].mls;
    Op { sender, kind, mls, known: untouched.then_some(index), source: Some(index) }
}

/// `used[i]`: fixture message `i`, altered or not (or bytes equal to it, which libFuzzer
/// learns), was fed before. Processing it, even a copy under a lying envelope or an altered
/// copy that is then refused, may have used its one-time key in mls-rs (the campaign found an
/// altered copy that does), so its expected outcome no longer holds.
fn step(f: &Fixture, room: &mut Room, input: &mut Input<'_>, (tally, used): (&mut Tally, &mut [bool])) {
    let op = read_op(f, input);
    let first_use = match op.source.or_else(|| f.known.iter().position(|k| k.mls == op.mls)) {
        Some(i) => !std::mem::replace(&mut used[i], true),
        None => true,
    };
    let real = op.known.map(|i| &f.known[i]);
    let sender = match (op.sender % 5, real) {
        (0, Some(k)) => k.sender,
        (n, _) => f.senders[usize::from(n.max(1)) - 1],
    };
    let kind = match (op.kind % 4, real.and_then(|k| k.kind)) {
        (0, Some(k)) => k,
        (0 | 1, _) => Kind::Commit,
        (2, _) => Kind::Application,
        _ => Kind::Proposal,
    };
    let before = (room.epoch(), room.epoch_code().ok().map(|c| c.to_string()), room.is_member());
    let result = room.process(LogEntry { sender, kind, mls: &op.mls });
    let genuine = real.filter(|k| k.sender == sender && k.kind == Some(kind) && first_use);
    if let (Some(k), 1) = (genuine, before.0) {
        let matches = matches!(
            (&result, k.expect),
            (Ok(Event::Message { .. }), Expect::Hello)
                | (Ok(Event::Commit(_)), Expect::Commit)
                | (Err(_), Expect::Refused)
                | (Ok(Event::Skipped), Expect::Skipped)
        );
        assert!(matches, "a real message gave {result:?}, expected {:?}", k.expect);
    }
    match result {
        Err(_) | Ok(Event::Skipped) | Ok(Event::Resend) => {
            match result {
                Err(_) => tally.refused += 1,
                _ => tally.skipped += 1,
            }
            let after = (room.epoch(), room.epoch_code().ok().map(|c| c.to_string()), room.is_member());
            assert_eq!(before, after, "a refused or skipped entry changed the state");
        }
        Ok(Event::Message { sender: shown, plaintext }) => {
            assert_eq!((shown, sender), (f.senders[1], f.senders[1]), "a message shown as not bob's");
            assert_eq!(plaintext.as_slice(), HELLO, "a message with other plaintext");
            tally.shown += 1;
        }
        Ok(Event::Commit(summary)) => {
            assert_eq!((before.0, summary.epoch, room.epoch()), (1, 2, 2), "a commit outside epoch 1");
            assert_eq!(summary.committer, sender, "the committer is not the envelope's signer");
            assert!(sender == f.senders[1] || sender == f.senders[2], "a commit by {sender:?}");
            assert!(summary.removed.is_empty() && !summary.own, "{summary:?}");
            tally.merged += 1;
        }
        Ok(other) => panic!("alice, a member, got {other:?}"),
    }
}
