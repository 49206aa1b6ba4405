//! The receive side of a room, without I/O: duplicate and replay checks on deliveries, member
//! pins, the member list, and the counter for the next envelope. Fed relay messages by the
//! driver (or a test), it returns the events to report.

use std::collections::BTreeSet;

use chatroom_crypto::{
    open, KdfParams, Member, MessageKey, Nick, Opened, PresenceEvent, PublicIdentity, RoomName,
};

use super::connection::JoinedInfo;
use super::event::{ChatMessage, Event, MemberInfo, Rejected, Whois};
use crate::listed::ListedMembers;
use crate::state::RoomState;
use crate::trust::{PinCheck, MAX_PINS};

/// How far ahead of the counter used the state file's `last_counter` reserves: ten seconds of
/// microseconds.
pub const COUNTER_RESERVE: u64 = 10_000_000;

pub use crate::listed::MAX_MEMBERS;

/// What a member knows about its room.
#[derive(Debug)]
pub struct RoomView {
    me: PublicIdentity,
    room: RoomName,
    state: RoomState,
    dirty: bool,
    /// The last counter used (the state holds a reservation above it).
    last_used: u64,
    /// Our counters handed out and not yet answered by the relay (at most the outbox's size).
    /// Such an envelope arriving in history was stored before its `Ack` reached us: it is the
    /// answer, not a message to show.
    awaiting: BTreeSet<u64>,
    owner: Option<PublicIdentity>,
    members: ListedMembers,
    /// On start, already seen messages in (after, up to] are recent context (`Event::Context`),
    /// each at most once and in increasing order; `None` once the first history ended.
    context: Option<(u64, u64)>,
}

impl RoomView {
    /// A view for `me` (using `my_nick`) in `room`, from persisted `state`.
    pub fn new(me: PublicIdentity, my_nick: &Nick, room: RoomName, mut state: RoomState) -> Self {
        let dirty = state.pins.check(my_nick, &me) == PinCheck::New;
        let last_used = state.last_counter;
        Self {
            me,
            room,
            state,
            dirty,
            last_used,
            awaiting: BTreeSet::new(),
            owner: None,
            members: ListedMembers::default(),
            context: None,
        }
    }

    /// Records the key-derivation parameters the room was joined with.
    pub fn set_kdf(&mut self, kdf: KdfParams) {
        if self.state.kdf != Some(kdf) {
            self.state.kdf = Some(kdf);
            self.dirty = true;
        }
    }

    /// The history replayed after the first join ended: no more recent context.
    pub fn end_context(&mut self) {
        self.context = None;
    }

    /// Messages above `seq` and up to the last seen are shown again as recent context.
    pub fn set_context_after(&mut self, seq: u64) {
        self.context = (seq < self.state.last_seq).then_some((seq, self.state.last_seq));
    }

    /// An already seen message fetched again as recent context: shown only when it opens, and
    /// its nickname is pinned to its signer; the state (last seen, counters, pins) is untouched.
    fn context(&mut self, seq: u64, opened: Opened) -> Option<Event> {
        let (after, upto) = self.context?;
        if seq <= after || seq > upto {
            return None;
        }
        self.context = Some((seq, upto));
        if self.state.pins.get(&opened.content.nick).copied() != Some(opened.sender) {
            return None;
        }
        Some(Event::Context(ChatMessage {
            seq,
            history: true,
            sender: opened.sender,
            from_me: opened.sender == self.me,
            nick: opened.content.nick,
            kind: opened.content.kind,
            body: opened.content.body,
            timestamp_ms: opened.content.timestamp_ms,
        }))
    }

    /// The state to persist.
    pub fn state(&self) -> &RoomState {
        &self.state
    }

