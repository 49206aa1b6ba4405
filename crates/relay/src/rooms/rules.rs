//! The room rules as a pure state machine: inputs in, decisions out, no locks, no I/O, no clock.
//!
//! In the manner of boringtun's `Tunn`, `RoomRules` owns what the protocol says about one room
//! (who owns it, its password verifier, nickname bindings, bans, each sender's highest
//! counter, the sequence numbers handed out) and answers each request with a decision the
//! backend carries out: store this envelope under this `seq`, answer a resend with the stored
//! `seq`, wait for the pending copy, refuse. A backend (SQLite in one process, or a cluster)
//! keeps one `RoomRules` per room it serves, calls it under whatever serialises the room, and
//! reports back what storage did (`committed`, `binding_failed`), so the rules roll back what a
//! failed write must not leave behind.

use std::collections::{HashMap, HashSet};

use chatroom_crypto::{ErrorCode, JoinVerifier, Nick, PublicIdentity, SignedJoin, VerifiedJoin};

use super::bindings::Bindings;
use super::{JoinPolicy, Refusal};

/// The detail of a join refused because its room is locked.
pub(crate) fn too_many_attempts() -> String {
    "too many failed joins for this room; try again later".to_owned()
}

/// What the rules enforce per room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLimits {
    /// Members connected at once (at least 1).
    pub max_members: usize,
    /// The part of `max_members` kept for identities already bound in the room, in percent.
    pub headroom_percent: usize,
    /// Nicknames the room binds at most.
    pub max_nicknames: usize,
}

impl RuleLimits {
    fn members(&self) -> usize {
        self.max_members.max(1)
    }

    fn reserved(&self) -> usize {
        self.members() * self.headroom_percent.min(100) / 100
    }
}

/// The room's occupancy when a join is checked: the backend counts, the rules decide.
#[derive(Debug, Clone, Copy, Default)]
pub struct Occupancy {
    /// Members connected plus joins between their checks and their registration.
    pub present: usize,
    /// The joining identity is connected already (its old connection will be replaced).
    pub connected: bool,
}

/// A nickname the rules reserved for a join; storage must record it before the member is
/// registered, or the backend hands it back with `RoomRules::binding_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The canonical nickname.
    pub nick: String,
    /// The identity it is bound to.
    pub identity: PublicIdentity,
}

/// A join the rules admitted.
#[derive(Debug)]
pub struct Admitted {
    /// The member, past the password check.
    pub verified: VerifiedJoin,
    /// A new nickname binding to store first, if the member had none here.
    pub binding: Option<Binding>,
}

/// An envelope the rules numbered, not yet recorded as queued (see `RoomRules::queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The sequence number it gets.
    pub seq: u64,
    /// Its sender and counter.
    pub sender: PublicIdentity,
    pub counter: u64,
    /// The sender's highest counter before it, restored if the envelope is not stored.
    pub previous: Option<u64>,
}

/// What to do with a published envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A new envelope: store it under `ticket.seq`, then call `queued` (in storage order).
    New(Ticket),
    /// A resend of an envelope already stored under this `seq`: answer it, store nothing.
    Stored(u64),
    /// A resend of an envelope still being stored under this `seq`: answer once it is.
    Pending(u64),
}

/// What a completed storage write means for the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Stored: deliver it to the other members under this `seq`.
    Deliver(u64),
    /// Not stored: nothing to deliver, and the sender may send the same counter again.
    RolledBack,
}

/// The rules of one room.
#[derive(Debug)]
pub struct RoomRules {
    verifier: JoinVerifier,
    owner: PublicIdentity,
    limits: RuleLimits,
    /// Highest sequence number handed out.
    latest_seq: u64,
    /// Highest sequence number stored.
    stored_seq: u64,
    /// Highest counter accepted per sender.
    counters: HashMap<PublicIdentity, u64>,
    /// Envelopes numbered but not stored yet: (sender, counter) -> seq.
    pending: HashMap<(PublicIdentity, u64), u64>,
    /// Per sender whose failed envelope could not give its counter back because a later one
    /// of theirs was pending: the counter to go back to if that later one fails too.
    rolled_back: HashMap<PublicIdentity, Option<u64>>,
    /// Canonical nickname <-> identity.
    nicks: Bindings,
    bans: HashSet<PublicIdentity>,
}

