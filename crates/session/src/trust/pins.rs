//! Member identity pins for one room: the first identity key that signed a message under a
//! nickname is remembered; a different key for that nickname later is reported, never
//! silently accepted. Pins are made from verified envelopes only, never from what the relay
//! announces. Nicknames that look alike (case, `I`/`l`/`1`, `O`/`0`, `rn`/`m`) share a
//! skeleton, so a newcomer imitating a pinned member can be flagged.

use std::collections::{BTreeMap, BTreeSet};

use chatroom_crypto::{Nick, PublicIdentity};

/// Most pins kept per room, so the state file stays bounded. Beyond it the store fails
/// closed: a nickname that cannot be pinned is never shown as a member's (`PinCheck::Full`).
pub const MAX_PINS: usize = 100_000;

/// Nickname (canonical, lower case) -> identity key, for one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinStore {
    pins: BTreeMap<String, PublicIdentity>,
    /// One pinned nickname per identity, for the reverse question.
    by_identity: BTreeMap<PublicIdentity, String>,
    /// Look-alike skeleton -> the canonical nicknames pinned with it.
    skeletons: BTreeMap<String, BTreeSet<String>>,
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
    /// The nickname is not pinned and the store is full: nothing was pinned.
    Full,
}

/// The form of a nickname under which look-alikes collide: lower case, `i` and `1` read as
/// `l`, `0` as `o`, `-` as `_`, `rn` as `m`, `vv` as `w`.
pub fn skeleton(nick: &str) -> String {
    let mapped: String = nick
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'i' | '1' => 'l',
            '-' => '_',
            '0' => 'o',
            other => other,
        })
        .collect();
    mapped.replace("rn", "m").replace("vv", "w")
}

impl PinStore {
    /// Checks `nick` against its pin, pinning it on first sight. Call it only with the
    /// signer of a verified envelope.
    pub fn check(&mut self, nick: &Nick, identity: &PublicIdentity) -> PinCheck {
        match self.compare(nick, identity) {
            None if self.pins.len() >= MAX_PINS => PinCheck::Full,
            None => {
                self.set(nick, *identity);
                PinCheck::New
            }
            Some(check) => check,
        }
    }

    /// Compares `nick` and `identity` with the pins without pinning anything (for what the
    /// relay claims): `None` when the nickname is not pinned.
    pub fn compare(&self, nick: &Nick, identity: &PublicIdentity) -> Option<PinCheck> {
        match self.pins.get(&nick.canonical()) {
            None => None,
            Some(pinned) if pinned == identity => Some(PinCheck::Same),
            Some(pinned) => Some(PinCheck::Changed { pinned: *pinned }),
        }
    }

    /// Another pinned nickname that `nick` could be mistaken for, if any.
    pub fn look_alike(&self, nick: &Nick) -> Option<&str> {
        let canonical = nick.canonical();
        let same = self.skeletons.get(&skeleton(&canonical))?;
        same.iter().find(|other| **other != canonical).map(String::as_str)
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
        let canonical = nick.canonical();
        if let Some(old) = self.pins.insert(canonical.clone(), identity) {
            if self.by_identity.get(&old) == Some(&canonical) {
                self.by_identity.remove(&old);
            }
        }
        self.by_identity.entry(identity).or_insert_with(|| canonical.clone());
        self.skeletons.entry(skeleton(&canonical)).or_default().insert(canonical);
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

    #[test]
    fn look_alike_nicknames_are_found_both_ways() {
        let mut pins = PinStore::default();
        let nick = |s: &str| Nick::new(s).unwrap();
        pins.check(&nick("Alice"), &PublicIdentity([1; 32]));
        pins.check(&nick("bob"), &PublicIdentity([2; 32]));
        assert_eq!(pins.look_alike(&nick("alice")), None);
        for fake in ["AIice", "al1ce", "A1ice"] {
            assert_eq!(pins.look_alike(&nick(fake)), Some("alice"), "{fake}");
        }
        pins.check(&nick("AIice"), &PublicIdentity([3; 32]));
        assert_eq!(pins.look_alike(&nick("alice")), Some("aiice"));
        assert_eq!(skeleton("rnallory"), "mallory");
        assert_eq!(skeleton("vvendy"), "wendy");
        assert_eq!(pins.look_alike(&nick("b0b")), Some("bob"));
    }

    #[test]
    fn a_full_store_pins_nothing_more_and_says_so() {
        let mut pins = PinStore::default();
        for i in 0..MAX_PINS {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            pins.set(&Nick::new(&format!("n{i}")).unwrap(), PublicIdentity(id));
        }
        let late = Nick::new("late").unwrap();
        assert_eq!(pins.check(&late, &PublicIdentity([9; 32])), PinCheck::Full);
        assert_eq!(pins.get(&late), None);
        assert_eq!(
            pins.check(&Nick::new("n7").unwrap(), &PublicIdentity([9; 32])),
            PinCheck::Changed {
                pinned: {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&7u64.to_be_bytes());
                    PublicIdentity(id)
                }
            }
        );
    }
}
