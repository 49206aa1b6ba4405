//! What protocol version 2 costs a client, beside version 1 and one Argon2id derivation measured
//! in the same run: entry by external commit, an update (healing) commit, a removal, one chat
//! message (MLS plus the signed v2 envelope, against v1's sealed envelope), the sealed GroupInfo
//! and the saved MLS state, at the group sizes given. Everything goes through the code the
//! client runs (`chatroom_group::Room`, `chatroom_crypto`'s envelopes); nothing touches a socket
//! or a disk, so the figures are the client's CPU, not the network's or fsync's.
//!
//! The group is grown by external commits, as a real room is; only two members keep their state
//! (the creator, who commits, and an observer, who processes), so a 500-member group costs
//! seconds to build rather than every member processing every entry.

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    derive_room_secrets_v2, open, seal, sign_v2, split_master_v2, verify_v2, Content, ContentKind, Identity,
    KdfParams, Nick, RoomName, RoomSecretsV2,
};
use chatroom_group::{Event, GroupError, Kind, LogEntry, Room, RoomRef};

use crate::error::BenchError;

/// One measured operation at one group size.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Members in the group when the operation starts.
    pub members: usize,
    /// What was measured.
    pub operation: &'static str,
    /// Median CPU time of the side that makes it (µs).
    pub create_us: f64,
    /// Median CPU time of a member that processes it (µs); `None` where nobody does.
    pub process_us: Option<f64>,
    /// Its size as sent or stored.
    pub bytes: usize,
}

/// Operation names, as the rows and the report give them.
pub const ENTRY: &str = "entry (external commit + PSK)";
pub const REMOVE: &str = "remove";
pub const UPDATE: &str = "update (healing)";
pub const MESSAGE_V2: &str = "message v2 (MLS + signed envelope)";
pub const MESSAGE_V1: &str = "message v1 (sealed envelope)";
pub const GROUP_INFO: &str = "sealed GroupInfo";
pub const STATE: &str = "saved MLS state";

/// The text every measured message carries: 100 bytes, as the load generator's.
const BODY: &str =
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopq";

/// Measures each group size in `sizes` (at least 2 members): every commit `reps` times, a
/// message `reps * 50` times.
pub fn measure(sizes: &[usize], reps: usize) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for &n in sizes {
        if n < 2 {
            return Err(BenchError::Workload(format!("a group of {n}: the run needs at least 2 members")));
        }
        rows.extend(GroupRun::grow(n)?.measure(reps.max(1))?);
    }
    Ok(rows)
}

/// The median CPU time (µs) of `reps` v2 password derivations with `params`: what a client
/// pays once per room before it can enter.
pub fn argon2id_us(params: KdfParams, reps: usize) -> Result<f64, BenchError> {
    let room = RoomName::new("general").map_err(encode("the room name"))?;
    let mut spent = Vec::new();
    for _ in 0..reps.max(1) {
        let start = cpu_now();
        let secrets = derive_room_secrets_v2(b"correct horse battery staple", &[7; 32], &room, params)?;
        spent.push(cpu_now() - start);
        drop(secrets);
    }
    Ok(median(spent))
}

/// The room's latest sealed GroupInfo, as the relay holds it, and the two members whose state
/// is kept: the creator, who commits, and the observer, who processes.
struct GroupRun {
    keys: RoomSecretsV2,
    room: RoomRef,
    creator: Member,
    observer: Option<Member>,
    group_info: Vec<u8>,
    members: usize,
    next_seed: u32,
}

struct Member {
    id: Identity,
    room: Room,
}

/// An entry: the newcomer, its commit, and the CPU time of making it and of the creator
/// processing it.
struct Entered {
    member: Member,
    commit: Vec<u8>,
    created: f64,
    processed: f64,
}

