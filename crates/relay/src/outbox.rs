//! A member's bounded outbound queue and the writer task that drains it.
//!
//! Producers (the connection's own handler, the fan-out of other members' envelopes, presence
//! notices) push already-encoded items without ever waiting: a full queue means the member
//! fell behind, and it is disconnected instead of stalling anyone else. The queue is bounded
//! in bytes, not items. History replay is not queued at all: the writer pulls it from the
//! room's shared history (`Replay`) only as the socket takes it. A socket that takes nothing
//! for the stall deadline closes the connection as a slow consumer. The writer task packs
//! as many queued items as fit into one Noise transport message, so a busy room costs one
//! encryption and one write per batch rather than per item.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{ErrorCode, NoiseError, RelayMessage, TransportSender, MAX_PLAINTEXT_LEN};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tracing::debug;

/// Plaintext gathered per write call: up to this many full transport messages.
const FRAMES_PER_WRITE: usize = 4;
/// Queue capacity (items) a drained queue may keep whatever its history; see `Outbox::next`.
const IDLE_QUEUE_CAPACITY: usize = 8;
/// A drained queue keeps its capacity while that is at most this many times the backlog the
/// writer last found: a member that steadily receives bursts of one size keeps the room for
/// them, one whose burst is over gives it back.
const QUEUE_SLACK: usize = 4;
/// How long a goodbye may take to write before the connection is dropped anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

thread_local! {
    /// This thread's buffers for sealing and writing a batch, shared by every writer that runs
    /// on it: a connection owns a write buffer only while the socket does not take a batch at
    /// once, so an idle member holds none, and a busy one that keeps up allocates none.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Outboxes whose writer, and tasks awaiting acknowledgements, are owed a wake-up at the
    /// end of the current `batched` call on this thread; `None` outside of one.
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
    /// The buffer `encode` writes into; it keeps the size of the largest item encoded on this
    /// thread (at most one transport message).
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What `batched` holds back.
#[derive(Default)]
struct Deferred {
    outboxes: Vec<Arc<Outbox>>,
    wakers: Vec<Waker>,
}

/// Wakes the writers and tasks held back by `batched`, also if its closure panics.
struct WakeDeferred;

impl Drop for WakeDeferred {
    fn drop(&mut self) {
        let deferred = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for outbox in deferred.outboxes {
            outbox.wake.notify_one();
        }
        for waker in deferred.wakers {
            waker.wake();
        }
    }
}

/// Wakes `waker` when the current `batched` call on this thread returns, or at once outside
/// of one: a task awaiting several acknowledgements of one commit group is woken once.
pub(crate) fn wake_batched(waker: Waker) {
    let waker = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(deferred) => {
            deferred.wakers.push(waker);
            None
        }
        None => Some(waker),
    });
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Runs `f`, holding back the writers' wake-ups for items queued with `push_batched` until
/// it returns: everything `f` queues for one member (a commit group's deliveries) is then
/// there when its writer runs, and goes out in one Noise message and one write instead of
/// one per item. Nested calls join the outer one.
pub(crate) fn batched<R>(f: impl FnOnce() -> R) -> R {
    let outer = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_some() {
            return true;
        }
        *d = Some(Deferred::default());
        false
    });
    if outer {
        return f();
    }
    let _wake = WakeDeferred;
    f()
}

/// What a `Replay` handed the writer.
#[derive(Debug)]
pub(crate) enum Pulled {
    /// These items, and more to come.
    More(Vec<Bytes>),
    /// The last items of the replay (ending with `HistoryEnd`).
    Done(Vec<Bytes>),
    /// The history moved on past what this replay had still to send: the member fell behind.
    Lost,
}

/// A history replay that the writer pulls from as the socket drains, so a joiner costs the
/// relay no copy of the history and no queue space for it.
pub(crate) trait Replay: Send + Sync + std::fmt::Debug {
    /// The next items, at most about `budget` bytes of them (at least one item).
    fn pull(&mut self, budget: usize) -> Pulled;
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue is at its limit: the member is a slow consumer.
    Full,
    /// The connection is closing or closed.
    Closed,
}

/// What `Outbox::offer` did with an item.
#[derive(Debug)]
pub(crate) enum Offered {
    Queued,
    /// The queue is at its limit; here is the item back.
    Full(Bytes),
    /// The connection is closing or closed.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// Bytes of the items in `queue`.
    bytes: usize,
    /// A history replay that goes out after the first `ahead` queued items.
    replay: Option<Box<dyn Replay>>,
    ahead: usize,
    /// Close at once with this goodbye item, dropping whatever is queued.
    abort: Option<Bytes>,
    /// Write what is queued, then close.
    finishing: bool,
    /// No more pushes are accepted.
    closed: bool,
    /// Why `close` closed it, for the log.
    reason: Option<ErrorCode>,
    /// Items queued when the writer last took a batch.
    backlog: usize,
    /// A joining member's queue: nothing is written before `start` (or a goodbye), so live
    /// items pushed between the member's registration and `start` wait behind its join.
    held: bool,
}

