//! Several members driven through one room log held in memory, as the relay would order it:
//! creation, entry by external commit with the PSK, a wrong password, concurrent commits in one
//! epoch, removal, update and catch-up after a reconnect.
// Helpers outside #[test] functions: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::error::Error;

use chatroom_crypto::{
    split_master_v2, GroupInfoKey, Identity, PublicIdentity, RoomName, RoomPsk, RoomSecretsV2,
};
use chatroom_group::{Event, GroupError, Kind, LogEntry, Room, RoomRef};

type TestResult = Result<(), Box<dyn Error>>;

/// The room's log: what the relay stores and numbers (index = seq - 1), plus the latest sealed
/// GroupInfo.
#[derive(Default)]
struct Relay {
    log: Vec<(PublicIdentity, Kind, Vec<u8>)>,
    group_info: Vec<u8>,
    /// The log length when the GroupInfo was put (the protocol's `after_seq`).
    group_info_seq: usize,
}

impl Relay {
    fn append(&mut self, who: &Member, kind: Kind, mls: Vec<u8>) {
        self.log.push((who.id.public(), kind, mls));
    }

    fn put_group_info(&mut self, sealed: Vec<u8>) {
        self.group_info = sealed;
        self.group_info_seq = self.log.len();
    }
}

struct Member {
    id: Identity,
    room: Option<Room>,
    cursor: usize,
}

fn room_ref() -> RoomRef {
    RoomRef { room: RoomName::new("general").unwrap(), relay_key: [9; 32], psk_generation: 0 }
}

/// The password's outputs without Argon2id's cost (the vectors test covers the real path).
fn password(master: u8) -> RoomSecretsV2 {
    split_master_v2(&[master; 32])
}

impl Member {
    fn new(seed: u8) -> Self {
        Self { id: Identity::from_seed(&[seed; 32]), room: None, cursor: 0 }
    }

    fn room(&mut self) -> &mut Room {
        self.room.as_mut().expect("in the room")
    }

    fn create(seed: u8, relay: &mut Relay, keys: &RoomSecretsV2) -> Result<Self, GroupError> {
        let mut m = Self::new(seed);
        let room = Room::create(&m.id, room_ref(), &keys.room_psk)?;
        relay.put_group_info(room.sealed_group_info(&keys.group_info_key)?);
        m.room = Some(room);
        Ok(m)
    }

    /// Fetches the GroupInfo, sends the entry commit; the log decides later.
    fn start_entry(&mut self, relay: &mut Relay, keys: &RoomSecretsV2) -> Result<(), GroupError> {
        self.start_entry_with(relay, &keys.room_psk, &keys.group_info_key)
    }

    fn start_entry_with(
        &mut self,
        relay: &mut Relay,
        psk: &RoomPsk,
        key: &GroupInfoKey,
    ) -> Result<(), GroupError> {
        let (room, commit) = Room::enter(&self.id, room_ref(), psk, key, &relay.group_info)?;
        self.room = Some(room);
        // The log from the GroupInfo's epoch on decides whether the entry won.
        self.cursor = relay.group_info_seq;
        relay.append(self, Kind::Commit, commit);
        Ok(())
    }

    /// Processes every log entry after the cursor, in order; refused entries come back as
    /// errors in the list, the rest as events.
    fn catch_up(&mut self, relay: &Relay) -> Vec<Result<Event, GroupError>> {
        let mut out = Vec::new();
        while self.cursor < relay.log.len() {
            let (sender, kind, mls) = &relay.log[self.cursor];
            self.cursor += 1;
            out.push(self.room().process(LogEntry { sender: *sender, kind: *kind, mls }));
        }
        out
    }