impl GroupRun {
    /// A group of `n` members: the creator, the observer and `n - 2` who entered and keep no state.
    fn grow(n: usize) -> Result<Self, BenchError> {
        let keys = split_master_v2(&[5; 32]);
        let room = RoomRef {
            room: RoomName::new("general").map_err(encode("the room name"))?,
            relay_key: [7; 32],
            psk_generation: 0,
        };
        let id = identity(1);
        let created = Room::create(&id, room.clone(), &keys.room_psk).map_err(group("create the group"))?;
        let group_info =
            created.sealed_group_info(&keys.group_info_key).map_err(group("seal the GroupInfo"))?;
        let creator = Member { id, room: created };
        let mut run = Self { keys, room, creator, observer: None, group_info, members: 1, next_seed: 2 };
        run.observer = Some(run.enter()?.member);
        while run.members < n {
            run.enter()?;
        }
        Ok(run)
    }

    /// A new identity enters by external commit, the others process it, and the newcomer
    /// publishes the new GroupInfo.
    fn enter(&mut self) -> Result<Entered, BenchError> {
        let id = identity(self.next_seed);
        self.next_seed += 1;
        let start = cpu_now();
        let (mut room, commit) = Room::enter(
            &id,
            self.room.clone(),
            &self.keys.room_psk,
            &self.keys.group_info_key,
            &self.group_info,
        )
        .map_err(group("enter by external commit"))?;
        let created = cpu_now() - start;
        expect(room.process(entry(&id, Kind::Commit, &commit)), "its own entry", |e| *e == Event::Entered)?;
        let processed = self.others_process(&id, &commit)?;
        self.group_info =
            room.sealed_group_info(&self.keys.group_info_key).map_err(group("seal the GroupInfo"))?;
        self.members += 1;
        Ok(Entered { member: Member { id, room }, commit, created, processed })
    }

    /// The creator and the observer (if there is one yet) process a commit and must agree on
    /// the new epoch; returns the creator's CPU time.
    fn others_process(&mut self, from: &Identity, commit: &[u8]) -> Result<f64, BenchError> {
        let start = cpu_now();
        expect(self.creator.room.process(entry(from, Kind::Commit, commit)), "a commit", is_commit)?;
        let spent = cpu_now() - start;
        if let Some(observer) = &mut self.observer {
            expect(observer.room.process(entry(from, Kind::Commit, commit)), "a commit", is_commit)?;
            agree(&self.creator, observer)?;
        }
        Ok(spent)
    }

    fn observer(&mut self) -> Result<&mut Member, BenchError> {
        self.observer.as_mut().ok_or(BenchError::Internal("the group has no observer"))
    }

    fn measure(mut self, reps: usize) -> Result<Vec<Row>, BenchError> {
        let n = self.members;
        let mut entries = Series::default();
        let mut removals = Series::default();
        let mut updates = Series::default();
        for _ in 0..reps {
            let e = self.enter()?;
            entries.add(e.created, e.processed, e.commit.len());
            let who = e.member.id.public();
            let (commit, created, processed) = self.creator_commits(|room| room.remove(&who))?;
            self.members -= 1;
            removals.add(created, processed, commit.len());
            let (commit, created, processed) = self.creator_commits(Room::update)?;
            updates.add(created, processed, commit.len());
        }
        let mut rows = vec![entries.row(n, ENTRY), removals.row(n, REMOVE), updates.row(n, UPDATE)];
        rows.extend(self.messages(reps * 50)?);
        rows.extend(self.stored(reps)?);
        Ok(rows)
    }

    /// The creator makes a commit, merges it when the log returns it, and seals the GroupInfo it
    /// then publishes (all counted as its cost); the observer processes it.
    fn creator_commits(
        &mut self,
        make: impl FnOnce(&mut Room) -> Result<Vec<u8>, GroupError>,
    ) -> Result<(Vec<u8>, f64, f64), BenchError> {
        let from = self.creator.id.public();
        let start = cpu_now();
        let commit = make(&mut self.creator.room).map_err(group("make a commit"))?;
        let own = self.creator.room.process(LogEntry { sender: from, kind: Kind::Commit, mls: &commit });
        expect(own, "its own commit", is_commit)?;
        self.group_info = self
            .creator
            .room
            .sealed_group_info(&self.keys.group_info_key)
            .map_err(group("seal the GroupInfo"))?;
        let created = cpu_now() - start;
        let observer = self.observer.as_mut().ok_or(BenchError::Internal("the group has no observer"))?;
        let start = cpu_now();
        let event = observer.room.process(LogEntry { sender: from, kind: Kind::Commit, mls: &commit });
        let processed = cpu_now() - start;
        expect(event, "the creator's commit", is_commit)?;
        agree(&self.creator, observer)?;
        Ok((commit, created, processed))
    }

