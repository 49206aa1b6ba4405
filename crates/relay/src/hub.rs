//! Room state, history and fan-out, behind the `RoomService` interface.
//!
//! Connection handling (`handler.rs`) talks to rooms only through `RoomService`. `LocalRooms`
//! implements it for one relay process with SQLite underneath; a clustered relay (several
//! processes sharing rooms through a distributed log such as NATS JetStream) is another
//! implementation of the same trait, not a change to the connection code.
//!
//! Only a `VerifiedJoin` (which only `SignedJoin::admit`, the password check, produces) can
//! register a member, and only a registered member's handle can publish: a code path that
//! relays anything before the join checks passed does not compile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{
    encode_deliver, EnvelopeHeader, ErrorCode, JoinVerifier, Member, Nick, PresenceEvent, PublicIdentity,
    RelayMessage, RoomName, SignedJoin, VerifiedJoin, MAX_MEMBERS_PER_ITEM,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

mod operator;

use crate::outbox::{encode, Outbox, Pulled, Replay};
use crate::store::{RoomRecord, StoreError, StoreHandle, StoredEnvelope};

/// How long a resend of an envelope that is still being committed waits for that commit.
const RESEND_WAIT: Duration = Duration::from_secs(10);

/// A refused request: the code and a detail that tells the member what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into() }
    }

    fn internal(e: &StoreError) -> Self {
        error!(error = %e, "storage failed");
        Self::new(ErrorCode::Internal, "the relay could not store this; try again later")
    }
}

/// Bytes before the envelope in a `Deliver` item: item header, `seq`, `history` flag.
const DELIVER_PREFIX: usize = chatroom_crypto::ITEM_HEADER_LEN + 9;

/// A retained envelope, kept as the `Deliver` item a history replay sends: every replay
/// shares this one buffer.
#[derive(Debug, Clone)]
struct Retained {
    seq: u64,
    sender: [u8; 32],
    counter: u64,
    item: Bytes,
}

impl Retained {
    fn new(seq: u64, sender: [u8; 32], counter: u64, envelope: &[u8]) -> Self {
        let mut item = Vec::with_capacity(envelope.len() + DELIVER_PREFIX);
        encode_deliver(seq, true, envelope, &mut item);
        Self { seq, sender, counter, item: Bytes::from(item) }
    }

    fn from_stored(e: &StoredEnvelope) -> Self {
        Self::new(e.seq, e.sender, e.counter, &e.envelope)
    }

    fn envelope_len(&self) -> usize {
        self.item.len().saturating_sub(DELIVER_PREFIX)
    }

    /// The envelope, sharing the item's buffer.
    fn envelope(&self) -> Bytes {
        self.item.slice(DELIVER_PREFIX.min(self.item.len())..)
    }
}

/// A joiner's history replay: a position in the room's history, pulled by the member's
/// writer as its socket drains.
#[derive(Debug)]
struct HistoryReplay {
    room: Arc<Room>,
    /// Next envelope to send and the end of the replay, counted as `RoomState::trimmed`.
    pos: u64,
    end: u64,
    latest_seq: u64,
}

impl Replay for HistoryReplay {
    fn pull(&mut self, budget: usize) -> Pulled {
        let st = self.room.lock();
        if self.pos < st.trimmed {
            return Pulled::Lost;
        }
        let mut items = Vec::new();
        let mut size = 0usize;
        while self.pos < self.end {
            let index = usize::try_from(self.pos - st.trimmed).unwrap_or(usize::MAX);
            let Some(e) = st.history.get(index) else { break };
            if size + e.item.len() > budget && !items.is_empty() {
                return Pulled::More(items);
            }
            size += e.item.len();
            items.push(e.item.clone());
            self.pos += 1;
        }
        items.push(encode(&RelayMessage::HistoryEnd { latest_seq: self.latest_seq }));
        Pulled::Done(items)
    }
}

/// The detail of a join refused because its room is locked.
pub(crate) fn too_many_attempts() -> String {
    "too many failed joins for this room; try again later".to_owned()
}

/// What the owner asks the relay to do to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moderation {
    Kick,
    Ban,
    Unban,
}

/// What the connection handling has decided about a join before the room is consulted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JoinPolicy {
    /// The relay is near its connection cap: only identities bound in the room get in.
    pub(crate) crowded: bool,
    /// The room is locked after too many failed joins: only identities bound in it get in,
    /// and nobody else's password is even checked.
    pub(crate) room_locked: bool,
}

/// Consulted just before a join creates a room; an `Err` refuses the creation (the per-address
/// limit on new rooms lives with the connection handling, not in the room service).
pub(crate) type CreateGate<'a> = &'a (dyn Fn() -> Result<(), Refusal> + Send + Sync);

