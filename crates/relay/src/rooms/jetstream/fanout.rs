//! A room's live messages on one relay node, in room order, from the stream's RePublish.
//!
//! The stream's leader republishes every stored message (and only those: refused
//! compare-and-sets never appear, unlike on the log's own subjects) to `fan.<room id>`, with
//! `Nats-Sequence` (its stream sequence) and `Nats-Last-Sequence` (the room's previous one).
//! A message whose previous one is not the last delivered reveals a gap (a message lost to a
//! slow subscription, a leader change, or written before the subscription reached the leader):
//! the feed holds it and reads the missing ones one at a time from the stream leader, so
//! nothing is buffered beyond the one held message.
//!
//! A gap at the end has no later message to reveal it, so a quiet feed asks the leader for the
//! room's last message now and then ([`Probe`]): soon after each delivery, then less and less
//! often. The node's writer hints the feed with an append of its own whose copy is overdue, and
//! the feed asks at once rather than at the next quiet probe. Neither costs a busy room
//! anything per message: the timer is re-armed only when it fires or the feed leaves a backoff.

use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::log::{Tip, CHAT_SEQ};

/// One message of the room, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub tip: Tip,
    pub payload: Bytes,
}

/// Why the feed stopped; the caller subscribes again after its last delivered tip.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the NATS subscription of the room ended")]
    Closed,
    #[error("cannot read the room's missing messages from the stream: {0}")]
    Backfill(String),
    #[error("a message of the room lacks a valid {0} header")]
    Malformed(&'static str),
    #[error("the room's messages jumped from room sequence {last} to {got}")]
    OutOfOrder { last: u64, got: u64 },
}

/// A republished message: where it is and where the room's previous one was.
#[derive(Debug)]
struct Republished {
    message: Delivered,
    previous_stream_seq: u64,
}

/// When a quiet feed asks the stream leader for the room's last message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Quiet time after a delivery (or after subscribing) before the first probe.
    pub first: Duration,
    /// The longest quiet time between probes: each probe that finds nothing new doubles the
    /// wait up to this, so an idle room costs one request per this long.
    pub max: Duration,
}

