//! Presence across nodes, and the control subject by which nodes act on each other's members.
//!
//! Presence: one key per member in the presence bucket, `<room id>.<identity hex>`, holding its
//! nickname, connection and node, written with a TTL (`PRESENCE_TTL`) that the member's node
//! renews every `PRESENCE_REFRESH`: the members of a node that died disappear within the TTL.
//! A member list is the room's keys. Control: `ctl.<room id>` (core NATS, subscribed by every
//! node holding the room) carries joins, leaves, kicks, bans, unbans, a new owner, a stored
//! GroupInfo and a deletion, so that each node tells its members and closes the one concerned.
//! The bans, bindings and the room's record (verifier, owner) themselves are in the buckets,
//! read again at every join: a control message lost in flight delays a notice, never lets a
//! banned identity or an old password in.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::{HeaderMap, Subscriber};
use bytes::Bytes;
use chatroom_crypto::{ErrorCode, Member, Nick, PresenceEvent, PublicIdentity};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::listing;
use super::room::NodeRoom;
use super::rooms::Node;
use super::setup::PRESENCE_BUCKET;
use super::state::StateError;
use crate::rooms::rules::Binding;
use crate::rooms::{ConnectionId, Item};

/// How long a member's presence key outlives its node's last renewal.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);
/// How often a node renews its members' presence keys.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// Most presence keys one room's list reads (a room's members are bounded by its cap; keys of
/// members who left stay as removal markers until the room's next purge).
const MAX_PRESENCE_KEYS: usize = 65_536;
/// Largest control message a node reads; anything longer is not ours.
const MAX_CONTROL_BYTES: usize = 4096;

/// A member's presence key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PresenceValue {
    nick: String,
    connection: String,
    pub(super) node: u64,
}

impl PresenceValue {
    pub(super) fn new(nick: &Nick, connection: ConnectionId, node: u64) -> Self {
        Self { nick: nick.to_string(), connection: connection.to_string(), node }
    }

    pub(super) fn nick(&self) -> Option<Nick> {
        Nick::new(&self.nick).ok()
    }
}

/// What one node tells the others holding a room (`GroupInfo`: a protocol version 2 GroupInfo
/// was stored after `after_seq`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Control {
    Joined { identity: String, value: PresenceValue },
    Left { identity: String, nick: String },
    Kicked { identity: String, nick: String },
    Banned { identity: String, nick: String },
    Unbanned { identity: String, nick: String },
    Owner { owner: String },
    GroupInfo { after_seq: u64 },
    Deleted,
}

/// A control message and the node it came from.
#[derive(Debug, Serialize, Deserialize)]
struct Signal {
    node: u64,
    control: Control,
}