/// One connection's outbound queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Most bytes queued at once.
    limit: usize,
    /// Longest a write may make no progress before the connection is closed.
    stall: Duration,
    wake: Notify,
    abort: Notify,
    /// Signalled whenever the writer took items off the queue, or the outbox closed.
    space: Notify,
}

/// Encodes one relay message as an item: into this thread's scratch buffer, then copied out
/// at its exact size, so an item (an `Ack` among them, one per `Send`) costs one allocation,
/// not the buffer's growth steps and the shared header a `Bytes` of a part-filled `Vec` needs.
pub(crate) fn encode(msg: &RelayMessage) -> Bytes {
    ENCODED.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut out) => {
            out.clear();
            msg.encode(&mut out);
            Bytes::copy_from_slice(&out)
        }
        // Not reached (encoding calls nothing that encodes); never panic over a buffer.
        Err(_) => {
            let mut out = Vec::new();
            msg.encode(&mut out);
            Bytes::from(out)
        }
    })
}

/// Encodes a goodbye item.
pub(crate) fn goodbye(code: ErrorCode, detail: &str) -> Bytes {
    encode(&RelayMessage::Goodbye { code, detail: detail.to_owned() })
}

/// The smallest queue limit: one item of any size always fits into an empty queue.
pub(crate) const MIN_QUEUE_BYTES: usize = MAX_PLAINTEXT_LEN;

