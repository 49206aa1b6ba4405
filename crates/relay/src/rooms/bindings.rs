//! A room's nickname bindings, looked up both ways in constant time: by canonical nickname
//! (who holds it) and by identity (whether it is bound already). A join of a new identity
//! asks both, so neither may cost a walk over every binding the room has made (up to
//! `--max-room-nicknames`, each a join an attacker with the password can add).

use std::collections::{HashMap, HashSet};

use chatroom_crypto::PublicIdentity;

/// Canonical nickname -> identity, and the identities bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bindings {
    by_nick: HashMap<String, PublicIdentity>,
    bound: HashSet<PublicIdentity>,
}

impl Bindings {
    pub(crate) fn from_map(by_nick: HashMap<String, PublicIdentity>) -> Self {
        let bound = by_nick.values().copied().collect();
        Self { by_nick, bound }
    }

    /// The identity `canonical` is bound to.
    pub(crate) fn get(&self, canonical: &str) -> Option<&PublicIdentity> {
        self.by_nick.get(canonical)
    }

    /// The nickname `identity` is bound under, if any. Only a join refused for it asks, so
    /// this walk is not on the path of a join that succeeds.
    pub(crate) fn nick_of(&self, identity: &PublicIdentity) -> Option<&str> {
        if !self.bound.contains(identity) {
            return None;
        }
        self.by_nick.iter().find(|(_, id)| *id == identity).map(|(nick, _)| nick.as_str())
    }

    pub(crate) fn len(&self) -> usize {
        self.by_nick.len()
    }

    /// Binds `canonical` to `identity` unless the nickname is bound already.
    pub(crate) fn insert(&mut self, canonical: String, identity: PublicIdentity) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_nick.entry(canonical) {
            slot.insert(identity);
            self.bound.insert(identity);
        }
    }

    /// Frees `canonical` if it is bound to `identity`.
    pub(crate) fn remove(&mut self, canonical: &str, identity: &PublicIdentity) {
        if self.by_nick.get(canonical) != Some(identity) {
            return;
        }
        self.by_nick.remove(canonical);
        // Another node of a cluster may have bound the same identity under a second nickname
        // (each node checks only what it knows); it stays bound while any binding is left.
        if !self.by_nick.values().any(|id| id == identity) {
            self.bound.remove(identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_agree_after_inserts_and_removals() {
        let (a, b) = (PublicIdentity([1; 32]), PublicIdentity([2; 32]));
        let mut bindings = Bindings::from_map(HashMap::from([("alice".to_owned(), a)]));
        assert_eq!(bindings.nick_of(&a), Some("alice"));
        assert_eq!(bindings.nick_of(&b), None);
        bindings.insert("alice".into(), b);
        assert_eq!(bindings.get("alice"), Some(&a), "a bound nickname keeps its identity");
        assert_eq!(bindings.nick_of(&b), None);
        bindings.insert("bob".into(), b);
        bindings.insert("bobby".into(), b);
        assert_eq!(bindings.len(), 3);
        bindings.remove("bob", &a);
        assert_eq!(bindings.get("bob"), Some(&b), "only the holder's binding is removed");
        bindings.remove("bob", &b);
        assert_eq!(bindings.nick_of(&b), Some("bobby"), "still bound under its other nickname");
        bindings.remove("bobby", &b);
        assert_eq!(bindings.nick_of(&b), None);
        assert_eq!(bindings.len(), 1);
    }
}
