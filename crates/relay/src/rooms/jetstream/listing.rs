//! Reading every key under a prefix: the values through one ordered consumer (the last
//! message of each subject) completed from the stream leader, or only the subjects the stream
//! holds under a filter (one request to the leader, paged by the server).

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::state::StateError;

/// How long a listing waits for each key's value.
const READ_WAIT: Duration = Duration::from_secs(10);

/// Whether a key's last message is a delete, a purge or an expiry marker rather than a value.
pub(super) fn is_removal(message: &StreamMessage) -> bool {
    removal(&message.payload, Some(&message.headers))
}

/// `is_removal` for a message's parts (a consumer's messages may carry no headers).
fn removal(payload: &[u8], headers: Option<&HeaderMap>) -> bool {
    payload.is_empty()
        || headers.is_some_and(|h| h.get("KV-Operation").is_some() || h.get("Nats-Marker-Reason").is_some())
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

/// The current value of every key under `filter` (removed keys left out), at most `max`.
///
/// One ordered consumer delivers the last message of each subject, so a listing costs a few
/// round trips whatever the number of keys. nats-server places that consumer on any peer of
/// the stream, and a peer outside a write's quorum may not hold the write yet; so the stream
/// leader's subjects are listed alongside (one request), and a key the consumer did not
/// deliver is read from the leader. Every key written before the listing began is in it.
pub(super) async fn values(stream: &Stream, filter: &str, max: usize) -> Result<Vec<Value>, StateError> {
    let (on_leader, followed) =
        tokio::join!(subjects(stream, filter, max), last_per_subject(stream, filter, max));
    completed(stream, &on_leader?, followed?, max).await
}

/// `found` with every subject of `on_leader` it lacks read from the leader, removals left out.
async fn completed(
    stream: &Stream,
    on_leader: &[String],
    mut found: Vec<Entry>,
    max: usize,
) -> Result<Vec<Value>, StateError> {
    let delivered: HashSet<String> = found.iter().map(|entry| entry.subject.clone()).collect();
    for subject in on_leader.iter().filter(|s| !delivered.contains(s.as_str())) {
        if let Some(payload) = leader_value(stream, subject).await? {
            found.push(Entry { subject: subject.clone(), payload, removed: false });
        }
    }
    let present: Vec<Value> =
        found.into_iter().filter(|entry| !entry.removed).map(Entry::into_value).collect();
    if present.len() > max {
        return Err(StateError::new("listed", &format!("more than {max} keys")));
    }
    Ok(present)
}

/// A key's last message as a listing read it: its value, or a removal.
#[derive(Debug)]
struct Entry {
    subject: String,
    payload: Bytes,
    removed: bool,
}

impl Entry {
    fn into_value(self) -> Value {
        Value { subject: self.subject, payload: self.payload }
    }
}

/// The last message of every subject under `filter`, removals included, as the peer holding
/// an ordered consumer has them.
async fn last_per_subject(stream: &Stream, filter: &str, max: usize) -> Result<Vec<Entry>, StateError> {
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
        let removed = removal(&message.payload, message.headers.as_ref());
        found.push(Entry { subject: message.subject.to_string(), payload: message.payload.clone(), removed });
        if found.len() > max {
            return Err(fail(&format!("more than {max} keys under {filter}")));
        }
    }
    Ok(found)
}

/// The last value of `subject`, from the stream leader, unless removed.
pub(super) async fn leader_value(stream: &Stream, subject: &str) -> Result<Option<Bytes>, StateError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) if is_removal(&message) => Ok(None),
        Ok(message) => Ok(Some(message.payload)),
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(StateError::new("read", &e)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::{self, kv};
    use chatroom_nats_harness::NatsServer;

    type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    #[tokio::test]
    async fn a_key_the_consumer_missed_is_read_from_the_leader_and_a_removed_one_stays_out() -> Res {
        let server = NatsServer::single()?;
        let js = jetstream::new(async_nats::connect(server.url()).await?);
        let bucket = kv::Config { bucket: "listed".to_owned(), history: 1, ..Default::default() };
        let kv = js.create_key_value(bucket).await?;
        kv.put("kept", "first".into()).await?;
        kv.put("missed", "late".into()).await?;
        kv.put("gone", "soon removed".into()).await?;
        kv.delete("gone").await?;
        let stream = js.get_stream("KV_listed").await?;
        let filter = "$KV.listed.*";

        let on_leader = subjects(&stream, filter, 10).await?;
        assert_eq!(on_leader.len(), 3, "a removed key keeps its subject: {on_leader:?}");
        // As a peer that has not yet stored the last two writes delivers it.
        let mut lagging = last_per_subject(&stream, filter, 10).await?;
        lagging.retain(|entry| entry.subject == "$KV.listed.kept");
        assert_eq!(lagging.len(), 1);

        let mut listed: Vec<(String, Bytes)> = completed(&stream, &on_leader, lagging, 10)
            .await?
            .into_iter()
            .map(|v| (v.subject, v.payload))
            .collect();
        listed.sort();
        let expected = [("$KV.listed.kept", "first"), ("$KV.listed.missed", "late")]
            .map(|(subject, value)| (subject.to_owned(), Bytes::from(value)));
        assert_eq!(listed, expected);
        assert_eq!(values(&stream, filter, 10).await?.len(), 2, "the whole listing agrees");
        assert!(values(&stream, filter, 1).await.is_err(), "more keys than allowed are refused");
        Ok(())
    }
}
