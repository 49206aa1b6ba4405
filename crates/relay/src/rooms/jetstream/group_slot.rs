//! Protocol version 2's room operations on the cluster: the room's sealed GroupInfo slot and
//! the owner's replacement of the join verifier.
//!
//! The slot is one key per room in the group info bucket: the stored object's `after_seq`
//! (8 bytes, big-endian), then the object. A put reads the key (from the bucket's leader), checks
//! the rule (`after_seq` at least the stored one's and at most the room's latest stored `seq`)
//! and writes with a compare-and-set on the revision it read; a put that lost a race reads the
//! winner and decides again. The other members are told through the room's control subject;
//! each node keeps the stored `after_seq` for its `Joined`. The verifier is replaced in the
//! room's record by compare-and-set too; every join reads the record again, so a join through
//! any node is checked against the new verifier once `set_verifier` returned.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::UpdateErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::{BufMut, Bytes, BytesMut};
use chatroom_crypto::{ErrorCode, JoinVerifier};
use tracing::info;

use super::listing;
use super::log::{RoomLog, APPEND_DEADLINE};
use super::membership::{parse_record, record};
use super::presence::Control;
use super::room::NodeRoom;
use super::rooms::{unavailable, ClusterMember, Node};
use super::setup::GROUP_INFO_BUCKET;
use super::state::{passing_refusal, StateError, IN_PROCESS_BACKOFF};
use crate::rooms::{Item, Refusal};

/// Compare-and-set attempts of one put or verifier change before it is refused as busy.
const WRITE_ATTEMPTS: u32 = 16;

/// The stored slot: its revision, and the object's `after_seq` and bytes.
struct Slot {
    revision: u64,
    stored: Option<(u64, Bytes)>,
}

fn stale(after_seq: u64) -> Refusal {
    Refusal::new(
        ErrorCode::StaleGroupInfo,
        format!(
            "the group information after seq {after_seq} is older than the stored one, or follows \
             a seq the room has not reached; read the room's log and upload the current one"
        ),
    )
}

fn busy() -> Refusal {
    Refusal::new(ErrorCode::Internal, "the room's shared state is changing under many writers; try again")
}

/// The bucket value of an object stored after `after_seq`.
fn slot_value(after_seq: u64, sealed: &[u8]) -> Bytes {
    let mut value = BytesMut::with_capacity(8 + sealed.len());
    value.put_u64(after_seq);
    value.put_slice(sealed);
    value.freeze()
}

/// The `after_seq` and object of a bucket value; `None` if it is too short to be one.
fn parse_slot(value: &Bytes) -> Option<(u64, Bytes)> {
    let head: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(head), value.slice(8..)))
}

