//! One room as a relay node holds it while the room has members on this node: its rules (fed
//! with what every node stored), the retained history every replay shares, its members on this
//! node, and the tasks that follow the room: the RePublish feed (the only way envelopes reach
//! members, local senders' included), the control subject (kicks, bans, presence from other
//! nodes) and the writer (this node's appends, one at a time, in call order).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, Member, Nick, PresenceEvent, PublicIdentity, RoomName};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::warn;

use super::fanout::{Delivered, RoomFeed};
use super::log::{AppendError, Appended, RoomLog, Tip, APPEND_DEADLINE};
use super::rooms::Node;
use crate::rooms::rules::{RoomRules, Ticket};
use crate::rooms::{ConnectionId, History, HistoryLimit, Item, Link, Pulled, Refusal};

/// The pause before a broken feed subscribes again.
const FEED_RETRY: Duration = Duration::from_millis(200);
/// How long a stored envelope's republished copy may take to come back through the room's feed
/// before the feed is told to read it from the stream (a copy lost with nothing after it).
const OVERDUE: Duration = Duration::from_millis(500);

/// A retained envelope, kept as the `Deliver` item a replay sends (one buffer, every replay).
#[derive(Debug, Clone)]
pub(super) struct Retained {
    pub(super) seq: u64,
    pub(super) sender: Option<PublicIdentity>,
    pub(super) counter: u64,
    pub(super) item: Item,
}

impl Retained {
    pub(super) fn new(seq: u64, payload: &[u8]) -> Self {
        let header = EnvelopeHeader::parse(payload).ok();
        Self {
            seq,
            sender: header.map(|h| h.sender),
            counter: header.map_or(0, |h| h.counter),
            item: Item::deliver(seq, true, payload),
        }
    }
}

/// A member connected through this node.
#[derive(Debug)]
pub(super) struct Connected {
    pub(super) connection: ConnectionId,
    pub(super) nick: Nick,
    pub(super) link: Link,
}

/// What the room's mutex guards.
pub(super) struct Held {
    pub(super) rules: RoomRules,
    pub(super) history: VecDeque<Retained>,
    pub(super) retained_bytes: usize,
    /// Envelopes ever dropped from the front of `history` (a replay's positions count them).
    pub(super) trimmed: u64,
    pub(super) members: HashMap<PublicIdentity, Connected>,
    /// Joins between their checks and their registration, and appends not yet answered: a
    /// room with either stays loaded.
    pub(super) joining: usize,
    pub(super) inflight: usize,
    pub(super) evicted: bool,
    /// The last envelope the feed delivered here: `Joined` reports it, replays end at it.
    pub(super) delivered: Tip,
    /// When this node last recorded the room's use.
    pub(super) touched: Option<Instant>,
    /// The `after_seq` of the room's stored GroupInfo (protocol version 2), as read at load
    /// and told since by this node's puts and the others'.
    pub(super) group_info_seq: Option<u64>,
}

/// An append for the room's writer.
pub(super) struct Job {
    pub(super) msg_id: String,
    pub(super) payload: Bytes,
    /// The rules' ticket of a new envelope (none for a resend of a pending one).
    pub(super) ticket: Option<Ticket>,
    pub(super) reply: oneshot::Sender<Result<u64, Refusal>>,
}

pub(super) struct NodeRoom {
    pub(super) name: RoomName,
    /// The room's subject-safe id.
    pub(super) token: String,
    held: Mutex<Held>,
    pub(super) delivered: watch::Sender<Tip>,
    /// The last envelope this node's writer stored whose republished copy is overdue
    /// ([`OVERDUE`]): hints the feed to read it from the stream (see `fanout`).
    pub(super) overdue: watch::Sender<Tip>,
    pub(super) writer: mpsc::UnboundedSender<Job>,
    history_limit: HistoryLimit,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl fmt::Debug for NodeRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRoom").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Drop for NodeRoom {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NodeRoom {
    /// A room whose log ends at `tip`, with `history` (oldest first) already read; its writer's
    /// jobs arrive on the returned receiver.
    pub(super) fn new(
        name: RoomName,
        token: String,
        rules: RoomRules,
        tip: Tip,
        history: Vec<Retained>,
        limit: HistoryLimit,
        group_info_seq: Option<u64>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Job>) {
        let (writer, jobs) = mpsc::unbounded_channel();
        let mut held = Held {
            rules,
            history: VecDeque::new(),
            retained_bytes: 0,
            trimmed: 0,
            members: HashMap::new(),
            joining: 0,
            inflight: 0,
            evicted: false,
            delivered: tip,
            touched: None,
            group_info_seq,
        };
        for retained in history {
            held.retain(retained, limit);
        }
        let room = Arc::new(Self {
            name,
            token,
            held: Mutex::new(held),
            delivered: watch::channel(tip).0,
            overdue: watch::channel(tip).0,
            writer,
            history_limit: limit,
            tasks: Mutex::new(Vec::new()),
        });
        (room, jobs)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `task` running while the room is loaded.
    pub(super) fn keep(&self, task: AbortHandle) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
    }

