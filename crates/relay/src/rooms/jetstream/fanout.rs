//! A room's live messages on one relay node, in room order, from the stream's RePublish.
//!
//! The stream's leader republishes every stored message (and only those: refused
//! compare-and-sets never appear, unlike on the log's own subjects) to `fan.<room id>`, with
//! `Nats-Sequence` (its stream sequence) and `Nats-Last-Sequence` (the room's previous one).
//! A message whose previous one is not the last delivered reveals a gap (a message lost to a
//! slow subscription, a leader change, or written before the subscription): the feed holds it
//! and reads the missing ones one at a time from the stream leader, so nothing is buffered
//! beyond the one held message.

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::Stream;
use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;

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

/// One room's live feed on this node.
#[derive(Debug)]
pub struct RoomFeed {
    subscription: Subscriber,
    stream: Stream,
    subject: String,
    last: Tip,
    held: Option<Delivered>,
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
        Ok(Self { subscription, stream, subject: format!("chat.{room_id}"), last: after, held: None })
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
            let received = self.subscription.next().await.ok_or(FeedError::Closed)?;
            let Republished { message, previous_stream_seq } = republished(received)?;
            if message.tip.stream_seq <= self.last.stream_seq {
                continue; // delivered already, by backfill
            }
            if previous_stream_seq == self.last.stream_seq {
                return self.accept(message);
            }
            self.held = Some(message);
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
        Ok(message)
    }
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