/// A room as storage holds it, to rebuild its rules.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The highest sequence number stored.
    pub latest_seq: u64,
    pub counters: HashMap<PublicIdentity, u64>,
    pub nicks: HashMap<String, PublicIdentity>,
    pub bans: HashSet<PublicIdentity>,
}

impl RoomRules {
    /// The rules of a room just created by `founder` under `nick` (canonical).
    pub fn founded(
        verifier: JoinVerifier,
        founder: PublicIdentity,
        nick: String,
        limits: RuleLimits,
    ) -> Self {
        let restored = Restored { nicks: HashMap::from([(nick, founder)]), ..Restored::default() };
        Self::restored(verifier, founder, restored, limits)
    }

    /// The rules of a stored room.
    pub fn restored(
        verifier: JoinVerifier,
        owner: PublicIdentity,
        room: Restored,
        limits: RuleLimits,
    ) -> Self {
        Self {
            verifier,
            owner,
            limits,
            latest_seq: room.latest_seq,
            stored_seq: room.latest_seq,
            counters: room.counters,
            pending: HashMap::new(),
            rolled_back: HashMap::new(),
            nicks: Bindings::from_map(room.nicks),
            bans: room.bans,
        }
    }

    /// The room's owner.
    pub fn owner(&self) -> PublicIdentity {
        self.owner
    }

    /// Replaces the password verifier (the owner's password rotation, protocol version 2);
    /// members already joined stay.
    pub fn set_verifier(&mut self, by: &PublicIdentity, verifier: JoinVerifier) -> Result<(), Refusal> {
        if *by != self.owner {
            return Err(Refusal::new(
                ErrorCode::NotOwner,
                "only the room owner may change the room's password",
            ));
        }
        self.verifier = verifier;
        Ok(())
    }

    /// Hands the room to another owner (the operator's decision).
    pub fn set_owner(&mut self, owner: PublicIdentity) {
        self.owner = owner;
    }

    /// The highest sequence number stored: what `Joined` reports.
    pub fn stored_seq(&self) -> u64 {
        self.stored_seq
    }

    /// Whether `identity` is banned.
    pub fn is_banned(&self, identity: &PublicIdentity) -> bool {
        self.bans.contains(identity)
    }

    /// The join checks, in this order: a locked room admits only identities bound in it
    /// (nobody else's password is checked); the password (so a stranger learns nothing about
    /// bindings or bans); the ban; the nickname binding (one identity per nickname, one
    /// nickname per identity); the member cap with its reserve for bound identities (and
    /// only them while the relay is crowded); the nickname cap. A new binding is reserved at
    /// once, so a concurrent join with the same nickname is refused.
    pub fn join(
        &mut self,
        join: SignedJoin,
        policy: JoinPolicy,
        occupancy: Occupancy,
    ) -> Result<Admitted, Refusal> {
        let identity = join.request().identity;
        let canonical = join.request().nick.canonical();
        if policy.room_locked && self.nicks.get(&canonical) != Some(&identity) {
            return Err(Refusal::new(ErrorCode::TooManyAttempts, too_many_attempts()));
        }
        let verified = join.admit(&self.verifier).map_err(|_| {
            Refusal::new(ErrorCode::WrongPassword, "wrong room password; check the password or the invite")
        })?;
        if self.bans.contains(&identity) {
            return Err(Refusal::new(ErrorCode::Banned, "you are banned from this room"));
        }
        let bind = self.binding_needed(&canonical, &identity, verified.nick())?;
        self.admit_member(bind, policy.crowded, occupancy)?;
        if bind && self.nicks.len() >= self.limits.max_nicknames {
            // Every binding is a row kept as long as the room: their number is bounded.
            return Err(Refusal::new(
                ErrorCode::RoomFull,
                format!(
                    "the room has bound its maximum of {} nicknames; join with a nickname you used here before",
                    self.limits.max_nicknames
                ),
            ));
        }
        let binding = bind.then(|| {
            self.nicks.insert(canonical.clone(), identity);
            Binding { nick: canonical, identity }
        });
        Ok(Admitted { verified, binding })
    }