impl Outbox {
    /// A queue that holds at most `limit` bytes of items pushed with `push` (at least
    /// `MIN_QUEUE_BYTES`), whose writer gives up on a socket that takes nothing for `stall`.
    pub(crate) fn new(limit: usize, stall: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limit: limit.max(MIN_QUEUE_BYTES),
            stall,
            wake: Notify::new(),
            abort: Notify::new(),
            space: Notify::new(),
        }
    }

    /// A queue like `new`'s for a connection that is still joining: what is pushed waits
    /// until `start` puts the join's items and replay ahead of it.
    pub(crate) fn held(limit: usize, stall: Duration) -> Self {
        let outbox = Self::new(limit, stall);
        outbox.lock().held = true;
        outbox
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one item if there is room. A full queue hands the item back, so a caller that
    /// goes on to wait for room does not copy it first (cloning a `Bytes` made from a `Vec`
    /// allocates).
    pub(crate) fn offer(&self, item: Bytes) -> Offered {
        let mut state = self.lock();
        if state.closed {
            return Offered::Closed;
        }
        if !state.has_room(self.limit, item.len()) {
            return Offered::Full(item);
        }
        state.push(item);
        drop(state);
        self.wake.notify_one();
        Offered::Queued
    }

    /// Queues one item, refusing it if the queue is full or closed.
    pub(crate) fn push(&self, item: Bytes) -> Result<(), PushError> {
        match self.offer(item) {
            Offered::Queued => Ok(()),
            Offered::Full(_) => Err(PushError::Full),
            Offered::Closed => Err(PushError::Closed),
        }
    }

    /// Queues a reply of this connection's own handler, waiting up to `wait` for room: the
    /// handler may answer a burst of requests faster than the writer task gets to run, but a
    /// client that stops reading its answers altogether is a slow consumer like any other.
    pub(crate) async fn push_reply(&self, mut item: Bytes, wait: Duration) -> Result<(), PushError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.offer(item) {
                Offered::Queued => return Ok(()),
                Offered::Closed => return Err(PushError::Closed),
                Offered::Full(back) => item = back,
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(PushError::Full);
            }
        }
    }

    /// Starts a member's join: `first` (the `Joined` and `Members` items, which count
    /// against the limit like any other) goes out first, then `replay`, then whatever was
    /// queued before this call (live items pushed since the member registered) or after it.
    pub(crate) fn start(&self, first: Vec<Bytes>, replay: Box<dyn Replay>) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        state.ahead = first.len();
        for item in first.into_iter().rev() {
            state.bytes += item.len();
            state.queue.push_front(item);
        }
        state.replay = Some(replay);
        state.held = false;
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Hands back a replay the writer pulled from and that has more to send.
    fn resume(&self, replay: Box<dyn Replay>) {
        let mut state = self.lock();
        // Not after `close`, which dropped everything still to send.
        if state.reason.is_none() {
            state.replay = Some(replay);
        }
    }

    /// `push_or_close`, but inside `batched` the writer is woken only when it returns.
    pub(crate) fn push_batched(self: &Arc<Self>, item: Bytes) -> bool {
        self.push_all_batched(std::iter::once(item))
    }

    /// `push_batched` for several items in order, under one lock while they fit: a commit
    /// group's deliveries reach a member's queue together. An item that does not fit goes
    /// through `push_or_close` (the writer may have made room since; if not, the member is a
    /// slow consumer). Returns whether every item was queued.
    pub(crate) fn push_all_batched(self: &Arc<Self>, items: impl IntoIterator<Item = Bytes>) -> bool {
        let mut items = items.into_iter();
        if DEFERRED.with(|d| d.borrow().is_none()) {
            return items.all(|item| self.push_or_close(item));
        }
        loop {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            // A writer with items already queued has been woken for them (or is owed a
            // wake-up recorded here earlier in this batch).
            let was_empty = state.queue.is_empty();
            let mut overflow = None;
            for item in items.by_ref() {
                if !state.has_room(self.limit, item.len()) {
                    overflow = Some(item);
                    break;
                }
                state.push(item);
            }
            let owed_wake = was_empty && !state.queue.is_empty();
            drop(state);
            if owed_wake {
                DEFERRED.with(|d| {
                    if let Some(deferred) = d.borrow_mut().as_mut() {
                        deferred.outboxes.push(self.clone());
                    }
                });
            }
            let Some(item) = overflow else { return true };
            if !self.push_or_close(item) {
                return false;
            }
        }
    }

    /// Pushes an item; on a full queue closes the connection as a slow consumer. Returns
    /// whether the item was queued.
    pub(crate) fn push_or_close(&self, item: Bytes) -> bool {
        match self.push(item) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.close(
                    ErrorCode::SlowConsumer,
                    "outbound queue full: you fell behind; reconnect to catch up from history",
                );
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Closes the connection from outside (kick, ban, slow consumer, shutdown, replaced):
    /// queued items are dropped and the goodbye is sent first, best effort. Only the first
    /// close counts; returns whether this call closed it.
    pub(crate) fn close(&self, code: ErrorCode, detail: &str) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.closed = true;
        state.reason = Some(code);
        state.clear();
        state.abort = Some(goodbye(code, detail));
        drop(state);
        self.abort.notify_one();
        self.wake.notify_one();
        self.space.notify_waiters();
        true
    }

    /// Bytes waiting in the queue (for the metrics).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Why the connection was closed from outside, if it was.
    pub(crate) fn close_reason(&self) -> Option<ErrorCode> {
        self.lock().reason
    }

    /// Writes what is queued, then closes the connection.
    pub(crate) fn finish(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.finishing = true;
        drop(state);
        self.wake.notify_one();
    }

    /// Queues a final goodbye and closes after it (a refusal by this connection's handler).
    pub(crate) fn finish_with(&self, code: ErrorCode, detail: &str) {
        let mut state = self.lock();
        if !state.closed {
            state.push(goodbye(code, detail));
        }
        state.closed = true;
        state.finishing = true;
        drop(state);
        self.wake.notify_one();
    }

    /// Takes the next batch: items whose total size fits into `FRAMES_PER_WRITE` transport
    /// messages, grouped per message; or the replay, when its turn has come.
    fn next(&self) -> Next {
        let mut state = self.lock();
        if let Some(goodbye) = state.abort.take() {
            return Next::Abort(goodbye);
        }
        if state.held && !state.finishing {
            return Next::Wait;
        }
        if state.ahead == 0 {
            if let Some(replay) = state.replay.take() {
                return Next::Replay(replay);
            }
        }
        if state.queue.is_empty() {
            // A burst (the presence notices of a join storm) grows the queue; a member that
            // went quiet should not keep that capacity for as long as it stays connected.
            let capacity = state.queue.capacity();
            if capacity > IDLE_QUEUE_CAPACITY && capacity > QUEUE_SLACK * state.backlog {
                state.queue = VecDeque::new();
            }
            return if state.finishing { Next::Done } else { Next::Wait };
        }
        state.backlog = state.queue.len();
        // Items queued behind a pending replay wait for it.
        let mut take = if state.replay.is_some() { state.ahead } else { usize::MAX };
        let mut batches: Vec<Vec<Bytes>> = Vec::new();
        let mut current: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        while let Some(item) = state.queue.front().filter(|_| take > 0) {
            if size + item.len() > MAX_PLAINTEXT_LEN && !current.is_empty() {
                if batches.len() + 1 >= FRAMES_PER_WRITE {
                    break;
                }
                batches.push(std::mem::take(&mut current));
                size = 0;
            }
            size += item.len();
            if let Some(item) = state.pop() {
                current.push(item);
                take -= 1;
            }
        }
        if !current.is_empty() {
            batches.push(current);
        }
        // This batch ends with the last item ahead of the replay: the replay's first items go
        // out in the same write (a join's `Joined`, `Members` and `HistoryEnd` in one).
        let replay = if state.ahead == 0 { state.replay.take() } else { None };
        drop(state);
        self.space.notify_waiters();
        Next::Write(batches, replay)
    }
}

