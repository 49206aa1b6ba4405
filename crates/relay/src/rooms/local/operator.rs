//! What the relay's operator does to rooms through the admin socket, kept consistent with the
//! rooms loaded in memory: a deleted room's members are disconnected before its rows go, and a
//! new owner takes effect at once for a loaded room.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;

use chatroom_crypto::{ErrorCode, PublicIdentity, RoomName};
use tracing::info;

use super::LocalRooms;
use crate::admin::{self, BanInfo, RoomInfo};
use crate::rooms::RoomAdmin;
use crate::store::StoreError;

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Sqlite { context, message: e.to_string() }
}

impl RoomAdmin for LocalRooms {
    fn online(&self) -> HashMap<String, u64> {
        self.map()
            .iter()
            .map(|(name, room)| (name.as_str().to_owned(), room.lock().members.len() as u64))
            .collect()
    }

    async fn list_rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let mut rooms = self.store.exec(|conn| admin::rooms(conn)).await?.map_err(sql("listing rooms"))?;
        let online = self.online();
        for room in &mut rooms {
            room.online = Some(online.get(&room.name).copied().unwrap_or(0));
        }
        Ok(rooms)
    }

    async fn room_info(&self, name: &str) -> Result<Option<RoomInfo>, StoreError> {
        let room = name.to_owned();
        let found =
            self.store.exec(move |conn| admin::room(conn, &room)).await?.map_err(sql("reading a room"))?;
        Ok(found.map(|mut info| {
            info.online = Some(self.online().get(name).copied().unwrap_or(0));
            info
        }))
    }

    async fn list_bans(&self, name: &str) -> Result<Option<Vec<BanInfo>>, StoreError> {
        let room = name.to_owned();
        self.store.exec(move |conn| admin::bans(conn, &room)).await?.map_err(sql("listing bans"))
    }

    /// Deletes a room: disconnects its members, forgets it, and erases its rows. Inside the
    /// room's loading lock, so a concurrent join cannot load it again before the rows are
    /// gone; the rows are erased after every append queued before the members were removed.
    fn delete_room(&self, name: &RoomName) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.operator_delete(name)
    }

    fn set_owner(
        &self,
        name: &RoomName,
        owner: [u8; 32],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.operator_set_owner(name, owner)
    }
}

impl LocalRooms {
    async fn operator_delete(&self, name: &RoomName) -> Result<bool, StoreError> {
        let deleted = self
            .loading(name, async {
                let room = self.map().remove(name);
                if let Some(room) = room {
                    let mut st = room.lock();
                    st.evicted = true;
                    let members = st.members.len();
                    for (_, member) in st.members.drain() {
                        member.link.close(ErrorCode::NoSuchRoom, "the relay's operator deleted this room");
                    }
                    info!(room = %name, members, "room deleted by the operator; its members were disconnected");
                }
                let room = name.as_str().to_owned();
                self.store.exec(move |conn| admin::delete_room(conn, &room)).await?.map_err(sql("deleting a room"))
            })
            .await?;
        if deleted {
            self.stored.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(deleted)
    }

    /// Makes `owner` the owner of a room; false if there is no such room.
    async fn operator_set_owner(&self, name: &RoomName, owner: [u8; 32]) -> Result<bool, StoreError> {
        let found = self
            .loading(name, async {
                let room = name.as_str().to_owned();
                let found = self
                    .store
                    .exec(move |conn| admin::set_owner(conn, &room, &owner))
                    .await?
                    .map_err(sql("setting a room's owner"))?;
                if let Some(room) = self.map().get(name) {
                    room.lock().rules.set_owner(PublicIdentity(owner));
                }
                Ok::<bool, StoreError>(found)
            })
            .await?;
        if found {
            info!(room = %name, owner = %PublicIdentity(owner).short_fingerprint(), "room owner set by the operator");
        }
        Ok(found)
    }
}