    /// Whether the nickname must be bound for this identity (false: it is already).
    fn binding_needed(
        &self,
        canonical: &str,
        identity: &PublicIdentity,
        nick: &Nick,
    ) -> Result<bool, Refusal> {
        match self.nicks.get(canonical) {
            Some(holder) if holder != identity => Err(Refusal::new(
                ErrorCode::NickTaken,
                format!(
                    "the nickname {nick} belongs to another identity in this room; choose another nickname"
                ),
            )),
            Some(_) => Ok(false),
            // One nickname per identity per room: clients pin an identity to the first
            // nickname they see it with.
            None => match self.nicks.nick_of(identity) {
                Some(bound) => Err(Refusal::new(
                    ErrorCode::NickBound,
                    format!(
                        "this identity is known in this room as {bound}; join with that nickname, \
                         or use another identity for another nickname"
                    ),
                )),
                None => Ok(true),
            },
        }
    }

    /// Whether the room has a place: a member reconnecting always does (its old connection is
    /// replaced); an identity bound in the room may take the reserved part; a stranger may
    /// not, nor any stranger while the relay is `crowded`.
    fn admit_member(&self, stranger: bool, crowded: bool, occupancy: Occupancy) -> Result<(), Refusal> {
        if occupancy.connected {
            return Ok(());
        }
        if crowded && stranger {
            return Err(Refusal::new(ErrorCode::ServerFull, "the relay is full; try again later"));
        }
        let max = self.limits.members();
        let limit = if stranger { max - self.limits.reserved() } else { max };
        if occupancy.present >= limit {
            return Err(Refusal::new(
                ErrorCode::RoomFull,
                format!("the room has its maximum of {max} members; try again later"),
            ));
        }
        Ok(())
    }

    /// A binding shared storage holds (made through another relay node): later joins are
    /// checked against it. A nickname already bound here keeps its binding.
    pub fn learn_binding(&mut self, binding: Binding) {
        self.nicks.insert(binding.nick, binding.identity);
    }

    /// A ban or unban shared storage holds (made through another relay node).
    pub fn learn_ban(&mut self, identity: PublicIdentity, banned: bool) {
        if banned {
            self.bans.insert(identity);
        } else {
            self.bans.remove(&identity);
        }
    }

    /// An envelope stored under `seq` by another relay node (or before this one loaded the
    /// room): the room has reached `seq`, and a counter of the sender's at or below `counter`
    /// is a resend from now on.
    pub fn observed(&mut self, seq: u64, sender: PublicIdentity, counter: u64) {
        self.latest_seq = self.latest_seq.max(seq);
        self.stored_seq = self.stored_seq.max(seq);
        let highest = self.counters.entry(sender).or_insert(counter);
        *highest = (*highest).max(counter);
    }

    /// Storage could not record a binding `join` reserved: the nickname is free again.
    pub fn binding_failed(&mut self, binding: &Binding) {
        self.nicks.remove(&binding.nick, &binding.identity);
    }

    /// Checks an envelope from `sender` with `counter`. A counter above the sender's highest
    /// is new and gets the next `seq`; one at or below it is a resend, answered with the
    /// `seq` of the copy `stored` finds (the backend's lookup of stored envelopes by sender
    /// and counter) or of the copy still pending, and refused otherwise.
    pub fn publish(
        &self,
        sender: PublicIdentity,
        counter: u64,
        stored: impl FnOnce() -> Option<u64>,
    ) -> Result<Submitted, Refusal> {
        let previous = self.counters.get(&sender).copied();
        let Some(max) = previous.filter(|max| counter <= *max) else {
            return Ok(Submitted::New(Ticket { seq: self.latest_seq + 1, sender, counter, previous }));
        };
        if let Some(seq) = stored() {
            return Ok(Submitted::Stored(seq));
        }
        match self.pending.get(&(sender, counter)) {
            Some(&seq) => Ok(Submitted::Pending(seq)),
            None => Err(Refusal::new(
                ErrorCode::BadEnvelope,
                format!(
                    "counter {counter} is not above {max}, the highest this identity already used \
                     in this room; message not delivered"
                ),
            )),
        }
    }

