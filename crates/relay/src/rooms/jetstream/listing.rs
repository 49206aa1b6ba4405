//! Reading every key under a prefix: the values through one ordered consumer (the last
//! message of each subject), or only the subjects the stream holds under a filter (one
//! request, paged by the server).

use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::state::StateError;

/// How long a listing waits for each key's value.
const READ_WAIT: Duration = Duration::from_secs(10);

/// Whether a key's last message is a delete, a purge or an expiry marker rather than a value.
pub(super) fn is_removal(message: &StreamMessage) -> bool {
    message.payload.is_empty()
        || message.headers.get("KV-Operation").is_some()
        || message.headers.get("Nats-Marker-Reason").is_some()
}

/// The subjects under `filter`, at most `max` (more is refused: every caller's keys are bounded).
pub(super) async fn subjects(stream: &Stream, filter: &str, max: usize) -> Result<Vec<String>, StateError> {
    let mut listed = stream.info_with_subjects(filter).await.map_err(|e| StateError::new("listed", &e))?;
    let mut subjects = Vec::new();
    while let Some((subject, _count)) = listed.try_next().await.map_err(|e| StateError::new("listed", &e))? {
        if subjects.len() >= max {
            return Err(StateError::new("listed", &format!("more than {max} keys under {filter}")));
        }
        subjects.push(subject);
    }
    Ok(subjects)
}

/// A key's current value, as a listing found it.
#[derive(Debug)]
pub(super) struct Value {
    pub(super) subject: String,
    pub(super) payload: Bytes,
}

/// The current value of every key under `filter` (removed keys left out), at most `max`: one
/// ordered consumer delivering the last message of each subject, so a listing costs a few
/// round trips whatever the number of keys.
pub(super) async fn values(stream: &Stream, filter: &str, max: usize) -> Result<Vec<Value>, StateError> {
    let fail = |e: &dyn std::fmt::Display| StateError::new("listed", e);
    let config = OrderedConfig {
        filter_subject: filter.to_owned(),
        deliver_policy: DeliverPolicy::LastPerSubject,
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| fail(&e))?;
    let mut pending = consumer.cached_info().num_pending;
    if pending > u64::try_from(max).unwrap_or(u64::MAX) {
        return Err(fail(&format!("more than {max} keys under {filter}")));
    }
    let mut found = Vec::new();
    if pending == 0 {
        return Ok(found);
    }
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    while pending > 0 {
        let next = tokio::time::timeout(READ_WAIT, messages.next()).await.map_err(|e| fail(&e))?;
        let message = next.ok_or_else(|| fail(&"the listing ended early"))?.map_err(|e| fail(&e))?;
        pending = message.info().map_err(|e| fail(&e))?.pending;
        let removed = message.payload.is_empty()
            || message
                .headers
                .as_ref()
                .is_some_and(|h| h.get("KV-Operation").is_some() || h.get("Nats-Marker-Reason").is_some());
        if !removed {
            found.push(Value { subject: message.subject.to_string(), payload: message.payload.clone() });
        }
        if found.len() > max {
            return Err(fail(&format!("more than {max} keys under {filter}")));
        }
    }
    Ok(found)
}

/// The last segment of a subject (the part of a key after its room's prefix).
pub(super) fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or_default()
}

/// How many messages the stream holds on `subject` (one request).
pub(super) async fn count(stream: &Stream, subject: &str) -> Result<u64, StateError> {
    let mut listed = stream.info_with_subjects(subject).await.map_err(|e| StateError::new("counted", &e))?;
    let mut total = 0;
    while let Some((_, n)) = listed.try_next().await.map_err(|e| StateError::new("counted", &e))? {
        total += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(total)
}
