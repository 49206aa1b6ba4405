//! Appending to a room's log: one gap-free room sequence over the shared stream.
//!
//! Each envelope is published to `chat.<room id>` with `Chat-Seq` (the room sequence, the last
//! one + 1), `Nats-Expected-Last-Subject-Sequence` (the stream sequence of the room's last
//! message, so two nodes cannot both store a `Chat-Seq`) and `Nats-Msg-Id` (so a resend of a
//! stored envelope is answered with the original). A refusal (10071 wrong last sequence, or
//! 10164 while an earlier publish on the room is still in process on an R3 leader) or a lost
//! ack reloads the room's last message from the stream leader and publishes again with the
//! same `Nats-Msg-Id`: if the first attempt was stored, the server answers it as a duplicate
//! (on R1 only once the expected sequence is current, which the reload makes it), else the
//! envelope is stored under the next room sequence. While the stream has no leader, or the
//! node's NATS client moves to another server, a publish finds no responder or a broken
//! connection: the append waits a moment and tries again, up to its deadline, so a leader
//! election pauses sends instead of refusing them. An attempt refused because an earlier one
//! with the same id is still being proposed (10158, a leader that lost its quorum holds it)
//! waits for that one's outcome the same way.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::time::Instant;

/// The header carrying a message's room sequence.
pub const CHAT_SEQ: &str = "Chat-Seq";
/// How long one append keeps retrying through refusals and a leader election (measured at
/// 4-8 s, docs/adr/0002) before giving up.
pub const APPEND_DEADLINE: Duration = Duration::from_secs(30);
/// How long one attempt waits for the publish's ack or the tip's answer before the append
/// tries again (same `Nats-Msg-Id`): a publish sent to a leader that just died is answered by
/// nobody, and the next attempt reaches the new leader once elected. An ack normally takes
/// one consensus round trip (milliseconds); the client's default wait is 5 s, which rounded a
/// leader election (4-9 s) up to 10 or 15 s of pause.
pub const ATTEMPT_WAIT: Duration = Duration::from_secs(2);
/// The pause before reading again after the stream did not answer.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(100);

/// Where a room's log ends: its last message's room and stream sequences (both 0 when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tip {
    pub chat_seq: u64,
    pub stream_seq: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored now at this tip.
    Stored(Tip),
    /// Already stored (same `Nats-Msg-Id`): the original's sequences.
    Duplicate(Tip),
}

/// Why an append did not happen; the envelope may be sent again with the same id.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the room's log did not accept the message within {APPEND_DEADLINE:?}: {0}")]
    Unavailable(String),
    #[error("the stream refused the message: {0}")]
    Refused(String),
    #[error("the stored message at stream sequence {0} has no valid {CHAT_SEQ} header")]
    Corrupt(u64),
}

/// One room's log in the shared stream.
#[derive(Debug, Clone)]
pub struct RoomLog {
    js: jetstream::Context,
    stream: Stream,
    subject: String,
}

impl RoomLog {
    /// The log on `subject` (`chat.<room id>`) of `stream`.
    pub fn new(mut js: jetstream::Context, stream: Stream, subject: String) -> Self {
        js.set_timeout(ATTEMPT_WAIT);
        Self { js, stream, subject }
    }

    /// Appends `payload` after `tip` (the caller's last known tip; reloaded when stale).
    pub async fn append(&self, mut tip: Tip, msg_id: &str, payload: Bytes) -> Result<Appended, AppendError> {
        let deadline = Instant::now() + APPEND_DEADLINE;
        let mut last_problem = String::new();
        while Instant::now() < deadline {
            match self.publish(tip, msg_id, payload.clone()).await {
                Ok(ack) if ack.duplicate => return Ok(Appended::Duplicate(self.tip_at(ack.sequence).await?)),
                Ok(ack) => {
                    return Ok(Appended::Stored(Tip { chat_seq: tip.chat_seq + 1, stream_seq: ack.sequence }))
                }
                Err(e) => match retry(&e) {
                    Retry::No => return Err(AppendError::Refused(e.to_string())),
                    Retry::Reload => last_problem = e.to_string(),
                    Retry::AfterBackoff => {
                        last_problem = e.to_string();
                        tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                    }
                },
            }
            let reloaded = tokio::time::timeout(ATTEMPT_WAIT, self.tip()).await;
            match reloaded.unwrap_or_else(|_| {
                Err(AppendError::Unavailable(format!(
                    "the room's last message was not read within {ATTEMPT_WAIT:?}"
                )))
            }) {
                Ok(reloaded) => tip = reloaded,
                Err(AppendError::Unavailable(problem)) => {
                    last_problem = problem;
                    tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                }
                Err(corrupt) => return Err(corrupt),
            }
        }
        Err(AppendError::Unavailable(last_problem))
    }

