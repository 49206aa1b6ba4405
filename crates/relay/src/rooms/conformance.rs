//! The conformance suite: what every `RoomService` backend must do, written once against the
//! trait. `LocalRooms` runs it in `cargo test`; another backend runs it from its own tests with
//! the `conformance` feature:
//!
//! ```ignore
//! chatroom_relay::rooms::conformance::run(|| async { (my_backend().await, guard) }).await;
//! ```
//!
//! `run` gives each check a fresh, empty backend (and keeps the guard the closure returns,
//! e.g. a temporary directory, alive while the check runs); a failing check panics with what
//! broke. Backends must be configured with at least `NEEDED`. Members are driven the way the
//! connection layer drives them: a `Link` per connection, `Admission`s started by the one
//! encoder, and every item a member would be sent decoded and compared.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    join_verifier_v2, seal, Content, ContentKind, EnvelopeHeader, ErrorCode, Identity, JoinRequest, Nick,
    PresenceEvent, PublicIdentity, RelayMessage, RoomName,
};

use super::{ConnectionId, JoinArgs, JoinPolicy, Link, Moderation, Refusal, RoomService};
use crate::outbox::Outbox;

/// The least limits the checks assume: retained history, members and nicknames per room, rooms.
pub const NEEDED: Needed = Needed { history: 8, members: 8, nicknames: 8, rooms: 4 };

/// Limits a backend under test must allow at least.
#[derive(Debug, Clone, Copy)]
pub struct Needed {
    pub history: usize,
    pub members: usize,
    pub nicknames: usize,
    pub rooms: usize,
}

/// Runs every check, each on a fresh backend from `fresh`.
pub async fn run<R, G, F, Fut>(fresh: F)
where
    R: RoomService,
    F: Fn() -> Fut,
    Fut: Future<Output = (R, G)>,
{
    creation(&fresh().await.0).await;
    join_checks(&fresh().await.0).await;
    nick_binding(&fresh().await.0).await;
    bans_and_kicks(&fresh().await.0).await;
    publish_order(&fresh().await.0).await;
    idempotent_resend(&fresh().await.0).await;
    history_after_reconnect(&fresh().await.0).await;
    members_and_leave(&fresh().await.0).await;
    expiry(&fresh().await.0).await;
    group_info_slot(&fresh().await.0).await;
    verifier_rotation(&fresh().await.0).await;
}

/// One connection's view: what the backend sent it.
struct Client {
    outbox: Arc<Outbox>,
}

impl Client {
    /// Every item sent to this connection since the last call, decoded.
    fn received(&self) -> Vec<RelayMessage> {
        self.outbox
            .drain()
            .iter()
            .flat_map(|item| RelayMessage::decode_all(item).expect("the backend sent a malformed item"))
            .collect()
    }

    /// The `seq`s of the `Deliver`s received since the last call, with their history flag.
    fn delivered(&self) -> Vec<(u64, bool)> {
        self.received()
            .into_iter()
            .filter_map(|m| match m {
                RelayMessage::Deliver { seq, history, .. } => Some((seq, history)),
                _ => None,
            })
            .collect()
    }

    fn goodbye(&self) -> Option<ErrorCode> {
        self.received().into_iter().find_map(|m| match m {
            RelayMessage::Goodbye { code, .. } => Some(code),
            _ => None,
        })
    }
}

/// A test identity with its nickname and next counter.
struct Person {
    identity: Identity,
    nick: &'static str,
    counter: u64,
}

impl Person {
    fn new(nick: &'static str) -> Self {
        Self { identity: Identity::generate(), nick, counter: 100 }
    }

    fn public(&self) -> PublicIdentity {
        self.identity.public()
    }

    /// A new envelope for `room` (password `password`), with the next counter.
    fn envelope(&mut self, room: &str, password: u8) -> (EnvelopeHeader, Bytes) {
        self.counter += 1;
        self.envelope_with(room, password, self.counter)
    }

    fn envelope_with(&self, room: &str, password: u8, counter: u64) -> (EnvelopeHeader, Bytes) {
        let content = Content {
            timestamp_ms: 0,
            kind: ContentKind::Text,
            nick: nick(self.nick),
            body: format!("{counter}"),
        };
        let keys = split_master(&[password; 32]);
        let envelope = seal(&keys.message_key, &self.identity, &room_name(room), counter, &content)
            .expect("a test envelope seals");
        (EnvelopeHeader::parse(&envelope).expect("a sealed envelope parses"), Bytes::from(envelope))
    }
}