    /// Records that the envelope of `ticket` is queued for storage: its counter is taken and
    /// its `seq` handed out. Called in storage order, once per ticket.
    pub fn queued(&mut self, ticket: &Ticket) {
        self.latest_seq = ticket.seq;
        self.counters.insert(ticket.sender, ticket.counter);
        self.pending.insert((ticket.sender, ticket.counter), ticket.seq);
    }

    /// Storage finished the write of `ticket` (called in storage order). On failure the
    /// sender's highest counter goes back to what it was, so the client may resend the same
    /// envelope; when a later envelope of the sender's is still pending, the counter goes back
    /// only if that one fails too (a failed commit group gives back every counter it held),
    /// and stays where a stored one moved it. A `seq` is never reused, as later envelopes may
    /// hold higher ones already.
    pub fn committed(&mut self, ticket: &Ticket, stored: bool) -> Committed {
        self.pending.remove(&(ticket.sender, ticket.counter));
        // The sender's earlier failures, pending on this envelope's outcome.
        let earlier = self.rolled_back.remove(&ticket.sender);
        if !stored {
            // `None` (no counter at all) is the lowest.
            let back = earlier.map_or(ticket.previous, |e| e.min(ticket.previous));
            if self.counters.get(&ticket.sender) == Some(&ticket.counter) {
                match back {
                    Some(c) => self.counters.insert(ticket.sender, c),
                    None => self.counters.remove(&ticket.sender),
                };
            } else {
                self.rolled_back.insert(ticket.sender, back);
            }
            return Committed::RolledBack;
        }
        self.stored_seq = self.stored_seq.max(ticket.seq);
        Committed::Deliver(ticket.seq)
    }

    /// Whether `by` may kick, ban or unban.
    fn owner_only(&self, by: &PublicIdentity) -> Result<(), Refusal> {
        if *by == self.owner {
            Ok(())
        } else {
            Err(Refusal::new(ErrorCode::NotOwner, "only the room owner may kick, ban or unban"))
        }
    }

    /// The identity bound to `nick`.
    pub fn bound(&self, nick: &Nick) -> Result<PublicIdentity, Refusal> {
        self.nicks.get(&nick.canonical()).copied().ok_or_else(|| {
            Refusal::new(ErrorCode::NoSuchMember, format!("nobody uses the nickname {nick} in this room"))
        })
    }

    /// Whom `by` kicks with `nick` (the owner only; the backend disconnects it, if connected).
    pub fn kick(&self, by: &PublicIdentity, nick: &Nick) -> Result<PublicIdentity, Refusal> {
        self.owner_only(by)?;
        self.bound(nick)
    }

    /// Bans the identity bound to `nick` (the owner only, never the owner); returns it.
    pub fn ban(&mut self, by: &PublicIdentity, nick: &Nick) -> Result<PublicIdentity, Refusal> {
        self.owner_only(by)?;
        let target = self.bound(nick)?;
        if target == self.owner {
            return Err(Refusal::new(ErrorCode::OwnerProtected, "the room owner cannot be banned"));
        }
        self.bans.insert(target);
        Ok(target)
    }