    fn messages(events: &[Result<Event, GroupError>]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Ok(Event::Message { plaintext, .. }) => Some(String::from_utf8_lossy(plaintext).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn say(&mut self, relay: &mut Relay, text: &str) -> Result<(), GroupError> {
        let mls = self.room().seal_message(text.as_bytes())?;
        relay.append(self, Kind::Application, mls);
        Ok(())
    }
}

/// Creator `seed` 1 and `n - 1` members who entered one after the other, all caught up.
fn room_of(n: u8, relay: &mut Relay, keys: &RoomSecretsV2) -> Result<Vec<Member>, Box<dyn Error>> {
    let mut members = vec![Member::create(1, relay, keys)?];
    for seed in 2..=n {
        let mut m = Member::new(seed);
        m.start_entry(relay, keys)?;
        assert_eq!(m.catch_up(relay).pop().unwrap()?, Event::Entered);
        relay.put_group_info(m.room().sealed_group_info(&keys.group_info_key)?);
        for other in &mut members {
            let events = other.catch_up(relay);
            let Some(Ok(Event::Commit(c))) = events.last() else { panic!("entry not merged: {events:?}") };
            assert!(c.entry && c.committer == m.id.public());
        }
        members.push(m);
    }
    Ok(members)
}

fn codes(members: &mut [Member]) -> Vec<String> {
    members.iter_mut().map(|m| m.room().epoch_code().unwrap().to_string()).collect()
}

fn assert_converged(members: &mut [Member]) {
    let epochs: Vec<u64> = members.iter_mut().map(|m| m.room().epoch()).collect();
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "epochs differ: {epochs:?}");
    let codes = codes(members);
    assert!(codes.windows(2).all(|w| w[0] == w[1]), "epoch codes differ: {codes:?}");
}

#[test]
fn create_enter_with_psk_and_talk() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(4, &mut relay, &keys)?;
    assert_converged(&mut members);
    assert_eq!(members[0].room().members().len(), 4);
    assert_eq!(members[0].room().epoch(), 3);

    members[2].say(&mut relay, "hello from carol")?;
    for (i, m) in members.iter_mut().enumerate() {
        let events = m.catch_up(&relay);
        let expected: Vec<String> = if i == 2 { vec![] } else { vec!["hello from carol".into()] };
        assert_eq!(Member::messages(&events), expected);
    }
    Ok(())
}

#[test]
fn wrong_password_cannot_enter() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(2, &mut relay, &keys)?;
    let mut eve = Member::new(66);

    // A different password: the GroupInfo does not open.
    let wrong = password(2);
    let refused = eve.start_entry(&mut relay, &wrong);
    assert!(matches!(refused, Err(GroupError::GroupInfoKey)), "{refused:?}");

    // The GroupInfo key alone (say, a leaked GroupInfo) but the wrong PSK: the commit is built,
    // and every member refuses it without changing state.
    let before = codes(&mut members);
    eve.start_entry_with(&mut relay, &wrong.room_psk, &keys.group_info_key)?;
    for m in &mut members {
        let events = m.catch_up(&relay);
        assert!(matches!(events.as_slice(), [Err(GroupError::Mls(_))]), "{events:?}");
    }
    assert_eq!(codes(&mut members), before);
    // Eve cannot tell that nobody accepted her commit (it is first in the log), but she reads
    // nothing the members say.
    members[0].say(&mut relay, "after eve")?;
    assert_eq!(Member::messages(&eve.catch_up(&relay)), Vec::<String>::new());
    assert_eq!(Member::messages(&members[1].catch_up(&relay)), vec!["after eve".to_string()]);
    Ok(())
}

fn commit_of(events: &[Result<Event, GroupError>]) -> chatroom_group::CommitSummary {
    let commits: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ok(Event::Commit(c)) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(commits.len(), 1, "{events:?}");
    commits[0].clone()
}

#[test]
fn concurrent_commits_in_one_epoch_first_in_log_wins() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(4, &mut relay, &keys)?;
    let epoch = members[0].room().epoch();

    // Bob and carol both update in the same epoch; the relay sequences bob's first.
    let bob_update = members[1].room().update()?;
    let carol_update = members[2].room().update()?;
    relay.append(&members[1], Kind::Commit, bob_update);
    relay.append(&members[2], Kind::Commit, carol_update);

    for (i, m) in members.iter_mut().enumerate() {
        let events = m.catch_up(&relay);
        let c = commit_of(&events);
        assert_eq!((c.epoch, c.committer, c.own), (epoch + 1, Member::new(2).id.public(), i == 1));
        assert_eq!(c.own_commit_lost, i == 2, "only carol lost her commit");
        assert!(
            matches!(events.last(), Some(Ok(Event::Skipped))),
            "the losing commit is skipped: {events:?}"
        );
    }
    assert_converged(&mut members);

    // Carol learns she lost and retries on the new epoch; it wins.
    let retry = members[2].room().update()?;
    relay.append(&members[2], Kind::Commit, retry);
    for m in &mut members {
        assert_eq!(commit_of(&m.catch_up(&relay)).epoch, epoch + 2);
    }
    assert_converged(&mut members);
    Ok(())
}