/// Room state, history and fan-out, as the connection handler sees them.
pub(crate) trait RoomService: Send + Sync + 'static {
    /// A joined member's handle; dropping it without `leave` is a bug.
    type Membership: Send + Sync + fmt::Debug + 'static;

    /// Runs the join checks (ban, nickname, password, or room creation) and registers the
    /// member. On success the member's outbox already holds, in order: `Joined`, `Members`,
    /// the retained envelopes after `history_after`, and `HistoryEnd`; live traffic follows
    /// with no gap and no duplicate. `may_create` is asked before a room is created. When the
    /// relay is crowded or the room locked (`policy`), only identities that already hold a
    /// nickname in the room get in.
    fn join(
        &self,
        join: SignedJoin,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
        may_create: CreateGate<'_>,
        policy: JoinPolicy,
    ) -> impl Future<Output = Result<Self::Membership, Refusal>> + Send;

    /// Stores an envelope whose sender is the member, then delivers it to every other member.
    /// The envelope is checked and queued for storage before this returns, so calls made one
    /// after the other are stored (and delivered) in call order; the returned future resolves
    /// to its sequence number once it is durable (an idempotent resend returns the stored
    /// one). The future borrows nothing, so a connection can hold several at once.
    fn publish(
        &self,
        member: &Self::Membership,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send + 'static;

    /// The connected members of the member's room.
    fn members(&self, member: &Self::Membership) -> Vec<Member>;

    /// Kick, ban or unban `nick` (room owner only).
    fn moderate(
        &self,
        member: &Self::Membership,
        action: Moderation,
        nick: Nick,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// The member's connection ended.
    fn leave(&self, member: &Self::Membership);

    /// Deletes rooms unused for `idle`; returns how many.
    fn expire(&self, idle: Duration) -> impl Future<Output = usize> + Send;
}

/// A connected member, as the room sees it.
#[derive(Debug)]
struct Connected {
    connection: u64,
    nick: Nick,
    outbox: Arc<Outbox>,
}

struct RoomState {
    verifier: JoinVerifier,
    owner: PublicIdentity,
    /// Highest sequence number handed out.
    latest_seq: u64,
    /// Highest sequence number committed and delivered.
    delivered_seq: u64,
    /// Committed envelopes, oldest first, at most `LocalRooms::history`: one copy each,
    /// shared by every replay.
    history: VecDeque<Retained>,
    /// Bytes of the envelopes in `history`, at most `LocalRooms::history`'s byte limit.
    retained_bytes: usize,
    /// Envelopes ever dropped from the front of `history`: a replay's position is counted
    /// from the first envelope this room held in memory, so it notices when the history moved
    /// on past it.
    trimmed: u64,
    /// Highest counter accepted per sender.
    counters: HashMap<PublicIdentity, u64>,
    /// Envelopes handed to storage but not committed yet: (sender, counter) -> seq.
    pending: HashMap<(PublicIdentity, u64), u64>,
    /// Canonical nickname -> identity.
    nicks: HashMap<String, PublicIdentity>,
    bans: HashSet<PublicIdentity>,
    members: HashMap<PublicIdentity, Connected>,
    /// Appends not yet completed, and joins between their checks and registration: a room
    /// with either is never evicted from memory.
    inflight: usize,
    joining: usize,
    evicted: bool,
    /// When the room's use was last recorded in storage.
    touched: Option<Instant>,
}

struct Room {
    name: RoomName,
    state: Mutex<RoomState>,
    committed: watch::Sender<u64>,
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Room {
    fn new(name: RoomName, state: RoomState) -> Arc<Self> {
        let delivered = state.delivered_seq;
        Arc::new(Self { name, state: Mutex::new(state), committed: watch::channel(delivered).0 })
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn from_record(name: RoomName, record: RoomRecord, keep: HistoryLimit) -> Arc<Self> {
        let delivered = record.history.last().map_or(record.latest_seq, |e| e.seq.max(record.latest_seq));
        let mut state = RoomState {
            verifier: JoinVerifier(record.verifier),
            owner: PublicIdentity(record.owner),
            latest_seq: delivered,
            delivered_seq: delivered,
            history: record.history.iter().map(Retained::from_stored).collect(),
            retained_bytes: record.history.iter().map(|e| e.envelope.len()).sum(),
            trimmed: 0,
            counters: record.counters.into_iter().map(|(id, c)| (PublicIdentity(id), c)).collect(),
            pending: HashMap::new(),
            nicks: record.nicks.into_iter().map(|(n, id)| (n, PublicIdentity(id))).collect(),
            bans: record.bans.into_iter().map(PublicIdentity).collect(),
            members: HashMap::new(),
            inflight: 0,
            joining: 0,
            evicted: false,
            touched: None,
        };
        state.trim(keep);
        Self::new(name, state)
    }
}

/// How much history a room keeps: envelopes, and bytes of them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryLimit {
    pub(crate) count: usize,
    pub(crate) bytes: usize,
}

impl RoomState {
    /// Drops the oldest retained envelopes beyond `keep`.
    fn trim(&mut self, keep: HistoryLimit) {
        while self.history.len() > keep.count || self.retained_bytes > keep.bytes {
            let Some(e) = self.history.pop_front() else { break };
            self.retained_bytes -= e.envelope_len();
            self.trimmed += 1;
        }
    }

    /// Pushes an item to every member but `except`; a member whose queue is full is closed
    /// as a slow consumer.
    fn broadcast(&self, item: &Bytes, except: Option<&PublicIdentity>) {
        for (id, member) in &self.members {
            if Some(id) != except {
                member.outbox.push_batched(item.clone());
            }
        }
    }

    fn presence(
        &self,
        event: PresenceEvent,
        nick: &Nick,
        identity: PublicIdentity,
        except: Option<&PublicIdentity>,
    ) {
        let item = encode(&RelayMessage::Presence { event, nick: nick.clone(), identity });
        self.broadcast(&item, except);
    }

    fn member_list(&self) -> Vec<Member> {
        let mut list: Vec<Member> =
            self.members.iter().map(|(id, m)| Member { nick: m.nick.clone(), identity: *id }).collect();
        list.sort_by_key(|m| m.nick.canonical());
        list
    }

    fn is_current(&self, member: &LocalMember) -> bool {
        self.members.get(&member.identity).is_some_and(|c| c.connection == member.connection)
    }

    fn owner_only(&self, member: &LocalMember) -> Result<(), Refusal> {
        if member.identity == self.owner {
            Ok(())
        } else {
            Err(Refusal::new(ErrorCode::NotOwner, "only the room owner may kick, ban or unban"))
        }
    }

    fn bound(&self, nick: &Nick) -> Result<PublicIdentity, Refusal> {
        self.nicks.get(&nick.canonical()).copied().ok_or_else(|| {
            Refusal::new(ErrorCode::NoSuchMember, format!("nobody uses the nickname {nick} in this room"))
        })
    }
}

/// Splits a member list into `Members` items.
pub(crate) fn member_items(list: Vec<Member>) -> Vec<Bytes> {
    if list.is_empty() {
        return vec![encode(&RelayMessage::Members { more: false, members: Vec::new() })];
    }
    let chunks: Vec<&[Member]> = list.chunks(MAX_MEMBERS_PER_ITEM).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| encode(&RelayMessage::Members { more: i < last, members: chunk.to_vec() }))
        .collect()
}

/// A member registered with `LocalRooms`.
pub(crate) struct LocalMember {
    room: Arc<Room>,
    identity: PublicIdentity,
    nick: Nick,
    connection: u64,
}

impl fmt::Debug for LocalMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMember")
            .field("room", &self.room.name)
            .field("nick", &self.nick)
            .field("connection", &self.connection)
            .finish()
    }
}