    /// Lifts the ban of the identity bound to `nick` (the owner only); returns it.
    pub fn unban(&mut self, by: &PublicIdentity, nick: &Nick) -> Result<PublicIdentity, Refusal> {
        self.owner_only(by)?;
        let target = self.bound(nick)?;
        if !self.bans.remove(&target) {
            return Err(Refusal::new(ErrorCode::NoSuchMember, format!("{nick} is not banned")));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_crypto::internal::split_master;
    use chatroom_crypto::{Identity, JoinRequest, RoomName};

    const LIMITS: RuleLimits = RuleLimits { max_members: 10, headroom_percent: 20, max_nicknames: 4 };

    fn signed(identity: &Identity, nick: &str, master: u8) -> SignedJoin {
        let hh = [9; 32];
        JoinRequest::new(
            identity,
            &hh,
            RoomName::new("room").unwrap(),
            Nick::new(nick).unwrap(),
            split_master(&[master; 32]).join_secret.clone(),
            false,
            0,
        )
        .verify(&hh)
        .unwrap()
    }

    /// A room founded by `owner` as "owner", with password 1.
    fn room(owner: &Identity) -> RoomRules {
        let verifier = split_master(&[1; 32]).join_secret.verifier();
        RoomRules::founded(verifier, owner.public(), "owner".into(), LIMITS)
    }

    fn code<T: std::fmt::Debug>(r: Result<T, Refusal>) -> ErrorCode {
        r.unwrap_err().code
    }

    const FREE: Occupancy = Occupancy { present: 0, connected: false };

    #[test]
    fn a_join_needs_the_password_and_binds_a_new_nickname_once() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let mut rules = room(&owner);
        assert_eq!(
            code(rules.join(signed(&alice, "alice", 2), JoinPolicy::default(), FREE)),
            ErrorCode::WrongPassword
        );
        let admitted = rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE).unwrap();
        assert_eq!(admitted.binding, Some(Binding { nick: "alice".into(), identity: alice.public() }));
        let again = rules.join(signed(&alice, "Alice", 1), JoinPolicy::default(), FREE).unwrap();
        assert_eq!(again.binding, None, "the binding is kept, whatever the case");
        assert_eq!(
            code(rules.join(signed(&owner, "alice", 1), JoinPolicy::default(), FREE)),
            ErrorCode::NickTaken
        );
        assert_eq!(
            code(rules.join(signed(&alice, "other", 1), JoinPolicy::default(), FREE)),
            ErrorCode::NickBound
        );
    }