impl Default for Probe {
    fn default() -> Self {
        Self { first: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

/// One room's live feed on this node.
#[derive(Debug)]
pub struct RoomFeed {
    subscription: Subscriber,
    stream: Stream,
    subject: String,
    last: Tip,
    held: Option<Delivered>,
    probe: Probe,
    /// The current quiet interval: the next probe is due this long after `active_at`, the
    /// last delivery or probe.
    quiet: Duration,
    active_at: Instant,
    /// Fires at or before the next probe is due (a delivery moves the due time without it).
    timer: Pin<Box<Sleep>>,
    /// Tips of this node's own appends whose copies are overdue, if hinted.
    hints: Option<watch::Receiver<Tip>>,
}

impl RoomFeed {
    /// Subscribes to room `room_id`'s republished messages, delivering from after `after`
    /// (where the member's history ended; earlier messages are backfilled, none repeated).
    pub async fn subscribe(
        client: &Client,
        stream: Stream,
        room_id: &str,
        after: Tip,
    ) -> Result<Self, FeedError> {
        let subscription = client.subscribe(format!("fan.{room_id}")).await.map_err(|_| FeedError::Closed)?;
        let probe = Probe::default();
        Ok(Self {
            subscription,
            stream,
            subject: format!("chat.{room_id}"),
            last: after,
            held: None,
            probe,
            quiet: probe.first,
            active_at: Instant::now(),
            timer: Box::pin(tokio::time::sleep(probe.first)),
            hints: None,
        })
    }

    /// Probes on `probe`'s schedule instead of the default one.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = probe;
        self.quiet = probe.first;
        self.active_at = Instant::now();
        self.timer.as_mut().reset(self.active_at + probe.first);
        self
    }

    /// Hints the feed with the tips of this node's own appends whose republished copies are
    /// overdue: one past the last delivered is read from the stream at once.
    pub fn with_hints(mut self, hints: watch::Receiver<Tip>) -> Self {
        self.hints = Some(hints);
        self
    }

    /// Delivers from after `after` instead, holding nothing: for a caller that subscribed,
    /// flushed, and then read where the room's log ends, so what was stored between the two
    /// is neither missed nor repeated.
    pub fn start_after(&mut self, after: Tip) {
        self.last = after;
        self.held = None;
    }

    /// The stream the feed backfills from.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The last message delivered (or where the feed started).
    pub fn last(&self) -> Tip {
        self.last
    }

    /// The room's next message after the last delivered one.
    pub async fn next(&mut self) -> Result<Delivered, FeedError> {
        loop {
            if let Some(held) = self.held.take() {
                let missing = self.read_after(self.last.stream_seq).await?;
                if missing.tip.stream_seq >= held.tip.stream_seq {
                    return self.accept(held);
                }
                self.held = Some(held);
                return self.accept(missing);
            }
            tokio::select! {
                received = self.subscription.next() => {
                    let Republished { message, previous_stream_seq } =
                        republished(received.ok_or(FeedError::Closed)?)?;
                    if message.tip.stream_seq <= self.last.stream_seq {
                        continue; // delivered already, by backfill
                    }
                    if previous_stream_seq == self.last.stream_seq {
                        return self.accept(message);
                    }
                    self.held = Some(message);
                }
                () = self.timer.as_mut() => {
                    let due = self.active_at + self.quiet;
                    if Instant::now() < due {
                        self.timer.as_mut().reset(due); // a delivery came meanwhile
                    } else {
                        self.held = self.probe().await?;
                    }
                }
                hinted = next_hint(&mut self.hints) => {
                    if hinted.stream_seq > self.last.stream_seq {
                        self.held = self.probe().await?;
                    }
                }
            }
        }
    }

    /// The room's last stored message, if it is past the last delivered one; the next probe
    /// waits twice as long when it is not. A leader that does not answer is asked again at the
    /// next probe: the subscription may well be fine.
    async fn probe(&mut self) -> Result<Option<Delivered>, FeedError> {
        self.quiet = (self.quiet * 2).min(self.probe.max);
        self.active_at = Instant::now();
        self.timer.as_mut().reset(self.active_at + self.quiet);
        match self.stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(message) => Ok(Some(stored(message)?).filter(|m| m.tip.stream_seq > self.last.stream_seq)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => {
                let subject = &self.subject;
                tracing::debug!(%subject, error = %e, "a room's feed could not probe the stream leader");
                Ok(None)
            }
        }
    }

    /// The room's first stored message after stream sequence `after`, from the stream leader.
    async fn read_after(&self, after: u64) -> Result<Delivered, FeedError> {
        let message = self
            .stream
            .get_first_raw_message_by_subject(&self.subject, after + 1)
            .await
            .map_err(|e| FeedError::Backfill(e.to_string()))?;
        stored(message)
    }

    fn accept(&mut self, message: Delivered) -> Result<Delivered, FeedError> {
        if message.tip.chat_seq != self.last.chat_seq + 1 {
            return Err(FeedError::OutOfOrder { last: self.last.chat_seq, got: message.tip.chat_seq });
        }
        self.last = message.tip;
        self.active_at = Instant::now();
        if self.quiet != self.probe.first {
            // Leaving a backoff: the timer may be set far later than the new due time.
            self.quiet = self.probe.first;
            self.timer.as_mut().reset(self.active_at + self.quiet);
        }
        Ok(message)
    }
}

/// The next tip hinted, or never once the hints end (or when there are none).
async fn next_hint(hints: &mut Option<watch::Receiver<Tip>>) -> Tip {
    if let Some(receiver) = hints {
        if receiver.changed().await.is_ok() {
            return *receiver.borrow_and_update();
        }
        *hints = None;
    }
    std::future::pending().await
}

fn stored(message: StreamMessage) -> Result<Delivered, FeedError> {
    let chat_seq = number(&message.headers, CHAT_SEQ)?;
    Ok(Delivered { tip: Tip { chat_seq, stream_seq: message.sequence }, payload: message.payload })
}

fn republished(message: async_nats::Message) -> Result<Republished, FeedError> {
    let headers = message.headers.ok_or(FeedError::Malformed(CHAT_SEQ))?;
    let tip = Tip { chat_seq: number(&headers, CHAT_SEQ)?, stream_seq: number(&headers, "Nats-Sequence")? };
    let previous_stream_seq = number(&headers, "Nats-Last-Sequence")?;
    Ok(Republished { message: Delivered { tip, payload: message.payload }, previous_stream_seq })
}

fn number(headers: &HeaderMap, name: &'static str) -> Result<u64, FeedError> {
    headers.get(name).and_then(|v| v.as_str().parse().ok()).ok_or(FeedError::Malformed(name))
}