/// Rooms of one relay process, kept in memory while they have members and stored in SQLite.
#[derive(Debug)]
pub(crate) struct LocalRooms {
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    /// Serialises loading and creating each room, so one room is never loaded twice; rooms
    /// load independently of each other. An entry lives while someone holds or awaits it.
    loading: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<()>>>>,
    store: StoreHandle,
    history: HistoryLimit,
    /// Members per room, and the part of it kept for identities already bound in the room.
    max_members: usize,
    reserved: usize,
    /// Nicknames one room binds at most.
    max_nicknames: usize,
    /// Rooms the relay stores at most, and how many it stores.
    max_rooms: usize,
    stored: AtomicUsize,
}

/// Least time between two records of a room's use (see `LocalRooms::touch`).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Most idle rooms one expiry pass deletes; the next pass takes the rest.
const EXPIRE_BATCH: usize = 256;

/// What `LocalRooms` enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomLimits {
    pub(crate) history: HistoryLimit,
    pub(crate) max_members: usize,
    pub(crate) headroom_percent: usize,
    pub(crate) max_rooms: usize,
    pub(crate) max_nicknames: usize,
}

enum Publish {
    New(u64, tokio::sync::oneshot::Receiver<Result<(), StoreError>>),
    /// An idempotent resend of an envelope already committed.
    Stored(u64),
    Resent(u64, watch::Receiver<u64>, Instant),
}

enum Lookup {
    Found(Arc<Room>),
    Missing,
}

impl LocalRooms {
    /// Rooms over `store`, which holds `stored` rooms now.
    pub(crate) fn new(store: StoreHandle, limits: RoomLimits, stored: usize) -> Self {
        let max_members = limits.max_members.max(1);
        Self {
            rooms: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            store,
            history: limits.history,
            max_members,
            reserved: max_members * limits.headroom_percent.min(100) / 100,
            max_rooms: limits.max_rooms,
            max_nicknames: limits.max_nicknames,
            stored: AtomicUsize::new(stored),
        }
    }

    /// Records that `room` is in use, at most once per `TOUCH_EVERY`: expiry counts in days,
    /// and a join or leave should not cost a write each.
    fn touch(&self, room: &Room) {
        let due = {
            let mut st = room.lock();
            let due = st.touched.is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
            if due {
                st.touched = Some(Instant::now());
            }
            due
        };
        if due {
            self.store.touch(room.name.as_str());
        }
    }