    /// Stops following the room (it was evicted or deleted).
    pub(super) fn stop(&self) {
        for task in self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }

    /// A stored envelope reached this node: the rules learn it, the history keeps it, and
    /// every member here but its sender gets it.
    fn deliver(&self, delivered: Delivered) {
        let Delivered { tip, payload } = delivered;
        let live = Item::deliver(tip.chat_seq, false, &payload);
        let retained = Retained::new(tip.chat_seq, &payload);
        let sender = retained.sender;
        let mut held = self.lock();
        if let Some(sender) = sender {
            held.rules.observed(tip.chat_seq, sender, retained.counter);
        }
        held.retain(retained, self.history_limit);
        let others = held.members.len() - sender.map_or(0, |s| usize::from(held.members.contains_key(&s)));
        crate::metrics::delivered(others, live.len());
        crate::rooms::deliver_batch(|| held.broadcast(&live, sender.as_ref()));
        held.delivered = tip;
        drop(held);
        self.delivered.send_replace(tip);
    }

    /// Resolves once the feed delivered the envelope at `tip` here, so an answered envelope has
    /// reached this node's members; hints the feed once it is [`OVERDUE`], and gives up after
    /// the append deadline (the envelope is stored, and reaches them when the feed recovers).
    async fn reached(&self, tip: Tip) {
        let mut delivered = self.delivered.subscribe();
        let wait = delivered.wait_for(|d| d.stream_seq >= tip.stream_seq);
        tokio::pin!(wait);
        if tokio::time::timeout(OVERDUE, &mut wait).await.is_ok() {
            return;
        }
        self.overdue.send_replace(tip);
        if tokio::time::timeout(APPEND_DEADLINE.saturating_sub(OVERDUE), wait).await.is_err() {
            warn!(room = %self.name, seq = tip.chat_seq, "a stored envelope did not come back through the room's feed in time");
        }
    }

    /// An append finished: the rules learn the outcome, and the room may go idle.
    fn completed(&self, ticket: Option<Ticket>, stored: bool) {
        let mut held = self.lock();
        held.inflight = held.inflight.saturating_sub(1);
        if let Some(ticket) = ticket {
            held.rules.committed(&ticket, stored);
        }
    }
}

impl Held {
    /// Retains an envelope, dropping the oldest beyond the limit.
    fn retain(&mut self, retained: Retained, limit: HistoryLimit) {
        if limit.count == 0 {
            return;
        }
        self.retained_bytes += retained.item.envelope_len();
        self.history.push_back(retained);
        while self.history.len() > limit.count || self.retained_bytes > limit.bytes {
            let Some(e) = self.history.pop_front() else { break };
            self.retained_bytes -= e.item.envelope_len();
            self.trimmed += 1;
        }
    }

    /// Pushes an item to every member here but `except`; a full queue closes its member.
    pub(super) fn broadcast(&self, item: &Item, except: Option<&PublicIdentity>) {
        for (id, member) in &self.members {
            if Some(id) != except {
                member.link.push(item);
            }
        }
    }

    pub(super) fn presence(&self, event: PresenceEvent, nick: &Nick, identity: PublicIdentity) {
        self.broadcast(&Item::presence(event, nick, identity), Some(&identity));
    }

    pub(super) fn is_current(&self, identity: &PublicIdentity, connection: ConnectionId) -> bool {
        self.members.get(identity).is_some_and(|c| c.connection == connection)
    }

    pub(super) fn local_members(&self) -> Vec<Member> {
        self.members.iter().map(|(id, m)| Member { nick: m.nick.clone(), identity: *id }).collect()
    }

