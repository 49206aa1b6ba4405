//! `client_session`: the client's handling of arbitrary relay messages, through the sans-IO
//! room view the session driver feeds (`chatroom_session::session::RoomView`).
//!
//! The target is `alice` in room `lobby` with a fixed room key; `bob`, `carol` and `mallory`
//! are other identities whose envelopes the target seals itself. Each message is built from
//! the input as a `RelayMessage`, encoded, decoded again with the real decoder, then handed to
//! the view exactly as the driver does (`Joined`, `Deliver`, `Members`, `Presence`; `Ack`,
//! `HistoryEnd`, `Error`, `SendError`, `Goodbye`, `Ping` and `Pong` do not reach the view).
//!
//! Input: up to [`MAX_OPS`] operations, each `op(u8) | fields`, until the input ends:
//! - `SEAL`: `sender(u8) counter(u16) timestamp(u8) kind(u8) nick(bytes8) body(bytes8)
//!   nonce(u8) scope(u8) seq(u16) history(u8) edits resize(u8)`: an envelope sealed by the
//!   target (scope 1: for another room, scope 2: under another key), altered by the edits and
//!   resize, delivered with that sequence number.
//! - `RAW`: `seq(u16) history(u8) envelope(bytes16)`: arbitrary envelope bytes.
//! - `REPLAY`: `index(u8) seq(u16) history(u8)`: an envelope sealed earlier, delivered again.
//! - `MEMBERS`: `more(u8) count(u8) { nick(bytes8) who(u8) [seed(32)] }`.
//! - `PRESENCE`: `event(u8) nick(bytes8) who(u8) [seed(32)]`.
//! - `JOINED`: `who(u8) [seed(32)] latest(u16) oldest(u16)`.
//! - `OTHER`: `which(u8) a(u64) b(u16) detail(bytes8)`: `Ack`, `HistoryEnd`, `Error`,
//!   `Goodbye`, `Ping`, `SendError` or `Pong` (`which` modulo 7).
//!
//! `who` picks `alice`, `bob`, `carol`, `mallory` (0..=3), or (4) an identity from the next
//! 32 bytes.
//!
//! Invariants: nothing panics; a delivery is dropped silently exactly when its sequence
//! number is not above the last one processed; a message is shown (or rejected for its
//! nickname) only if its bytes are exactly an envelope the target sealed for this room under
//! this key, and then with exactly the sealed sender, nickname, kind, body and timestamp, the
//! delivery's `seq` and `history`, and `from_me` exactly when the sender is `alice`; every
//! such envelope is accepted as verified; a sender's accepted counters strictly increase; a
//! shown message's nickname is pinned to its sender.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    seal_with, Content, ContentKind, ErrorCode, Identity, Member, MessageKey, Nick, PresenceEvent,
    PublicIdentity, RelayMessage, RoomName, MAX_ENVELOPE_LEN, MIN_ENVELOPE_LEN,
};
use chatroom_session::session::{Event, JoinedInfo, Rejected, RoomView};
use chatroom_session::state::RoomState;

use crate::{mutate, nick_or, FixedRng, Input};

/// Most operations read from one input.
pub const MAX_OPS: usize = 64;
/// Op: deliver an envelope the target seals, maybe altered.
pub const SEAL: u8 = 0;
/// Op: deliver arbitrary envelope bytes.
pub const RAW: u8 = 1;
/// Op: deliver an earlier sealed envelope again.
pub const REPLAY: u8 = 2;
/// Op: a `Members` item.
pub const MEMBERS: u8 = 3;
/// Op: a `Presence` item.
pub const PRESENCE: u8 = 4;
/// Op: a `Joined` reply.
pub const JOINED: u8 = 5;
/// Op: a message that does not reach the room view.
pub const OTHER: u8 = 6;
const OPS: u8 = 7;

/// Longest `Error` or `Goodbye` detail that survives encoding unchanged.
const MAX_DETAIL: usize = 512;

/// The room the target is in.
pub const ROOM: &str = "lobby";
/// Nicknames of the fixed identities, in `who` order.
pub const NAMES: [&str; 4] = ["alice", "bob", "carol", "mallory"];