    /// Deletes rooms nobody joined or sent to for `idle`, with everything stored about them;
    /// returns how many. A room in memory (it has members) is never deleted.
    async fn expire_idle(&self, idle: Duration) -> usize {
        let before =
            crate::store::now_secs().saturating_sub(i64::try_from(idle.as_secs()).unwrap_or(i64::MAX));
        let names = match self.store.idle_rooms(before, EXPIRE_BATCH).await {
            Ok(names) => names,
            Err(e) => {
                error!(error = %e, "could not look for idle rooms");
                return 0;
            }
        };
        let mut expired = 0;
        for name in names.iter().filter_map(|n| RoomName::new(n).ok()) {
            // Under the room's loading lock: nobody loads it while it goes.
            let deleted = self
                .loading(&name, async {
                    if self.map().contains_key(&name) {
                        return false;
                    }
                    self.store.delete_room(name.as_str()).await.is_ok()
                })
                .await;
            if deleted {
                self.stored.fetch_sub(1, Ordering::Relaxed);
                expired += 1;
            }
        }
        if expired > 0 {
            info!(expired, "idle rooms deleted");
        }
        expired
    }

    /// Whether the room has a place for `identity`: a member reconnecting always does (its
    /// old connection is replaced); an identity bound to a nickname in the room may take the
    /// reserved part; a stranger may not, nor anyone a stranger when the relay is `crowded`.
    fn admit_member(
        &self,
        st: &RoomState,
        identity: &PublicIdentity,
        bound: bool,
        crowded: bool,
    ) -> Result<(), Refusal> {
        if st.members.contains_key(identity) {
            return Ok(());
        }
        if crowded && !bound {
            return Err(Refusal::new(ErrorCode::ServerFull, "the relay is full; try again later"));
        }
        let present = st.members.len() + st.joining;
        let limit = if bound { self.max_members } else { self.max_members - self.reserved };
        if present >= limit {
            return Err(Refusal::new(
                ErrorCode::RoomFull,
                format!("the room has its maximum of {} members; try again later", self.max_members),
            ));
        }
        Ok(())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` holding the loading lock of the room `name` (and no other room's).
    async fn loading<R>(&self, name: &RoomName, f: impl Future<Output = R>) -> R {
        let lock = {
            let mut locks = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(name.clone()).or_default().clone()
        };
        let result = {
            let _held = lock.lock().await;
            f.await
        };
        let mut locks = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        drop(lock);
        // Nobody else holds or waits for it: forget it.
        if locks.get(name).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(name);
        }
        result
    }

    /// Finds a room in memory, or loads it. Must be called inside `loading` for `name`.
    async fn load(&self, name: &RoomName) -> Result<Lookup, Refusal> {
        if let Some(room) = self.map().get(name) {
            return Ok(Lookup::Found(room.clone()));
        }
        // Storage runs operations in order, so this read sees every write queued before it,
        // including those of a room evicted a moment ago.
        match self.store.load_room(name.as_str()).await {
            Ok(Some(record)) => {
                let room = Room::from_record(name.clone(), record, self.history);
                self.map().insert(name.clone(), room.clone());
                Ok(Lookup::Found(room))
            }
            Ok(None) => Ok(Lookup::Missing),
            Err(e) => Err(Refusal::internal(&e)),
        }
    }

    async fn lookup(&self, name: &RoomName) -> Result<Lookup, Refusal> {
        if let Some(room) = self.map().get(name) {
            return Ok(Lookup::Found(room.clone()));
        }
        self.loading(name, self.load(name)).await
    }

    /// Registers a verified member; the caller holds the room lock.
    fn register(
        room: &Arc<Room>,
        st: &mut RoomState,
        verified: VerifiedJoin,
        created: bool,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
    ) -> LocalMember {
        let identity = *verified.identity();
        let nick = verified.nick().clone();
        let entry = Connected { connection, nick: nick.clone(), outbox: outbox.clone() };
        // A replacement is announced too: the others' lists then carry the nickname as this
        // connection spells it.
        st.presence(PresenceEvent::Joined, &nick, identity, Some(&identity));
        if let Some(old) = st.members.insert(identity, entry) {
            old.outbox.close(ErrorCode::AlreadyConnected, "replaced by a new connection");
        }
        let mut first = vec![encode(&RelayMessage::Joined {
            created,
            owner: st.owner,
            latest_seq: st.delivered_seq,
            oldest_seq: st.history.front().map_or(0, |e| e.seq),
        })];
        first.extend(member_items(st.member_list()));
        let skipped = st.history.partition_point(|e| e.seq <= history_after);
        let replay = HistoryReplay {
            room: room.clone(),
            pos: st.trimmed + skipped as u64,
            end: st.trimmed + st.history.len() as u64,
            latest_seq: st.delivered_seq,
        };
        let _ = outbox.start(first, Box::new(replay));
        LocalMember { room: room.clone(), identity, nick, connection }
    }

    async fn create(
        &self,
        join: SignedJoin,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
        may_create: CreateGate<'_>,
    ) -> Result<Result<LocalMember, SignedJoin>, Refusal> {
        let name = join.request().room.clone();
        self.loading(&name, self.create_locked(join, history_after, connection, outbox, may_create)).await
    }

    /// `create`, inside the room's loading lock.
    async fn create_locked(
        &self,
        join: SignedJoin,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
        may_create: CreateGate<'_>,
    ) -> Result<Result<LocalMember, SignedJoin>, Refusal> {
        let name = join.request().room.clone();
        if let Lookup::Found(_) = self.load(&name).await? {
            // Created by someone else meanwhile: join it like any existing room.
            return Ok(Err(join));
        }
        may_create()?;
        if self.stored.load(Ordering::Relaxed) >= self.max_rooms {
            return Err(Refusal::new(
                ErrorCode::ServerFull,
                format!("the relay holds its maximum of {} rooms; try again later", self.max_rooms),
            ));
        }
        let nick = join.request().nick.canonical();
        let verifier = join.new_room_verifier();
        let owner = join.request().identity;
        // Fails if the room exists: storage reports that this join inserted it.
        self.store
            .create_room(name.as_str(), verifier.0, owner.0, &nick)
            .await
            .map_err(|e| Refusal::internal(&e))?;
        // The founder, like anyone, is admitted by the stored verifier.
        let verified = join
            .admit(&verifier)
            .map_err(|_| Refusal::new(ErrorCode::Internal, "the new room refused its founder; try again"))?;
        let state = RoomState {
            verifier,
            owner,
            latest_seq: 0,
            delivered_seq: 0,
            history: VecDeque::new(),
            retained_bytes: 0,
            trimmed: 0,
            counters: HashMap::new(),
            pending: HashMap::new(),
            nicks: HashMap::from([(nick, owner)]),
            bans: HashSet::new(),
            members: HashMap::new(),
            inflight: 0,
            joining: 0,
            evicted: false,
            // `create_room` recorded the creation as the room's first use.
            touched: Some(Instant::now()),
        };
        let room = Room::new(name.clone(), state);
        let member = {
            let mut st = room.lock();
            Self::register(&room, &mut st, verified, true, history_after, connection, outbox)
        };
        self.map().insert(name.clone(), room);
        self.stored.fetch_add(1, Ordering::Relaxed);
        info!(room = %name, "room created");
        Ok(Ok(member))
    }

    /// Drops a room from memory when nothing refers to it any more: no members, no append
    /// in flight and no join between its checks and its registration. The database holds
    /// everything, and the next join loads it again.
    fn evict_if_idle(&self, room: &Arc<Room>) {
        let mut rooms = self.map();
        let mut st = room.lock();
        if st.members.is_empty() && st.inflight == 0 && st.joining == 0 && !st.evicted {
            st.evicted = true;
            if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.name);
            }
        }
    }

    async fn join_existing(
        &self,
        room: Arc<Room>,
        join: SignedJoin,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
        policy: JoinPolicy,
    ) -> Result<Result<LocalMember, SignedJoin>, Refusal> {
        let result =
            self.join_existing_checked(room.clone(), join, history_after, connection, outbox, policy).await;
        if result.is_err() {
            // A refused join must not leave the room (and its history) loaded in memory.
            self.evict_if_idle(&room);
        }
        result
    }

    async fn join_existing_checked(
        &self,
        room: Arc<Room>,
        join: SignedJoin,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
        policy: JoinPolicy,
    ) -> Result<Result<LocalMember, SignedJoin>, Refusal> {
        let identity = join.request().identity;
        let canonical = join.request().nick.canonical();
        let (verified, bind) = {
            let mut st = room.lock();
            if st.evicted {
                return Ok(Err(join));
            }
            // A room locked after failed joins still admits identities bound in it: their
            // join is signed, so only they can claim a binding. Nobody else's password is
            // checked, so guessing stays stopped.
            if policy.room_locked && st.nicks.get(&canonical) != Some(&identity) {
                return Err(Refusal::new(ErrorCode::TooManyAttempts, too_many_attempts()));
            }
            // The password comes first: someone without it learns nothing about the room,
            // not even which nicknames are bound or who is banned.
            let verified = join.admit(&st.verifier).map_err(|_| {
                Refusal::new(
                    ErrorCode::WrongPassword,
                    "wrong room password; check the password or the invite",
                )
            })?;
            if st.bans.contains(&identity) {
                return Err(Refusal::new(ErrorCode::Banned, "you are banned from this room"));
            }
            let bind = match st.nicks.get(&canonical) {
                Some(owner) if *owner != identity => {
                    return Err(Refusal::new(
                        ErrorCode::NickTaken,
                        format!(
                        "the nickname {} belongs to another identity in this room; choose another nickname",
                        verified.nick()
                    ),
                    ))
                }
                Some(_) => false,
                None => {
                    // One nickname per identity per room: clients pin an identity to the first
                    // nickname they see it with.
                    if let Some((bound, _)) = st.nicks.iter().find(|(_, id)| **id == identity) {
                        return Err(Refusal::new(
                            ErrorCode::NickBound,
                            format!(
                                "this identity is known in this room as {bound}; join with that nickname, \
                                 or use another identity for another nickname"
                            ),
                        ));
                    }
                    true
                }
            };
            self.admit_member(&st, &identity, !bind, policy.crowded)?;
            if bind && st.nicks.len() >= self.max_nicknames {
                // Every binding is a row kept as long as the room: their number is bounded.
                return Err(Refusal::new(
                    ErrorCode::RoomFull,
                    format!(
                        "the room has bound its maximum of {} nicknames; join with a nickname you used here before",
                        self.max_nicknames
                    ),
                ));
            }
            if bind {
                // Reserved now, so a concurrent join with the same nickname is refused.
                st.nicks.insert(canonical.clone(), identity);
            }
            st.joining += 1;
            (verified, bind)
        };
        if bind {
            if let Err(e) = self.store.bind_nick(room.name.as_str(), &canonical, identity.0).await {
                let mut st = room.lock();
                st.joining -= 1;
                st.nicks.remove(&canonical);
                return Err(Refusal::internal(&e));
            }
        }
        let mut st = room.lock();
        st.joining -= 1;
        if st.bans.contains(&identity) {
            return Err(Refusal::new(ErrorCode::Banned, "you are banned from this room"));
        }
        Ok(Ok(Self::register(&room, &mut st, verified, false, history_after, connection, outbox)))
    }

    /// Checks an envelope and queues it for storage, under the room lock.
    fn submit(
        &self,
        member: &LocalMember,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> Result<Publish, Refusal> {
        let room = &member.room;
        let sender = member.identity;
        let counter = header.counter;
        {
            let mut st = room.lock();
            if !st.is_current(member) {
                return Err(Refusal::new(ErrorCode::UnexpectedMessage, "you are no longer in this room"));
            }
            let previous_counter = st.counters.get(&sender).copied();
            if let Some(max) = previous_counter.filter(|max| counter <= *max) {
                if let Some(e) =
                    st.history.iter().rev().find(|e| e.sender == sender.0 && e.counter == counter)
                {
                    return Ok(Publish::Stored(e.seq));
                }
                let Some(&seq) = st.pending.get(&(sender, counter)) else {
                    return Err(Refusal::new(
                        ErrorCode::BadEnvelope,
                        format!(
                            "counter {counter} is not above {max}, the highest this identity already used \
                             in this room; message not delivered"
                        ),
                    ));
                };
                Ok(Publish::Resent(seq, room.committed.subscribe(), Instant::now() + RESEND_WAIT))
            } else {
                let seq = st.latest_seq + 1;
                let mut live = Vec::with_capacity(envelope.len() + DELIVER_PREFIX);
                encode_deliver(seq, false, &envelope, &mut live);
                let live = Bytes::from(live);
                // The client's buffer is dropped here: storage and history share this copy.
                let retained = Retained::new(seq, sender.0, counter, &envelope);
                drop(envelope);
                let record = StoredEnvelope { seq, sender: sender.0, counter, envelope: retained.envelope() };
                let (tx, rx) = tokio::sync::oneshot::channel();
                let room_ref = room.clone();
                let keep = self.history;
                // What the byte budget already let go of in memory goes from disk too.
                let drop_before = st.history.front().map_or(0, |e| e.seq);
                let done = Box::new(move |result: Result<(), StoreError>| {
                    LocalRooms::committed(&room_ref, &result, retained, previous_counter, live, keep);
                    let _ = tx.send(result);
                });
                // Queued under the room lock, so storage commits (and delivers) in seq order.
                self.store
                    .append(room.name.as_str(), record, keep.count, drop_before, done)
                    .map_err(|e| Refusal::internal(&e))?;
                st.latest_seq = seq;
                st.counters.insert(sender, counter);
                st.pending.insert((sender, counter), seq);
                st.inflight += 1;
                Ok(Publish::New(seq, rx))
            }
        }
    }

    /// Runs on the storage thread once an envelope's transaction completed.
    fn committed(
        room: &Room,
        result: &Result<(), StoreError>,
        record: Retained,
        previous_counter: Option<u64>,
        live: Bytes,
        keep: HistoryLimit,
    ) {
        let mut st = room.lock();
        let sender = PublicIdentity(record.sender);
        st.pending.remove(&(sender, record.counter));
        st.inflight = st.inflight.saturating_sub(1);
        if result.is_err() {
            // The envelope was not stored: let the sender retry with the same counter.
            if st.counters.get(&sender) == Some(&record.counter) {
                match previous_counter {
                    Some(c) => st.counters.insert(sender, c),
                    None => st.counters.remove(&sender),
                };
            }
            return;
        }
        st.delivered_seq = st.delivered_seq.max(record.seq);
        let seq = record.seq;
        if keep.count > 0 {
            st.retained_bytes += record.envelope_len();
            st.history.push_back(record);
            st.trim(keep);
        }
        crate::metrics::delivered(
            st.members.len() - usize::from(st.members.contains_key(&sender)),
            live.len(),
        );
        st.broadcast(&live, Some(&sender));
        drop(st);
        room.committed.send_replace(seq);
    }
}

impl RoomService for LocalRooms {
    type Membership = LocalMember;

    async fn join(
        &self,
        mut join: SignedJoin,
        history_after: u64,
        connection: u64,
        outbox: Arc<Outbox>,
        may_create: CreateGate<'_>,
        policy: JoinPolicy,
    ) -> Result<LocalMember, Refusal> {
        let name = join.request().room.clone();
        // Retries only when a room appeared or was evicted between two steps.
        for _ in 0..8 {
            let attempt = match self.lookup(&name).await? {
                Lookup::Found(room) => {
                    self.join_existing(room, join, history_after, connection, outbox.clone(), policy).await?
                }
                Lookup::Missing if join.request().create => {
                    self.create(join, history_after, connection, outbox.clone(), may_create).await?
                }
                Lookup::Missing => {
                    return Err(Refusal::new(
                        ErrorCode::NoSuchRoom,
                        format!("there is no room {name} on this relay; check the name, or create it"),
                    ))
                }
            };
            match attempt {
                Ok(member) => {
                    self.touch(&member.room);
                    return Ok(member);
                }
                Err(again) => join = again,
            }
        }
        Err(Refusal::new(ErrorCode::Internal, "the room is busy; try again"))
    }

    fn publish(
        &self,
        member: &LocalMember,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send + 'static {
        let publish = self.submit(member, header, envelope);
        async move {
            match publish? {
                Publish::New(seq, done) => match done.await {
                    Ok(Ok(())) => Ok(seq),
                    Ok(Err(e)) => Err(Refusal::internal(&e)),
                    Err(_) => Err(Refusal::internal(&StoreError::Closed)),
                },
                Publish::Stored(seq) => Ok(seq),
                Publish::Resent(seq, mut committed, deadline) => {
                    // The first copy is still being committed: answer once it is.
                    match tokio::time::timeout_at(deadline, committed.wait_for(|c| *c >= seq)).await {
                        Ok(Ok(_)) => Ok(seq),
                        _ => Err(Refusal::new(
                            ErrorCode::Internal,
                            "the first copy is not stored yet; try again",
                        )),
                    }
                }
            }
        }
    }

    fn members(&self, member: &LocalMember) -> Vec<Member> {
        member.room.lock().member_list()
    }

    async fn moderate(&self, member: &LocalMember, action: Moderation, nick: Nick) -> Result<(), Refusal> {
        let room = &member.room;
        match action {
            Moderation::Kick => {
                let mut st = room.lock();
                st.owner_only(member)?;
                let target = st.bound(&nick)?;
                let Some(entry) = st.members.remove(&target) else {
                    return Err(Refusal::new(ErrorCode::NoSuchMember, format!("{nick} is not connected")));
                };
                entry.outbox.close(ErrorCode::Kicked, "kicked by the room owner");
                st.presence(PresenceEvent::Kicked, &entry.nick, target, None);
                info!(room = %room.name, by = %member.nick, target = %entry.nick, "member kicked");
                Ok(())
            }
            Moderation::Ban => {
                let target = {
                    let mut st = room.lock();
                    st.owner_only(member)?;
                    let target = st.bound(&nick)?;
                    if target == st.owner {
                        return Err(Refusal::new(
                            ErrorCode::OwnerProtected,
                            "the room owner cannot be banned",
                        ));
                    }
                    st.bans.insert(target);
                    target
                };
                self.store
                    .set_ban(room.name.as_str(), target.0, true)
                    .await
                    .map_err(|e| Refusal::internal(&e))?;
                let mut st = room.lock();
                let shown = match st.members.remove(&target) {
                    Some(entry) => {
                        entry.outbox.close(ErrorCode::Banned, "banned from this room by its owner");
                        entry.nick
                    }
                    None => nick,
                };
                st.presence(PresenceEvent::Banned, &shown, target, None);
                info!(room = %room.name, by = %member.nick, target = %shown, "member banned");
                Ok(())
            }
            Moderation::Unban => {
                let target = {
                    let mut st = room.lock();
                    st.owner_only(member)?;
                    let target = st.bound(&nick)?;
                    if !st.bans.remove(&target) {
                        return Err(Refusal::new(ErrorCode::NoSuchMember, format!("{nick} is not banned")));
                    }
                    target
                };
                self.store
                    .set_ban(room.name.as_str(), target.0, false)
                    .await
                    .map_err(|e| Refusal::internal(&e))?;
                room.lock().presence(PresenceEvent::Unbanned, &nick, target, None);
                info!(room = %room.name, by = %member.nick, target = %nick, "member unbanned");
                Ok(())
            }
        }
    }

    fn expire(&self, idle: Duration) -> impl Future<Output = usize> + Send {
        self.expire_idle(idle)
    }

    fn leave(&self, member: &LocalMember) {
        // Being in a room is using it: its idle time counts from its last member's leaving.
        self.touch(&member.room);
        {
            let mut st = member.room.lock();
            if st.is_current(member) {
                st.members.remove(&member.identity);
                st.presence(PresenceEvent::Left, &member.nick, member.identity, None);
            }
        }
        self.evict_if_idle(&member.room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::Store;
    use chatroom_crypto::internal::split_master;
    use chatroom_crypto::{Identity, JoinRequest, JoinSecret};

    fn signed(identity: &Identity, nick: &str, secret: &JoinSecret, create: bool) -> SignedJoin {
        let hh = [9; 32];
        JoinRequest::new(
            identity,
            &hh,
            RoomName::new("room").unwrap(),
            Nick::new(nick).unwrap(),
            secret.clone(),
            create,
            0,
        )
        .verify(&hh)
        .unwrap()
    }

    fn test_limits() -> RoomLimits {
        RoomLimits {
            history: HistoryLimit { count: 10, bytes: 1 << 20 },
            max_members: 1000,
            headroom_percent: 10,
            max_rooms: 100,
            max_nicknames: 100,
        }
    }

    #[test]
    fn long_member_lists_are_split_into_items_of_at_most_1000() {
        let list: Vec<Member> = (0..2500)
            .map(|i| Member { nick: Nick::new(&format!("n{i}")).unwrap(), identity: PublicIdentity([0; 32]) })
            .collect();
        let items = member_items(list);
        let decoded: Vec<RelayMessage> =
            items.iter().map(|i| RelayMessage::decode_all(i).unwrap().remove(0)).collect();
        let shape: Vec<(bool, usize)> = decoded
            .iter()
            .map(|m| match m {
                RelayMessage::Members { more, members } => (*more, members.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shape, [(true, 1000), (true, 1000), (false, 500)]);
        assert!(items.iter().all(|i| i.len() <= chatroom_crypto::MAX_PLAINTEXT_LEN));
        assert_eq!(member_items(Vec::new()).len(), 1, "an empty list is one item");
    }

    #[tokio::test]
    async fn rooms_leave_memory_when_idle_and_come_back_from_storage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
        let hub = LocalRooms::new(store.handle(), test_limits(), 0);
        let keys = split_master(&[1; 32]);
        let wrong = split_master(&[2; 32]);
        let (alice, bob) = (Identity::generate(), Identity::generate());

        let closed = || Err(Refusal::new(ErrorCode::TooManyAttempts, "no more rooms"));
        let refused = hub
            .join(
                signed(&alice, "alice", &keys.join_secret, true),
                0,
                1,
                Arc::new(Outbox::new(1 << 20, Duration::from_secs(30))),
                &closed,
                JoinPolicy::default(),
            )
            .await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::TooManyAttempts, "the gate can refuse a creation");
        let refused = hub
            .join(
                signed(&alice, "alice", &keys.join_secret, false),
                0,
                1,
                Arc::new(Outbox::new(1 << 20, Duration::from_secs(30))),
                &closed,
                JoinPolicy::default(),
            )
            .await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::NoSuchRoom, "and nothing was created");

        let outbox = Arc::new(Outbox::new(1 << 20, Duration::from_secs(30)));
        let a = hub
            .join(
                signed(&alice, "alice", &keys.join_secret, true),
                0,
                1,
                outbox,
                &|| Ok(()),
                JoinPolicy::default(),
            )
            .await
            .unwrap();
        assert_eq!(hub.map().len(), 1);
        hub.leave(&a);
        assert!(hub.map().is_empty(), "an empty room is dropped from memory");

        let refused = hub
            .join(
                signed(&bob, "bob", &wrong.join_secret, false),
                0,
                2,
                Arc::new(Outbox::new(1 << 20, Duration::from_secs(30))),
                &|| Ok(()),
                JoinPolicy::default(),
            )
            .await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::WrongPassword);
        assert!(hub.map().is_empty(), "a refused join does not keep the room loaded");

        // Reloaded from storage: owner and nickname binding survived.
        let b = hub
            .join(
                signed(&bob, "bob", &keys.join_secret, false),
                0,
                3,
                Arc::new(Outbox::new(1 << 20, Duration::from_secs(30))),
                &|| Ok(()),
                JoinPolicy::default(),
            )
            .await
            .unwrap();
        let refused = hub
            .join(
                signed(&bob, "alice", &keys.join_secret, false),
                0,
                4,
                Arc::new(Outbox::new(1 << 20, Duration::from_secs(30))),
                &|| Ok(()),
                JoinPolicy::default(),
            )
            .await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::NickTaken);
        assert_eq!(hub.map().len(), 1, "a room with members stays loaded");
        assert_eq!(b.room.lock().owner, alice.public());
        hub.leave(&b);
        assert!(hub.map().is_empty());
        store.close().await;
    }

    #[tokio::test]
    async fn loading_one_room_never_waits_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
        let hub = LocalRooms::new(store.handle(), test_limits(), 0);
        let keys = split_master(&[1; 32]);
        let outbox = Arc::new(Outbox::new(1 << 20, Duration::from_secs(30)));
        let alice = Identity::generate();
        let joined = signed(&alice, "alice", &keys.join_secret, true);
        let a = hub.join(joined, 0, 1, outbox, &|| Ok(()), JoinPolicy::default()).await.unwrap();
        hub.leave(&a);
        assert!(hub.map().is_empty(), "the room is on disk only");

        // Another room's load is under way (and stays so until `finish` fires).
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let other = RoomName::new("other").unwrap();
        let mut held = Box::pin(hub.loading(&other, async move {
            let _ = finished.await;
        }));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(held.as_mut().poll(&mut cx).is_pending());
        let found =
            tokio::time::timeout(Duration::from_secs(5), hub.lookup(&RoomName::new("room").unwrap())).await;
        assert!(matches!(found, Ok(Ok(Lookup::Found(_)))), "the room loaded while the other one was loading");
        finish.send(()).unwrap();
        held.await;
        assert!(hub.loading.lock().unwrap().is_empty(), "no lock is kept once nobody uses it");
        store.close().await;
    }
}
