//! What `chatroom-relay rooms list`, `rooms show` and `bans list` read on a cluster node: the
//! rooms, bindings, bans and presence buckets and the stream, so every node shows the same
//! rooms. Two fields are not kept by the cluster and are `None`: a room's creation time (its
//! record holds only the last write, which `owner set` replaces) and its history's size in bytes
//! (the stream counts a subject's messages, not their bytes). `online` counts the presence keys,
//! so the members connected through any node.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use chatroom_crypto::PublicIdentity;

use super::listing;
use super::log::chat_seq;
use super::membership::parse_record;
use super::nicks::text_from_hex;
use super::presence::identity_hex;
use super::rooms::{cluster_error, Node};
use super::setup::ROOMS_BUCKET;
use super::state::room_token;
use crate::admin::{BanInfo, NickInfo, RoomInfo};
use crate::store::StoreError;

/// Most rooms `rooms list` reads; a cluster with more is refused with this number (each room
/// costs a few requests, so a longer list would take minutes).
pub const MAX_LISTED_ROOMS: usize = 10_000;

impl Node {
    pub(super) async fn list_rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let filter = format!("$KV.{ROOMS_BUCKET}.*");
        let subjects = listing::subjects(&self.rooms_stream, &filter, MAX_LISTED_ROOMS)
            .await
            .map_err(|e| cluster_error("listing rooms")(&e))?;
        let mut names: Vec<String> =
            subjects.iter().filter_map(|s| text_from_hex(listing::last_token(s))).collect();
        names.sort();
        let mut rooms = Vec::with_capacity(names.len());
        for name in names {
            // A room deleted since the listing is left out.
            if let Some(mut info) = Box::pin(self.room_info(&name)).await? {
                info.members.clear();
                rooms.push(info);
            }
        }
        Ok(rooms)
    }

    pub(super) async fn room_info(&self, name: &str) -> Result<Option<RoomInfo>, StoreError> {
        let read = cluster_error("reading a room");
        let Some(record) = self.state.room(name).await.map_err(|e| read(&e))? else { return Ok(None) };
        let Some((_, owner)) = parse_record(&record) else { return Ok(None) };
        let token = room_token(name);
        let subject = format!("chat.{token}");
        let latest_seq = match self.log_stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => chat_seq(&message.headers, message.sequence).map_err(|e| read(&e))?,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => 0,
            Err(e) => return Err(read(&e)),
        };
        let history = listing::count(&self.log_stream, &subject).await.map_err(|e| read(&e))?;
        let nicks = Box::pin(self.room_nicks(&token)).await.map_err(|e| read(&e))?;
        let bans = Box::pin(self.room_bans(&token)).await.map_err(|e| read(&e))?;
        let online = Box::pin(self.present(&token)).await.map_err(|e| read(&e))?.len();
        let mut members: Vec<NickInfo> = nicks
            .iter()
            .map(|(nick, identity)| NickInfo { nick: nick.clone(), identity: identity_hex(identity) })
            .collect();
        members.sort_by(|a, b| a.nick.cmp(&b.nick));
        Ok(Some(RoomInfo {
            name: name.to_owned(),
            owner: identity_hex(&owner),
            created: None,
            latest_seq,
            history,
            history_bytes: None,
            nicknames: members.len() as u64,
            bans: bans.len() as u64,
            online: Some(online as u64),
            members,
        }))
    }

    pub(super) async fn list_bans(&self, name: &str) -> Result<Option<Vec<BanInfo>>, StoreError> {
        let read = cluster_error("listing bans");
        if self.state.room(name).await.map_err(|e| read(&e))?.is_none() {
            return Ok(None);
        }
        let token = room_token(name);
        let nicks = Box::pin(self.room_nicks(&token)).await.map_err(|e| read(&e))?;
        let mut bans: Vec<BanInfo> = Box::pin(self.room_bans(&token))
            .await
            .map_err(|e| read(&e))?
            .into_iter()
            .map(|banned: PublicIdentity| {
                let mut nicknames: Vec<String> =
                    nicks.iter().filter(|(_, id)| **id == banned).map(|(nick, _)| nick.clone()).collect();
                nicknames.sort();
                BanInfo { identity: identity_hex(&banned), nicknames }
            })
            .collect();
        bans.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(Some(bans))
    }
}
