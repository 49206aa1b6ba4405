//! The relay's member list as it last told it: assembled from `Members` parts and followed
//! through presence notices. It is the relay's claim, shown as such and never pinned; both
//! protocol versions keep one (the list a client shows, and `/whois`'s "the relay lists").

use chatroom_crypto::{Member, Nick, PresenceEvent, PublicIdentity};

/// Most members held while a `Members` list is assembled, and in the list afterwards.
pub const MAX_MEMBERS: usize = 100_000;

/// The relay's member list, and the parts of the next one while they arrive.
#[derive(Debug, Default)]
pub struct ListedMembers {
    list: Vec<Member>,
    partial: Vec<Member>,
}

impl ListedMembers {
    /// A new connection: parts of a list the last one left unfinished are dropped.
    pub fn restart(&mut self) {
        self.partial.clear();
    }

    /// A part of the relay's list; once `more` is false the assembled list replaces the old
    /// one and is returned. Entries past `MAX_MEMBERS` are dropped.
    pub fn on_part(&mut self, more: bool, members: Vec<Member>) -> Option<&[Member]> {
        let room = MAX_MEMBERS.saturating_sub(self.partial.len());
        self.partial.extend(members.into_iter().take(room));
        if more {
            return None;
        }
        self.list = std::mem::take(&mut self.partial);
        Some(&self.list)
    }

    /// Follows a presence notice: a join replaces any entry of the same nickname.
    pub fn on_presence(&mut self, event: PresenceEvent, nick: &Nick, identity: PublicIdentity) {
        match event {
            PresenceEvent::Joined => {
                self.list.retain(|m| !m.nick.same_as(nick));
                if self.list.len() < MAX_MEMBERS {
                    self.list.push(Member { nick: nick.clone(), identity });
                }
            }
            PresenceEvent::Left | PresenceEvent::Kicked | PresenceEvent::Banned => {
                self.list.retain(|m| !m.nick.same_as(nick));
            }
            PresenceEvent::Unbanned => {}
        }
    }

    /// The key the relay lists for `nick`, if it lists it.
    pub fn key_of(&self, nick: &Nick) -> Option<PublicIdentity> {
        self.list.iter().find(|m| m.nick.same_as(nick)).map(|m| m.identity)
    }

    /// The list as last told.
    pub fn list(&self) -> &[Member] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(nick: &str, key: u8) -> Member {
        Member { nick: Nick::new(nick).unwrap(), identity: PublicIdentity([key; 32]) }
    }

    #[test]
    fn a_list_counts_once_its_last_part_arrives_and_restart_drops_an_unfinished_one() {
        let mut listed = ListedMembers::default();
        assert!(listed.on_part(true, vec![member("alice", 1)]).is_none());
        assert!(listed.list().is_empty(), "a part is not yet the list");
        listed.restart();
        let list = listed.on_part(false, vec![member("bob", 2)]).unwrap();
        assert_eq!(list, [member("bob", 2)], "the part of the earlier connection was dropped");
        assert_eq!(listed.key_of(&Nick::new("BOB").unwrap()), Some(PublicIdentity([2; 32])));
    }

    #[test]
    fn presence_notices_move_the_list() {
        let mut listed = ListedMembers::default();
        listed.on_part(false, vec![member("alice", 1), member("bob", 2)]);
        let carol = Nick::new("carol").unwrap();
        listed.on_presence(PresenceEvent::Joined, &carol, PublicIdentity([3; 32]));
        listed.on_presence(PresenceEvent::Joined, &Nick::new("alice").unwrap(), PublicIdentity([4; 32]));
        listed.on_presence(PresenceEvent::Kicked, &Nick::new("bob").unwrap(), PublicIdentity([2; 32]));
        listed.on_presence(PresenceEvent::Unbanned, &Nick::new("dave").unwrap(), PublicIdentity([5; 32]));
        assert_eq!(listed.list(), [member("carol", 3), member("alice", 4)]);
        assert_eq!(listed.key_of(&Nick::new("bob").unwrap()), None);
    }

    #[test]
    fn a_list_is_cut_at_the_cap() {
        let mut listed = ListedMembers::default();
        let many: Vec<Member> = (0..MAX_MEMBERS).map(|i| member(&format!("m{i}"), 1)).collect();
        listed.on_part(true, many);
        let list = listed.on_part(false, vec![member("late", 9)]).unwrap();
        assert_eq!(list.len(), MAX_MEMBERS);
        listed.on_presence(PresenceEvent::Joined, &Nick::new("later").unwrap(), PublicIdentity([9; 32]));
        assert_eq!(listed.list().len(), MAX_MEMBERS, "a join past the cap is not added");
    }
}
