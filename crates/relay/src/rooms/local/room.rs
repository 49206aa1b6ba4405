//! One room loaded in memory: its rules, its retained history (shared by every replay) and
//! its connected members, under one mutex.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use chatroom_crypto::{JoinVerifier, Member, Nick, PresenceEvent, PublicIdentity, RoomName};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use super::publish::InFlight;
use crate::rooms::rules::{Restored, RoomRules, RuleLimits};
use crate::rooms::{ConnectionId, History, Item, Link, Pulled};
use crate::store::{RoomRecord, StoreError, StoredEnvelope};

/// How much history a room keeps: envelopes, and bytes of them.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimit {
    pub count: usize,
    pub bytes: usize,
}

/// A retained envelope, kept as the `Deliver` item a history replay sends: every replay
/// shares this one buffer.
#[derive(Debug, Clone)]
pub(super) struct Retained {
    pub(super) seq: u64,
    pub(super) sender: [u8; 32],
    pub(super) counter: u64,
    pub(super) item: Item,
}

impl Retained {
    pub(super) fn new(seq: u64, sender: [u8; 32], counter: u64, envelope: &[u8]) -> Self {
        Self { seq, sender, counter, item: Item::deliver(seq, true, envelope) }
    }

    fn from_stored(e: &StoredEnvelope) -> Self {
        Self::new(e.seq, e.sender, e.counter, &e.envelope)
    }

    pub(super) fn envelope_len(&self) -> usize {
        self.item.envelope_len()
    }
}

/// A connected member, as the room sees it.
#[derive(Debug)]
pub(super) struct Connected {
    pub(super) connection: ConnectionId,
    pub(super) nick: Nick,
    pub(super) link: Link,
}

pub(super) struct RoomState {
    pub(super) rules: RoomRules,
    /// Committed envelopes, oldest first, at most `HistoryLimit`: one copy each, shared by
    /// every replay.
    pub(super) history: VecDeque<Retained>,
    /// Bytes of the envelopes in `history`.
    pub(super) retained_bytes: usize,
    /// Envelopes ever dropped from the front of `history`: a replay's position is counted
    /// from the first envelope this room held in memory, so it notices when the history moved
    /// on past it.
    pub(super) trimmed: u64,
    pub(super) members: HashMap<PublicIdentity, Connected>,
    /// Appends not yet completed, in storage order, and joins between their checks and
    /// registration: a room with either is never evicted from memory.
    pub(super) inflight: VecDeque<InFlight>,
    pub(super) joining: usize,
    pub(super) evicted: bool,
    /// When the room's use was last recorded in storage.
    pub(super) touched: Option<Instant>,
    /// The stored GroupInfo's `after_seq` (protocol version 2), if one is stored.
    pub(super) group_info_seq: Option<u64>,
}

pub(super) struct Room {
    pub(super) name: RoomName,
    state: Mutex<RoomState>,
    /// The highest `seq` stored, for resends waiting on their first copy.
    pub(super) committed: watch::Sender<u64>,
    /// Outcomes of appends the storage thread reported, not yet delivered.
    outcomes: Mutex<Outcomes>,
    /// Where deliveries run: the runtime the room's appends were submitted on.
    pub(super) runtime: OnceLock<Handle>,
}