impl Node {
    /// The room `token`'s slot as its leader holds it.
    async fn slot(&self, token: &str) -> Result<Slot, StateError> {
        let subject = format!("$KV.{GROUP_INFO_BUCKET}.{token}");
        let read =
            super::state::asked_again(|| self.group_info_stream.get_last_raw_message_by_subject(&subject));
        match read.await {
            Ok(message) if listing::is_removal(&message) => {
                Ok(Slot { revision: message.sequence, stored: None })
            }
            Ok(message) => Ok(Slot { revision: message.sequence, stored: parse_slot(&message.payload) }),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                Ok(Slot { revision: 0, stored: None })
            }
            Err(e) => Err(StateError::new("read", &e)),
        }
    }

    /// The `after_seq` of the room `token`'s stored GroupInfo, if one is stored.
    pub(super) async fn group_info_seq(&self, token: &str) -> Result<Option<u64>, StateError> {
        Ok(self.slot(token).await?.stored.map(|(after_seq, _)| after_seq))
    }

    /// Whether the room's log reaches `after_seq`: at once when this node has delivered it;
    /// after this node's appends queued before it when it has some in flight; else as the
    /// stream's leader says.
    async fn log_reaches(&self, room: &NodeRoom, after_seq: u64) -> Result<bool, Refusal> {
        let (delivered, inflight) = {
            let held = room.lock();
            (held.delivered.chat_seq, held.inflight)
        };
        if after_seq <= delivered {
            return Ok(true);
        }
        if inflight > 0 {
            let mut tips = room.delivered.subscribe();
            let reached = tips.wait_for(|tip| tip.chat_seq >= after_seq);
            if matches!(tokio::time::timeout(APPEND_DEADLINE, reached).await, Ok(Ok(_))) {
                return Ok(true);
            }
        }
        let log = RoomLog::new(self.js.clone(), self.log_stream.clone(), format!("chat.{}", room.token));
        let tip = log.tip().await.map_err(|e| unavailable("reading a room's log", &e))?;
        Ok(after_seq <= tip.chat_seq)
    }

    pub(super) async fn put_group_info(
        &self,
        member: &ClusterMember,
        after_seq: u64,
        sealed: Bytes,
    ) -> Result<u64, Refusal> {
        let room = &member.room;
        if !self.log_reaches(room, after_seq).await? {
            return Err(stale(after_seq));
        }
        let value = slot_value(after_seq, &sealed);
        let fail = |e: &dyn std::fmt::Display| unavailable("storing a room's group information", e);
        let mut written = false;
        for _ in 0..WRITE_ATTEMPTS {
            let slot = self.slot(&room.token).await.map_err(|e| fail(&e))?;
            if slot.stored.as_ref().is_some_and(|(stored, _)| after_seq < *stored) {
                return Err(stale(after_seq));
            }
            match self.group_info.update(&room.token, value.clone(), slot.revision).await {
                Ok(_) => {
                    written = true;
                    break;
                }
                // Another put (through any node) came first: read the winner and decide again.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) if passing_refusal(&e) => tokio::time::sleep(IN_PROCESS_BACKOFF).await,
                Err(e) => return Err(fail(&e)),
            }
        }
        if !written {
            let slot = self.slot(&room.token).await.map_err(|e| fail(&e))?;
            return Err(match slot.stored {
                Some((stored, _)) if after_seq < stored => stale(after_seq),
                _ => busy(),
            });
        }
        {
            let mut held = room.lock();
            // Puts may finish out of order; the slot kept the newest.
            held.group_info_seq = Some(held.group_info_seq.map_or(after_seq, |s| s.max(after_seq)));
            held.broadcast(&Item::group_info_stored(after_seq), Some(&member.identity));
        }
        self.signal(&room.token, Control::GroupInfo { after_seq }).await;
        Ok(after_seq)
    }

    pub(super) async fn group_info(&self, member: &ClusterMember) -> Result<(u64, Bytes), Refusal> {
        let slot = self
            .slot(&member.room.token)
            .await
            .map_err(|e| unavailable("reading a room's group information", &e))?;
        slot.stored.ok_or_else(|| {
            Refusal::new(
                ErrorCode::NoGroupInfo,
                "the room has no group information yet; ask its creator to connect again",
            )
        })
    }

    /// Another node stored a GroupInfo: this node's members are told.
    pub(super) fn group_info_stored_elsewhere(room: &Arc<NodeRoom>, after_seq: u64) {
        let mut held = room.lock();
        held.group_info_seq = Some(held.group_info_seq.map_or(after_seq, |s| s.max(after_seq)));
        held.broadcast(&Item::group_info_stored(after_seq), None);
    }

    /// Replaces the room's join verifier if the member owns the room (as its record says now),
    /// by compare-and-set on the record; durable before it returns.
    pub(super) async fn set_verifier(
        &self,
        member: &ClusterMember,
        verifier: [u8; 32],
    ) -> Result<(), Refusal> {
        let room = &member.room;
        let not_owner =
            || Refusal::new(ErrorCode::NotOwner, "only the room owner may change the room's password");
        // Checked first against what this node knows, so a non-owner costs no request.
        if room.lock().rules.owner() != member.identity {
            return Err(not_owner());
        }
        let fail = |e: &dyn std::fmt::Display| unavailable("replacing a room's password", e);
        let name = room.name.as_str();
        for _ in 0..WRITE_ATTEMPTS {
            let entry = self.state.room_entry(name).await.map_err(|e| fail(&e))?;
            let Some((current, revision)) = entry else {
                return Err(Refusal::new(ErrorCode::NoSuchRoom, "the room was deleted; create it again"));
            };
            let (_, owner) = parse_record(&current).ok_or_else(|| fail(&"a room record is malformed"))?;
            if owner != member.identity {
                room.lock().rules.set_owner(owner);
                return Err(not_owner());
            }
            let verifier = JoinVerifier(verifier);
            if self
                .state
                .replace_room(name, record(&verifier, &owner), revision)
                .await
                .map_err(|e| fail(&e))?
            {
                let mut held = room.lock();
                held.rules.set_owner(owner);
                held.rules.set_verifier(&owner, verifier)?;
                drop(held);
                info!(room = %room.name, "room password replaced by its owner");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(busy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_values_round_trip_and_short_ones_are_refused() {
        let value = slot_value(0x0102_0304_0506_0708, b"sealed");
        assert_eq!(&value[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parse_slot(&value), Some((0x0102_0304_0506_0708, Bytes::from_static(b"sealed"))));
        assert_eq!(parse_slot(&slot_value(3, b"")), Some((3, Bytes::new())));
        assert_eq!(parse_slot(&Bytes::from_static(b"short")), None);
    }
}
