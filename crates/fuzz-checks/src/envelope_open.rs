//! `envelope_open`: opening end-to-end envelopes with a fixed room key.
//!
//! Input: `mode(u8) | rest`.
//! - Even modes (`RAW`): `rest` is an envelope. `open` must fail unless `rest` is one of the
//!   envelopes this target sealed itself ([`known`]); then it must return exactly what was
//!   sealed. Opening it for another room or with another key must fail.
//! - Odd modes (`SEAL`): `rest` is a [`Spec`] followed by edits. The target seals the spec,
//!   requires `open` to return it, then applies the edits and requires `open` to fail unless
//!   the bytes are unchanged (no forgery, no malleability).

use std::sync::OnceLock;

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    open, seal_with, Content, ContentKind, EnvelopeHeader, Identity, MessageKey, RoomName, MAX_BODY_LEN,
    MAX_ENVELOPE_LEN, MIN_ENVELOPE_LEN,
};

use crate::{mutate, nick_or, room_or, FixedRng, Input, Writer};

/// Mode byte: open raw bytes.
pub const RAW: u8 = 0;
/// Mode byte: seal a spec, then mutate.
pub const SEAL: u8 = 1;

/// The room the fixed key belongs to.
pub const ROOM: &str = "lobby";

/// What to seal: every field comes from the fuzz input.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Which fixed sender signs (index into the fixture's identities, modulo 2).
    pub sender: u8,
    /// The sender's counter.
    pub counter: u64,
    /// Content timestamp.
    pub timestamp_ms: u64,
    /// 1 text, otherwise action.
    pub kind: u8,
    /// Nickname bytes (an invalid nickname falls back to `alice`).
    pub nick: Vec<u8>,
    /// Body bytes (read as UTF-8 with replacement characters).
    pub body: Vec<u8>,
    /// Seed of the nonce.
    pub nonce_seed: [u8; 32],
}

impl Spec {
    fn read(input: &mut Input<'_>) -> Self {
        Self {
            sender: input.u8(),
            counter: input.u64(),
            timestamp_ms: input.u64(),
            kind: input.u8(),
            nick: input.bytes8().to_vec(),
            body: input.bytes16().to_vec(),
            nonce_seed: input.array(),
        }
    }

    /// Appends the spec in the format `check` reads.
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.sender)
            .u64(self.counter)
            .u64(self.timestamp_ms)
            .u8(self.kind)
            .bytes8(&self.nick)
            .bytes16(&self.body)
            .raw(&self.nonce_seed);
    }

    fn content(&self) -> Content {
        Content {
            timestamp_ms: self.timestamp_ms,
            kind: if self.kind == 1 { ContentKind::Text } else { ContentKind::Action },
            nick: nick_or(&self.nick, "alice"),
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

/// The fixed keys and identities.
pub struct Fixture {
    /// The room's message key.
    pub key: MessageKey,
    /// Another room's message key.
    pub other_key: MessageKey,
    /// The room.
    pub room: RoomName,
    /// Another room.
    pub other_room: RoomName,
    /// The two senders.
    pub senders: [Identity; 2],
    /// Envelopes sealed from [`known_specs`], with their specs.
    pub known: Vec<(Vec<u8>, Spec)>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fixture")
    }
}

/// The envelopes every run of the target knows it sealed: a message from each sender.
pub fn known_specs() -> Vec<Spec> {
    vec![
        Spec {
            sender: 0,
            counter: 1_700_000_000_000_000,
            timestamp_ms: 1_700_000_000_000,
            kind: 1,
            nick: b"alice".to_vec(),
            body: b"hello, room".to_vec(),
            nonce_seed: [1; 32],
        },
        Spec {
            sender: 1,
            counter: 1_700_000_000_000_001,
            timestamp_ms: 1_700_000_000_001,
            kind: 2,
            nick: b"bob".to_vec(),
            body: "waves \u{1f44b}".as_bytes().to_vec(),
            nonce_seed: [2; 32],
        },
    ]
}

/// The shared fixture (built once per process).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut fixture = Fixture {
            key: split_master(&[7; 32]).message_key.clone(),
            other_key: split_master(&[8; 32]).message_key.clone(),
            room: room_or(ROOM.as_bytes(), ROOM),
            other_room: room_or(b"lobby2", "lobby2"),
            senders: [Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32])],
            known: Vec::new(),
        };
        for spec in known_specs() {
            match seal_spec(&fixture, &spec) {
                Some(envelope) => fixture.known.push((envelope, spec)),
                None => panic!("the fixture's own envelopes must seal"),
            }
        }
        fixture
    })
}