struct Fixture {
    key: MessageKey,
    other_key: MessageKey,
    room: RoomName,
    other_room: RoomName,
    people: Vec<Identity>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        key: split_master(&[7; 32]).message_key.clone(),
        other_key: split_master(&[8; 32]).message_key.clone(),
        room: RoomName::new(ROOM).unwrap_or_else(|_| panic!("{ROOM} is a valid room name")),
        other_room: RoomName::new("lobby2").unwrap_or_else(|_| panic!("lobby2 is a valid room name")),
        people: (0..4u8).map(|i| Identity::from_seed(&[11 + i; 32])).collect(),
    })
}

/// What the target sealed into one envelope.
#[derive(Debug, Clone)]
struct Sealed {
    sender: PublicIdentity,
    counter: u64,
    content: Content,
}

fn who(input: &mut Input<'_>, f: &Fixture) -> PublicIdentity {
    match input.u8() % 5 {
        4 => Identity::from_seed(&input.array()).public(),
        i => f.people[usize::from(i)].public(),
    }
}

/// How the room view reported the deliveries of one input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Shown as a member's message.
    pub shown: usize,
    /// Rejected for the nickname (mismatch, or the pin store full).
    pub nick_rejected: usize,
    /// Rejected as a replayed counter.
    pub replayed: usize,
    /// Rejected as unverified.
    pub unverified: usize,
    /// Dropped silently as duplicates of an accepted counter, or refused by the decoder.
    pub dropped: usize,
}

struct Run {
    tally: Tally,
    view: RoomView,
    me: PublicIdentity,
    /// Envelopes sealed for this room under this key, by their exact bytes.
    genuine: HashMap<Vec<u8>, Sealed>,
    /// Every envelope sealed, in order, for `REPLAY`.
    history: Vec<Vec<u8>>,
    /// Highest counter accepted (shown or rejected for its nickname) per sender.
    accepted: BTreeMap<PublicIdentity, u64>,
}

impl Run {
    /// Seals an envelope as the input says (for this room and key, or another), records it,
    /// and delivers it, possibly altered.
    fn seal(&mut self, f: &Fixture, input: &mut Input<'_>) {
        let sender = usize::from(input.u8() % 4);
        let counter = u64::from(input.u16());
        let timestamp_ms = u64::from(input.u8());
        let kind = if input.u8().is_multiple_of(2) { ContentKind::Text } else { ContentKind::Action };
        let nick = nick_or(input.bytes8(), NAMES[sender]);
        let body = String::from_utf8_lossy(input.bytes8()).into_owned();
        let mut rng = FixedRng::new([input.u8(); 32]);
        let scope = input.u8() % 4;
        let seq = u64::from(input.u16());
        let history = input.u8() % 2 == 1;
        let edits = input.edits();
        let resize = input.u8();
        let content = Content { timestamp_ms, kind, nick, body };
        let (key, room) = match scope {
            1 => (&f.key, &f.other_room),
            2 => (&f.other_key, &f.room),
            _ => (&f.key, &f.room),
        };
        let Ok(envelope) = seal_with(key, &f.people[sender], room, counter, &content, &mut rng) else {
            return;
        };
        if scope != 1 && scope != 2 {
            let sealed = Sealed { sender: f.people[sender].public(), counter, content };
            self.genuine.insert(envelope.clone(), sealed);
        }
        self.history.push(envelope.clone());
        self.deliver(f, seq, history, mutate(&envelope, &edits, resize));
    }

    /// Round-trips `msg` through the wire encoding and applies what comes back.
    fn apply_all(&mut self, f: &Fixture, msg: RelayMessage) {
        for msg in round_trip(msg) {
            self.apply(f, msg);
        }
    }

    fn deliver(&mut self, f: &Fixture, seq: u64, history: bool, envelope: Vec<u8>) {
        let msg = RelayMessage::Deliver { seq, history, envelope };
        let decoded = round_trip(msg);
        if decoded.is_empty() {
            self.tally.dropped += 1;
        }
        for msg in decoded {
            self.apply(f, msg);
        }
    }

