//! Join-failure counts shared by every node, so N nodes do not multiply an attacker's guesses.
//!
//! One key per counted thing (`ip.<address hex>`, `room.<room token>`, ...) in the lockouts
//! bucket holds the number of failures. Every node adds to the same key with a compare-and-set
//! on the key's last stream sequence, so no failure counted at the same time on another node is
//! lost, and each write carries `Nats-TTL` = the failure window: the count disappears a window
//! after the last failure (the server then writes an expiry marker, which reads as zero).

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::setup::{until_answered, SetupError, LOCKOUTS_BUCKET};
use super::state::StateError;

/// How often a count refused by a concurrent one is read and written again.
const CONTENDED_RETRIES: u32 = 50;
/// The pause after the leader said an earlier write of the key is still in process.
const CONTENDED_BACKOFF: Duration = Duration::from_millis(20);

/// The shared failure counts.
#[derive(Debug, Clone)]
pub struct Lockouts {
    js: jetstream::Context,
    stream: Stream,
}

impl Lockouts {
    /// Opens the bucket `setup::ensure_buckets` made.
    pub async fn open(js: &jetstream::Context) -> Result<Self, SetupError> {
        let stream = until_answered(|| async {
            js.get_stream(format!("KV_{LOCKOUTS_BUCKET}"))
                .await
                .map_err(|e| SetupError::jetstream("the lockouts bucket", &e))
        })
        .await?;
        Ok(Self { js: js.clone(), stream })
    }

    /// Counts one more failure under `key` (a valid key: `[A-Za-z0-9._-]`), kept for `window`
    /// (whole seconds, at least one) after it; returns the count including this one.
    pub async fn record_failure(&self, key: &str, window: Duration) -> Result<u64, StateError> {
        let ttl = window.as_secs().max(1).to_string();
        let mut last_refusal = String::new();
        for _ in 0..CONTENDED_RETRIES {
            let (count, last) = self.read(key).await?;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string().as_str());
            headers.insert("Nats-TTL", ttl.as_str());
            let subject = format!("$KV.{LOCKOUTS_BUCKET}.{key}");
            let published =
                self.js.publish_with_headers(subject, headers, Bytes::from((count + 1).to_string())).await;
            let acked = match published {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(_) => return Ok(count + 1),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => last_refusal = e.to_string(),
                // A bucket created a moment ago may not be routed from this node yet: on a
                // cluster its first publishes can find no stream for a few hundred ms.
                Err(e) if contended(&e) || e.kind() == PublishErrorKind::StreamNotFound => {
                    last_refusal = e.to_string();
                    tokio::time::sleep(CONTENDED_BACKOFF).await;
                }
                Err(e) => return Err(StateError::new("written", &e)),
            }
        }
        Err(StateError::new(
            "written",
            &format!("{key} stayed contended for {CONTENDED_RETRIES} attempts: {last_refusal}"),
        ))
    }

    /// The failures counted under `key` within its window.
    pub async fn failures(&self, key: &str) -> Result<u64, StateError> {
        Ok(self.read(key).await?.0)
    }

    /// The count and the key's last stream sequence (0 when it never had one), from the leader.
    async fn read(&self, key: &str) -> Result<(u64, u64), StateError> {
        let subject = format!("$KV.{LOCKOUTS_BUCKET}.{key}");
        let message = match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => return Ok((0, 0)),
            Err(e) => return Err(StateError::new("read", &e)),
        };
        // An expiry marker, a delete or a purge: no failures within the window.
        let cleared = message.headers.get("Nats-Marker-Reason").is_some()
            || message.headers.get("KV-Operation").is_some();
        if cleared || message.payload.is_empty() {
            return Ok((0, message.sequence));
        }
        let count = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StateError::new("read", &format!("{key} holds no count")))?;
        Ok((count, message.sequence))
    }
}

/// The server's 10164: an earlier compare-and-set on the key is still in process on the leader.
fn contended(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
}