    #[test]
    fn a_failed_binding_frees_the_nickname() {
        let (owner, alice, bob) = (Identity::generate(), Identity::generate(), Identity::generate());
        let mut rules = room(&owner);
        let admitted = rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE).unwrap();
        assert_eq!(
            code(rules.join(signed(&bob, "alice", 1), JoinPolicy::default(), FREE)),
            ErrorCode::NickTaken
        );
        rules.binding_failed(&admitted.binding.unwrap());
        assert!(rules.join(signed(&bob, "alice", 1), JoinPolicy::default(), FREE).unwrap().binding.is_some());
    }

    #[test]
    fn a_locked_room_admits_only_bound_identities_without_checking_passwords() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let mut rules = room(&owner);
        let locked = JoinPolicy { room_locked: true, crowded: false };
        assert_eq!(code(rules.join(signed(&alice, "alice", 1), locked, FREE)), ErrorCode::TooManyAttempts);
        assert!(rules.join(signed(&owner, "owner", 1), locked, FREE).is_ok());
        assert_eq!(code(rules.join(signed(&owner, "owner", 2), locked, FREE)), ErrorCode::WrongPassword);
    }

    #[test]
    fn bans_are_for_the_owner_to_give_and_lift_and_never_hit_the_owner() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let mut rules = room(&owner);
        rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE).unwrap();
        let nick = |n: &str| Nick::new(n).unwrap();
        assert_eq!(code(rules.ban(&alice.public(), &nick("owner"))), ErrorCode::NotOwner);
        assert_eq!(code(rules.ban(&owner.public(), &nick("owner"))), ErrorCode::OwnerProtected);
        assert_eq!(code(rules.ban(&owner.public(), &nick("nobody"))), ErrorCode::NoSuchMember);
        assert_eq!(rules.ban(&owner.public(), &nick("alice")).unwrap(), alice.public());
        assert_eq!(
            code(rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE)),
            ErrorCode::Banned
        );
        assert_eq!(code(rules.unban(&alice.public(), &nick("alice"))), ErrorCode::NotOwner);
        assert_eq!(rules.unban(&owner.public(), &nick("alice")).unwrap(), alice.public());
        assert_eq!(code(rules.unban(&owner.public(), &nick("alice"))), ErrorCode::NoSuchMember, "not banned");
        assert!(rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE).is_ok());
        assert_eq!(code(rules.kick(&alice.public(), &nick("owner"))), ErrorCode::NotOwner);
        assert_eq!(rules.kick(&owner.public(), &nick("alice")).unwrap(), alice.public());
    }

    #[test]
    fn the_member_cap_keeps_its_reserve_for_bound_identities() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let mut rules = room(&owner);
        // 10 members, 20 % reserved: strangers fill 8 places, bound identities all 10.
        let at = |present| Occupancy { present, connected: false };
        assert!(rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), at(7)).is_ok());
        let stranger = Identity::generate();
        assert_eq!(
            code(rules.join(signed(&stranger, "s", 1), JoinPolicy::default(), at(8))),
            ErrorCode::RoomFull
        );
        assert!(rules.join(signed(&owner, "owner", 1), JoinPolicy::default(), at(9)).is_ok());
        assert_eq!(
            code(rules.join(signed(&owner, "owner", 1), JoinPolicy::default(), at(10))),
            ErrorCode::RoomFull
        );
        let replacing = Occupancy { present: 10, connected: true };
        assert!(rules.join(signed(&owner, "owner", 1), JoinPolicy::default(), replacing).is_ok());
        let crowded = JoinPolicy { crowded: true, room_locked: false };
        assert_eq!(code(rules.join(signed(&stranger, "s", 1), crowded, FREE)), ErrorCode::ServerFull);
        assert!(rules.join(signed(&owner, "owner", 1), crowded, FREE).is_ok());
    }

    #[test]
    fn the_nickname_cap_refuses_new_bindings_only() {
        let owner = Identity::generate();
        let mut rules = room(&owner);
        for n in ["a", "b", "c"] {
            rules.join(signed(&Identity::generate(), n, 1), JoinPolicy::default(), FREE).unwrap();
        }
        let late = Identity::generate();
        assert_eq!(code(rules.join(signed(&late, "d", 1), JoinPolicy::default(), FREE)), ErrorCode::RoomFull);
        assert!(rules.join(signed(&owner, "owner", 1), JoinPolicy::default(), FREE).is_ok());
    }

    fn ticket(submitted: Submitted) -> Ticket {
        match submitted {
            Submitted::New(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn envelopes_are_numbered_in_order_and_counters_only_go_up() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let (a, o) = (alice.public(), owner.public());
        let mut rules = room(&owner);
        let t1 = ticket(rules.publish(a, 5, || None).unwrap());
        rules.queued(&t1);
        let t2 = ticket(rules.publish(o, 1, || None).unwrap());
        rules.queued(&t2);
        assert_eq!((t1.seq, t2.seq), (1, 2));
        assert_eq!(rules.committed(&t1, true), Committed::Deliver(1));
        assert_eq!(rules.committed(&t2, true), Committed::Deliver(2));
        assert_eq!(rules.stored_seq(), 2);
        assert_eq!(code(rules.publish(a, 4, || None)), ErrorCode::BadEnvelope, "below the highest");
        assert_eq!(code(rules.publish(a, 5, || None)), ErrorCode::BadEnvelope, "equal, and not stored");
        assert_eq!(ticket(rules.publish(a, 6, || None).unwrap()).seq, 3);
    }

    #[test]
    fn a_resend_is_answered_with_the_stored_or_pending_seq() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let a = alice.public();
        let mut rules = room(&owner);
        let t = ticket(rules.publish(a, 7, || None).unwrap());
        rules.queued(&t);
        assert_eq!(rules.publish(a, 7, || None).unwrap(), Submitted::Pending(1), "still being stored");
        rules.committed(&t, true);
        assert_eq!(rules.publish(a, 7, || Some(1)).unwrap(), Submitted::Stored(1));
        assert_eq!(code(rules.publish(a, 7, || None)), ErrorCode::BadEnvelope, "gone from history");
    }

    #[test]
    fn a_failed_commit_rolls_the_counter_back_and_never_reuses_its_seq() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let a = alice.public();
        let mut rules = room(&owner);
        let first = ticket(rules.publish(a, 3, || None).unwrap());
        rules.queued(&first);
        rules.committed(&first, true);
        let failed = ticket(rules.publish(a, 9, || None).unwrap());
        rules.queued(&failed);
        assert_eq!(rules.committed(&failed, false), Committed::RolledBack);
        assert_eq!(rules.stored_seq(), 1, "nothing stored");
        // The same counter is new again, under a fresh seq.
        let retry = ticket(rules.publish(a, 9, || None).unwrap());
        assert_eq!((retry.seq, retry.previous), (3, Some(3)));
        // Nor does a failure roll back a counter a later envelope already moved.
        rules.queued(&retry);
        let later = ticket(rules.publish(a, 10, || None).unwrap());
        rules.queued(&later);
        assert_eq!(rules.committed(&retry, false), Committed::RolledBack);
        assert_eq!(rules.publish(a, 10, || None).unwrap(), Submitted::Pending(4), "the later one is pending");
        assert_eq!(code(rules.publish(a, 9, || None)), ErrorCode::BadEnvelope, "the counter stays at 10");
    }

    /// A commit group holding three envelopes of one sender fails: completed in storage
    /// order, every counter is given back, not just the last one's.
    #[test]
    fn a_failed_group_gives_back_every_counter_it_held_and_a_stored_one_keeps_its_counter() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let a = alice.public();
        let mut rules = room(&owner);
        let first = ticket(rules.publish(a, 1, || None).unwrap());
        rules.queued(&first);
        rules.committed(&first, true);
        let group: Vec<Ticket> = (2..=4)
            .map(|c| {
                let t = ticket(rules.publish(a, c, || None).unwrap());
                rules.queued(&t);
                t
            })
            .collect();
        for t in &group {
            assert_eq!(rules.committed(t, false), Committed::RolledBack);
        }
        assert_eq!(ticket(rules.publish(a, 2, || None).unwrap()).previous, Some(1), "2 is new again");
        assert_eq!(code(rules.publish(a, 1, || None)), ErrorCode::BadEnvelope, "1 stays stored");

        // A failure followed by a stored envelope: the counter stays where the stored one put it.
        let failed = ticket(rules.publish(a, 2, || None).unwrap());
        rules.queued(&failed);
        let stored = ticket(rules.publish(a, 3, || None).unwrap());
        rules.queued(&stored);
        rules.committed(&failed, false);
        rules.committed(&stored, true);
        let next = ticket(rules.publish(a, 4, || None).unwrap());
        assert_eq!(next.previous, Some(3));
        assert_eq!(code(rules.publish(a, 2, || None)), ErrorCode::BadEnvelope, "2 is below a stored 3");
        assert!(rules.rolled_back.is_empty(), "nothing is kept once the sender's envelopes completed");
    }

    #[test]
    fn what_other_nodes_stored_is_learned_and_checked_like_local_state() {
        let (owner, alice, bob) = (Identity::generate(), Identity::generate(), Identity::generate());
        let mut rules = room(&owner);
        rules.learn_binding(Binding { nick: "alice".into(), identity: alice.public() });
        rules.learn_binding(Binding { nick: "alice".into(), identity: bob.public() });
        assert_eq!(
            code(rules.join(signed(&bob, "alice", 1), JoinPolicy::default(), FREE)),
            ErrorCode::NickTaken,
            "the first binding learned stays"
        );
        rules.learn_ban(alice.public(), true);
        assert_eq!(
            code(rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE)),
            ErrorCode::Banned
        );
        rules.learn_ban(alice.public(), false);
        assert!(rules.join(signed(&alice, "alice", 1), JoinPolicy::default(), FREE).is_ok());

        let a = alice.public();
        rules.observed(4, a, 10);
        rules.observed(3, a, 7);
        assert_eq!(rules.stored_seq(), 4, "never back");
        assert_eq!(
            code(rules.publish(a, 9, || None)),
            ErrorCode::BadEnvelope,
            "the highest counter stays 10"
        );
        assert_eq!(ticket(rules.publish(a, 11, || None).unwrap()).seq, 5);
    }

    #[test]
    fn a_first_envelope_that_fails_leaves_the_sender_without_a_counter() {
        let (owner, alice) = (Identity::generate(), Identity::generate());
        let a = alice.public();
        let mut rules = room(&owner);
        let t = ticket(rules.publish(a, 5, || None).unwrap());
        rules.queued(&t);
        rules.committed(&t, false);
        assert_eq!(ticket(rules.publish(a, 1, || None).unwrap()).previous, None, "any counter is new again");
    }
}