    fn apply(&mut self, f: &Fixture, msg: RelayMessage) {
        match msg {
            RelayMessage::Deliver { seq, history, envelope } => {
                let last = self.view.last_seq();
                let event = self.view.on_deliver(&f.key, seq, history, &envelope);
                let Some(event) = event else {
                    // Silent only for a genuine envelope whose counter was already accepted,
                    // met in history or below the cursor; the cursor stays.
                    let sealed = self
                        .genuine
                        .get(&envelope)
                        .unwrap_or_else(|| panic!("unsealed bytes dropped silently"));
                    let highest = self.accepted.get(&sealed.sender).copied().unwrap_or(0);
                    assert!(sealed.counter <= highest, "a new counter dropped silently");
                    assert!(history || seq <= last, "a live replay above the cursor dropped silently");
                    assert_eq!(self.view.last_seq(), last);
                    self.tally.dropped += 1;
                    return;
                };
                let accepted = self.check_delivery(seq, history, &envelope, &event);
                let expected = if accepted { last.max(seq) } else { last };
                assert_eq!(self.view.last_seq(), expected, "the cursor moves past verified envelopes only");
            }
            RelayMessage::Members { more, members } => {
                let events = self.view.on_members(more, members);
                self.check_no_message(&events);
            }
            RelayMessage::Presence { event, nick, identity } => {
                let events = self.view.on_presence(event, nick, identity);
                self.check_no_message(&events);
            }
            RelayMessage::Joined { created, owner, latest_seq, oldest_seq } => {
                let events = self.view.on_joined(&JoinedInfo { created, owner, latest_seq, oldest_seq });
                self.check_no_message(&events);
            }
            // `Ack`, `HistoryEnd`, `Error`, `Goodbye`, `Ping`, `Pong`: the driver handles
            // these without the room view.
            _ => {}
        }
    }

    fn check_no_message(&self, events: &[Event]) {
        for e in events {
            assert!(
                !matches!(e, Event::Message(_) | Event::Rejected(_)),
                "only a delivery may report a message: {e:?}"
            );
        }
    }

    /// Checks one reported delivery; whether its counter was accepted.
    fn check_delivery(&mut self, seq: u64, history: bool, envelope: &[u8], event: &Event) -> bool {
        let sealed = self.genuine.get(envelope).cloned();
        let message = match event {
            Event::Message(m) => m,
            Event::Rejected(Rejected::NickMismatch { message, .. } | Rejected::Unpinned { message, .. }) => {
                message
            }
            Event::Rejected(Rejected::Unverified { seq: s }) => {
                assert_eq!(*s, seq);
                assert!(sealed.is_none(), "an envelope the target sealed was refused as unverified");
                self.tally.unverified += 1;
                return false;
            }
            Event::Rejected(Rejected::Replayed { seq: s, sender, counter, highest }) => {
                assert_eq!(*s, seq);
                let sealed =
                    sealed.unwrap_or_else(|| panic!("a forged envelope passed verification: {event:?}"));
                assert_eq!((*sender, *counter), (sealed.sender, sealed.counter));
                assert!(counter <= highest);
                assert_eq!(self.accepted.get(sender).copied().unwrap_or(0), *highest);
                self.tally.replayed += 1;
                return false;
            }
            other => panic!("a delivery reported {other:?}"),
        };
        let sealed =
            sealed.unwrap_or_else(|| panic!("unsealed or altered bytes reported as a message: {event:?}"));
        assert_eq!(message.sender, sealed.sender, "shown under another sender");
        assert_eq!(message.nick, sealed.content.nick);
        assert_eq!(message.kind, sealed.content.kind);
        assert_eq!(message.body, sealed.content.body);
        assert_eq!(message.timestamp_ms, sealed.content.timestamp_ms);
        assert_eq!((message.seq, message.history), (seq, history));
        assert_eq!(message.from_me, sealed.sender == self.me);
        let highest = self.accepted.get(&sealed.sender).copied().unwrap_or(0);
        assert!(sealed.counter > highest, "counter {} accepted after {highest}", sealed.counter);
        self.accepted.insert(sealed.sender, sealed.counter);
        if !matches!(event, Event::Message(_)) {
            self.tally.nick_rejected += 1;
        } else {
            self.tally.shown += 1;
            assert_eq!(
                self.view.state().pins.get(&message.nick),
                Some(&message.sender),
                "a message shown under a nickname not pinned to its sender"
            );
        }
        true
    }
}

/// Encodes `msg` and decodes it again with the client's decoder, which must return it, or
/// (only for an envelope of a length no envelope has) refuse it: then nothing reaches the view.
fn round_trip(msg: RelayMessage) -> Vec<RelayMessage> {
    let mut bytes = Vec::new();
    msg.encode(&mut bytes);
    match RelayMessage::decode_all(&bytes) {
        Ok(decoded) => {
            assert_eq!(decoded, [msg]);
            decoded
        }
        Err(e) => {
            let RelayMessage::Deliver { envelope, .. } = &msg else {
                panic!("{msg:?} did not decode: {e:?}");
            };
            let len = envelope.len();
            assert!(
                !(MIN_ENVELOPE_LEN..=MAX_ENVELOPE_LEN).contains(&len),
                "a delivery with a {len}-byte envelope did not decode: {e:?}"
            );
            Vec::new()
        }
    }
}