    /// Whether the state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The last sequence number processed: what to ask history after on the next join.
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }

    /// The current member list.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members
            .list()
            .iter()
            .map(|m| MemberInfo {
                nick: m.nick.clone(),
                identity: m.identity,
                owner: Some(m.identity) == self.owner,
                me: m.identity == self.me,
            })
            .collect()
    }

    /// The counter for the next envelope: above every counter used or seen from this
    /// identity, and at least the current time in microseconds.
    ///
    /// The state records a reservation `COUNTER_RESERVE` ahead of the counter used, so that
    /// most sends need no write of the state file (which in a large room is megabytes, synced
    /// to disk) while a restart still never reuses a counter.
    pub fn next_counter(&mut self, now_us: u64) -> u64 {
        let seen = self.state.highest(&self.me);
        let counter = now_us.max(self.last_used.saturating_add(1)).max(seen.saturating_add(1));
        self.last_used = counter;
        self.awaiting.insert(counter);
        if counter > self.state.last_counter {
            self.state.last_counter = counter.saturating_add(COUNTER_RESERVE);
            self.dirty = true;
        }
        counter
    }

    /// A join succeeded. A relay whose latest sequence number is below the cursor lost
    /// messages (a restored backup, a reset): that is reported once and the cursor moves back
    /// to the relay's, so what it stores next is fetched; messages are still told apart by
    /// their signed counters, so nothing already shown is shown again.
    pub fn on_joined(&mut self, info: &JoinedInfo) -> Vec<Event> {
        self.owner = Some(info.owner);
        self.members.restart();
        let last = self.state.last_seq;
        if last > info.latest_seq {
            self.state.last_seq = info.latest_seq;
            self.dirty = true;
            return vec![Event::SequenceWentBack { last_seen: last, relay_latest: info.latest_seq }];
        }
        if last > 0 && info.oldest_seq > last.saturating_add(1) {
            return vec![Event::HistoryGap { from: last + 1, to: info.oldest_seq - 1 }];
        }
        Vec::new()
    }

    /// The relay acknowledged our envelope `counter` as `seq`: it will not be shown when
    /// history replays it, and the cursor moves past it (so a member who only sends still
    /// learns of a history gap).
    pub fn on_own_ack(&mut self, counter: u64, seq: u64) {
        self.awaiting.remove(&counter);
        self.state.accept(self.me, counter);
        self.state.last_seq = self.state.last_seq.max(seq);
        self.dirty = true;
    }

    /// The relay refused our envelope `counter` (or it was never sent): no answer will come.
    pub fn on_own_refused(&mut self, counter: u64) {
        self.awaiting.remove(&counter);
    }

    /// A `Deliver`. Messages are told apart by what is signed, the sender and its counter; the
    /// relay's `seq` is only the cursor for the next join, advanced past envelopes that
    /// verified. A counter already accepted is dropped silently when it comes from history or
    /// below the cursor (a harmless duplicate) and rejected otherwise (the relay replays or
    /// reorders); anything that fails verification, or claims a nickname pinned to another
    /// identity, is rejected and changes nothing.
    pub fn on_deliver(
        &mut self,
        key: &MessageKey,
        seq: u64,
        history: bool,
        envelope: &[u8],
    ) -> Option<Event> {
        let Ok(opened) = open(key, &self.room, envelope) else {
            return Some(Event::Rejected(Rejected::Unverified { seq }));
        };
        if opened.sender == self.me && self.awaiting.remove(&opened.counter) {
            // Stored before the connection dropped, so its `Ack` never came: the resend will
            // be answered with this same seq; the message itself is not news to its sender.
            self.state.accept(self.me, opened.counter);
            self.state.last_seq = self.state.last_seq.max(seq);
            self.dirty = true;
            return None;
        }
        let highest = self.state.highest(&opened.sender);
        if opened.counter <= highest {
            if history {
                // Already seen: shown again only as recent context after a restart.
                return self.context(seq, opened);
            }
            if seq <= self.state.last_seq {
                return None;
            }
            return Some(Event::Rejected(Rejected::Replayed {
                seq,
                sender: opened.sender,
                counter: opened.counter,
                highest,
            }));
        }
        self.state.accept(opened.sender, opened.counter);
        self.state.last_seq = self.state.last_seq.max(seq);
        self.dirty = true;
        let message = ChatMessage {
            seq,
            history,
            sender: opened.sender,
            from_me: opened.sender == self.me,
            nick: opened.content.nick,
            kind: opened.content.kind,
            body: opened.content.body,
            timestamp_ms: opened.content.timestamp_ms,
        };
        let pins = &mut self.state.pins;
        match pins.check(&message.nick, &message.sender) {
            PinCheck::Same | PinCheck::New => Some(Event::Message(message)),
            PinCheck::Changed { pinned } => Some(Event::Rejected(Rejected::NickMismatch { message, pinned })),
            PinCheck::Full => Some(Event::Rejected(Rejected::Unpinned { message, max: MAX_PINS })),
        }
    }

    /// A pinned nickname other than `nick` that looks like it (`AIice` and `alice`).
    pub fn look_alike(&self, nick: &Nick) -> Option<String> {
        self.state.pins.look_alike(nick).map(str::to_owned)
    }

    /// What is known of `nick`: the key its signed messages were pinned to, and the key the
    /// relay lists it with (a claim).
    pub fn whois(&self, nick: &Nick) -> Whois {
        Whois {
            nick: nick.clone(),
            pinned: self.state.pins.get(nick).copied(),
            listed: self.members.key_of(nick),
            look_alike: self.look_alike(nick),
        }
    }

    /// What the relay claims about `nick` and `identity`, compared with the pins (which it
    /// never changes): a mismatch is reported.
    fn compare(state: &RoomState, nick: &Nick, identity: &PublicIdentity, out: &mut Vec<Event>) {
        if let Some(PinCheck::Changed { pinned }) = state.pins.compare(nick, identity) {
            out.push(Event::KeyChanged { nick: nick.clone(), pinned, seen: *identity });
        }
    }

    /// A `Members` item; the list is reported once the last item (`more == false`) arrives.
    /// It is the relay's claim: it pins nothing.
    pub fn on_members(&mut self, more: bool, members: Vec<Member>) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(list) = self.members.on_part(more, members) {
            for m in list {
                Self::compare(&self.state, &m.nick, &m.identity, &mut out);
            }
            out.push(Event::Members(self.members()));
        }
        out
    }

    /// A `Presence` item: the relay's claim, which pins nothing.
    pub fn on_presence(&mut self, event: PresenceEvent, nick: Nick, identity: PublicIdentity) -> Vec<Event> {
        let mut out = Vec::new();
        Self::compare(&self.state, &nick, &identity, &mut out);
        self.members.on_presence(event, &nick, identity);
        out.push(Event::Presence { event, nick, identity });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_crypto::{internal::split_master, seal, Content, ContentKind, Identity};

    struct Fixture {
        key: MessageKey,
        room: RoomName,
        alice: Identity,
        bob: Identity,
        view: RoomView,
    }

    fn fixture() -> Fixture {
        let keys = split_master(&[9; 32]);
        let room = RoomName::new("general").unwrap();
        let alice = Identity::generate();
        let bob = Identity::generate();
        let view =
            RoomView::new(alice.public(), &Nick::new("alice").unwrap(), room.clone(), RoomState::default());
        Fixture { key: keys.message_key.clone(), room, alice, bob, view }
    }

    fn envelope(f: &Fixture, who: &Identity, nick: &str, counter: u64, body: &str) -> Vec<u8> {
        let content = Content {
            timestamp_ms: 1,
            kind: ContentKind::Text,
            nick: Nick::new(nick).unwrap(),
            body: body.into(),
        };
        seal(&f.key, who, &f.room, counter, &content).unwrap()
    }

    fn body_of(e: Option<Event>) -> String {
        match e {
            Some(Event::Message(m)) => m.body,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn duplicates_by_seq_are_dropped_silently() {
        let mut f = fixture();
        let e1 = envelope(&f, &f.bob, "bob", 10, "one");
        let key = f.key.clone();
        assert_eq!(body_of(f.view.on_deliver(&key, 1, true, &e1)), "one");
        assert!(f.view.on_deliver(&key, 1, true, &e1).is_none());
        assert!(f.view.on_deliver(&key, 0, false, &e1).is_none());
        assert_eq!(f.view.last_seq(), 1);
        assert!(f.view.take_dirty());
    }

    #[test]
    fn seen_messages_come_back_as_context_once_on_start_and_change_nothing() {
        let mut f = fixture();
        let key = f.key.clone();
        let (e1, e2) = (envelope(&f, &f.bob, "bob", 10, "one"), envelope(&f, &f.bob, "bob", 11, "two"));
        body_of(f.view.on_deliver(&key, 1, false, &e1));
        body_of(f.view.on_deliver(&key, 2, false, &e2));
        let saved = f.view.state().clone();
        // Started again with the saved state, asking for history after seq 0 for context.
        let mut view = RoomView::new(f.alice.public(), &Nick::new("alice").unwrap(), f.room.clone(), saved);
        view.set_context_after(0);
        match view.on_deliver(&key, 2, true, &e2) {
            Some(Event::Context(m)) => assert_eq!((m.body.as_str(), m.history), ("two", true)),
            other => panic!("expected context, got {other:?}"),
        }
        assert!(view.on_deliver(&key, 2, false, &e2).is_none(), "only replayed history is context");
        assert!(view.on_deliver(&key, 2, true, &e2).is_none(), "each seq once");
        assert!(view.on_deliver(&key, 1, true, &e1).is_none(), "in increasing order");
        assert_eq!(view.last_seq(), 2);
        assert!(!view.take_dirty(), "context changes no state");
        // An envelope never seen is no context, whatever its seq: here a forgery under a
        // nickname pinned to another key, reported and not shown.
        let forged = envelope(&f, &Identity::generate(), "bob", 12, "not bob");
        assert!(matches!(
            view.on_deliver(&key, 1, true, &forged),
            Some(Event::Rejected(Rejected::NickMismatch { .. }))
        ));
        view.end_context();
        assert!(view.on_deliver(&key, 2, true, &e2).is_none(), "after the first history, duplicates again");
        assert_eq!(
            body_of(view.on_deliver(&key, 3, true, &envelope(&f, &f.bob, "bob", 12, "three"))),
            "three",
            "new messages as before: the counters were kept"
        );
    }

    #[test]
    fn a_replayed_counter_under_a_new_seq_is_rejected() {
        let mut f = fixture();
        let key = f.key.clone();
        let e1 = envelope(&f, &f.bob, "bob", 10, "one");
        let e0 = envelope(&f, &f.bob, "bob", 9, "older");
        assert_eq!(body_of(f.view.on_deliver(&key, 1, false, &e1)), "one");
        for (seq, env) in [(2, &e1), (3, &e0)] {
            match f.view.on_deliver(&key, seq, false, env) {
                Some(Event::Rejected(Rejected::Replayed { seq: s, highest: 10, .. })) => assert_eq!(s, seq),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            body_of(f.view.on_deliver(&key, 4, false, &envelope(&f, &f.bob, "bob", 11, "two"))),
            "two"
        );
    }

    #[test]
    fn forged_or_foreign_envelopes_are_unverified_and_record_nothing() {
        let mut f = fixture();
        let key = f.key.clone();
        let mut env = envelope(&f, &f.bob, "bob", 10, "one");
        let last = env.len() - 1;
        env[last] ^= 1;
        assert!(matches!(
            f.view.on_deliver(&key, 1, false, &env),
            Some(Event::Rejected(Rejected::Unverified { seq: 1 }))
        ));
        let other_key = split_master(&[1; 32]).message_key.clone();
        let good = envelope(&f, &f.bob, "bob", 10, "one");
        assert!(matches!(
            f.view.on_deliver(&other_key, 2, false, &good),
            Some(Event::Rejected(Rejected::Unverified { .. }))
        ));
        assert!(matches!(
            f.view.on_deliver(&key, 3, false, &[1, 2, 3]),
            Some(Event::Rejected(Rejected::Unverified { .. }))
        ));
        assert!(f.view.state().counters.is_empty());
        assert_eq!(body_of(f.view.on_deliver(&key, 4, false, &good)), "one");
    }

    #[test]
    fn a_nickname_claimed_by_another_key_is_never_shown_as_that_member() {
        let mut f = fixture();
        let key = f.key.clone();
        let mallory = Identity::generate();
        assert_eq!(body_of(f.view.on_deliver(&key, 1, false, &envelope(&f, &f.bob, "bob", 5, "hi"))), "hi");
        match f.view.on_deliver(&key, 2, false, &envelope(&f, &mallory, "Bob", 5, "send money")) {
            Some(Event::Rejected(Rejected::NickMismatch { message, pinned })) => {
                assert_eq!(pinned, f.bob.public());
                assert_eq!(message.sender, mallory.public());
            }
            other => panic!("{other:?}"),
        }
        // A known key signing under a free nickname pins that one too: the signature binds them.
        assert_eq!(
            body_of(f.view.on_deliver(&key, 4, false, &envelope(&f, &f.bob, "robert", 7, "it is me"))),
            "it is me"
        );
        assert_eq!(f.view.state().pins.get(&Nick::new("robert").unwrap()), Some(&f.bob.public()));
        // Our own nickname is pinned to our identity from the start.
        assert!(matches!(
            f.view.on_deliver(&key, 6, false, &envelope(&f, &mallory, "alice", 6, "x")),
            Some(Event::Rejected(Rejected::NickMismatch { .. }))
        ));
    }

    #[test]
    fn presence_with_a_changed_key_is_reported_loudly_and_pins_hold() {
        let mut f = fixture();
        let key = f.key.clone();
        let bob = Nick::new("bob").unwrap();
        let imposter = Identity::generate().public();
        // Announced before any signed message: a claim, nothing pinned, nothing to compare.
        let events = f.view.on_presence(PresenceEvent::Joined, bob.clone(), imposter);
        assert!(matches!(events.as_slice(), [Event::Presence { .. }]));
        assert_eq!(f.view.state().pins.get(&bob), None);
        assert_eq!(body_of(f.view.on_deliver(&key, 1, false, &envelope(&f, &f.bob, "bob", 5, "hi"))), "hi");
        let events = f.view.on_presence(PresenceEvent::Joined, bob.clone(), imposter);
        assert!(
            matches!(&events[0], Event::KeyChanged { pinned, seen, .. } if *pinned == f.bob.public() && *seen == imposter)
        );
        assert_eq!(f.view.state().pins.get(&bob), Some(&f.bob.public()));
        let events = f.view.on_presence(PresenceEvent::Joined, bob.clone(), f.bob.public());
        assert!(matches!(events.as_slice(), [Event::Presence { .. }]));
    }

    #[test]
    fn a_fake_member_list_pins_nothing_and_impersonation_is_still_caught() {
        let mut f = fixture();
        let key = f.key.clone();
        let mallory = Identity::generate();
        let fake: Vec<Member> = (0..MAX_MEMBERS)
            .map(|i| {
                let nick = if i == 0 { "bob".to_owned() } else { format!("m{i}") };
                Member { nick: Nick::new(&nick).unwrap(), identity: mallory.public() }
            })
            .collect();
        let events = f.view.on_members(false, fake);
        assert!(matches!(events.as_slice(), [Event::Members(list)] if list.len() == MAX_MEMBERS));
        assert_eq!(f.view.state().pins.len(), 1, "only our own nickname");
        assert_eq!(body_of(f.view.on_deliver(&key, 1, false, &envelope(&f, &f.bob, "bob", 5, "hi"))), "hi");
        assert!(matches!(
            f.view.on_deliver(&key, 2, false, &envelope(&f, &mallory, "bob", 6, "send money")),
            Some(Event::Rejected(Rejected::NickMismatch { .. }))
        ));
        let who = f.view.whois(&Nick::new("BOB").unwrap());
        assert_eq!((who.pinned, who.listed), (Some(f.bob.public()), Some(mallory.public())));
    }

    #[test]
    fn a_full_pin_store_fails_closed_and_look_alikes_are_named() {
        let mut f = fixture();
        let key = f.key.clone();
        assert_eq!(body_of(f.view.on_deliver(&key, 1, false, &envelope(&f, &f.bob, "bob", 5, "hi"))), "hi");
        let mallory = Identity::generate();
        assert_eq!(
            body_of(f.view.on_deliver(&key, 2, false, &envelope(&f, &mallory, "B0b", 5, "it is me"))),
            "it is me"
        );
        assert_eq!(f.view.look_alike(&Nick::new("B0b").unwrap()).as_deref(), Some("bob"));
        assert_eq!(f.view.look_alike(&Nick::new("carol").unwrap()), None);
        for i in f.view.state().pins.len()..MAX_PINS {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            f.view.state.pins.set(&Nick::new(&format!("n{i}")).unwrap(), PublicIdentity(id));
        }
        let carol = Identity::generate();
        assert!(matches!(
            f.view.on_deliver(&key, 3, false, &envelope(&f, &carol, "carol", 5, "hello")),
            Some(Event::Rejected(Rejected::Unpinned { max: MAX_PINS, .. }))
        ));
        assert_eq!(
            body_of(f.view.on_deliver(&key, 4, false, &envelope(&f, &f.bob, "bob", 6, "still"))),
            "still"
        );
    }

    #[test]
    fn member_lists_are_assembled_and_flagged() {
        let mut f = fixture();
        f.view.on_joined(&JoinedInfo { created: false, owner: f.bob.public(), latest_seq: 0, oldest_seq: 0 });
        let m = |n: &str, id: &Identity| Member { nick: Nick::new(n).unwrap(), identity: id.public() };
        assert!(f.view.on_members(true, vec![m("bob", &f.bob)]).is_empty());
        let events = f.view.on_members(false, vec![m("alice", &f.alice)]);
        match events.as_slice() {
            [Event::Members(list)] => {
                assert_eq!(list.len(), 2);
                assert!(list[0].owner && !list[0].me);
                assert!(list[1].me && !list[1].owner);
            }
            other => panic!("{other:?}"),
        }
        f.view.on_presence(PresenceEvent::Left, Nick::new("BOB").unwrap(), f.bob.public());
        assert_eq!(f.view.members().len(), 1);
    }

    #[test]
    fn counters_increase_past_time_last_use_and_history() {
        let mut f = fixture();
        let key = f.key.clone();
        assert_eq!(f.view.next_counter(100), 100);
        assert!(f.view.take_dirty());
        assert_eq!(f.view.next_counter(50), 101);
        assert!(!f.view.take_dirty(), "within the reservation: nothing to write");
        assert_eq!(f.view.state().last_counter, 100 + COUNTER_RESERVE);
        // A restart from the saved state never reuses a counter.
        let mut again = RoomView::new(
            f.alice.public(),
            &Nick::new("alice").unwrap(),
            f.room.clone(),
            f.view.state().clone(),
        );
        assert_eq!(again.next_counter(50), 101 + COUNTER_RESERVE);
        let mine = envelope(&f, &f.alice, "alice", 5000, "from another device");
        assert!(matches!(f.view.on_deliver(&key, 1, true, &mine), Some(Event::Message(m)) if m.from_me));
        assert_eq!(f.view.next_counter(200), 5001);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_deliveries_never_panic_and_never_show_a_message(
            envelopes in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), 1..8),
        ) {
            let mut f = fixture();
            let key = f.key.clone();
            for (i, env) in envelopes.iter().enumerate() {
                let event = f.view.on_deliver(&key, i as u64 + 1, false, env);
                let is_unverified = matches!(event, Some(Event::Rejected(Rejected::Unverified { .. })));
                proptest::prop_assert!(is_unverified);
            }
            proptest::prop_assert!(f.view.state().counters.is_empty());
        }
    }

    #[test]
    fn an_own_envelope_stored_before_its_ack_arrived_is_the_answer_not_a_message() {
        let mut f = fixture();
        let key = f.key.clone();
        let counter = f.view.next_counter(1_000);
        let refused = f.view.next_counter(1_001);
        f.view.on_own_refused(refused);
        let stored = envelope(&f, &f.alice, "alice", counter, "sent, unanswered");
        // The connection dropped before the Ack: history brings the envelope back first.
        assert!(f.view.on_deliver(&key, 4, true, &stored).is_none());
        assert_eq!(f.view.state().last_seq, 4, "the cursor moves past it");
        assert_eq!(f.view.state().highest(&f.alice.public()), counter);
        // The resend is answered with the same seq afterwards.
        f.view.on_own_ack(counter, 4);
        // A refused counter, or one from another device, is not an answer: it is shown.
        let other = envelope(&f, &f.alice, "alice", refused, "refused here, stored by another device");
        assert!(matches!(f.view.on_deliver(&key, 5, true, &other), Some(Event::Message(m)) if m.from_me));
        // Someone else's envelope with one of our awaited counters is shown as theirs.
        let awaited = f.view.next_counter(2_000);
        let bobs = envelope(&f, &f.bob, "bob", awaited, "same counter, other sender");
        assert!(matches!(f.view.on_deliver(&key, 6, false, &bobs), Some(Event::Message(m)) if !m.from_me));
    }

    #[test]
    fn a_gap_beyond_retention_is_reported() {
        let mut f = fixture();
        let key = f.key.clone();
        f.view.on_deliver(&key, 3, false, &envelope(&f, &f.bob, "bob", 1, "x"));
        let events = f.view.on_joined(&JoinedInfo {
            created: false,
            owner: f.bob.public(),
            latest_seq: 20,
            oldest_seq: 10,
        });
        assert!(matches!(events.as_slice(), [Event::HistoryGap { from: 4, to: 9 }]));
    }

    fn joined(f: &Fixture, latest_seq: u64, oldest_seq: u64) -> JoinedInfo {
        JoinedInfo { created: false, owner: f.bob.public(), latest_seq, oldest_seq }
    }

    #[test]
    fn own_acknowledged_messages_are_not_shown_again_and_count_for_gaps() {
        let mut f = fixture();
        let key = f.key.clone();
        f.view.on_own_ack(500, 1);
        f.view.on_own_ack(501, 3);
        assert_eq!(f.view.last_seq(), 3);
        // History replayed by a relay that did not get our cursor: our own envelopes are silent.
        for (seq, counter) in [(1, 500), (3, 501)] {
            let mine = envelope(&f, &f.alice, "alice", counter, "mine");
            assert!(f.view.on_deliver(&key, seq, true, &mine).is_none(), "seq {seq}");
        }
        // Bob's message between them still shows, although its seq is below the cursor.
        assert_eq!(body_of(f.view.on_deliver(&key, 2, false, &envelope(&f, &f.bob, "bob", 7, "b1"))), "b1");
        assert_eq!(f.view.last_seq(), 3);
        let events = f.view.on_joined(&joined(&f, 20, 10));
        assert!(matches!(events.as_slice(), [Event::HistoryGap { from: 4, to: 9 }]), "{events:?}");
    }

    #[test]
    fn a_poisoned_delivery_moves_nothing_and_later_messages_show() {
        let mut f = fixture();
        let key = f.key.clone();
        assert_eq!(body_of(f.view.on_deliver(&key, 1, false, &envelope(&f, &f.bob, "bob", 5, "one"))), "one");
        assert!(matches!(
            f.view.on_deliver(&key, u64::MAX - 1, false, &[0xff; 200]),
            Some(Event::Rejected(Rejected::Unverified { .. }))
        ));
        assert_eq!(f.view.last_seq(), 1, "an unverified envelope does not move the cursor");
        assert_eq!(body_of(f.view.on_deliver(&key, 2, false, &envelope(&f, &f.bob, "bob", 6, "two"))), "two");
        // A genuine envelope under a made-up huge seq moves the cursor, but the next join
        // notices the relay is behind it and resynchronises.
        assert_eq!(
            body_of(f.view.on_deliver(&key, u64::MAX - 1, false, &envelope(&f, &f.bob, "bob", 7, "three"))),
            "three"
        );
        let events = f.view.on_joined(&joined(&f, 3, 1));
        assert!(
            matches!(events.as_slice(), [Event::SequenceWentBack { last_seen, relay_latest: 3 }] if *last_seen == u64::MAX - 1),
            "{events:?}"
        );
        assert_eq!(f.view.last_seq(), 3);
        assert_eq!(
            body_of(f.view.on_deliver(&key, 4, false, &envelope(&f, &f.bob, "bob", 8, "four"))),
            "four"
        );
    }

    #[test]
    fn a_relay_that_went_back_is_reported_once_and_new_messages_still_show() {
        let mut f = fixture();
        let key = f.key.clone();
        for (seq, counter) in [(1, 10), (2, 11), (3, 12)] {
            f.view.on_deliver(&key, seq, false, &envelope(&f, &f.bob, "bob", counter, "old"));
        }
        let events = f.view.on_joined(&joined(&f, 1, 1));
        assert!(matches!(events.as_slice(), [Event::SequenceWentBack { last_seen: 3, relay_latest: 1 }]));
        assert!(f.view.on_joined(&joined(&f, 1, 1)).is_empty(), "once");
        // The restored relay reuses seq 2 and 3 for new messages: shown, by their counters.
        assert_eq!(
            body_of(f.view.on_deliver(&key, 2, false, &envelope(&f, &f.bob, "bob", 13, "new"))),
            "new"
        );
        // A replay of an old counter in history is silent; live above the cursor it is loud.
        assert!(f.view.on_deliver(&key, 3, true, &envelope(&f, &f.bob, "bob", 12, "old")).is_none());
        assert!(matches!(
            f.view.on_deliver(&key, 9, false, &envelope(&f, &f.bob, "bob", 12, "old")),
            Some(Event::Rejected(Rejected::Replayed { .. }))
        ));
    }
}