pub(super) fn identity_hex(identity: &PublicIdentity) -> String {
    identity.0.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn parse_identity(hex: &str) -> Option<PublicIdentity> {
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(PublicIdentity(bytes))
}

fn presence_key(token: &str, identity: &PublicIdentity) -> String {
    format!("{token}.{}", identity_hex(identity))
}

impl Node {
    /// Writes (or renews) a member's presence key.
    pub(super) async fn put_presence(&self, token: &str, identity: &PublicIdentity, value: &PresenceValue) {
        let Ok(payload) = serde_json::to_vec(value) else { return };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-TTL", PRESENCE_TTL.as_secs().to_string().as_str());
        let subject = format!("$KV.{PRESENCE_BUCKET}.{}", presence_key(token, identity));
        let written = match self.js.publish_with_headers(subject, headers, Bytes::from(payload)).await {
            Ok(ack) => ack.await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            warn!(error = %e, "a member's presence could not be written; other nodes list it once renewed");
        }
    }

    /// Removes a member's presence key if it is still this connection's (a newer connection
    /// of the same identity, through any node, keeps its own).
    pub(super) async fn remove_presence(
        &self,
        token: &str,
        identity: &PublicIdentity,
        connection: ConnectionId,
    ) {
        let key = presence_key(token, identity);
        let subject = format!("$KV.{PRESENCE_BUCKET}.{key}");
        let message = match self.presence_stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) if !listing::is_removal(&message) => message,
            Ok(_) => return,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => return,
            Err(e) => return warn!(error = %e, "a member's presence could not be read to remove it"),
        };
        let ours = serde_json::from_slice::<PresenceValue>(&message.payload)
            .is_ok_and(|v| v.connection == connection.to_string());
        if ours {
            if let Err(e) = self.presence.delete_expect_revision(&key, Some(message.sequence)).await {
                // Replaced meanwhile, or the cluster is away: the TTL removes it.
                warn!(error = %e, "a member's presence could not be removed; it expires with its TTL");
            }
        }
    }

    /// Who is present in the room, through any node.
    pub(super) async fn present(
        &self,
        token: &str,
    ) -> Result<Vec<(PublicIdentity, PresenceValue)>, StateError> {
        let filter = format!("$KV.{PRESENCE_BUCKET}.{token}.*");
        let mut present = Vec::new();
        for message in Box::pin(listing::values(&self.presence_stream, &filter, MAX_PRESENCE_KEYS)).await? {
            let identity = parse_identity(listing::last_token(&message.subject));
            if let (Some(identity), Ok(value)) = (identity, serde_json::from_slice(&message.payload)) {
                present.push((identity, value));
            }
        }
        Ok(present)
    }

    /// The room's members through every node, sorted by nickname; this node's from memory.
    pub(super) async fn members(&self, room: &NodeRoom) -> Vec<Member> {
        let present = self.present(&room.token).await.unwrap_or_else(|e| {
            warn!(error = %e, "the room's members on other nodes could not be read");
            Vec::new()
        });
        let held = room.lock();
        let mut list = held.local_members();
        for (identity, value) in present {
            if value.node != self.id && !held.members.contains_key(&identity) {
                if let Some(nick) = value.nick() {
                    list.push(Member { nick, identity });
                }
            }
        }
        drop(held);
        list.sort_by(|a, b| a.nick.cmp_canonical(&b.nick));
        list.dedup_by_key(|m| m.identity);
        list
    }

    /// Tells the other nodes holding the room.
    pub(super) async fn signal(&self, token: &str, control: Control) {
        let Ok(payload) = serde_json::to_vec(&Signal { node: self.id, control }) else { return };
        if let Err(e) = self.client.publish(format!("ctl.{token}"), Bytes::from(payload)).await {
            warn!(error = %e, "a room's other nodes could not be told");
        }
    }

    /// Acts on another node's control message for `room`.
    async fn apply(self: &Arc<Self>, room: &Arc<NodeRoom>, control: Control) {
        match control {
            Control::Joined { identity, value } => {
                let (Some(identity), Some(nick)) = (parse_identity(&identity), value.nick()) else { return };
                let mut held = room.lock();
                held.rules.learn_binding(Binding { nick: nick.canonical(), identity });
                // Replaced by a connection through another node: closed without a leave notice.
                if let Some(old) = held.members.remove(&identity) {
                    old.link.close(ErrorCode::AlreadyConnected, "replaced by a new connection");
                }
                held.presence(PresenceEvent::Joined, &nick, identity);
            }
            Control::Left { identity, nick } => {
                let (Some(identity), Ok(nick)) = (parse_identity(&identity), Nick::new(&nick)) else {
                    return;
                };
                let held = room.lock();
                if !held.members.contains_key(&identity) {
                    held.presence(PresenceEvent::Left, &nick, identity);
                }
            }
            Control::Kicked { identity, nick } => self.removed(room, &identity, &nick, false).await,
            Control::Banned { identity, nick } => self.removed(room, &identity, &nick, true).await,
            Control::Unbanned { identity, nick } => {
                let (Some(identity), Ok(nick)) = (parse_identity(&identity), Nick::new(&nick)) else {
                    return;
                };
                let mut held = room.lock();
                held.rules.learn_ban(identity, false);
                held.broadcast(&Item::presence(PresenceEvent::Unbanned, &nick, identity), None);
            }
            Control::Owner { owner } => {
                if let Some(owner) = parse_identity(&owner) {
                    room.lock().rules.set_owner(owner);
                }
            }
            Control::GroupInfo { after_seq } => Node::group_info_stored_elsewhere(room, after_seq),
            Control::Deleted => self.deleted_here(room, "the relay's operator deleted this room"),
        }
    }

    /// A member kicked or banned through another node: closed here if it is here, and every
    /// member here told.
    async fn removed(&self, room: &Arc<NodeRoom>, identity: &str, nick: &str, ban: bool) {
        let (Some(identity), Ok(nick)) = (parse_identity(identity), Nick::new(nick)) else { return };
        let (event, code, detail) = if ban {
            (PresenceEvent::Banned, ErrorCode::Banned, "banned from this room by its owner")
        } else {
            (PresenceEvent::Kicked, ErrorCode::Kicked, "kicked by the room owner")
        };
        let closed = {
            let mut held = room.lock();
            if ban {
                held.rules.learn_ban(identity, true);
            }
            let closed = held.members.remove(&identity);
            if let Some(entry) = &closed {
                entry.link.close(code, detail);
            }
            held.broadcast(&Item::presence(event, &nick, identity), None);
            closed
        };
        if let Some(entry) = closed {
            self.remove_presence(&room.token, &identity, entry.connection).await;
        }
        self.evict_if_idle(room);
    }

    /// The room is gone: its members here are closed and the node forgets it.
    pub(super) fn deleted_here(&self, room: &Arc<NodeRoom>, detail: &str) {
        {
            let mut held = room.lock();
            for (_, member) in held.members.drain() {
                member.link.close(ErrorCode::NoSuchRoom, detail);
            }
        }
        self.evict_if_idle(room);
    }
}

