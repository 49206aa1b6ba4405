//! Kick, ban and unban through any node: the rules decide (told first what the cluster holds
//! about the target), the bans bucket records, the member is closed on whichever node holds
//! it (here at once, elsewhere through the room's control subject), every member is told.

use std::sync::Arc;

use bytes::Bytes;
use chatroom_crypto::{ErrorCode, Nick, PresenceEvent, PublicIdentity};
use tracing::info;

use super::presence::{identity_hex, Control};
use super::room::NodeRoom;
use super::rooms::{unavailable, ClusterMember, Node};
use crate::rooms::rules::Binding;
use crate::rooms::{Item, Moderation, Refusal};

impl Node {
    pub(super) async fn moderate(
        self: &Arc<Self>,
        member: &ClusterMember,
        action: Moderation,
        nick: Nick,
    ) -> Result<(), Refusal> {
        let room = &member.room;
        // The nickname may have been bound through another node.
        let holder = self
            .nick_holder(&room.token, &nick.canonical())
            .await
            .map_err(|e| unavailable("reading a nickname binding", &e))?;
        if let Some(identity) = holder {
            room.lock().rules.learn_binding(Binding { nick: nick.canonical(), identity });
        }
        match action {
            Moderation::Kick => self.kick(member, &nick).await,
            Moderation::Ban => self.ban(member, &nick).await,
            Moderation::Unban => self.unban(member, &nick).await,
        }
        .inspect(
            |()| info!(room = %room.name, by = %member.nick, target = %nick, ?action, "member moderated"),
        )
    }

    async fn kick(self: &Arc<Self>, member: &ClusterMember, nick: &Nick) -> Result<(), Refusal> {
        let room = &member.room;
        let target = room.lock().rules.kick(&member.identity, nick)?;
        let shown = match self.close_here(room, target, false).await {
            Some(shown) => shown,
            None => {
                let present =
                    self.present(&room.token).await.map_err(|e| unavailable("reading presence", &e))?;
                let Some(value) = present.into_iter().find(|(id, _)| *id == target).map(|(_, v)| v) else {
                    return Err(Refusal::new(ErrorCode::NoSuchMember, format!("{nick} is not connected")));
                };
                value.nick().unwrap_or_else(|| nick.clone())
            }
        };
        room.lock().broadcast(&Item::presence(PresenceEvent::Kicked, &shown, target), None);
        let control = Control::Kicked { identity: identity_hex(&target), nick: shown.to_string() };
        self.signal(&room.token, control).await;
        Ok(())
    }

    async fn ban(self: &Arc<Self>, member: &ClusterMember, nick: &Nick) -> Result<(), Refusal> {
        let room = &member.room;
        let target = room.lock().rules.ban(&member.identity, nick)?;
        let record = Bytes::from(identity_hex(&member.identity));
        if let Err(e) = self.state.ban(room.name.as_str(), &identity_hex(&target), record).await {
            room.lock().rules.learn_ban(target, false);
            return Err(unavailable("storing a ban", &e));
        }
        let shown = self.close_here(room, target, true).await.unwrap_or_else(|| nick.clone());
        room.lock().broadcast(&Item::presence(PresenceEvent::Banned, &shown, target), None);
        self.signal(
            &room.token,
            Control::Banned { identity: identity_hex(&target), nick: shown.to_string() },
        )
        .await;
        Ok(())
    }

    async fn unban(self: &Arc<Self>, member: &ClusterMember, nick: &Nick) -> Result<(), Refusal> {
        let room = &member.room;
        let target = room.lock().rules.bound(nick);
        if let Ok(target) = target {
            // The ban may have been given or lifted through another node.
            let banned =
                self.is_banned(&room.token, &target).await.map_err(|e| unavailable("reading a ban", &e))?;
            room.lock().rules.learn_ban(target, banned);
        }
        let target = room.lock().rules.unban(&member.identity, nick)?;
        if let Err(e) = self.state.unban(room.name.as_str(), &identity_hex(&target)).await {
            room.lock().rules.learn_ban(target, true);
            return Err(unavailable("lifting a ban", &e));
        }
        room.lock().broadcast(&Item::presence(PresenceEvent::Unbanned, nick, target), None);
        self.signal(
            &room.token,
            Control::Unbanned { identity: identity_hex(&target), nick: nick.to_string() },
        )
        .await;
        Ok(())
    }

    /// Closes `target` if it is connected through this node; returns the nickname it used.
    async fn close_here(&self, room: &Arc<NodeRoom>, target: PublicIdentity, ban: bool) -> Option<Nick> {
        let entry = room.lock().members.remove(&target)?;
        if ban {
            entry.link.close(ErrorCode::Banned, "banned from this room by its owner");
        } else {
            entry.link.close(ErrorCode::Kicked, "kicked by the room owner");
        }
        self.remove_presence(&room.token, &target, entry.connection).await;
        Some(entry.nick)
    }
}
