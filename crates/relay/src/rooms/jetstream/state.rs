//! Room records and bans in the key-value buckets, shared by every node.
//!
//! A room is created with a key-value `create` (a compare-and-set on "no value yet"): of two
//! nodes creating one room at once, one stores its record and the other reads the winner's,
//! so its founder joins the existing room with that room's password. Reads after a refused
//! create go to the bucket stream's leader, which holds the winner's record once it was
//! acknowledged (a direct get could be answered by a follower that has not seen it yet).

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind, LastRawMessageErrorKind, Stream};
use async_nats::StatusCode;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;

use super::setup::{SetupError, BANS_BUCKET, ROOMS_BUCKET};

/// A room name as one subject token and key: the lowercase hex of its bytes (injective, no
/// `.` or wildcard, no case question; room names are at most 64 bytes, so at most 128 chars).
pub fn room_token(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// What a creation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call stored the record.
    Now,
    /// The room existed: its record.
    Existing(Bytes),
}

/// The buckets could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the room state in NATS could not be {action}: {detail}")]
pub struct StateError {
    action: &'static str,
    detail: String,
}

impl StateError {
    pub(crate) fn new(action: &'static str, detail: &dyn std::fmt::Display) -> Self {
        Self { action, detail: detail.to_string() }
    }
}

fn state_error(action: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StateError {
    move |e| StateError::new(action, e)
}

/// The rooms and bans buckets.
#[derive(Debug, Clone)]
pub struct RoomState {
    rooms: Store,
    rooms_stream: Stream,
    bans: Store,
}

impl RoomState {
    /// Opens the buckets `setup::ensure_buckets` made.
    pub async fn open(js: &jetstream::Context) -> Result<Self, SetupError> {
        let open = |e: &(dyn std::error::Error + 'static)| SetupError::jetstream("the room buckets", e);
        let rooms = js.get_key_value(ROOMS_BUCKET).await.map_err(|e| open(&e))?;
        let rooms_stream = js.get_stream(format!("KV_{ROOMS_BUCKET}")).await.map_err(|e| open(&e))?;
        let bans = js.get_key_value(BANS_BUCKET).await.map_err(|e| open(&e))?;
        Ok(Self { rooms, rooms_stream, bans })
    }

    /// Creates room `name` with `record` unless it exists; then returns the existing record.
    pub async fn create_room(&self, name: &str, record: Bytes) -> Result<Created, StateError> {
        let token = room_token(name);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.rooms.create(&token, record.clone()).await {
                Ok(_) => return Ok(Created::Now),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    let existing = self.room(name).await?;
                    let missing =
                        || StateError { action: "read", detail: format!("room {token} has no record") };
                    return existing.map(Created::Existing).ok_or_else(missing);
                }
                // Another node's create of the key is still in process on the leader (10164):
                // ask again, and the answer is either ours or theirs.
                Err(e) if attempts < IN_PROCESS_RETRIES && passing_refusal(&e) => {
                    tokio::time::sleep(IN_PROCESS_BACKOFF).await;
                }
                Err(e) => return Err(state_error("written")(&e)),
            }
        }
    }

    /// Room `name`'s record, from the bucket's leader; `None` when there is no such room.
    pub async fn room(&self, name: &str) -> Result<Option<Bytes>, StateError> {
        let subject = format!("$KV.{ROOMS_BUCKET}.{}", room_token(name));
        match asked_again(|| self.rooms_stream.get_last_raw_message_by_subject(&subject)).await {
            Ok(message) if message.payload.is_empty() => Ok(None), // a delete or purge marker
            Ok(message) => Ok(Some(message.payload)),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(state_error("read")(&e)),
        }
    }

    /// Room `name`'s record and its revision (for a compare-and-set), from the bucket's
    /// leader; `None` when there is no such room.
    pub async fn room_entry(&self, name: &str) -> Result<Option<(Bytes, u64)>, StateError> {
        let subject = format!("$KV.{ROOMS_BUCKET}.{}", room_token(name));
        match asked_again(|| self.rooms_stream.get_last_raw_message_by_subject(&subject)).await {
            Ok(message) if message.payload.is_empty() => Ok(None),
            Ok(message) => Ok(Some((message.payload, message.sequence))),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(state_error("read")(&e)),
        }
    }

    /// Replaces room `name`'s record if it is still at `revision`; false when another write
    /// came first (read it again and decide again).
    pub async fn replace_room(&self, name: &str, record: Bytes, revision: u64) -> Result<bool, StateError> {
        let token = room_token(name);
        match asked_again(|| self.rooms.update(&token, record.clone(), revision)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(state_error("written")(&e)),
        }
    }

    /// Bans `identity` (64 hex characters) from room `name`, with `record` (who, when).
    pub async fn ban(&self, name: &str, identity: &str, record: Bytes) -> Result<(), StateError> {
        let key = ban_key(name, identity);
        asked_again(|| self.bans.put(&key, record.clone()))
            .await
            .map(drop)
            .map_err(|e| state_error("written")(&e))
    }

    /// Lifts a ban; lifting one that does not exist is not an error.
    pub async fn unban(&self, name: &str, identity: &str) -> Result<(), StateError> {
        let key = ban_key(name, identity);
        asked_again(|| self.bans.delete(&key)).await.map_err(|e| state_error("written")(&e))
    }

    /// Whether `identity` is banned from room `name`.
    pub async fn is_banned(&self, name: &str, identity: &str) -> Result<bool, StateError> {
        let key = ban_key(name, identity);
        let entry = asked_again(|| self.bans.get(&key)).await.map_err(|e| state_error("read")(&e))?;
        Ok(entry.is_some())
    }
}