    /// One 100-byte message, v2 (an MLS application message in a signed envelope) and v1 (an
    /// envelope sealed under a password-derived message key), sealed by the creator and opened
    /// by the observer.
    fn messages(&mut self, reps: usize) -> Result<Vec<Row>, BenchError> {
        let n = self.members;
        let content = Content {
            timestamp_ms: 1_700_000_000_000,
            kind: ContentKind::Text,
            nick: Nick::new("alice").map_err(encode("the nickname"))?,
            body: BODY.into(),
        };
        let plaintext = content.to_padded_bytes().map_err(encode("the content"))?;
        let v1_keys = split_master(&[3; 32]);
        let v1_key = &v1_keys.message_key;
        let (mut v2, mut v1) = (Series::default(), Series::default());
        for counter in 0..reps as u64 {
            let (envelope, sealed) = self.seal_v2(counter, &plaintext)?;
            let start = cpu_now();
            let signed = verify_v2(&self.room.room, &envelope)
                .map_err(|_| BenchError::Internal("a v2 envelope does not verify"))?;
            let event = self.observer()?.room.process(LogEntry {
                sender: signed.sender,
                kind: Kind::Application,
                mls: &signed.mls,
            });
            v2.add(sealed, cpu_now() - start, envelope.len());
            expect(
                event,
                "a message",
                |e| matches!(e, Event::Message { plaintext: p, .. } if **p == *plaintext),
            )?;

            let start = cpu_now();
            let envelope = seal(v1_key, &self.creator.id, &self.room.room, counter, &content)
                .map_err(encode("a v1 envelope"))?;
            let sealed = cpu_now() - start;
            let start = cpu_now();
            let opened = open(v1_key, &self.room.room, &envelope)
                .map_err(|_| BenchError::Internal("a v1 envelope does not open"))?;
            v1.add(sealed, cpu_now() - start, envelope.len());
            if opened.content != content {
                return Err(BenchError::Internal("a v1 envelope opened to other content"));
            }
        }
        Ok(vec![v2.row(n, MESSAGE_V2), v1.row(n, MESSAGE_V1)])
    }

    /// The creator's v2 envelope of one message, and the CPU time it took.
    fn seal_v2(&mut self, counter: u64, plaintext: &[u8]) -> Result<(Vec<u8>, f64), BenchError> {
        let start = cpu_now();
        let mls = self.creator.room.seal_message(plaintext).map_err(group("seal a message"))?;
        let envelope = sign_v2(&self.creator.id, &self.room.room, counter, Kind::Application as u8, &mls)
            .map_err(encode("a v2 envelope"))?;
        Ok((envelope, cpu_now() - start))
    }

    /// What the client seals for the relay after each epoch (the GroupInfo) and what it saves
    /// after each batch of log entries (its MLS state, before the file write).
    fn stored(&mut self, reps: usize) -> Result<Vec<Row>, BenchError> {
        let n = self.members;
        let (mut info, mut state) = (Series::default(), Series::default());
        for _ in 0..reps {
            let start = cpu_now();
            let sealed = self
                .creator
                .room
                .sealed_group_info(&self.keys.group_info_key)
                .map_err(group("seal the GroupInfo"))?;
            info.add_made(cpu_now() - start, sealed.len());
            let start = cpu_now();
            let saved = self.creator.room.export_state().map_err(group("export the state"))?;
            state.add_made(cpu_now() - start, saved.len());
        }
        Ok(vec![info.row(n, GROUP_INFO), state.row(n, STATE)])
    }
}