/// Reads a room's control subject while the room is loaded on this node.
pub(super) async fn control(room: Weak<NodeRoom>, node: Weak<Node>, mut subscription: Subscriber) {
    while let Some(message) = subscription.next().await {
        if message.payload.len() > MAX_CONTROL_BYTES {
            continue;
        }
        let Ok(signal) = serde_json::from_slice::<Signal>(&message.payload) else {
            warn!("a room's control subject carried something that is not a control message");
            continue;
        };
        let (Some(room), Some(node)) = (room.upgrade(), node.upgrade()) else { return };
        if signal.node != node.id {
            node.apply(&room, signal.control).await;
        }
    }
}

/// Renews the presence keys of this node's members while the node serves rooms.
pub(super) async fn refresh(node: Weak<Node>) {
    let mut ticks = tokio::time::interval(PRESENCE_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(node) = node.upgrade() else { return };
        let rooms: Vec<Arc<NodeRoom>> = node.map().values().cloned().collect();
        for room in rooms {
            let members: Vec<(PublicIdentity, PresenceValue)> = room
                .lock()
                .members
                .iter()
                .map(|(id, m)| (*id, PresenceValue::new(&m.nick, m.connection, node.id)))
                .collect();
            for (identity, value) in members {
                node.put_presence(&room.token, &identity, &value).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_hex_and_bad_hex_is_refused() {
        let identity = PublicIdentity([0xa5; 32]);
        assert_eq!(parse_identity(&identity_hex(&identity)), Some(identity));
        for bad in ["", "a5", &"g".repeat(64), &"a".repeat(63), &"é".repeat(32)] {
            assert_eq!(parse_identity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn control_messages_round_trip_and_carry_their_node() {
        let signal =
            Signal { node: 7, control: Control::Kicked { identity: "ab".into(), nick: "bob".into() } };
        let text = serde_json::to_string(&signal).unwrap();
        assert!(text.contains("\"op\":\"kicked\""), "{text}");
        let back: Signal = serde_json::from_str(&text).unwrap();
        assert_eq!(back.node, 7);
        assert!(matches!(back.control, Control::Kicked { nick, .. } if nick == "bob"));
    }
}
