//! Room passphrases: a generator, and a guessability estimate for what people type.
//!
//! Generated passphrases are 4 groups of 5 characters from a 32-character alphabet without
//! look-alikes (`abcdefghijkmnpqrstuvwxyz23456789`: no `l`, `o`, `0`, `1`), drawn from the
//! operating system's CSPRNG: 20 characters of 5 bits each, 100 bits in all.

use rand_core::{CryptoRngCore, OsRng};
use zeroize::Zeroizing;

/// The generator's alphabet (32 characters, so each is exactly 5 random bits).
pub(crate) const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Groups in a generated passphrase.
pub(crate) const GROUPS: usize = 4;
/// Characters per group.
pub(crate) const GROUP_LEN: usize = 5;
/// Bits of entropy of a generated passphrase.
pub(crate) const BITS: usize = GROUPS * GROUP_LEN * 5;

/// A fresh passphrase such as `k7m2p-xq9ra-4tnvb-ce8hw`.
pub(crate) fn generate() -> Zeroizing<String> {
    generate_with(&mut OsRng)
}

/// A passphrase from the given generator (tests).
pub(crate) fn generate_with(rng: &mut impl CryptoRngCore) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; GROUPS * GROUP_LEN]);
    rng.fill_bytes(bytes.as_mut());
    let mut out = Zeroizing::new(String::with_capacity(GROUPS * (GROUP_LEN + 1)));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            out.push('-');
        }
        // 256 is a multiple of 32: the low five bits are uniform.
        out.push(char::from(ALPHABET[usize::from(b & 31)]));
    }
    out
}

/// How guessable a passphrase is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Strength {
    /// zxcvbn's score, 0 (trivial) to 4 (strong).
    pub(crate) score: u8,
    /// log10 of the estimated number of guesses.
    pub guesses_log10: u32,
    /// A human estimate of offline cracking time with a slow hash at 10^4 guesses per second.
    pub(crate) crack_time: String,
}

impl Strength {
    /// Whether to warn: fewer than about 10^12 guesses, hours to years for one machine
    /// against a room key derived with Argon2id, and far less for many.
    pub(crate) fn is_weak(&self) -> bool {
        self.guesses_log10 < 12
    }
}

/// Estimates the strength of `passphrase`, taking the room name and nickname as known words.
pub(crate) fn strength(passphrase: &str, context: &[&str]) -> Strength {
    let estimate = zxcvbn::zxcvbn(passphrase, context);
    Strength {
        score: u8::from(estimate.score()),
        guesses_log10: estimate.guesses_log10().max(0.0).floor() as u32,
        crack_time: estimate.crack_times().offline_slow_hashing_1e4_per_second().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passphrases_have_the_documented_shape_and_are_strong() {
        let a = generate();
        let b = generate();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), GROUPS * GROUP_LEN + GROUPS - 1);
        assert!(a.split('-').all(|g| g.len() == GROUP_LEN && g.bytes().all(|c| ALPHABET.contains(&c))));
        assert_eq!(BITS, 100);
        assert!(!strength(&a, &[]).is_weak(), "{:?}", strength(&a, &[]));
    }

    #[test]
    fn common_passwords_are_weak() {
        for weak in ["password", "hunter2", "general2024", "alice"] {
            let s = strength(weak, &["general", "alice"]);
            assert!(s.is_weak(), "{weak}: {s:?}");
        }
    }
}