#[cfg(any(test, feature = "conformance"))]
impl Outbox {
    /// Everything a writer would send now, as if the socket took it all: queued items,
    /// replays pulled to their end, and a goodbye. For tests of what a member is sent.
    pub(crate) fn drain(&self) -> Vec<Bytes> {
        let mut items = Vec::new();
        loop {
            match self.next() {
                Next::Abort(goodbye) => {
                    items.push(goodbye);
                    return items;
                }
                Next::Wait | Next::Done => return items,
                Next::Write(batches, replay) => {
                    items.extend(batches.into_iter().flatten());
                    if let Some(replay) = replay {
                        drain_replay(replay, &mut items);
                    }
                }
                Next::Replay(replay) => drain_replay(replay, &mut items),
            }
        }
    }
}

#[cfg(any(test, feature = "conformance"))]
fn drain_replay(mut replay: Box<dyn Replay>, items: &mut Vec<Bytes>) {
    loop {
        match replay.pull(usize::MAX) {
            Pulled::More(more) => items.extend(more),
            Pulled::Done(last) => return items.extend(last),
            Pulled::Lost => return,
        }
    }
}

impl State {
    /// Whether an item of `len` bytes may be queued: it fits under `limit`, or the queue is
    /// empty (an item is never larger than one transport message, the smallest limit).
    fn has_room(&self, limit: usize, len: usize) -> bool {
        self.queue.is_empty() || self.bytes.saturating_add(len) <= limit
    }

    fn push(&mut self, item: Bytes) {
        self.bytes += item.len();
        self.queue.push_back(item);
    }

    fn pop(&mut self) -> Option<Bytes> {
        let item = self.queue.pop_front()?;
        self.bytes -= item.len();
        self.ahead = self.ahead.saturating_sub(1);
        Some(item)
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
        self.ahead = 0;
        self.replay = None;
    }
}

/// Groups items into transport messages of at most `MAX_PLAINTEXT_LEN` bytes each.
fn group(items: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut batches = Vec::new();
    let mut current: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    for item in items {
        if size + item.len() > MAX_PLAINTEXT_LEN && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            size = 0;
        }
        size += item.len();
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

enum Next {
    Write(Vec<Vec<Bytes>>, Option<Box<dyn Replay>>),
    Replay(Box<dyn Replay>),
    Abort(Bytes),
    Done,
    Wait,
}

/// Seals batches of items into frames appended to `out`, each item copied once, into `out`.
fn seal(sender: &mut TransportSender, batches: &[Vec<Bytes>], out: &mut Vec<u8>) -> bool {
    for batch in batches {
        match sender.seal_parts(batch, out) {
            Ok(()) => {}
            // One item larger than a transport message: an encoder bug, never peer input. A
            // refused message takes no nonce, so the session goes on.
            Err(NoiseError::PlaintextTooLong(len)) => debug!(len, "dropping an oversized outbound item"),
            Err(_) => return false,
        }
    }
    true
}

/// What became of a batch written without waiting.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// The socket took all of it.
    All,
    /// The socket is full: these bytes are still to be written, in a buffer of their own.
    Rest(Vec<u8>),
    /// Sealing or writing failed: the connection is done.
    Failed,
}

/// Seals `batches` in this thread's scratch buffers and writes as much as `writer` takes
/// without waiting. The bytes it does not take are copied out, so the scratch buffers are
/// free again for the next writer on this thread.
fn write_now<W: AsyncWrite + Unpin>(
    sender: &mut TransportSender,
    batches: &[Vec<Bytes>],
    writer: &mut W,
) -> Written {
    SCRATCH.with(|scratch| {
        // Never borrowed across an await, so never borrowed here; a fresh one would do anyway.
        let mut fresh = Vec::new();
        let mut borrowed = scratch.try_borrow_mut();
        let out = match borrowed.as_deref_mut() {
            Ok(scratch) => scratch,
            Err(_) => &mut fresh,
        };
        out.clear();
        if !seal(sender, batches, out) {
            return Written::Failed;
        }
        // A waker that does nothing: whatever is left is awaited with the task's own waker,
        // and the socket's readiness is tracked by the runtime, not by the waker.
        let mut cx = Context::from_waker(Waker::noop());
        let mut done = 0;
        while done < out.len() {
            match Pin::new(&mut *writer).poll_write(&mut cx, &out[done..]) {
                Poll::Ready(Ok(0)) => {
                    debug!("write failed: the socket took no bytes");
                    return Written::Failed;
                }
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "write failed");
                    return Written::Failed;
                }
                Poll::Pending => break,
            }
        }
        match out.get(done..) {
            Some(rest) if !rest.is_empty() => Written::Rest(rest.to_vec()),
            _ => Written::All,
        }
    })
}

