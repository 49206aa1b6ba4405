//! Member identity pins for one room: the first identity key seen for a nickname is
//! remembered; a different key for that nickname later is reported, never silently accepted.

use std::collections::BTreeMap;

use chatroom_crypto::{Nick, PublicIdentity};

/// Most pins kept per room, so a relay announcing endless made-up members cannot grow the
/// state file without bound. Beyond it, new nicknames are checked but not remembered.
pub const MAX_PINS: usize = 100_000;

/// Nickname (canonical, lower case) -> identity key, for one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinStore {
    pins: BTreeMap<String, PublicIdentity>,
    /// One pinned nickname per identity, for the reverse question.
    by_identity: BTreeMap<PublicIdentity, String>,
}

/// The outcome of checking a (nickname, identity) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// First sight: the pair is now pinned.
    New,
    /// The pair matches its pin.
    Same,
    /// The nickname is pinned to another identity; the pin is kept.
    Changed {
        /// The identity pinned earlier.
        pinned: PublicIdentity,
    },
}

impl PinStore {
    /// Checks `nick` against its pin, pinning it on first sight.
    pub fn check(&mut self, nick: &Nick, identity: &PublicIdentity) -> PinCheck {
        match self.pins.get(&nick.canonical()) {
            None => {
                if self.pins.len() < MAX_PINS {
                    self.pins.insert(nick.canonical(), *identity);
                    self.by_identity.entry(*identity).or_insert_with(|| nick.canonical());
                }
                PinCheck::New
            }
            Some(pinned) if pinned == identity => PinCheck::Same,
            Some(pinned) => PinCheck::Changed { pinned: *pinned },
        }
    }

    /// The identity pinned for `nick`.
    pub fn get(&self, nick: &Nick) -> Option<&PublicIdentity> {
        self.pins.get(&nick.canonical())
    }

    /// A nickname pinned to `identity`, if any.
    pub fn nick_of(&self, identity: &PublicIdentity) -> Option<&str> {
        self.by_identity.get(identity).map(String::as_str)
    }

    /// Replaces a pin (loading from disk, or after the user accepted a new key).
    pub fn set(&mut self, nick: &Nick, identity: PublicIdentity) {
        if let Some(old) = self.pins.insert(nick.canonical(), identity) {
            if self.by_identity.get(&old) == Some(&nick.canonical()) {
                self.by_identity.remove(&old);
            }
        }
        self.by_identity.entry(identity).or_insert_with(|| nick.canonical());
    }

    /// Every pin, by canonical nickname.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PublicIdentity)> {
        self.pins.iter()
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether no pin exists.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_pins_and_a_change_is_reported_and_not_adopted() {
        let mut pins = PinStore::default();
        let bob = Nick::new("Bob").unwrap();
        let bob_lower = Nick::new("bob").unwrap();
        let (k1, k2) = (PublicIdentity([1; 32]), PublicIdentity([2; 32]));
        assert_eq!(pins.check(&bob, &k1), PinCheck::New);
        assert_eq!(pins.check(&bob_lower, &k1), PinCheck::Same);
        assert_eq!(pins.check(&bob_lower, &k2), PinCheck::Changed { pinned: k1 });
        assert_eq!(pins.check(&bob, &k2), PinCheck::Changed { pinned: k1 }, "still the old pin");
        assert_eq!(pins.get(&bob), Some(&k1));
        assert_eq!(pins.nick_of(&k1), Some("bob"));
        assert_eq!(pins.nick_of(&k2), None);
        pins.set(&bob, k2);
        assert_eq!(pins.nick_of(&k2), Some("bob"));
        assert_eq!(pins.nick_of(&k1), None);
        assert_eq!(pins.check(&bob, &k2), PinCheck::Same);
        assert_eq!(pins.len(), 1);
    }
}