/// What the storage thread reported of a room's appends, in storage order.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    pub(super) results: Vec<Result<(), StoreError>>,
    /// A task is delivering them.
    pub(super) scheduled: bool,
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Room {
    pub(super) fn new(name: RoomName, rules: RoomRules, touched: Option<Instant>) -> Arc<Self> {
        let stored = rules.stored_seq();
        let state = RoomState {
            rules,
            history: VecDeque::new(),
            retained_bytes: 0,
            trimmed: 0,
            members: HashMap::new(),
            inflight: VecDeque::new(),
            joining: 0,
            evicted: false,
            touched,
            group_info_seq: None,
        };
        Arc::new(Self {
            name,
            state: Mutex::new(state),
            committed: watch::channel(stored).0,
            outcomes: Mutex::default(),
            runtime: OnceLock::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn outcomes(&self) -> MutexGuard<'_, Outcomes> {
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn from_record(
        name: RoomName,
        record: RoomRecord,
        keep: HistoryLimit,
        limits: RuleLimits,
    ) -> Arc<Self> {
        let stored = record.history.last().map_or(record.latest_seq, |e| e.seq.max(record.latest_seq));
        let restored = Restored {
            latest_seq: stored,
            counters: record.counters.into_iter().map(|(id, c)| (PublicIdentity(id), c)).collect(),
            nicks: record.nicks.into_iter().map(|(n, id)| (n, PublicIdentity(id))).collect(),
            bans: record.bans.into_iter().map(PublicIdentity).collect(),
        };
        let rules = RoomRules::restored(
            JoinVerifier(record.verifier),
            PublicIdentity(record.owner),
            restored,
            limits,
        );
        let room = Self::new(name, rules, None);
        {
            let mut st = room.lock();
            st.history = record.history.iter().map(Retained::from_stored).collect();
            st.retained_bytes = record.history.iter().map(|e| e.envelope.len()).sum();
            st.group_info_seq = record.group_info_seq;
            st.trim(keep);
        }
        room
    }
}

impl RoomState {
    /// Drops the oldest retained envelopes beyond `keep`.
    pub(super) fn trim(&mut self, keep: HistoryLimit) {
        while self.history.len() > keep.count || self.retained_bytes > keep.bytes {
            let Some(e) = self.history.pop_front() else { break };
            self.retained_bytes -= e.envelope_len();
            self.trimmed += 1;
        }
    }

    /// Pushes an item to every member but `except`; a member whose queue is full is closed
    /// as a slow consumer.
    pub(super) fn broadcast(&self, item: &Item, except: Option<&PublicIdentity>) {
        for (id, member) in &self.members {
            if Some(id) != except {
                member.link.push(item);
            }
        }
    }

    /// Pushes a commit group's deliveries, each to every member but its sender, member by
    /// member: each member's queue is locked once for the whole group, not once per delivery.
    pub(super) fn deliver(&self, deliveries: &[(Item, PublicIdentity)]) {
        if deliveries.is_empty() {
            return;
        }
        for (id, member) in &self.members {
            member.link.push_all(deliveries.iter().filter(|(_, sender)| sender != id).map(|(item, _)| item));
        }
    }

    pub(super) fn presence(
        &self,
        event: PresenceEvent,
        nick: &Nick,
        identity: PublicIdentity,
        except: Option<&PublicIdentity>,
    ) {
        self.broadcast(&Item::presence(event, nick, identity), except);
    }

    pub(super) fn member_list(&self) -> Vec<Member> {
        let mut list: Vec<Member> =
            self.members.iter().map(|(id, m)| Member { nick: m.nick.clone(), identity: *id }).collect();
        list.sort_by(|a, b| a.nick.cmp_canonical(&b.nick));
        list
    }

    pub(super) fn is_current(&self, identity: &PublicIdentity, connection: ConnectionId) -> bool {
        self.members.get(identity).is_some_and(|c| c.connection == connection)
    }

    /// The `seq` of a retained envelope of `sender` with `counter`.
    pub(super) fn stored(&self, sender: &PublicIdentity, counter: u64) -> Option<u64> {
        self.history.iter().rev().find(|e| e.sender == sender.0 && e.counter == counter).map(|e| e.seq)
    }

    /// A replay of the history after `history_after`, from this instant.
    pub(super) fn replay(&self, room: &Arc<Room>, history_after: u64) -> HistoryReplay {
        let skipped = self.history.partition_point(|e| e.seq <= history_after);
        HistoryReplay {
            room: room.clone(),
            pos: self.trimmed + skipped as u64,
            end: self.trimmed + self.history.len() as u64,
        }
    }
}

/// A joiner's history replay: a position in the room's history, pulled by the member's
/// writer as its socket drains.
#[derive(Debug)]
pub(super) struct HistoryReplay {
    room: Arc<Room>,
    /// Next envelope to send and the end of the replay, counted as `RoomState::trimmed`.
    pos: u64,
    end: u64,
}

impl History for HistoryReplay {
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
        Pulled::Done(items)
    }
}