/// Drains `outbox` into the socket until the connection finishes or is closed.
///
/// An idle member's writer task holds this future for as long as the member stays, so it is
/// kept small: its arguments are captured once (an `async fn` stores them twice, as arguments
/// and as locals), and what only a goodbye, a full socket or the end needs is boxed, so the
/// wait for the next item is all it carries: the task is 256 bytes, 768 with those inline.
// Not an `async fn`: that would store the three arguments a second time (see above).
#[allow(clippy::manual_async_fn)]
pub(crate) fn write_loop<W: AsyncWrite + Unpin + Send>(
    outbox: Arc<Outbox>,
    mut sender: TransportSender,
    mut writer: W,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        loop {
            let batches = match outbox.next() {
                Next::Wait => {
                    outbox.wake.notified().await;
                    continue;
                }
                Next::Done => break,
                Next::Abort(goodbye) => {
                    Box::pin(write_goodbye(&mut sender, goodbye, &mut writer)).await;
                    break;
                }
                Next::Write(mut batches, replay) => {
                    if let Some(replay) = replay {
                        if !pull_into(&outbox, replay, &mut batches) {
                            continue;
                        }
                    }
                    batches
                }
                Next::Replay(replay) => {
                    let mut batches = Vec::new();
                    if !pull_into(&outbox, replay, &mut batches) {
                        continue;
                    }
                    batches
                }
            };
            let rest = match write_now(&mut sender, &batches, &mut writer) {
                Written::All => continue,
                Written::Failed => break,
                Written::Rest(rest) => rest,
            };
            drop(batches);
            if !Box::pin(write_rest(&outbox, &mut writer, rest)).await {
                break;
            }
        }
        {
            let mut state = outbox.lock();
            state.closed = true;
            state.clear();
        }
        Box::pin(async move {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, writer.shutdown()).await;
        })
        .await;
    }
}

/// Seals and writes a goodbye, giving up after `GOODBYE_TIMEOUT`.
async fn write_goodbye<W: AsyncWrite + Unpin>(sender: &mut TransportSender, goodbye: Bytes, writer: &mut W) {
    let mut buf = Vec::new();
    if seal(sender, &[vec![goodbye]], &mut buf) {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, writer.write_all(&buf)).await;
    }
}

/// Writes what the socket did not take at once; `false` if the connection is done (a write
/// failed, stalled, or the outbox was closed meanwhile).
async fn write_rest<W: AsyncWrite + Unpin>(outbox: &Outbox, writer: &mut W, rest: Vec<u8>) -> bool {
    tokio::select! {
        biased;
        written = write_progressing(writer, &rest, outbox.stall) => match written {
            Ok(()) => true,
            Err(Stalled::Io(e)) => {
                debug!(error = %e, "write failed");
                false
            }
            Err(Stalled::Timeout) => {
                // Part of a frame may be on the wire: no goodbye can follow it.
                outbox.close(ErrorCode::SlowConsumer, "the connection took no data for too long");
                debug!("write made no progress within the stall deadline");
                false
            }
        },
        // Closed while blocked on a reader that does not read: part of a frame may
        // already be on the wire, so no goodbye can follow it.
        _ = outbox.abort.notified() => false,
    }
}

/// Pulls the next part of `replay` into `batches`, handing the replay back to `outbox` if
/// it has more; `false` if the member fell too far behind and is being closed.
fn pull_into(outbox: &Outbox, mut replay: Box<dyn Replay>, batches: &mut Vec<Vec<Bytes>>) -> bool {
    match replay.pull(FRAMES_PER_WRITE * MAX_PLAINTEXT_LEN) {
        Pulled::More(items) => {
            outbox.resume(replay);
            batches.extend(group(items));
            true
        }
        Pulled::Done(items) => {
            batches.extend(group(items));
            true
        }
        Pulled::Lost => {
            outbox.close(
                ErrorCode::SlowConsumer,
                "history moved on while you were catching up; reconnect to catch up again",
            );
            false
        }
    }
}

/// Why `write_progressing` gave up.
enum Stalled {
    Io(std::io::Error),
    Timeout,
}