    async fn publish(
        &self,
        tip: Tip,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(CHAT_SEQ, (tip.chat_seq + 1).to_string().as_str());
        headers.insert("Nats-Expected-Last-Subject-Sequence", tip.stream_seq.to_string().as_str());
        headers.insert("Nats-Msg-Id", msg_id);
        self.js.publish_with_headers(self.subject.clone(), headers, payload).await?.await
    }

    /// The room's last message, read from the stream leader (a direct get may lag behind it).
    pub async fn tip(&self) -> Result<Tip, AppendError> {
        match self.stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(message) => Ok(Tip {
                chat_seq: chat_seq(&message.headers, message.sequence)?,
                stream_seq: message.sequence,
            }),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(Tip::default()),
            Err(e) => Err(AppendError::Unavailable(e.to_string())),
        }
    }

    async fn tip_at(&self, stream_seq: u64) -> Result<Tip, AppendError> {
        let message = self
            .stream
            .get_raw_message(stream_seq)
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        Ok(Tip { chat_seq: chat_seq(&message.headers, stream_seq)?, stream_seq })
    }
}

pub(super) fn chat_seq(headers: &HeaderMap, stream_seq: u64) -> Result<u64, AppendError> {
    headers
        .get(CHAT_SEQ)
        .and_then(|v| v.as_str().parse().ok())
        .filter(|&seq| seq > 0)
        .ok_or(AppendError::Corrupt(stream_seq))
}

/// What a failed publish calls for. Sending again is always safe: the same `Nats-Msg-Id`
/// makes a stored copy answer as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A refusal for good (a payload over the server's maximum, say).
    No,
    /// The tip moved, or the ack was lost (the message may be stored): reload and send again.
    Reload,
    /// Nobody answered for the stream (no leader yet, or interest not yet routed to the server
    /// the client reconnected to) or the connection broke: wait, reload and send again.
    AfterBackoff,
}

fn retry(e: &PublishError) -> Retry {
    match e.kind() {
        PublishErrorKind::WrongLastSequence | PublishErrorKind::TimedOut => Retry::Reload,
        PublishErrorKind::StreamNotFound | PublishErrorKind::BrokenPipe => Retry::AfterBackoff,
        PublishErrorKind::Other => {
            let code = std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .map(jetstream::Error::error_code);
            match code {
                Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) => Retry::Reload,
                // 10158: an earlier attempt with this Nats-Msg-Id is still being proposed (a
                // leader without quorum holds it): its outcome decides, so ask again later.
                Some(ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT) => Retry::AfterBackoff,
                _ => Retry::No,
            }
        }
        _ => Retry::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_publish_is_retried_unless_the_refusal_is_for_good() {
        let kind = |kind| retry(&PublishError::new(kind));
        assert_eq!(kind(PublishErrorKind::WrongLastSequence), Retry::Reload);
        assert_eq!(kind(PublishErrorKind::TimedOut), Retry::Reload, "the ack was lost: maybe stored");
        // No responder: no leader yet, or the stream's interest not routed to this server yet.
        assert_eq!(kind(PublishErrorKind::StreamNotFound), Retry::AfterBackoff);
        assert_eq!(kind(PublishErrorKind::BrokenPipe), Retry::AfterBackoff);
        assert_eq!(kind(PublishErrorKind::MaxPayloadExceeded), Retry::No);
        assert_eq!(kind(PublishErrorKind::Other), Retry::No);
        let server = |code: u64| {
            let answer = format!(r#"{{"code":409,"err_code":{code},"description":"refused"}}"#);
            let error: jetstream::Error = serde_json::from_str(&answer).expect("a JetStream error answer");
            retry(&PublishError::with_source(PublishErrorKind::Other, error))
        };
        assert_eq!(server(10164), Retry::Reload, "an earlier compare-and-set in process");
        assert_eq!(server(10158), Retry::AfterBackoff, "the same message id still being proposed");
        assert_eq!(server(10999), Retry::No);
    }
}