fn nick(n: &str) -> Nick {
    Nick::new(n).expect("a valid test nickname")
}

fn room_name(n: &str) -> RoomName {
    RoomName::new(n).expect("a valid test room name")
}

/// How a test join is made.
#[derive(Debug, Clone, Copy)]
struct How {
    /// The protocol version of the join (1 or 2).
    version: u8,
    password: u8,
    create: bool,
    history_after: u64,
    policy: JoinPolicy,
}

const JOIN: How = How {
    version: 1,
    password: 1,
    create: false,
    history_after: 0,
    policy: JoinPolicy { crowded: false, room_locked: false },
};
const CREATE: How = How { create: true, ..JOIN };
const JOIN_V2: How = How { version: 2, ..JOIN };
const CREATE_V2: How = How { create: true, ..JOIN_V2 };

fn connection() -> ConnectionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    ConnectionId::new(0xc0f0_ca5e, NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn join_as<R: RoomService>(
    rooms: &R,
    person: &Person,
    nick_used: &str,
    room: &str,
    how: How,
) -> Result<(R::Membership, Client), Refusal> {
    let hh = [7; 32];
    let secret = split_master(&[how.password; 32]).join_secret.clone();
    let request = JoinRequest::new(
        &person.identity,
        &hh,
        room_name(room),
        nick(nick_used),
        secret,
        how.create,
        how.history_after,
    );
    let request = if how.version == 2 { request.for_version_2() } else { request };
    let join = request.verify(&hh).expect("a test join verifies");
    let outbox = Arc::new(Outbox::held(1 << 20, Duration::from_secs(30)));
    let args = JoinArgs {
        join,
        history_after: how.history_after,
        connection: connection(),
        link: Link::new(outbox.clone()),
        policy: how.policy,
    };
    let admission = rooms.join(args, &|| Ok(())).await?;
    let member = super::start(&outbox, admission);
    Ok((member, Client { outbox }))
}

async fn join<R: RoomService>(
    rooms: &R,
    person: &Person,
    room: &str,
    how: How,
) -> Result<(R::Membership, Client), Refusal> {
    join_as(rooms, person, person.nick, room, how).await
}

async fn refused<R: RoomService>(
    rooms: &R,
    person: &Person,
    nick_used: &str,
    room: &str,
    how: How,
) -> ErrorCode {
    match join_as(rooms, person, nick_used, room, how).await {
        Ok(_) => panic!("{nick_used} joined {room}, but should have been refused"),
        Err(refusal) => refusal.code,
    }
}

fn joined_info(messages: &[RelayMessage]) -> (bool, PublicIdentity, u64) {
    match messages.first() {
        Some(RelayMessage::Joined { created, owner, latest_seq, .. }) => (*created, *owner, *latest_seq),
        other => panic!("a join starts with Joined, not {other:?}"),
    }
}

/// Creation: only with `create`, only through the gate, atomically, and a room that exists
/// asks for its own password even when the join asked to create it.
pub async fn creation<R: RoomService>(rooms: &R) {
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    assert_eq!(refused(rooms, &alice, "alice", "r1", JOIN).await, ErrorCode::NoSuchRoom);
    let gate = || Err(Refusal::new(ErrorCode::TooManyAttempts, "no"));
    let hh = [7; 32];
    let secret = split_master(&[1; 32]).join_secret.clone();
    let request = JoinRequest::new(&alice.identity, &hh, room_name("r1"), nick("alice"), secret, true, 0);
    let args = JoinArgs {
        join: request.verify(&hh).expect("verifies"),
        history_after: 0,
        connection: connection(),
        link: Link::new(Arc::new(Outbox::held(1 << 20, Duration::from_secs(30)))),
        policy: JoinPolicy::default(),
    };
    assert_eq!(rooms.join(args, &gate).await.err().map(|r| r.code), Some(ErrorCode::TooManyAttempts));
    assert_eq!(
        refused(rooms, &alice, "alice", "r1", JOIN).await,
        ErrorCode::NoSuchRoom,
        "a refused creation creates nothing"
    );

    let (_a, a) = join(rooms, &alice, "r1", CREATE).await.expect("alice creates r1");
    assert_eq!(joined_info(&a.received()), (true, alice.public(), 0));
    assert_eq!(
        refused(rooms, &bob, "bob", "r1", How { password: 2, ..CREATE }).await,
        ErrorCode::WrongPassword,
        "creating a room that exists checks its password"
    );
    let (_b, b) = join(rooms, &bob, "r1", CREATE).await.expect("bob joins the existing r1");
    assert_eq!(joined_info(&b.received()), (false, alice.public(), 0), "only the first join created it");
}

/// The join checks: password, ban, a locked room, a crowded relay.
pub async fn join_checks<R: RoomService>(rooms: &R) {
    let (owner, alice, stranger) = (Person::new("owner"), Person::new("alice"), Person::new("stranger"));
    let (o, _oc) = join(rooms, &owner, "r2", CREATE).await.expect("created");
    assert_eq!(
        refused(rooms, &alice, "alice", "r2", How { password: 9, ..JOIN }).await,
        ErrorCode::WrongPassword
    );
    let (a, _ac) = join(rooms, &alice, "r2", JOIN).await.expect("alice joins");
    rooms.leave(&a).await;
    let locked = How { policy: JoinPolicy { room_locked: true, crowded: false }, ..JOIN };
    assert_eq!(refused(rooms, &stranger, "stranger", "r2", locked).await, ErrorCode::TooManyAttempts);
    let (a, _ac) = join(rooms, &alice, "r2", locked).await.expect("a bound identity gets into a locked room");
    rooms.leave(&a).await;
    let crowded = How { policy: JoinPolicy { room_locked: false, crowded: true }, ..JOIN };
    assert_eq!(refused(rooms, &stranger, "stranger", "r2", crowded).await, ErrorCode::ServerFull);
    let (a, _ac) = join(rooms, &alice, "r2", crowded).await.expect("a bound identity gets in when crowded");
    rooms.moderate(&o, Moderation::Ban, nick("alice")).await.expect("the owner bans");
    assert_eq!(refused(rooms, &alice, "alice", "r2", JOIN).await, ErrorCode::Banned);
    rooms.leave(&a).await;
    rooms.leave(&o).await;
}

/// Nicknames: bound to the first identity (whatever their case), one per identity.
pub async fn nick_binding<R: RoomService>(rooms: &R) {
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (a, _ac) = join(rooms, &alice, "r3", CREATE).await.expect("created");
    rooms.leave(&a).await;
    assert_eq!(refused(rooms, &bob, "ALICE", "r3", JOIN).await, ErrorCode::NickTaken);
    let (b, _bc) = join(rooms, &bob, "r3", JOIN).await.expect("bob binds bob");
    rooms.leave(&b).await;
    assert_eq!(refused(rooms, &bob, "bobby", "r3", JOIN).await, ErrorCode::NickBound);
    let (a, _ac) =
        join_as(rooms, &alice, "Alice", "r3", JOIN).await.expect("the same nickname in another case");
    rooms.leave(&a).await;
}

/// Kick, ban, unban: the owner's only, never against the owner; the target is closed, every
/// member told.
pub async fn bans_and_kicks<R: RoomService>(rooms: &R) {
    let (owner, alice, bob) = (Person::new("owner"), Person::new("alice"), Person::new("bob"));
    let (o, oc) = join(rooms, &owner, "r4", CREATE).await.expect("created");
    let (a, ac) = join(rooms, &alice, "r4", JOIN).await.expect("alice joins");
    let (_b, bc) = join(rooms, &bob, "r4", JOIN).await.expect("bob joins");
    let refusal = |r: Result<(), Refusal>| r.err().map(|r| r.code);
    assert_eq!(refusal(rooms.moderate(&a, Moderation::Kick, nick("bob")).await), Some(ErrorCode::NotOwner));
    assert_eq!(
        refusal(rooms.moderate(&o, Moderation::Ban, nick("owner")).await),
        Some(ErrorCode::OwnerProtected)
    );
    assert_eq!(
        refusal(rooms.moderate(&o, Moderation::Kick, nick("nobody")).await),
        Some(ErrorCode::NoSuchMember)
    );
    let _ = (oc.received(), ac.received());
    rooms.moderate(&o, Moderation::Kick, nick("bob")).await.expect("the owner kicks");
    assert_eq!(bc.goodbye(), Some(ErrorCode::Kicked));
    let told = |c: &Client, event| {
        c.received().iter().any(|m| matches!(m, RelayMessage::Presence { event: e, .. } if *e == event))
    };
    assert!(told(&ac, PresenceEvent::Kicked), "the others are told of a kick");
    let (b, bc) = join(rooms, &bob, "r4", JOIN).await.expect("a kicked member may come back");
    rooms.moderate(&o, Moderation::Ban, nick("bob")).await.expect("the owner bans");
    assert_eq!(bc.goodbye(), Some(ErrorCode::Banned));
    assert!(told(&ac, PresenceEvent::Banned));
    rooms.leave(&b).await;
    assert_eq!(refused(rooms, &bob, "bob", "r4", JOIN).await, ErrorCode::Banned);
    assert_eq!(refusal(rooms.moderate(&a, Moderation::Unban, nick("bob")).await), Some(ErrorCode::NotOwner));
    rooms.moderate(&o, Moderation::Unban, nick("bob")).await.expect("the owner unbans");
    assert_eq!(
        refusal(rooms.moderate(&o, Moderation::Unban, nick("bob")).await),
        Some(ErrorCode::NoSuchMember)
    );
    let (b, _bc) = join(rooms, &bob, "r4", JOIN).await.expect("an unbanned member may come back");
    for m in [b, a, o] {
        rooms.leave(&m).await;
    }
}

/// Publishing: `seq`s strictly increasing from 1 in call order, each delivered once, in that
/// order, to every member but its sender, only after it is stored.
pub async fn publish_order<R: RoomService>(rooms: &R) {
    let (mut alice, mut bob) = (Person::new("alice"), Person::new("bob"));
    let (a, ac) = join(rooms, &alice, "r5", CREATE).await.expect("created");
    let (b, bc) = join(rooms, &bob, "r5", JOIN).await.expect("bob joins");
    let _ = (ac.received(), bc.received());
    // Published one after another without waiting: stored and numbered in call order.
    let mut pending = Vec::new();
    for i in 0..6 {
        let (header, envelope) = if i % 2 == 0 { alice.envelope("r5", 1) } else { bob.envelope("r5", 1) };
        let member = if i % 2 == 0 { &a } else { &b };
        pending.push(rooms.publish(member, header, envelope));
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.expect("stored"));
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(ac.delivered(), [(2, false), (4, false), (6, false)], "alice gets bob's, not her own");
    assert_eq!(bc.delivered(), [(1, false), (3, false), (5, false)]);
    rooms.leave(&a).await;
    rooms.leave(&b).await;
}

/// Resending: the same counter is answered with the stored `seq` and delivered once; a lower
/// counter never stored is refused.
pub async fn idempotent_resend<R: RoomService>(rooms: &R) {
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (a, _ac) = join(rooms, &alice, "r6", CREATE).await.expect("created");
    let (b, bc) = join(rooms, &bob, "r6", JOIN).await.expect("bob joins");
    let _ = bc.received();
    let (header, envelope) = alice.envelope("r6", 1);
    let first = rooms.publish(&a, header, envelope.clone());
    let again = rooms.publish(&a, header, envelope.clone());
    assert_eq!(first.await.expect("stored"), 1);
    assert_eq!(again.await.expect("a resend while pending is answered"), 1, "with the first copy's seq");
    assert_eq!(rooms.publish(&a, header, envelope).await.expect("a resend once stored"), 1);
    assert_eq!(bc.delivered(), [(1, false)], "delivered once");
    let (low, envelope) = alice.envelope_with("r6", 1, 5);
    let refused = rooms.publish(&a, low, envelope).await;
    assert_eq!(refused.err().map(|r| r.code), Some(ErrorCode::BadEnvelope));
    let (header, envelope) = alice.envelope("r6", 1);
    assert_eq!(rooms.publish(&a, header, envelope).await.expect("the next counter"), 2);
    rooms.leave(&a).await;
    rooms.leave(&b).await;
}

/// Rejoining with `history_after`: the retained envelopes after it, then `HistoryEnd`, then
/// live ones, with no gap and no duplicate.
pub async fn history_after_reconnect<R: RoomService>(rooms: &R) {
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (a, _ac) = join(rooms, &alice, "r7", CREATE).await.expect("created");
    let (b, _bc) = join(rooms, &bob, "r7", JOIN).await.expect("bob joins");
    for _ in 0..3 {
        let (h, e) = alice.envelope("r7", 1);
        rooms.publish(&a, h, e).await.expect("stored");
    }
    rooms.leave(&b).await;
    for _ in 0..3 {
        let (h, e) = alice.envelope("r7", 1);
        rooms.publish(&a, h, e).await.expect("stored");
    }
    let (b, bc) = join(rooms, &bob, "r7", How { history_after: 3, ..JOIN }).await.expect("bob rejoins");
    // Sent after the join, before bob's connection read anything: live, after the replay.
    let (h, e) = alice.envelope("r7", 1);
    rooms.publish(&a, h, e).await.expect("stored");
    let got = bc.received();
    assert_eq!(joined_info(&got).2, 6, "Joined reports the latest stored seq");
    let order: Vec<String> = got
        .iter()
        .filter_map(|m| match m {
            RelayMessage::Deliver { seq, history: true, .. } => Some(format!("{seq} replayed")),
            RelayMessage::Deliver { seq, history: false, .. } => Some(format!("{seq} live")),
            RelayMessage::HistoryEnd { latest_seq } => Some(format!("end at {latest_seq}")),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["4 replayed", "5 replayed", "6 replayed", "end at 6", "7 live"]);
    let (c, cc) = join(rooms, &Person::new("carol"), "r7", JOIN).await.expect("carol joins");
    let all: Vec<u64> = cc.delivered().into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(all, [1, 2, 3, 4, 5, 6, 7], "history_after 0: everything retained");
    for m in [a, b, c] {
        rooms.leave(&m).await;
    }
}

/// Members and leaving: the list is who is connected, by nickname; a leave is announced; a
/// connection replaced by a newer one of the same identity leaves without effect.
pub async fn members_and_leave<R: RoomService>(rooms: &R) {
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (a, ac) = join(rooms, &alice, "r8", CREATE).await.expect("created");
    let (b, _bc) = join(rooms, &bob, "r8", JOIN).await.expect("bob joins");
    let nicks =
        |list: Vec<chatroom_crypto::Member>| list.into_iter().map(|m| m.nick.to_string()).collect::<Vec<_>>();
    assert_eq!(nicks(rooms.members(&a).await), ["alice", "bob"]);
    let (b2, _b2c) = join(rooms, &bob, "r8", JOIN).await.expect("bob again, from another connection");
    let _ = ac.received();
    rooms.leave(&b).await;
    assert_eq!(
        nicks(rooms.members(&a).await),
        ["alice", "bob"],
        "the replaced connection's leave changes nothing"
    );
    assert!(!ac
        .received()
        .iter()
        .any(|m| matches!(m, RelayMessage::Presence { event: PresenceEvent::Left, .. })));
    rooms.leave(&b2).await;
    assert_eq!(nicks(rooms.members(&a).await), ["alice"]);
    assert!(ac
        .received()
        .iter()
        .any(|m| matches!(m, RelayMessage::Presence { event: PresenceEvent::Left, .. })));
    rooms.leave(&a).await;
}

/// Expiry: never a room with members; an idle one goes with everything stored about it.
pub async fn expiry<R: RoomService>(rooms: &R) {
    let alice = Person::new("alice");
    let (a, _ac) = join(rooms, &alice, "r9", CREATE).await.expect("created");
    assert_eq!(rooms.expire(Duration::ZERO).await, 0, "a room with members stays");
    rooms.leave(&a).await;
    // Idle time is counted in the backend's clock (whole seconds for SQLite): bounded retries.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rooms.expire(Duration::ZERO).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "an idle room is expired within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused(rooms, &alice, "alice", "r9", JOIN).await, ErrorCode::NoSuchRoom);
}

/// The `after_seq`s of the `GroupInfoStored` items among `messages`.
fn group_info_notices(messages: &[RelayMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            RelayMessage::GroupInfoStored { after_seq } => Some(*after_seq),
            _ => None,
        })
        .collect()
}

/// The GroupInfo slot (protocol version 2): empty at first; a put is stored only if its
/// `after_seq` is at least the stored one's and at most the room's latest `seq`; the other
/// members are told, the uploader is not; a version 2 join is told the stored `after_seq`
/// right after `Joined`, a version 1 join is not; the slot goes with its room.
pub async fn group_info_slot<R: RoomService>(rooms: &R) {
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (a, ac) = join(rooms, &alice, "r10", CREATE_V2).await.expect("created");
    let got = ac.received();
    assert_eq!(group_info_notices(&got), [0], "a version 2 join is told none is stored: {got:?}");
    assert_eq!(code(rooms.group_info(&a).await), Some(ErrorCode::NoGroupInfo));
    let ahead = rooms.put_group_info(&a, 1, Bytes::from_static(b"ahead")).await;
    assert_eq!(code(ahead), Some(ErrorCode::StaleGroupInfo), "after a seq the room has not reached");
    assert_eq!(rooms.put_group_info(&a, 0, Bytes::from_static(b"epoch 0")).await.ok(), Some(0));
    let (b, bc) = join(rooms, &bob, "r10", JOIN_V2).await.expect("bob joins");
    assert_eq!(group_info_notices(&bc.received()), [0]);
    assert_eq!(rooms.group_info(&b).await.ok(), Some((0, Bytes::from_static(b"epoch 0"))));

    let (header, envelope) = alice.envelope("r10", 1);
    assert_eq!(rooms.publish(&a, header, envelope).await.expect("stored"), 1);
    let _ = (ac.received(), bc.received());
    assert_eq!(rooms.put_group_info(&a, 1, Bytes::from_static(b"epoch 1")).await.ok(), Some(1));
    assert_eq!(group_info_notices(&ac.received()), Vec::<u64>::new(), "the uploader learns from its answer");
    // Another node's notice may take a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut told = Vec::new();
    while told.is_empty() && tokio::time::Instant::now() < deadline {
        told = group_info_notices(&bc.received());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(told, [1], "the other members are told");
    let older = rooms.put_group_info(&b, 0, Bytes::from_static(b"epoch 0 again")).await;
    assert_eq!(code(older), Some(ErrorCode::StaleGroupInfo), "older than the stored one");
    let same = rooms.put_group_info(&b, 1, Bytes::from_static(b"epoch 1, b")).await;
    assert_eq!(same.ok(), Some(1), "as new as the stored one");
    assert_eq!(rooms.group_info(&a).await.ok(), Some((1, Bytes::from_static(b"epoch 1, b"))));
    let (c, cc) = join(rooms, &Person::new("carol"), "r10", JOIN_V2).await.expect("carol joins");
    assert_eq!(group_info_notices(&cc.received()), [1], "a later join is told the stored one");
    let (d, dc) = join(rooms, &Person::new("dave"), "r12", CREATE).await.expect("a version 1 room");
    assert_eq!(group_info_notices(&dc.received()), Vec::<u64>::new(), "a version 1 join is not told");
    for m in [a, b, c, d] {
        rooms.leave(&m).await;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut expired = 0;
    while expired < 2 {
        expired += rooms.expire(Duration::ZERO).await;
        assert!(tokio::time::Instant::now() < deadline, "idle rooms are expired within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, ac) = join(rooms, &alice, "r10", CREATE_V2).await.expect("created again");
    assert_eq!(group_info_notices(&ac.received()), [0], "the slot went with the room");
    assert_eq!(code(rooms.group_info(&a).await), Some(ErrorCode::NoGroupInfo));
    rooms.leave(&a).await;
}

/// The owner's password rotation (protocol version 2): only the owner may replace the join
/// verifier; later joins need the new password; members already in stay.
pub async fn verifier_rotation<R: RoomService>(rooms: &R) {
    let (alice, mut bob) = (Person::new("alice"), Person::new("bob"));
    let (a, _ac) = join(rooms, &alice, "r11", CREATE_V2).await.expect("created");
    let (b, _bc) = join(rooms, &bob, "r11", JOIN_V2).await.expect("bob joins");
    let new = join_verifier_v2(&split_master(&[2; 32]).join_secret).0;
    let refused = rooms.set_verifier(&b, new).await;
    assert_eq!(refused.err().map(|r| r.code), Some(ErrorCode::NotOwner));
    let carol = Person::new("carol");
    let (c, _cc) = join(rooms, &carol, "r11", JOIN_V2).await.expect("the old password still admits");
    rooms.leave(&c).await;

    rooms.set_verifier(&a, new).await.expect("the owner replaces it");
    assert_eq!(refused_v2(rooms, &carol, "r11", 1).await, ErrorCode::WrongPassword, "the old password");
    let (c, _cc) = join(rooms, &carol, "r11", How { password: 2, ..JOIN_V2 }).await.expect("the new one");
    let (header, envelope) = bob.envelope("r11", 1);
    assert_eq!(rooms.publish(&b, header, envelope).await.expect("bob is still in"), 1);
    for m in [a, b, c] {
        rooms.leave(&m).await;
    }
}

fn code<T>(result: Result<T, Refusal>) -> Option<ErrorCode> {
    result.err().map(|r| r.code)
}

async fn refused_v2<R: RoomService>(rooms: &R, person: &Person, room: &str, password: u8) -> ErrorCode {
    match join(rooms, person, room, How { password, ..JOIN_V2 }).await {
        Ok(_) => {
            panic!("{} joined {room} with password {password}, but should have been refused", person.nick)
        }
        Err(refusal) => refusal.code,
    }
}
