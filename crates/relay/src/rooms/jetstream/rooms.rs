//! `JetStreamRooms`: the `RoomService` of one relay node among many sharing rooms through a
//! NATS JetStream cluster.
//!
//! What lives where: a room's record (verifier, owner), nickname bindings and bans in
//! key-value buckets (shared, compare-and-set where two nodes could race); its envelopes in the
//! `CHAT` stream under `chat.<room id>`, numbered by `Chat-Seq` (the room `seq` members see)
//! and deduplicated by `Nats-Msg-Id` = room, sender and counter; presence in TTL keys. A node
//! loads a room (its rules, retained history, feed and control subscriptions) only while the
//! room has a member on it, and drives the same `RoomRules` as the local backend, told what the
//! other nodes stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, Context};
use async_nats::Client;
use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, ErrorCode, Member, Nick, PublicIdentity, RoomName};
use rand_core::{OsRng, RngCore};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::error;

use super::room::{Job, NodeRoom};
use super::setup::{
    ensure_buckets, ensure_stream, open_stream, until_answered, wait_routed, SetupError, BANS_BUCKET,
    GROUP_INFO_BUCKET, NICKS_BUCKET, PRESENCE_BUCKET, ROOMS_BUCKET, STREAM,
};
use super::state::RoomState;
use crate::admin::{BanInfo, RoomInfo};
use crate::rooms::rules::Submitted;
use crate::rooms::{
    Admission, Census, ConnectionId, CreateGate, JoinArgs, Moderation, Refusal, RoomAdmin, RoomLimits,
    RoomService,
};
use crate::store::StoreError;

/// Appends one node may have queued for one room at once; more are refused until some finish.
pub const MAX_INFLIGHT_PER_ROOM: usize = 4096;

/// How a node uses the cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterConfig {
    /// Copies of every message and key: 3 (or 5) on a cluster, 1 on a single NATS node.
    pub replicas: usize,
    /// The same limits as the local backend's; `history.count` is also the stream's
    /// per-room message limit, so every node must use the same.
    pub limits: RoomLimits,
}

/// A member joined through this node.
pub struct ClusterMember {
    pub(super) room: Arc<NodeRoom>,
    pub(super) identity: PublicIdentity,
    pub(super) nick: Nick,
    pub(super) connection: ConnectionId,
}

impl std::fmt::Debug for ClusterMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMember")
            .field("room", &self.room.name)
            .field("nick", &self.nick)
            .field("connection", &self.connection)
            .finish()
    }
}

/// One node's view of the cluster: its connections to the stream and buckets, and the rooms
/// it holds because they have members here.
pub(super) struct Node {
    /// Tells this node's control messages from the others'.
    pub(super) id: u64,
    pub(super) client: Client,
    pub(super) js: Context,
    pub(super) log_stream: Stream,
    pub(super) state: RoomState,
    pub(super) rooms_kv: Store,
    pub(super) rooms_stream: Stream,
    pub(super) nicks: Store,
    pub(super) nicks_stream: Stream,
    pub(super) bans_stream: Stream,
    pub(super) presence: Store,
    pub(super) presence_stream: Stream,
    pub(super) group_info: Store,
    pub(super) group_info_stream: Stream,
    pub(super) limits: RoomLimits,
    rooms: Mutex<HashMap<RoomName, Arc<NodeRoom>>>,
    /// Serialises loading and creating each room on this node.
    loading: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<()>>>>,
}

/// Rooms served by this relay node from the JetStream cluster.
pub struct JetStreamRooms {
    pub(super) node: Arc<Node>,
    heartbeat: AbortHandle,
}

impl std::fmt::Debug for JetStreamRooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamRooms").field("node", &format_args!("{:016x}", self.node.id)).finish()
    }
}

impl Drop for JetStreamRooms {
    fn drop(&mut self) {
        self.heartbeat.abort();
        for room in self.node.map().drain().map(|(_, room)| room) {
            room.stop();
        }
    }
}

/// The cluster did not answer: logged with `context`, and the member told to try again.
pub(super) fn unavailable(context: &str, e: &dyn std::fmt::Display) -> Refusal {
    error!(error = %e, "{context}");
    Refusal::new(ErrorCode::Internal, "the relay's shared storage is unavailable; try again later")
}