/// A member list from the input.
fn members(input: &mut Input<'_>, f: &Fixture) -> RelayMessage {
    let more = input.u8() % 2 == 1;
    let count = input.u8() % 5;
    let members = (0..count)
        .map(|i| {
            let nick = nick_or(input.bytes8(), NAMES[usize::from(i % 4)]);
            Member { nick, identity: who(input, f) }
        })
        .collect();
    RelayMessage::Members { more, members }
}

/// A presence event from the input.
fn presence(input: &mut Input<'_>, f: &Fixture) -> RelayMessage {
    let event = match input.u8() % 5 {
        0 => PresenceEvent::Joined,
        1 => PresenceEvent::Left,
        2 => PresenceEvent::Kicked,
        3 => PresenceEvent::Banned,
        _ => PresenceEvent::Unbanned,
    };
    let nick: Nick = nick_or(input.bytes8(), "bob");
    let identity = who(input, f);
    RelayMessage::Presence { event, nick, identity }
}

/// A `Joined` from the input.
fn joined(input: &mut Input<'_>, f: &Fixture) -> RelayMessage {
    let owner = who(input, f);
    let latest_seq = u64::from(input.u16());
    let oldest_seq = u64::from(input.u16());
    RelayMessage::Joined { created: false, owner, latest_seq, oldest_seq }
}

/// One of the messages the driver handles without the view, or an error, from the input.
fn other(input: &mut Input<'_>) -> RelayMessage {
    let which = input.u8() % 7;
    let a = input.u64();
    let b = u64::from(input.u16());
    // Details are cut to 512 bytes on the wire; replacement characters can make
    // 255 input bytes longer than that.
    let mut detail = String::from_utf8_lossy(input.bytes8()).into_owned();
    while detail.len() > MAX_DETAIL {
        detail.pop();
    }
    let code = ErrorCode::from_u16(b as u16);
    match which {
        0 => RelayMessage::Ack { counter: a, seq: b },
        1 => RelayMessage::HistoryEnd { latest_seq: a },
        2 => RelayMessage::Error { code, detail },
        3 => RelayMessage::Goodbye { code, detail },
        4 => RelayMessage::Ping { token: a },
        5 => RelayMessage::SendError { counter: a, code, detail },
        _ => RelayMessage::Pong { token: a },
    }
}

/// Runs the input (see the module documentation).
pub fn check(data: &[u8]) {
    tally(data);
}

/// Runs the input and returns how its deliveries were reported.
pub fn tally(data: &[u8]) -> Tally {
    let f = fixture();
    let me = f.people[0].public();
    let my_nick = nick_or(NAMES[0].as_bytes(), "alice");
    let mut run = Run {
        tally: Tally::default(),
        view: RoomView::new(me, &my_nick, f.room.clone(), RoomState::default()),
        me,
        genuine: HashMap::new(),
        history: Vec::new(),
        accepted: BTreeMap::new(),
    };
    let mut input = Input::new(data);
    for _ in 0..MAX_OPS {
        if input.rest_len() == 0 {
            break;
        }
        match input.u8() % OPS {
            SEAL => run.seal(f, &mut input),
            RAW => {
                let seq = u64::from(input.u16());
                let history = input.u8() % 2 == 1;
                let envelope = input.bytes16().to_vec();
                run.deliver(f, seq, history, envelope);
            }
            REPLAY => {
                let index = usize::from(input.u8());
                let seq = u64::from(input.u16());
                let history = input.u8() % 2 == 1;
                if let Some(envelope) = run.history.get(index % run.history.len().max(1)).cloned() {
                    run.deliver(f, seq, history, envelope);
                }
            }
            MEMBERS => run.apply_all(f, members(&mut input, f)),
            PRESENCE => run.apply_all(f, presence(&mut input, f)),
            JOINED => run.apply_all(f, joined(&mut input, f)),
            _ => run.apply_all(f, other(&mut input)),
        }
    }
    run.tally
}