#[test]
fn concurrent_entries_the_loser_retries() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(2, &mut relay, &keys)?;
    let (mut carol, mut dave) = (Member::new(3), Member::new(4));
    // Both fetched the same GroupInfo; carol's commit is sequenced first.
    carol.start_entry(&mut relay, &keys)?;
    dave.start_entry(&mut relay, &keys)?;
    assert!(matches!(carol.catch_up(&relay).as_slice(), [Ok(Event::Entered), Ok(Event::Skipped)]));
    assert!(matches!(dave.catch_up(&relay).as_slice(), [Ok(Event::EntryLost), Ok(Event::Skipped)]));
    assert!(!dave.room().is_member());
    for m in &mut members {
        let events = m.catch_up(&relay);
        assert_eq!(commit_of(&events).committer, carol.id.public());
    }
    // The winner publishes the new epoch's GroupInfo; dave enters from it.
    relay.put_group_info(carol.room().sealed_group_info(&keys.group_info_key)?);
    dave.start_entry(&mut relay, &keys)?;
    assert_eq!(dave.catch_up(&relay).pop().unwrap()?, Event::Entered);
    members.push(carol);
    for m in &mut members {
        assert_eq!(commit_of(&m.catch_up(&relay)).committer, dave.id.public());
    }
    members.push(dave);
    assert_converged(&mut members);
    assert_eq!(members[0].room().members().len(), 4);
    Ok(())
}

#[test]
fn removed_member_reads_nothing_after_and_reentry_is_visible() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(3, &mut relay, &keys)?;
    let mut carol = members.pop().unwrap();
    // Carol's state as saved just before the removal, for a later attempt with a copy.
    let carol_copy = carol.room().export_state()?;

    let kick = members[0].room().remove(&carol.id.public())?;
    relay.append(&members[0], Kind::Commit, kick);
    for m in &mut members {
        assert_eq!(commit_of(&m.catch_up(&relay)).removed, vec![carol.id.public()]);
    }
    assert_eq!(carol.catch_up(&relay).pop().unwrap()?, Event::Removed);
    members[0].say(&mut relay, "without carol")?;
    assert_eq!(Member::messages(&members[1].catch_up(&relay)), vec!["without carol".to_string()]);
    assert_eq!(Member::messages(&carol.catch_up(&relay)), Vec::<String>::new());

    // The copy from before the removal, with the password, fed the log from the removal on.
    let mut copy = Member::new(3);
    copy.room = Some(Room::load_state(&copy.id, room_ref(), &keys.room_psk, &carol_copy)?);
    copy.cursor = relay.log.len() - 2;
    let events = copy.catch_up(&relay);
    assert!(matches!(events.as_slice(), [Ok(Event::Removed), Ok(Event::Skipped)]), "{events:?}");

    // With the password she can enter again, as an entry every member sees.
    relay.put_group_info(members[0].room().sealed_group_info(&keys.group_info_key)?);
    carol.start_entry(&mut relay, &keys)?;
    for m in &mut members {
        let c = commit_of(&m.catch_up(&relay));
        assert!(c.entry && c.committer == carol.id.public());
    }
    Ok(())
}

#[test]
fn message_of_an_ended_epoch_is_resent_by_its_sender_and_read_by_nobody() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(3, &mut relay, &keys)?;
    // Alice encrypts in epoch e; bob's update is sequenced before her message.
    let late = members[0].room().seal_message(b"late")?;
    let update = members[1].room().update()?;
    relay.append(&members[1], Kind::Commit, update);
    relay.append(&members[0], Kind::Application, late);
    assert!(matches!(members[0].catch_up(&relay).as_slice(), [Ok(Event::Commit(_)), Ok(Event::Resend)]));
    for m in &mut members[1..] {
        let events = m.catch_up(&relay);
        assert!(matches!(events.as_slice(), [Ok(Event::Commit(_)), Ok(Event::Skipped)]), "{events:?}");
    }
    members[0].say(&mut relay, "late")?;
    assert_eq!(Member::messages(&members[2].catch_up(&relay)), vec!["late".to_string()]);
    Ok(())
}