/// How often a request refused for a passing reason ([`passing_refusal`]) is asked again, and
/// the pause: 2 s in all, past the few hundred ms a new bucket takes to be routed.
pub(crate) const IN_PROCESS_RETRIES: u32 = 100;
pub(crate) const IN_PROCESS_BACKOFF: Duration = Duration::from_millis(20);

/// Whether `e` or an error it wraps is refused only for the moment: another node's
/// compare-and-set in process ([`in_process_refusal`]), or no server answering for a bucket yet
/// ([`not_routed_yet`]).
pub(crate) fn passing_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    in_process_refusal(e) || not_routed_yet(e)
}

/// Whether `e` or an error it wraps says that no server answered for a bucket's stream: a bucket
/// made a moment ago (a cluster just set up) whose interest has not reached this node's server
/// yet. A direct get then fails with 503 "no responders", a publish with "stream not found".
pub(crate) fn not_routed_yet(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(error) = next {
        let no_responders = error.downcast_ref::<DirectGetError>().is_some_and(|d| {
            matches!(d.kind(), DirectGetErrorKind::ErrorResponse(status, _) if status == StatusCode::NO_RESPONDERS)
        });
        let no_stream = error
            .downcast_ref::<PublishError>()
            .is_some_and(|p| p.kind() == PublishErrorKind::StreamNotFound);
        if no_responders || no_stream {
            return true;
        }
        next = error.source();
    }
    false
}

/// `request` until it succeeds, fails for good, or was refused for a passing reason
/// [`IN_PROCESS_RETRIES`] times.
pub(crate) async fn asked_again<T, E, F, Fut>(mut request: F) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match request().await {
            Err(e) if attempts < IN_PROCESS_RETRIES && passing_refusal(&e) => {
                tokio::time::sleep(IN_PROCESS_BACKOFF).await;
            }
            done => return done,
        }
    }
}

/// Whether `e` or an error it wraps is the server's 10164: a compare-and-set refused because an
/// earlier one on the same subject is still in process on a replicated stream's leader.
pub(crate) fn in_process_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(error) = next {
        if error
            .downcast_ref::<jetstream::Error>()
            .is_some_and(|j| j.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
        {
            return true;
        }
        next = error.source();
    }
    false
}

pub(crate) fn ban_key(name: &str, identity: &str) -> String {
    format!("{}.{identity}", room_token(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::kv::{CreateError, EntryError, EntryErrorKind};

    #[test]
    fn a_bucket_not_routed_yet_is_asked_again_and_other_refusals_are_not() {
        let status =
            |code: StatusCode| DirectGetError::new(DirectGetErrorKind::ErrorResponse(code, "x".into()));
        let wrapped = |e: DirectGetError| {
            CreateError::with_source(
                CreateErrorKind::Other,
                EntryError::with_source(EntryErrorKind::Other, e),
            )
        };
        assert!(
            not_routed_yet(&wrapped(status(StatusCode::NO_RESPONDERS))),
            "a create whose read found no one"
        );
        assert!(not_routed_yet(&PublishError::new(PublishErrorKind::StreamNotFound)));
        assert!(passing_refusal(&status(StatusCode::NO_RESPONDERS)));
        assert!(!not_routed_yet(&wrapped(status(StatusCode::NOT_FOUND))));
        assert!(!not_routed_yet(&wrapped(DirectGetError::new(DirectGetErrorKind::TimedOut))));
        assert!(!passing_refusal(&PublishError::new(PublishErrorKind::WrongLastSequence)));
    }

    #[test]
    fn room_tokens_are_hex_one_token_and_keep_names_apart() {
        assert_eq!(room_token("A.b-_9"), "412e622d5f39");
        assert_ne!(room_token("Room"), room_token("room"), "names are compared exactly");
        assert_eq!(room_token(&"z".repeat(64)).len(), 128);
        assert!(room_token("a.b").bytes().all(|b| b.is_ascii_hexdigit()), "no `.` splits the subject");
    }
}
