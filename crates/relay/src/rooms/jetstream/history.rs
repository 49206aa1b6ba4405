//! Reading a room's retained history when a node loads the room.
//!
//! The room sequence a member sees is the `Chat-Seq` header of each message; a node keeps the
//! last retained messages of each room it holds in memory (its history limit, in envelopes
//! and bytes), read once at load through one ordered consumer on the room's subject and then
//! extended by the feed. So a replay after `history_after` is a search in memory, and the room
//! sequence needs no mapping to stream sequences beyond the `Tip` each message carries.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;

use super::log::Tip;
use super::room::Retained;
use super::state::StateError;
use crate::rooms::HistoryLimit;

/// How long a room's load waits for each stored message.
const READ_WAIT: Duration = Duration::from_secs(10);

/// The room's messages up to `tip`, oldest first, within `limit` (the stream keeps at most
/// `limit.count` per room; the byte limit is applied here).
pub(super) async fn read(
    stream: &Stream,
    subject: &str,
    tip: Tip,
    limit: HistoryLimit,
) -> Result<Vec<Retained>, StateError> {
    if tip.stream_seq == 0 || limit.count == 0 {
        return Ok(Vec::new());
    }
    let fail = |e: &dyn std::fmt::Display| StateError::new("read", e);
    let config = OrderedConfig {
        filter_subject: subject.to_owned(),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| fail(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    let mut history: VecDeque<Retained> = VecDeque::new();
    loop {
        let next = tokio::time::timeout(READ_WAIT, messages.next()).await.map_err(|e| fail(&e))?;
        let message = next.ok_or_else(|| fail(&"the history ended early"))?.map_err(|e| fail(&e))?;
        let stream_seq = message.info().map_err(|e| fail(&e))?.stream_sequence;
        let chat_seq = message
            .headers
            .as_ref()
            .and_then(|h| h.get(super::log::CHAT_SEQ))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or_else(|| {
                fail(&format!("the message at stream sequence {stream_seq} has no room sequence"))
            })?;
        history.push_back(Retained::new(chat_seq, &message.payload));
        if history.len() > limit.count {
            history.pop_front();
        }
        if stream_seq >= tip.stream_seq {
            break;
        }
    }
    // The newest envelopes within the byte limit.
    let mut bytes = 0usize;
    let keep = history.iter().rev().take_while(|r| {
        bytes += r.item.envelope_len();
        bytes <= limit.bytes
    });
    let skip = history.len() - keep.count();
    Ok(Vec::from(history).split_off(skip))
}