/// Times of one operation (seconds) and its last size.
#[derive(Default)]
struct Series {
    created: Vec<f64>,
    processed: Vec<f64>,
    bytes: usize,
}

impl Series {
    fn add(&mut self, created: f64, processed: f64, bytes: usize) {
        self.processed.push(processed);
        self.add_made(created, bytes);
    }

    fn add_made(&mut self, created: f64, bytes: usize) {
        self.created.push(created);
        self.bytes = bytes;
    }

    fn row(self, members: usize, operation: &'static str) -> Row {
        let process_us = (!self.processed.is_empty()).then(|| median(self.processed));
        Row { members, operation, create_us: median(self.created), process_us, bytes: self.bytes }
    }
}

/// The two kept members share one epoch and its code (from the epoch authenticator).
fn agree(creator: &Member, observer: &Member) -> Result<(), BenchError> {
    let code = |m: &Member| m.room.epoch_code().map(|c| c.to_string()).map_err(group("the epoch code"));
    if creator.room.epoch() != observer.room.epoch() || code(creator)? != code(observer)? {
        return Err(BenchError::Internal("creator and observer disagree on the epoch"));
    }
    Ok(())
}

fn identity(seed: u32) -> Identity {
    let mut bytes = [1u8; 32];
    bytes[..4].copy_from_slice(&seed.to_be_bytes());
    Identity::from_seed(&bytes)
}

fn entry<'a>(from: &Identity, kind: Kind, mls: &'a [u8]) -> LogEntry<'a> {
    LogEntry { sender: from.public(), kind, mls }
}

fn is_commit(e: &Event) -> bool {
    matches!(e, Event::Commit(_))
}

fn expect(
    event: Result<Event, GroupError>,
    what: &str,
    ok: impl Fn(&Event) -> bool,
) -> Result<(), BenchError> {
    match event {
        Ok(e) if ok(&e) => Ok(()),
        Ok(e) => Err(BenchError::Server(format!("processing {what} gave {e:?}"))),
        Err(e) => Err(BenchError::Server(format!("processing {what} failed: {e}"))),
    }
}

/// The median of CPU times in seconds, in µs.
fn median(mut secs: Vec<f64>) -> f64 {
    secs.sort_by(f64::total_cmp);
    secs.get(secs.len() / 2).map_or(0.0, |s| s * 1e6)
}

/// This process's CPU time (every thread), in seconds.
fn cpu_now() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

fn group(what: &'static str) -> impl FnOnce(GroupError) -> BenchError {
    move |e| BenchError::Server(format!("{what}: {e}"))
}

fn encode(what: &'static str) -> impl FnOnce(chatroom_crypto::DecodeError) -> BenchError {
    move |source| BenchError::Encode { what: what.into(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(rows: &'a [Row], n: usize, op: &str) -> &'a Row {
        rows.iter().find(|r| r.members == n && r.operation == op).unwrap()
    }

    #[test]
    fn every_operation_is_measured_at_each_size_and_the_tree_grows_with_the_group() {
        let rows = measure(&[2, 5], 2).unwrap();
        assert_eq!(rows.len(), 2 * 7);
        for n in [2, 5] {
            let update = row(&rows, n, UPDATE);
            assert!(update.create_us > 0.0 && update.process_us.unwrap() > 0.0 && update.bytes > 0);
            assert!(row(&rows, n, ENTRY).bytes > 0 && row(&rows, n, REMOVE).bytes > 0);
            assert!(row(&rows, n, MESSAGE_V2).bytes > row(&rows, n, MESSAGE_V1).bytes);
            assert_eq!(row(&rows, n, STATE).process_us, None);
        }
        assert!(row(&rows, 5, GROUP_INFO).bytes > row(&rows, 2, GROUP_INFO).bytes);
        assert!(row(&rows, 5, STATE).bytes > row(&rows, 2, STATE).bytes);
    }

    #[test]
    fn a_group_of_one_is_refused() {
        assert!(matches!(measure(&[1], 1), Err(BenchError::Workload(_))));
    }
}
