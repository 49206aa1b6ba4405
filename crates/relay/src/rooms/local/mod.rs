//! `LocalRooms`: the rooms of one relay process, kept in memory while they have members and
//! stored in SQLite. It drives `RoomRules` under each room's mutex; storage completions
//! (which run on the storage thread) report back to the rules and fan deliveries out.
//!
//! Files: `room.rs` (a loaded room, its history and replay), `join.rs` (loading, joining,
//! creating), `publish.rs` (numbering, storing, delivering), `acks.rs` (a connection's
//! acknowledgements), `moderate.rs` (kick, ban, unban), `operator.rs` (what the admin socket
//! does to loaded rooms).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, Member, Nick, PresenceEvent, RoomName};
use tokio::time::Instant;
use tracing::{error, info};

mod acks;
mod join;
mod moderate;
mod operator;
mod publish;
mod room;
#[cfg(test)]
mod tests;

pub use room::HistoryLimit;
use room::Room;

use super::rules::RuleLimits;
use super::{Admission, Census, ConnectionId, CreateGate, JoinArgs, Moderation, Refusal, RoomService};
use crate::store::StoreHandle;

/// Least time between two records of a room's use (see `LocalRooms::touch`).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Most idle rooms one expiry pass deletes; the next pass takes the rest.
const EXPIRE_BATCH: usize = 256;

/// What `LocalRooms` enforces.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    pub history: HistoryLimit,
    /// The room rules' limits: members, their reserve, nicknames.
    pub rules: RuleLimits,
    /// Rooms the relay stores at most.
    pub max_rooms: usize,
}

/// A member registered with `LocalRooms`.
pub struct LocalMember {
    room: Arc<Room>,
    identity: chatroom_crypto::PublicIdentity,
    nick: Nick,
    connection: ConnectionId,
    /// The outcomes of this connection's envelopes, as their writes complete.
    acks: Arc<acks::Acks>,
}

impl std::fmt::Debug for LocalMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMember")
            .field("room", &self.room.name)
            .field("nick", &self.nick)
            .field("connection", &self.connection)
            .finish()
    }
}

/// Rooms of one relay process, kept in memory while they have members and stored in SQLite.
#[derive(Debug)]
pub struct LocalRooms {
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    /// Serialises loading and creating each room, so one room is never loaded twice; rooms
    /// load independently of each other. An entry lives while someone holds or awaits it.
    loading: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<()>>>>,
    store: StoreHandle,
    limits: RoomLimits,
    /// Rooms stored now.
    stored: AtomicUsize,
}

impl LocalRooms {
    /// Rooms over `store`, which holds `stored` rooms now.
    pub(crate) fn new(store: StoreHandle, limits: RoomLimits, stored: usize) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            store,
            limits,
            stored: AtomicUsize::new(stored),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Drops a room from memory when nothing refers to it any more: no members, no append
    /// in flight and no join between its checks and its registration. The database holds
    /// everything, and the next join loads it again.
    fn evict_if_idle(&self, room: &Arc<Room>) {
        let mut rooms = self.map();
        let mut st = room.lock();
        if st.members.is_empty() && st.inflight.is_empty() && st.joining == 0 && !st.evicted {
            st.evicted = true;
            if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.name);
            }
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
}

impl RoomService for LocalRooms {
    type Membership = LocalMember;

    fn join(
        &self,
        args: JoinArgs,
        may_create: CreateGate<'_>,
    ) -> impl Future<Output = Result<Admission<LocalMember>, Refusal>> + Send {
        self.join_room(args, may_create)
    }

    fn publish(
        &self,
        member: &LocalMember,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send + 'static {
        let submitted = self.submit(member, header, envelope);
        publish::answer(submitted)
    }

    async fn members(&self, member: &LocalMember) -> Vec<Member> {
        member.room.lock().member_list()
    }

    fn moderate(
        &self,
        member: &LocalMember,
        action: Moderation,
        nick: Nick,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        self.moderate_member(member, action, nick)
    }

    async fn leave(&self, member: &LocalMember) {
        // Being in a room is using it: its idle time counts from its last member's leaving.
        self.touch(&member.room);
        {
            let mut st = member.room.lock();
            if st.is_current(&member.identity, member.connection) {
                st.members.remove(&member.identity);
                st.presence(PresenceEvent::Left, &member.nick, member.identity, None);
            }
        }
        self.evict_if_idle(&member.room);
    }

    fn expire(&self, idle: Duration) -> impl Future<Output = usize> + Send {
        self.expire_idle(idle)
    }

    fn census(&self) -> Census {
        let rooms: Vec<_> = self.map().values().cloned().collect();
        let mut census = Census { rooms: rooms.len(), ..Census::default() };
        for room in &rooms {
            let st = room.lock();
            census.members += st.members.len();
            census.queued_bytes += st.members.values().map(|m| m.link.queued_bytes()).sum::<usize>();
        }
        census
    }
}
