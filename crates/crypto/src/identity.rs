//! Long-term member identities (Ed25519, RFC 8032) and the fingerprints shown to people.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRngCore, OsRng};
use zeroize::Zeroizing;

/// A member's private identity. `SigningKey` zeroizes itself on drop.
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// A fresh identity from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng)
    }

    /// A fresh identity from the given generator (tests, vectors).
    pub fn generate_with(rng: &mut impl CryptoRngCore) -> Self {
        Self { signing: SigningKey::generate(rng) }
    }

    /// Rebuilds an identity from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self { signing: SigningKey::from_bytes(seed) }
    }

    /// The seed, for saving to a key file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity(self.signing.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity")
    }
}

/// A member's public identity key, as carried on the wire (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicIdentity(pub [u8; 32]);

impl PublicIdentity {
    /// Verifies a signature with RFC 8032 strict rules (no malleable or small-order keys).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }

    /// The full fingerprint: the key in lower-case hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.0)
    }

    /// A short form for tight spaces (first 8 bytes, grouped); never for pinning decisions.
    pub fn short_fingerprint(&self) -> String {
        short_fingerprint(&self.0)
    }
}

/// First 8 bytes of a key in hex, in groups of four: `ab12 cd34 ef56 7890`.
pub fn short_fingerprint(key: &[u8; 32]) -> String {
    let hex = hex::encode(&key[..8]);
    let groups: Vec<&str> = (0..4).map(|i| &hex[i * 4..i * 4 + 4]).collect();
    groups.join(" ")
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.short_fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_round_trip_and_signature() {
        let id = Identity::generate();
        let again = Identity::from_seed(&id.seed());
        assert_eq!(id.public(), again.public());
        let sig = id.sign(b"hello");
        assert!(id.public().verify(b"hello", &sig));
        assert!(!id.public().verify(b"hellp", &sig));
        assert!(!Identity::generate().public().verify(b"hello", &sig));
    }

    #[test]
    fn invalid_public_key_bytes_never_verify() {
        // Not a valid curve point encoding for many byte patterns; must just say "no".
        let bogus = PublicIdentity([0xff; 32]);
        assert!(!bogus.verify(b"x", &[0; 64]));
    }

    #[test]
    fn fingerprints() {
        let p = PublicIdentity([0xab; 32]);
        assert_eq!(p.fingerprint().len(), 64);
        assert_eq!(p.short_fingerprint(), "abab abab abab abab");
        assert_eq!(format!("{:?}", Identity::generate()), "Identity");
    }
}