#[test]
fn reconnect_catches_up_in_order_from_saved_state() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(5, &mut relay, &keys)?;
    let mut erin = members.pop().unwrap();
    let (saved, cursor) = (erin.room().export_state()?, erin.cursor);
    drop(erin.room.take());

    // While erin is away: messages, an update, a removal, more messages.
    members[0].say(&mut relay, "one")?;
    let update = members[1].room().update()?;
    relay.append(&members[1], Kind::Commit, update);
    members.iter_mut().for_each(|m| drop(m.catch_up(&relay)));
    members[2].say(&mut relay, "two")?;
    let dave = members[3].id.public();
    let kick = members[0].room().remove(&dave)?;
    relay.append(&members[0], Kind::Commit, kick);
    members.iter_mut().for_each(|m| drop(m.catch_up(&relay)));
    members.pop();
    members[1].say(&mut relay, "three")?;
    members.iter_mut().for_each(|m| drop(m.catch_up(&relay)));

    erin.room = Some(Room::load_state(&erin.id, room_ref(), &keys.room_psk, &saved)?);
    erin.cursor = cursor;
    let events = erin.catch_up(&relay);
    assert_eq!(Member::messages(&events), vec!["one", "two", "three"], "{events:?}");
    members.push(erin);
    assert_converged(&mut members);
    Ok(())
}

#[test]
fn member_without_state_reenters_under_the_same_identity() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(3, &mut relay, &keys)?;
    let mut carol = members.pop().unwrap();
    // Carol's state is gone (say, beyond the relay's retention): she enters again, removing her
    // old leaf in the same commit.
    relay.put_group_info(members[0].room().sealed_group_info(&keys.group_info_key)?);
    carol.start_entry(&mut relay, &keys)?;
    assert_eq!(carol.catch_up(&relay).pop().unwrap()?, Event::Entered);
    for m in &mut members {
        let c = commit_of(&m.catch_up(&relay));
        assert_eq!((c.entry, c.removed.clone()), (true, vec![carol.id.public()]));
    }
    members.push(carol);
    assert_converged(&mut members);
    assert_eq!(members[0].room().members().len(), 3);
    Ok(())
}

#[test]
fn envelope_that_lies_about_kind_or_sender_is_refused_without_state_change() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(3, &mut relay, &keys)?;
    let before = codes(&mut members);
    // Carol's commit, first wrapped by alice (a member replaying it as her own), then in an
    // envelope of kind "application" (which a newcomer would not count as a commit).
    let update = members[2].room().update()?;
    relay.log.push((members[0].id.public(), Kind::Commit, update.clone()));
    relay.log.push((members[2].id.public(), Kind::Application, update.clone()));
    members[0].cursor = relay.log.len();
    members[2].cursor = relay.log.len();
    let events = members[1].catch_up(&relay);
    assert!(
        matches!(events.as_slice(), [Err(GroupError::Mls(_)), Err(GroupError::KindMismatch)]),
        "{events:?}"
    );
    assert_eq!(codes(&mut members), before, "no state changed");

    // The same commit in its honest envelope is accepted by everyone.
    relay.append(&members[2], Kind::Commit, update);
    for m in &mut members {
        assert!(commit_of(&m.catch_up(&relay)).epoch > 0);
    }
    assert_converged(&mut members);
    Ok(())
}

#[test]
fn hostile_log_entries_are_refused_and_lose_nothing() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(2, &mut relay, &keys)?;
    let bob = members[1].id.public();
    let too_large = vec![0u8; chatroom_group::MAX_MLS_LEN + 1];
    let at_limit_garbage = vec![0xffu8; chatroom_group::MAX_MLS_LEN];
    for (mls, kind) in
        [(&too_large, Kind::Application), (&at_limit_garbage, Kind::Commit), (&vec![], Kind::Commit)]
    {
        let refused = members[0].room().process(LogEntry { sender: bob, kind, mls });
        assert!(refused.is_err(), "{refused:?}");
    }
    assert!(matches!(
        members[0].room().process(LogEntry { sender: bob, kind: Kind::Application, mls: &too_large }),
        Err(GroupError::TooLarge(16_385))
    ));
    members[1].say(&mut relay, "still readable")?;
    assert_eq!(Member::messages(&members[0].catch_up(&relay)), vec!["still readable".to_string()]);
    Ok(())
}

#[test]
fn saved_state_of_another_room_is_refused() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(1, &mut relay, &keys)?;
    let blob = members[0].room().export_state()?;
    let other = RoomRef { room: RoomName::new("other")?, ..room_ref() };
    let refused = Room::load_state(&members[0].id, other, &keys.room_psk, &blob);
    assert!(matches!(refused, Err(GroupError::State(_))), "{refused:?}");
    assert!(matches!(
        Room::load_state(&members[0].id, room_ref(), &keys.room_psk, &blob[..10]),
        Err(GroupError::State(_))
    ));
    assert!(Room::load_state(&members[0].id, room_ref(), &keys.room_psk, &blob).is_ok());
    Ok(())
}

