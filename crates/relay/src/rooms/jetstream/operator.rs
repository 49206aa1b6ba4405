//! Expiry and what the operator does to rooms (`chatroom-relay rooms ...`) on the cluster.
//!
//! A room's last use is the newest of: its record's creation, the `used.<room id>` key a node
//! writes when a member leaves (at most once a minute per node and room), and its log's last
//! message. Expiry deletes a room idle that long with nobody present on any node; deleting
//! purges the room's log, bindings, bans, presence and GroupInfo, then its record, last (a pass that
//! fails midway leaves a record to find again).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use chatroom_crypto::{PublicIdentity, RoomName};
use tokio::time::Instant;
use tracing::{info, warn};

use super::listing;
use super::membership::{parse_record, record};
use super::presence::{identity_hex, Control};
use super::room::NodeRoom;
use super::rooms::{cluster_error, Node};
use super::setup::{BANS_BUCKET, GROUP_INFO_BUCKET, NICKS_BUCKET, PRESENCE_BUCKET, ROOMS_BUCKET};
use super::state::room_token;
use crate::store::StoreError;

/// Least time between two records of a room's use by one node.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Most idle rooms one expiry pass deletes; the next pass takes the rest.
const EXPIRE_BATCH: usize = 256;
/// Compare-and-set attempts of one `owner set` before it gives up.
const OWNER_ATTEMPTS: u32 = 16;
/// Most rooms one expiry pass looks at.
const EXPIRE_SCAN: usize = 1 << 20;

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn last_message(stream: &Stream, subject: &str) -> Result<Option<StreamMessage>, StoreError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(cluster_error("reading a room's last use")(&e)),
    }
}

impl Node {
    /// Records that a room is in use, at most once per `TOUCH_EVERY` from this node.
    pub(super) async fn touch(&self, room: &NodeRoom) {
        let due = {
            let mut held = room.lock();
            let due = held.touched.is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
            if due {
                held.touched = Some(Instant::now());
            }
            due
        };
        if due {
            let used = Bytes::from(now_secs().to_string());
            if let Err(e) = self.rooms_kv.put(format!("used.{}", room.token), used).await {
                warn!(error = %e, "a room's use could not be recorded");
            }
        }
    }

    /// The rooms stored, counted up to `at_most`.
    pub(super) async fn room_count(&self, at_most: usize) -> Result<usize, StoreError> {
        let filter = format!("$KV.{ROOMS_BUCKET}.*");
        match listing::subjects(&self.rooms_stream, &filter, at_most).await {
            Ok(subjects) => Ok(subjects.len()),
            Err(_) if at_most > 0 => {
                // More than `at_most`, or unreadable: decided by one more look.
                let subjects = listing::subjects(&self.rooms_stream, &filter, usize::MAX)
                    .await
                    .map_err(|e| cluster_error("counting rooms")(&e))?;
                Ok(subjects.len().min(at_most))
            }
            Err(e) => Err(cluster_error("counting rooms")(&e)),
        }
    }

    /// When the room `token` was last used, in seconds since the epoch.
    async fn last_use(&self, token: &str) -> Result<i64, StoreError> {
        let subjects = [
            (&self.rooms_stream, format!("$KV.{ROOMS_BUCKET}.{token}")),
            (&self.rooms_stream, format!("$KV.{ROOMS_BUCKET}.used.{token}")),
            (&self.log_stream, format!("chat.{token}")),
        ];
        let mut last = 0;
        for (stream, subject) in subjects {
            if let Some(message) = last_message(stream, &subject).await? {
                last = last.max(message.time.unix_timestamp());
            }
        }
        Ok(last)
    }

    pub(super) async fn expire(&self, idle: Duration) -> usize {
        match self.expire_idle(idle).await {
            Ok(expired) => {
                if expired > 0 {
                    info!(expired, "idle rooms deleted");
                }
                expired
            }
            Err(e) => {
                warn!(error = %e, "could not look for idle rooms");
                0
            }
        }
    }

