//! snow's crypto resolver with one change: X25519 that knows the local static key pair.
//!
//! snow 0.10's `Builder` takes only the static private key and derives its public half in
//! `build`, a fixed-base scalar multiplication on every handshake, although the key pair's
//! public half was computed once when it was loaded. [`KnownKeyResolver`] hands snow an X25519
//! whose `set` takes the known public half when given the known private key, and derives it
//! (x25519-dalek) for any other key. The Diffie-Hellman itself is x25519-dalek's, as in snow's
//! default resolver; every other primitive comes from the resolver it wraps.

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::noise_cipher::ChaChaPolyKey;

const KEY_LEN: usize = 32;

/// A private key and the public key it is known to give.
#[derive(Clone)]
struct KnownKey {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
}

/// Wraps `inner`, replacing its Curve25519 with [`KnownKeyDh`] for the given key pair and its
/// ChaCha20-Poly1305 with ring's behind [`ChaChaPolyKey`], which keeps only the key.
pub(crate) struct KnownKeyResolver {
    inner: BoxedCryptoResolver,
    known: KnownKey,
}

impl KnownKeyResolver {
    /// `public` must be the X25519 public key of `private` (a `StaticKeypair`'s halves).
    pub(crate) fn new(inner: BoxedCryptoResolver, private: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> Self {
        Self { inner, known: KnownKey { private: Zeroizing::new(*private), public: *public } }
    }
}

impl CryptoResolver for KnownKeyResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.inner.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(KnownKeyDh::new(self.known.clone()))),
            _ => self.inner.resolve_dh(choice),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.inner.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::<ChaChaPolyKey>::default()),
            _ => self.inner.resolve_cipher(choice),
        }
    }
}

/// X25519 for snow (its name "25519"), with the public key of the known private key cached.
/// The secret is x25519-dalek's `StaticSecret`, wiped when dropped.
pub(crate) struct KnownKeyDh {
    known: KnownKey,
    secret: StaticSecret,
    public: [u8; KEY_LEN],
}

impl KnownKeyDh {
    fn new(known: KnownKey) -> Self {
        Self { known, secret: StaticSecret::from([0u8; KEY_LEN]), public: [0u8; KEY_LEN] }
    }

    /// Takes `private` (zero-padded or cut to 32 bytes, as snow's own X25519 does) and its
    /// public key: the cached one for the known key, else derived.
    fn set_private(&mut self, private: Zeroizing<[u8; KEY_LEN]>) {
        let is_known: bool = private[..].ct_eq(&self.known.private[..]).into();
        self.secret = StaticSecret::from(*private);
        self.public = if is_known { self.known.public } else { PublicKey::from(&self.secret).to_bytes() };
    }
}

impl Dh for KnownKeyDh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        let n = privkey.len().min(KEY_LEN);
        bytes[..n].copy_from_slice(&privkey[..n]);
        self.set_private(bytes);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.try_fill_bytes(bytes.as_mut())?;
        self.set_private(bytes);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs: [u8; KEY_LEN] =
            pubkey.get(..KEY_LEN).and_then(|k| k.try_into().ok()).ok_or(snow::Error::Dh)?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(theirs));
        let out = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
        out.copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::StaticKeypair;

    fn known_dh(pair: &StaticKeypair) -> KnownKeyDh {
        KnownKeyDh::new(KnownKey { private: Zeroizing::new(*pair.private()), public: *pair.public() })
    }

    #[test]
    fn the_known_key_gets_its_public_key_and_others_are_derived() {
        let pair = StaticKeypair::generate();
        let mut dh = known_dh(&pair);
        dh.set(pair.private());
        let derived = PublicKey::from(&StaticSecret::from(*pair.private())).to_bytes();
        assert_eq!(dh.pubkey(), &derived);
        assert_eq!(dh.privkey(), pair.private());

        let other = StaticKeypair::generate();
        dh.set(other.private());
        assert_eq!(dh.pubkey(), other.public());
        assert_ne!(dh.pubkey(), pair.public());
    }

    /// The cached public key is what `set` gives for the known private key, with no derivation:
    /// a pair whose "public" half is deliberately another key's shows it.
    #[test]
    fn the_known_key_is_not_derived_again() {
        let (pair, other) = (StaticKeypair::generate(), StaticKeypair::generate());
        let mut dh =
            KnownKeyDh::new(KnownKey { private: Zeroizing::new(*pair.private()), public: *other.public() });
        dh.set(pair.private());
        assert_eq!(dh.pubkey(), other.public());
    }

    #[test]
    fn diffie_hellman_matches_x25519_dalek_and_refuses_short_keys() {
        let (a, b) = (StaticKeypair::generate(), StaticKeypair::generate());
        let mut dh = known_dh(&a);
        dh.set(a.private());
        let mut out = [0u8; 32];
        dh.dh(b.public(), &mut out).expect("dh");
        let expected = StaticSecret::from(*b.private()).diffie_hellman(&PublicKey::from(*a.public()));
        assert_eq!(&out, expected.as_bytes());
        assert!(dh.dh(&b.public()[..31], &mut out).is_err());
        assert!(dh.dh(b.public(), &mut [0u8; 31]).is_err());
    }
}