/// Seals `spec` with the fixture's key; `None` if the content is too long to seal.
pub fn seal_spec(fixture: &Fixture, spec: &Spec) -> Option<Vec<u8>> {
    let sender = &fixture.senders[usize::from(spec.sender % 2)];
    let content = spec.content();
    let sealed = seal_with(
        &fixture.key,
        sender,
        &fixture.room,
        spec.counter,
        &content,
        &mut FixedRng::new(spec.nonce_seed),
    );
    match sealed {
        Ok(envelope) => {
            assert!(content.body.len() <= MAX_BODY_LEN, "sealed a body over the limit");
            Some(envelope)
        }
        Err(_) => {
            assert!(content.body.len() > MAX_BODY_LEN, "refused to seal a valid content");
            None
        }
    }
}

/// Requires `envelope` to open as exactly `spec`.
fn expect_opens_as(fixture: &Fixture, envelope: &[u8], spec: &Spec) {
    let header = EnvelopeHeader::parse(envelope);
    let opened = open(&fixture.key, &fixture.room, envelope);
    match (header, opened) {
        (Ok(header), Ok(opened)) => {
            let sender = fixture.senders[usize::from(spec.sender % 2)].public();
            assert_eq!(opened.sender, sender, "opened with the wrong sender");
            assert_eq!(header.sender, sender, "header names the wrong sender");
            assert_eq!(opened.counter, spec.counter, "opened with the wrong counter");
            assert_eq!(header.counter, spec.counter, "header has the wrong counter");
            assert_eq!(opened.content, spec.content(), "opened different content");
        }
        (h, o) => panic!("a sealed envelope must open: header {h:?}, open {o:?}"),
    }
    assert!(open(&fixture.key, &fixture.other_room, envelope).is_err(), "opened for another room");
    assert!(open(&fixture.other_key, &fixture.room, envelope).is_err(), "opened with another key");
}

/// Runs the check on one input.
pub fn check(data: &[u8]) {
    let fixture = fixture();
    let mut input = Input::new(data);
    if input.u8().is_multiple_of(2) {
        let envelope = input.rest();
        let _ = EnvelopeHeader::parse(envelope);
        if let Ok(opened) = open(&fixture.key, &fixture.room, envelope) {
            match fixture.known.iter().find(|(known, _)| known.as_slice() == envelope) {
                Some((_, spec)) => expect_opens_as(fixture, envelope, spec),
                None => panic!("opened an envelope the target never sealed: {opened:?}"),
            }
        }
        return;
    }

    let spec = Spec::read(&mut input);
    let edits = input.edits();
    let resize = input.u8();
    let Some(envelope) = seal_spec(fixture, &spec) else {
        return;
    };
    assert!(
        (MIN_ENVELOPE_LEN..=MAX_ENVELOPE_LEN).contains(&envelope.len()),
        "sealed envelope of {} bytes",
        envelope.len()
    );
    expect_opens_as(fixture, &envelope, &spec);
    let mutated = mutate(&envelope, &edits, resize);
    let opened = open(&fixture.key, &fixture.room, &mutated);
    if mutated == envelope {
        assert!(opened.is_ok(), "an unchanged envelope must still open");
    } else {
        assert!(opened.is_err(), "an altered envelope opened: {opened:?}");
    }
}