/// Writes all of `buf`, failing if any single write takes no byte for `stall`: a reader
/// that reads slowly keeps its connection, one that stopped reading loses it.
async fn write_progressing<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
    stall: Duration,
) -> Result<(), Stalled> {
    let mut done = 0;
    while done < buf.len() {
        match tokio::time::timeout(stall, writer.write(&buf[done..])).await {
            Err(_) => return Err(Stalled::Timeout),
            Ok(Ok(0)) => {
                return Err(Stalled::Io(std::io::Error::from(std::io::ErrorKind::WriteZero)));
            }
            Ok(Ok(n)) => done += n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(Stalled::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use chatroom_crypto::{Initiator, Responder, StaticKeypair, Transport};

    const STALL: Duration = Duration::from_secs(30);

    /// A queue at the smallest limit, filled by one item of junk.
    fn filled() -> Outbox {
        let outbox = Outbox::new(MIN_QUEUE_BYTES, STALL);
        outbox.push(Bytes::from(vec![0u8; MIN_QUEUE_BYTES])).unwrap();
        outbox
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (Transport, Transport) {
        let (init, m1) = Initiator::start(&StaticKeypair::generate()).unwrap();
        let (resp, m2) = Responder::new(&StaticKeypair::generate()).unwrap().read_hello(&m1).unwrap();
        let (client, m3) = init.read_reply(&m2).unwrap().finish().unwrap();
        (client, resp.read_finish(&m3).unwrap())
    }

    /// Runs the writer over an in-memory pipe and returns the decrypted transport messages.
    async fn written(outbox: Arc<Outbox>) -> Vec<Vec<RelayMessage>> {
        written_through(outbox, 1 << 20).await
    }

    /// `written` through a pipe that holds at most `pipe` bytes.
    async fn written_through(outbox: Arc<Outbox>, pipe: usize) -> Vec<Vec<RelayMessage>> {
        let (client, relay) = pair();
        let (sender, _) = relay.split();
        let (_, rx) = client.split();
        let (w, mut r) = tokio::io::duplex(pipe);
        let writer = tokio::spawn(write_loop(outbox, sender, w));
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).await.unwrap();
        writer.await.unwrap();
        opened(rx, &bytes)
    }

    /// The transport messages in `bytes`, decrypted.
    fn opened(mut rx: chatroom_crypto::TransportReceiver, bytes: &[u8]) -> Vec<Vec<RelayMessage>> {
        let mut messages = Vec::new();
        let mut rest = bytes;
        while let Some((payload, used)) = chatroom_crypto::decode_frame(rest, usize::MAX).unwrap() {
            messages.push(RelayMessage::decode_all(&rx.open(payload).unwrap()).unwrap());
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        messages
    }

    fn deliveries(seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<Bytes> {
        seqs.map(|seq| {
            let mut item = Vec::new();
            chatroom_crypto::encode_deliver(seq, false, &vec![7; len], &mut item);
            Bytes::from(item)
        })
        .collect()
    }

    fn seqs(messages: &[Vec<RelayMessage>]) -> Vec<u64> {
        messages
            .iter()
            .flatten()
            .map(|m| match m {
                RelayMessage::Deliver { seq, .. } => *seq,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_writer_keeps_a_buffer_only_for_what_the_socket_did_not_take() {
        let (client, relay) = pair();
        let (mut sender, _) = relay.split();
        let (_, rx) = client.split();
        let (mut w, mut r) = tokio::io::duplex(500);
        // The pipe takes the whole batch: the connection keeps nothing.
        assert_eq!(write_now(&mut sender, &[deliveries(1..=1, 300)], &mut w), Written::All);
        // It takes part of the next one: the rest is kept, in a buffer of exactly its size.
        let Written::Rest(rest) = write_now(&mut sender, &[deliveries(2..=6, 300)], &mut w) else {
            panic!("a 500-byte pipe cannot take six deliveries of 300 bytes");
        };
        assert_eq!(rest.capacity(), rest.len());
        let reading = tokio::spawn(async move {
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes).await.unwrap();
            bytes
        });
        w.write_all(&rest).await.unwrap();
        drop(w);
        let messages = opened(rx, &reading.await.unwrap());
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(seqs(&messages), (1..=6).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_socket_that_takes_little_at_a_time_gets_every_frame_whole_and_in_order() {
        let outbox = Arc::new(Outbox::new(1 << 20, STALL));
        for item in deliveries(1..=100, 1000) {
            outbox.push(item).unwrap();
        }
        outbox.finish();
        let messages = written_through(outbox, 1000).await;
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [64, 36]);
        assert_eq!(seqs(&messages), (1..=100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn queued_items_are_packed_into_as_few_transport_messages_as_fit() {
        let outbox = Arc::new(Outbox::new(1 << 20, STALL));
        for seq in 1..=100u64 {
            let mut item = Vec::new();
            chatroom_crypto::encode_deliver(seq, false, &[7; 1000], &mut item);
            outbox.push(Bytes::from(item)).unwrap();
        }
        outbox.finish();
        let messages = written(outbox).await;
        // 100 items of 1012 bytes: 64 fit in one 65519-byte plaintext.
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [64, 36]);
        let seqs: Vec<u64> = messages
            .iter()
            .flatten()
            .map(|m| match m {
                RelayMessage::Deliver { seq, .. } => *seq,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    }

    /// Whether the writer has a wake-up waiting (consumes it).
    fn woken(outbox: &Outbox) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let notified = outbox.wake.notified();
        tokio::pin!(notified);
        std::future::Future::poll(notified, &mut cx).is_ready()
    }

    #[test]
    fn a_batch_wakes_the_writer_once_after_its_last_item() {
        let outbox = Arc::new(Outbox::new(1 << 20, STALL));
        batched(|| {
            for seq in 1..=10u64 {
                let mut item = Vec::new();
                chatroom_crypto::encode_deliver(seq, false, &[7; 100], &mut item);
                assert!(outbox.push_batched(Bytes::from(item)));
            }
            assert!(!woken(&outbox), "no wake-up while the batch is being queued");
        });
        assert!(woken(&outbox), "a wake-up once the batch is queued");
        assert_eq!(outbox.lock().queue.len(), 10);
        // Outside a batch every push wakes the writer.
        assert!(outbox.push_batched(encode(&RelayMessage::Ping { token: 1 })));
        assert!(woken(&outbox));
    }

    #[test]
    fn a_group_queued_under_one_lock_keeps_its_order_and_wakes_the_writer_once() {
        let outbox = Arc::new(Outbox::new(1 << 20, STALL));
        let group = deliveries(1..=10, 100);
        batched(|| {
            assert!(outbox.push_all_batched(group[..4].iter().cloned()));
            assert!(outbox.push_all_batched(group[4..].iter().cloned()));
            assert!(!woken(&outbox), "no wake-up while the batch is being queued");
        });
        assert!(woken(&outbox), "a wake-up once the batch is queued");
        assert_eq!(outbox.drain(), group);
        // Outside a batch the items are queued one by one, each waking the writer.
        assert!(outbox.push_all_batched(group[..2].iter().cloned()));
        assert!(woken(&outbox));
        assert_eq!(outbox.drain(), group[..2]);
    }

    #[test]
    fn a_group_that_overflows_the_queue_closes_a_slow_consumer_and_a_closed_queue_takes_none() {
        let group = deliveries(1..=100, 1_000);
        let outbox = Arc::new(Outbox::new(MIN_QUEUE_BYTES, STALL));
        let queued = batched(|| outbox.push_all_batched(group.iter().cloned()));
        assert!(!queued, "100 deliveries of 1 000 bytes do not fit in {MIN_QUEUE_BYTES} bytes");
        assert_eq!(outbox.close_reason(), Some(ErrorCode::SlowConsumer));
        let goodbye = outbox.drain();
        assert_eq!(goodbye.len(), 1, "only the goodbye is left: {goodbye:?}");
        assert!(!batched(|| outbox.push_all_batched(group[..1].iter().cloned())));
        assert!(outbox.drain().is_empty());
    }

    #[test]
    fn a_drained_queue_gives_its_capacity_back_once_its_burst_is_over() {
        let outbox = Outbox::new(1 << 20, STALL);
        let drain = |outbox: &Outbox| {
            while let Next::Write(..) = outbox.next() {}
        };
        // A steady busy member: bursts of one size keep the queue's room for them.
        for _ in 0..3 {
            deliveries(1..=100, 200).into_iter().for_each(|d| outbox.push(d).unwrap());
            drain(&outbox);
            assert!(outbox.lock().queue.capacity() >= 100);
        }
        // The bursts stop: the next small batch leaves the queue with no allocation.
        outbox.push(encode(&RelayMessage::Ping { token: 1 })).unwrap();
        drain(&outbox);
        assert_eq!(outbox.lock().queue.capacity(), 0);
        // Small queues are left alone.
        deliveries(1..=IDLE_QUEUE_CAPACITY as u64, 200).into_iter().for_each(|d| outbox.push(d).unwrap());
        drain(&outbox);
        let capacity = outbox.lock().queue.capacity();
        outbox.push(encode(&RelayMessage::Ping { token: 2 })).unwrap();
        drain(&outbox);
        assert_eq!(outbox.lock().queue.capacity(), capacity);
    }

    #[test]
    fn a_full_queue_hands_an_offered_item_back_uncopied() {
        let outbox = filled();
        let item = Bytes::from(vec![2u8; 8]);
        let at = item.as_ptr();
        match outbox.offer(item) {
            Offered::Full(back) => assert_eq!(back.as_ptr(), at, "the same buffer comes back"),
            other => panic!("expected Full, got {other:?}"),
        }
        outbox.close(ErrorCode::SlowConsumer, "test");
        assert!(matches!(outbox.offer(Bytes::from_static(b"x")), Offered::Closed));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_close_drops_the_queue_for_the_goodbye() {
        let outbox = Arc::new(filled());
        let ping = encode(&RelayMessage::Ping { token: 1 });
        assert_eq!(outbox.push(ping.clone()), Err(PushError::Full));
        assert!(!outbox.push_or_close(ping.clone()));
        assert_eq!(outbox.push(ping), Err(PushError::Closed));
        assert!(!outbox.close(ErrorCode::Kicked, "second close is ignored"));
        let messages = written(outbox).await;
        assert_eq!(
            messages,
            [vec![RelayMessage::Goodbye {
                code: ErrorCode::SlowConsumer,
                detail: "outbound queue full: you fell behind; reconnect to catch up from history".into(),
            }]]
        );
    }

    #[tokio::test]
    async fn a_reply_waits_for_room_and_gives_up_after_its_deadline() {
        let outbox = filled();
        let ping = encode(&RelayMessage::Ping { token: 1 });
        let waited = tokio::time::Instant::now();
        assert_eq!(outbox.push_reply(ping.clone(), Duration::from_millis(50)).await, Err(PushError::Full));
        assert!(waited.elapsed() >= Duration::from_millis(50));
        // The writer taking the queued item makes room.
        let (again, taken) = tokio::join!(outbox.push_reply(ping, Duration::from_secs(5)), async {
            tokio::task::yield_now().await;
            matches!(outbox.next(), Next::Write(..))
        });
        assert!(taken);
        assert_eq!(again, Ok(()));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_not_items() {
        let outbox = Outbox::new(100_000, STALL);
        // 24 deliveries of 4012 bytes fit into 100 000 bytes; the 25th does not.
        for item in deliveries(1..=24, 4000) {
            outbox.push(item).unwrap();
        }
        let next = deliveries(25..=25, 4000).remove(0);
        assert_eq!(outbox.push(next.clone()), Err(PushError::Full));
        // Small items do not slip past the limit either: it counts bytes.
        let small = deliveries(1..=1, 209).remove(0);
        let room_left = 100_000 - 24 * 4012;
        let fitting = room_left / small.len();
        for _ in 0..fitting {
            outbox.push(small.clone()).unwrap();
        }
        assert_eq!(outbox.push(small.clone()), Err(PushError::Full));
        // Taking a batch gives its bytes back.
        assert!(matches!(outbox.next(), Next::Write(..)));
        assert_eq!(outbox.push(next), Ok(()));
    }

    /// A replay of `total` deliveries, `per_pull` per pull, counting its pulls.
    #[derive(Debug)]
    struct Counting {
        next: u64,
        total: u64,
        per_pull: u64,
        pulls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Replay for Counting {
        fn pull(&mut self, _budget: usize) -> Pulled {
            self.pulls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let last = (self.next + self.per_pull - 1).min(self.total);
            let mut items = deliveries(self.next..=last, 300);
            self.next = last + 1;
            if self.next > self.total {
                items.push(encode(&RelayMessage::HistoryEnd { latest_seq: self.total }));
                Pulled::Done(items)
            } else {
                Pulled::More(items)
            }
        }
    }

    #[tokio::test]
    async fn a_replay_goes_out_after_the_first_items_and_before_anything_queued_later() {
        let outbox = Arc::new(Outbox::new(MIN_QUEUE_BYTES, STALL));
        let pulls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let replay = Counting { next: 1, total: 30, per_pull: 10, pulls: pulls.clone() };
        let first = vec![encode(&RelayMessage::Ping { token: 1 })];
        outbox.start(first, Box::new(replay)).unwrap();
        // Queued while the replay is pending: goes out after it.
        outbox.push(deliveries(31..=31, 300).remove(0)).unwrap();
        assert_eq!(
            pulls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing pulled before the writer runs"
        );
        outbox.finish();
        let messages: Vec<RelayMessage> = written(outbox).await.into_iter().flatten().collect();
        assert_eq!(messages.first(), Some(&RelayMessage::Ping { token: 1 }));
        let order: Vec<u64> = messages
            .iter()
            .filter_map(|m| match m {
                RelayMessage::Deliver { seq, .. } => Some(*seq),
                RelayMessage::HistoryEnd { .. } => Some(0),
                _ => None,
            })
            .collect();
        let mut expected: Vec<u64> = (1..=30).collect();
        expected.extend([0, 31]);
        assert_eq!(order, expected);
        assert_eq!(
            pulls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "pulled in pieces as the socket drained"
        );
    }

    #[tokio::test]
    async fn a_joining_members_live_items_wait_behind_its_join_and_replay() {
        let outbox = Arc::new(Outbox::held(MIN_QUEUE_BYTES, STALL));
        // Delivered live between the member's registration and the start of its join.
        outbox.push(deliveries(3..=3, 300).remove(0)).unwrap();
        assert!(matches!(outbox.next(), Next::Wait), "a held queue writes nothing");
        let replay = Counting { next: 1, total: 2, per_pull: 10, pulls: Arc::default() };
        outbox.start(vec![encode(&RelayMessage::Ping { token: 1 })], Box::new(replay)).unwrap();
        outbox.finish();
        let messages: Vec<RelayMessage> = written(outbox).await.into_iter().flatten().collect();
        assert_eq!(messages.first(), Some(&RelayMessage::Ping { token: 1 }));
        let order: Vec<u64> = messages
            .iter()
            .filter_map(|m| match m {
                RelayMessage::Deliver { seq, .. } => Some(*seq),
                RelayMessage::HistoryEnd { .. } => Some(0),
                _ => None,
            })
            .collect();
        assert_eq!(order, [1, 2, 0, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_for_the_stall_deadline_is_closed_as_slow() {
        let (client, relay) = pair();
        let (sender, _) = relay.split();
        drop(client);
        // A pipe of 1 KiB that nobody reads.
        let (w, _r) = tokio::io::duplex(1024);
        let outbox = Arc::new(Outbox::new(1 << 20, Duration::from_secs(30)));
        for item in deliveries(1..=10, 4000) {
            outbox.push(item).unwrap();
        }
        let started = tokio::time::Instant::now();
        write_loop(outbox.clone(), sender, w).await;
        assert_eq!(outbox.close_reason(), Some(ErrorCode::SlowConsumer));
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(40));
    }
}