    async fn expire_idle(&self, idle: Duration) -> Result<usize, StoreError> {
        let before = now_secs().saturating_sub(i64::try_from(idle.as_secs()).unwrap_or(i64::MAX));
        let filter = format!("$KV.{ROOMS_BUCKET}.*");
        let subjects = listing::subjects(&self.rooms_stream, &filter, EXPIRE_SCAN)
            .await
            .map_err(|e| cluster_error("listing rooms")(&e))?;
        let loaded: Vec<String> = self.map().values().map(|r| r.token.clone()).collect();
        let mut expired = 0;
        for token in subjects.iter().map(|s| listing::last_token(s)) {
            if expired >= EXPIRE_BATCH {
                break;
            }
            if loaded.iter().any(|t| t == token) || self.last_use(token).await? > before {
                continue;
            }
            if !self.present(token).await.map_err(|e| cluster_error("reading presence")(&e))?.is_empty() {
                continue;
            }
            self.purge_room(token).await?;
            expired += 1;
        }
        Ok(expired)
    }

    /// Erases everything stored about the room `token`, its record last.
    async fn purge_room(&self, token: &str) -> Result<(), StoreError> {
        let parts = [
            (&self.log_stream, format!("chat.{token}")),
            (&self.nicks_stream, format!("$KV.{NICKS_BUCKET}.{token}.>")),
            (&self.bans_stream, format!("$KV.{BANS_BUCKET}.{token}.>")),
            (&self.presence_stream, format!("$KV.{PRESENCE_BUCKET}.{token}.>")),
            (&self.group_info_stream, format!("$KV.{GROUP_INFO_BUCKET}.{token}")),
            (&self.rooms_stream, format!("$KV.{ROOMS_BUCKET}.used.{token}")),
            (&self.rooms_stream, format!("$KV.{ROOMS_BUCKET}.{token}")),
        ];
        for (stream, filter) in parts {
            stream.purge().filter(filter).await.map_err(|e| cluster_error("deleting a room")(&e))?;
        }
        Ok(())
    }

    pub(super) async fn delete_room(self: &Arc<Self>, name: &RoomName) -> Result<bool, StoreError> {
        let token = room_token(name.as_str());
        let found = self.state.room(name.as_str()).await.map_err(|e| cluster_error("reading a room")(&e))?;
        if found.is_none() {
            return Ok(false);
        }
        let deleted = self
            .loading(name, async {
                let loaded = self.map().get(name).cloned();
                if let Some(room) = loaded {
                    let members = room.lock().members.len();
                    self.deleted_here(&room, "the relay's operator deleted this room");
                    info!(room = %name, members, "room deleted by the operator; its members here were disconnected");
                }
                self.signal(&token, Control::Deleted).await;
                self.purge_room(&token).await
            })
            .await;
        deleted.map(|()| true)
    }

    pub(super) async fn set_owner(&self, name: &RoomName, owner: [u8; 32]) -> Result<bool, StoreError> {
        let token = room_token(name.as_str());
        let owner = PublicIdentity(owner);
        // A compare-and-set, so that a password the owner replaced meanwhile is kept.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let found = self
                .state
                .room_entry(name.as_str())
                .await
                .map_err(|e| cluster_error("reading a room")(&e))?;
            let Some((bytes, revision)) = found else { return Ok(false) };
            let Some((verifier, _)) = parse_record(&bytes) else { return Ok(false) };
            let replaced = self
                .state
                .replace_room(name.as_str(), record(&verifier, &owner), revision)
                .await
                .map_err(|e| cluster_error("setting a room's owner")(&e))?;
            if replaced {
                break;
            }
            if attempts >= OWNER_ATTEMPTS {
                return Err(cluster_error("setting a room's owner")(
                    &"the room's record kept changing under other writers; try again",
                ));
            }
        }
        if let Some(room) = self.map().get(name).cloned() {
            room.lock().rules.set_owner(owner);
        }
        self.signal(&token, Control::Owner { owner: identity_hex(&owner) }).await;
        info!(room = %name, owner = %owner.short_fingerprint(), "room owner set by the operator");
        Ok(true)
    }
}