    /// The `seq` of a retained envelope of `sender` with `counter`.
    pub(super) fn stored(&self, sender: &PublicIdentity, counter: u64) -> Option<u64> {
        self.history
            .iter()
            .rev()
            .find(|e| e.sender.as_ref() == Some(sender) && e.counter == counter)
            .map(|e| e.seq)
    }

    /// A replay of the retained history after `history_after`, ending where the feed is now.
    pub(super) fn replay(&self, room: &Arc<NodeRoom>, history_after: u64) -> Replay {
        let skipped = self.history.partition_point(|e| e.seq <= history_after);
        Replay {
            room: room.clone(),
            pos: self.trimmed + skipped as u64,
            end: self.trimmed + self.history.len() as u64,
        }
    }
}

/// A joiner's replay: a position in the room's retained history, pulled as its socket drains.
#[derive(Debug)]
pub(super) struct Replay {
    room: Arc<NodeRoom>,
    pos: u64,
    end: u64,
}

impl History for Replay {
    fn pull(&mut self, budget: usize) -> Pulled {
        let held = self.room.lock();
        if self.pos < held.trimmed {
            return Pulled::Lost;
        }
        let mut items = Vec::new();
        let mut size = 0usize;
        while self.pos < self.end {
            let index = usize::try_from(self.pos - held.trimmed).unwrap_or(usize::MAX);
            let Some(e) = held.history.get(index) else { break };
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

/// Follows the room's RePublish feed while the room is loaded; a broken feed subscribes again
/// after the last envelope it delivered, and backfills what it missed.
pub(super) async fn follow(room: Weak<NodeRoom>, client: async_nats::Client, mut feed: RoomFeed) {
    loop {
        match feed.next().await {
            Ok(delivered) => match room.upgrade() {
                Some(room) => room.deliver(delivered),
                None => return,
            },
            Err(e) => {
                let Some((token, hints)) = room.upgrade().map(|r| (r.token.clone(), r.overdue.subscribe()))
                else {
                    return;
                };
                warn!(error = %e, "a room's feed broke; subscribing again");
                tokio::time::sleep(FEED_RETRY).await;
                let stream = feed.stream().clone();
                match RoomFeed::subscribe(&client, stream, &token, feed.last()).await {
                    Ok(again) => feed = again.with_hints(hints),
                    Err(e) => warn!(error = %e, "a room's feed could not subscribe again"),
                }
            }
        }
    }
}

/// Appends this node's envelopes to the room's log one at a time, in the order they were
/// queued, each answered once stored and delivered to this node's members.
pub(super) async fn write(
    room: Weak<NodeRoom>,
    node: Weak<Node>,
    log: RoomLog,
    mut tip: Tip,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let appended = log.append(tip, &job.msg_id, job.payload).await;
        let Some(room) = room.upgrade() else { return };
        let silent = matches!(appended, Err(AppendError::Unavailable(_)));
        let answer = match appended {
            Ok(Appended::Stored(at)) => {
                tip = at;
                room.reached(at).await;
                Ok(at.chat_seq)
            }
            Ok(Appended::Duplicate(at)) => {
                room.reached(at).await;
                Ok(at.chat_seq)
            }
            Err(e) => {
                if let AppendError::Corrupt(_) = e {
                    warn!(room = %room.name, error = %e, "a room's log holds a corrupt message");
                }
                tracing::error!(room = %room.name, error = %e, "an append to the room's log failed");
                Err(Refusal::new(
                    chatroom_crypto::ErrorCode::Internal,
                    "the relay could not store this; try again later",
                ))
            }
        };
        room.completed(job.ticket, answer.is_ok());
        let _ = job.reply.send(answer);
        if silent {
            refuse_queued(&room, &mut jobs);
        }
        // The last member may have left while this was being stored.
        if let Some(node) = node.upgrade() {
            node.evict_if_idle(&room);
        }
    }
}

/// After the cluster left an append unanswered for the whole deadline, the envelopes queued
/// behind it are refused at once rather than one deadline each: their senders resend them
/// (answered with the original if one was stored after all).
fn refuse_queued(room: &NodeRoom, jobs: &mut mpsc::UnboundedReceiver<Job>) {
    while let Ok(job) = jobs.try_recv() {
        room.completed(job.ticket, false);
        let _ = job.reply.send(Err(Refusal::new(
            chatroom_crypto::ErrorCode::Internal,
            "the relay's shared storage is unavailable; try again later",
        )));
    }
}