pub(super) fn cluster_error(context: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StoreError {
    move |e| StoreError::Cluster { context, message: e.to_string() }
}

impl JetStreamRooms {
    /// Creates or checks the stream and buckets (refusing a configuration other than the
    /// relay's), then serves rooms through `client` (from `setup::connect`). Requests the
    /// cluster leaves unanswered are asked again for up to [`SETUP_WITHIN`](super::setup::SETUP_WITHIN).
    pub async fn open(client: Client, config: ClusterConfig) -> Result<Self, SetupError> {
        until_answered(|| Self::open_once(client.clone(), config)).await
    }

    async fn open_once(client: Client, config: ClusterConfig) -> Result<Self, SetupError> {
        let js = jetstream::new(client.clone());
        // Each step boxed: their futures are large, and this one is awaited on a caller's stack.
        Box::pin(ensure_stream(&js, config.replicas, config.limits.history.count)).await?;
        Box::pin(ensure_buckets(&js, config.replicas)).await?;
        Box::pin(wait_routed(&js)).await?;
        let api = |what: &str| {
            let what = what.to_owned();
            move |e: &(dyn std::error::Error + 'static)| SetupError::jetstream(&what, e)
        };
        let stream = |name: String| {
            let js = js.clone();
            async move { open_stream(&js, &name).await }
        };
        let bucket = |name: &'static str| {
            let js = js.clone();
            async move { js.get_key_value(name).await.map_err(|e| api(name)(&e)) }
        };
        let node = Node {
            id: OsRng.next_u64(),
            log_stream: Box::pin(stream(STREAM.to_owned())).await?,
            state: Box::pin(RoomState::open(&js)).await?,
            rooms_kv: Box::pin(bucket(ROOMS_BUCKET)).await?,
            rooms_stream: Box::pin(stream(format!("KV_{ROOMS_BUCKET}"))).await?,
            nicks: Box::pin(bucket(NICKS_BUCKET)).await?,
            nicks_stream: Box::pin(stream(format!("KV_{NICKS_BUCKET}"))).await?,
            bans_stream: Box::pin(stream(format!("KV_{BANS_BUCKET}"))).await?,
            presence: Box::pin(bucket(PRESENCE_BUCKET)).await?,
            presence_stream: Box::pin(stream(format!("KV_{PRESENCE_BUCKET}"))).await?,
            group_info: Box::pin(bucket(GROUP_INFO_BUCKET)).await?,
            group_info_stream: Box::pin(stream(format!("KV_{GROUP_INFO_BUCKET}"))).await?,
            limits: config.limits,
            rooms: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            client,
            js,
        };
        let node = Arc::new(node);
        let heartbeat = tokio::spawn(super::presence::refresh(Arc::downgrade(&node))).abort_handle();
        Ok(Self { node, heartbeat })
    }
}

impl Node {
    pub(super) fn map(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<NodeRoom>>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` holding the loading lock of the room `name` on this node.
    pub(super) async fn loading<R>(&self, name: &RoomName, f: impl Future<Output = R>) -> R {
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
        if locks.get(name).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(name);
        }
        result
    }

    /// Forgets a room nothing on this node refers to any more: no member, no join between its
    /// checks and its registration, no append in flight. Its subscriptions end with it.
    pub(super) fn evict_if_idle(&self, room: &Arc<NodeRoom>) {
        let mut rooms = self.map();
        let mut held = room.lock();
        if held.members.is_empty() && held.inflight == 0 && held.joining == 0 && !held.evicted {
            held.evicted = true;
            if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.name);
            }
            drop(held);
            room.stop();
        }
    }

    /// Checks and queues an envelope for the room's writer.
    fn submit(
        &self,
        member: &ClusterMember,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> Result<Answer, Refusal> {
        let room = &member.room;
        let (sender, counter) = (member.identity, header.counter);
        let mut held = room.lock();
        if !held.is_current(&sender, member.connection) {
            return Err(Refusal::new(ErrorCode::UnexpectedMessage, "you are no longer in this room"));
        }
        if held.inflight >= MAX_INFLIGHT_PER_ROOM {
            return Err(Refusal::new(
                ErrorCode::Internal,
                "the room has too many messages being stored; try again",
            ));
        }
        let ticket = match held.rules.publish(sender, counter, || held.stored(&sender, counter))? {
            Submitted::Stored(seq) => return Ok(Answer::Now(seq)),
            // The writer appends it again after the first copy: the server answers the copy.
            Submitted::Pending(_) => None,
            Submitted::New(ticket) => Some(ticket),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job { msg_id: msg_id(&room.token, &sender, counter), payload: envelope, ticket, reply };
        if room.writer.send(job).is_err() {
            return Err(Refusal::new(ErrorCode::Internal, "the room is being closed; join again"));
        }
        if let Some(ticket) = &ticket {
            held.rules.queued(ticket);
        }
        held.inflight += 1;
        Ok(Answer::Later(answer))
    }
}

/// The server's deduplication id of an envelope: a resend through any node is recognised.
fn msg_id(token: &str, sender: &PublicIdentity, counter: u64) -> String {
    format!("{token}.{}.{counter}", super::presence::identity_hex(sender))
}

/// When a publish is answered.
enum Answer {
    Now(u64),
    Later(oneshot::Receiver<Result<u64, Refusal>>),
}

impl RoomService for JetStreamRooms {
    type Membership = ClusterMember;

    fn join(
        &self,
        args: JoinArgs,
        may_create: CreateGate<'_>,
    ) -> impl Future<Output = Result<Admission<ClusterMember>, Refusal>> + Send {
        // Boxed: the join's future is large, and a connection's task should not carry its size.
        Box::pin(self.node.join_room(args, may_create))
    }

    fn publish(
        &self,
        member: &ClusterMember,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send + 'static {
        let submitted = self.node.submit(member, header, envelope);
        async move {
            match submitted? {
                Answer::Now(seq) => Ok(seq),
                Answer::Later(answer) => answer.await.unwrap_or_else(|_| {
                    Err(Refusal::new(ErrorCode::Internal, "the relay could not store this; try again later"))
                }),
            }
        }
    }

    fn put_group_info(
        &self,
        member: &ClusterMember,
        after_seq: u64,
        sealed: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send {
        Box::pin(self.node.put_group_info(member, after_seq, sealed))
    }

    fn group_info(
        &self,
        member: &ClusterMember,
    ) -> impl Future<Output = Result<(u64, Bytes), Refusal>> + Send {
        Box::pin(self.node.group_info(member))
    }

    fn set_verifier(
        &self,
        member: &ClusterMember,
        verifier: [u8; 32],
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        Box::pin(self.node.set_verifier(member, verifier))
    }

    fn members(&self, member: &ClusterMember) -> impl Future<Output = Vec<Member>> + Send {
        Box::pin(self.node.members(&member.room))
    }

    fn moderate(
        &self,
        member: &ClusterMember,
        action: Moderation,
        nick: Nick,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        Box::pin(self.node.moderate(member, action, nick))
    }

    fn leave(&self, member: &ClusterMember) -> impl Future<Output = ()> + Send {
        Box::pin(self.node.leave(member))
    }

    fn expire(&self, idle: Duration) -> impl Future<Output = usize> + Send {
        Box::pin(self.node.expire(idle))
    }

    fn census(&self) -> Census {
        let rooms: Vec<_> = self.node.map().values().cloned().collect();
        let mut census = Census { rooms: rooms.len(), ..Census::default() };
        for room in &rooms {
            let held = room.lock();
            census.members += held.members.len();
            census.queued_bytes += held.members.values().map(|m| m.link.queued_bytes()).sum::<usize>();
        }
        census
    }
}

impl RoomAdmin for JetStreamRooms {
    /// Members connected through this node, per room.
    fn online(&self) -> HashMap<String, u64> {
        self.node
            .map()
            .iter()
            .map(|(name, room)| (name.as_str().to_owned(), room.lock().members.len() as u64))
            .collect()
    }

    fn delete_room(&self, name: &RoomName) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.node.delete_room(name)
    }

    fn set_owner(
        &self,
        name: &RoomName,
        owner: [u8; 32],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.node.set_owner(name, owner)
    }

    fn list_rooms(&self) -> impl Future<Output = Result<Vec<RoomInfo>, StoreError>> + Send {
        Box::pin(self.node.list_rooms())
    }

    fn room_info(&self, name: &str) -> impl Future<Output = Result<Option<RoomInfo>, StoreError>> + Send {
        Box::pin(self.node.room_info(name))
    }

    fn list_bans(&self, name: &str) -> impl Future<Output = Result<Option<Vec<BanInfo>>, StoreError>> + Send {
        Box::pin(self.node.list_bans(name))
    }

    /// The rooms live in NATS, not in the node's database.
    fn backup_refusal(&self) -> Option<String> {
        Some(
            "this relay keeps its rooms in the NATS cluster, not in its database, so `backup` would \
             copy none of them; back up the NATS stream CHAT and the key-value buckets instead \
             (`nats stream backup`, see docs/CLUSTER.md)"
                .into(),
        )
    }
}
