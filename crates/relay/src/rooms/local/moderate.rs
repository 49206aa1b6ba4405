//! Kick, ban and unban: the rules decide, storage records bans, the room closes and tells.

use chatroom_crypto::{ErrorCode, Nick, PresenceEvent};
use tracing::info;

use super::{LocalMember, LocalRooms};
use crate::rooms::{Moderation, Refusal};

impl LocalRooms {
    pub(super) async fn moderate_member(
        &self,
        member: &LocalMember,
        action: Moderation,
        nick: Nick,
    ) -> Result<(), Refusal> {
        match action {
            Moderation::Kick => self.kick(member, &nick),
            Moderation::Ban => self.ban(member, nick).await,
            Moderation::Unban => self.unban(member, &nick).await,
        }
    }

    fn kick(&self, member: &LocalMember, nick: &Nick) -> Result<(), Refusal> {
        let room = &member.room;
        let mut st = room.lock();
        let target = st.rules.kick(&member.identity, nick)?;
        let Some(entry) = st.members.remove(&target) else {
            return Err(Refusal::new(ErrorCode::NoSuchMember, format!("{nick} is not connected")));
        };
        entry.link.close(ErrorCode::Kicked, "kicked by the room owner");
        st.presence(PresenceEvent::Kicked, &entry.nick, target, None);
        info!(room = %room.name, by = %member.nick, target = %entry.nick, "member kicked");
        Ok(())
    }

    async fn ban(&self, member: &LocalMember, nick: Nick) -> Result<(), Refusal> {
        let room = &member.room;
        let target = room.lock().rules.ban(&member.identity, &nick)?;
        self.store.set_ban(room.name.as_str(), target.0, true).await.map_err(|e| Refusal::internal(&e))?;
        let mut st = room.lock();
        let shown = match st.members.remove(&target) {
            Some(entry) => {
                entry.link.close(ErrorCode::Banned, "banned from this room by its owner");
                entry.nick
            }
            None => nick,
        };
        st.presence(PresenceEvent::Banned, &shown, target, None);
        info!(room = %room.name, by = %member.nick, target = %shown, "member banned");
        Ok(())
    }

    async fn unban(&self, member: &LocalMember, nick: &Nick) -> Result<(), Refusal> {
        let room = &member.room;
        let target = room.lock().rules.unban(&member.identity, nick)?;
        self.store.set_ban(room.name.as_str(), target.0, false).await.map_err(|e| Refusal::internal(&e))?;
        room.lock().presence(PresenceEvent::Unbanned, nick, target, None);
        info!(room = %room.name, by = %member.nick, target = %nick, "member unbanned");
        Ok(())
    }
}