#[test]
fn only_the_owner_removes_others() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(3, &mut relay, &keys)?;
    assert_eq!(members[2].room().settings().map(|s| s.owner), Some(members[0].id.public()));
    let before = codes(&mut members);
    // Bob (not the owner) removes carol: every member refuses it, nothing changes.
    let carol = members[2].id.public();
    let kick = members[1].room().remove(&carol)?;
    relay.append(&members[1], Kind::Commit, kick);
    for m in [0, 2] {
        let events = members[m].catch_up(&relay);
        assert!(matches!(events.as_slice(), [Err(GroupError::Mls(_))]), "{events:?}");
    }
    members[1].cursor = relay.log.len();
    assert_eq!(codes(&mut members)[0], before[0]);
    assert_eq!(codes(&mut members)[2], before[2]);
    // The owner's removal of carol is accepted by all (bob's pending commit is dropped).
    let kick = members[0].room().remove(&carol)?;
    relay.append(&members[0], Kind::Commit, kick);
    for m in &mut members[..2] {
        assert_eq!(commit_of(&m.catch_up(&relay)).removed, vec![carol]);
    }
    assert_eq!(members[2].catch_up(&relay).pop().unwrap()?, Event::Removed);
    Ok(())
}

#[test]
fn an_entry_in_flight_survives_a_restart() -> TestResult {
    let (mut relay, keys) = (Relay::default(), password(1));
    let mut members = room_of(2, &mut relay, &keys)?;
    let mut carol = Member::new(3);
    carol.start_entry(&mut relay, &keys)?;
    // Carol's client stops before the log confirms her entry, and restarts from its blob.
    let blob = carol.room().export_state()?;
    assert!(!carol.room().is_member());
    carol.room = Some(Room::load_state(&carol.id, room_ref(), &keys.room_psk, &blob)?);
    assert!(matches!(carol.room().seal_message(b"too early"), Err(GroupError::NotEntered)));
    assert_eq!(carol.catch_up(&relay).pop().unwrap()?, Event::Entered);
    members.iter_mut().for_each(|m| drop(m.catch_up(&relay)));
    members.push(carol);
    assert_converged(&mut members);
    members[2].say(&mut relay, "in")?;
    assert_eq!(Member::messages(&members[0].catch_up(&relay)), vec!["in".to_string()]);
    Ok(())
}

#[test]
fn after_a_psk_rotation_entries_need_the_new_generations_key_and_psk() -> TestResult {
    let (mut relay, old) = (Relay::default(), password(1));
    let mut members = room_of(2, &mut relay, &old)?;
    let new = password(2);
    for m in &mut members {
        let id = Identity::from_seed(&m.id.seed());
        m.room().rotate_psk(&id, 1, &new.room_psk)?;
        assert_eq!(m.room().psk_generation(), 1);
    }
    relay.put_group_info(members[0].room().sealed_group_info(&new.group_info_key)?);

    // The old password's key no longer opens the GroupInfo.
    let refused = Member::new(66).start_entry(&mut relay, &old);
    assert!(matches!(refused, Err(GroupError::GroupInfoKey)), "{refused:?}");

    // The new key with the old PSK: built (generation 1 from the seal), refused by members.
    let before = codes(&mut members);
    Member::new(67).start_entry_with(&mut relay, &old.room_psk, &new.group_info_key)?;
    for m in &mut members {
        assert!(matches!(m.catch_up(&relay).as_slice(), [Err(GroupError::Mls(_))]));
    }
    assert_eq!(codes(&mut members), before);
    // (A member publishes the GroupInfo again after the refused entry, as the epoch is unchanged.)
    relay.put_group_info(members[0].room().sealed_group_info(&new.group_info_key)?);

    // The new password enters, and everyone talks on.
    let mut carol = Member::new(3);
    carol.start_entry(&mut relay, &new)?;
    assert_eq!(carol.catch_up(&relay).pop().unwrap()?, Event::Entered);
    assert_eq!(carol.room().psk_generation(), 1);
    for m in &mut members {
        assert!(matches!(m.catch_up(&relay).last(), Some(Ok(Event::Commit(c))) if c.entry));
    }
    members[1].say(&mut relay, "after the rotation")?;
    assert_eq!(Member::messages(&carol.catch_up(&relay)), vec!["after the rotation".to_string()]);
    members.push(carol);
    assert_converged(&mut members);
    Ok(())
}
