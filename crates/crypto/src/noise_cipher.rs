//! ring's ChaCha20-Poly1305 for snow, keeping only the 32-byte key between uses.
//!
//! The same key type carries the transport messages after the handshake (section 5.1 of
//! docs/PROTOCOL.md): snow's split gives the two keys, and [`ChaChaPolyKey::seal_in_place`]
//! and [`ChaChaPolyKey::open_in_place`] work on the frame's own buffer, where snow's transport
//! state would take the plaintext from one buffer into another (a copy, and the zeroing of the
//! buffer it writes into, per byte sent).
//!
//! snow's ring resolver keeps a `ring::aead::LessSafeKey` per cipher state, a value sized for
//! ring's largest AEAD key (AES-GCM's schedule and tables), about 550 bytes, so the two
//! transport keys of every connection took about 1.1 KiB, idle or not. [`ChaChaPolyKey`]
//! keeps the key (wiped on drop) and builds ring's key for each seal or open, which for
//! ChaCha20-Poly1305 is a copy of the 32 bytes. The AEAD itself is ring's, unchanged.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use snow::types::Cipher;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Noise's `ChaChaPoly` cipher (its nonce: 32 zero bits, then the counter little-endian).
#[derive(Default)]
pub(crate) struct ChaChaPolyKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl ChaChaPolyKey {
    /// A key from one half of the handshake's split.
    pub(crate) fn new(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self { key }
    }

    fn ring_key(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, self.key.as_ref()).ok().map(LessSafeKey::new)
    }

    /// Encrypts `in_out` in place under nonce `counter` and associated data `ad`, and returns
    /// its tag; `None` only if ring refuses the length (far above a frame's).
    pub(crate) fn seal_in_place(&self, counter: u64, ad: &[u8], in_out: &mut [u8]) -> Option<Tag> {
        self.ring_key()?.seal_in_place_separate_tag(nonce(counter), Aad::from(ad), in_out).ok()
    }

    /// Decrypts the ciphertext `in_out` in place under nonce `counter` and associated data
    /// `ad`, checking it against the 16-byte `tag`; `None` if it does not authenticate.
    pub(crate) fn open_in_place(&self, counter: u64, ad: &[u8], in_out: &mut [u8], tag: &[u8]) -> Option<()> {
        let tag = Tag::try_from(tag).ok()?;
        let key = self.ring_key()?;
        key.open_in_place_separate_tag(nonce(counter), Aad::from(ad), tag, in_out, 0..).ok().map(|_| ())
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

impl Cipher for ChaChaPolyKey {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        *self.key = *key;
    }

    fn encrypt(&self, counter: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        out[..len].copy_from_slice(plaintext);
        match self.seal_in_place(counter, authtext, &mut out[..len]) {
            Some(tag) => out[len..len + TAG_LEN].copy_from_slice(tag.as_ref()),
            // Cannot happen (a 32-byte key, a frame far below ring's limit); if it did, the
            // zeroed output fails the peer's authentication and the connection closes.
            None => out[..len + TAG_LEN].fill(0),
        }
        len + TAG_LEN
    }

    fn decrypt(
        &self,
        counter: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        // The tag is passed apart, so `out` needs room for the plaintext only (snow's own
        // ring cipher copies the ciphertext to a new buffer when it has no more).
        let len = ciphertext.len().checked_sub(TAG_LEN).ok_or(snow::Error::Decrypt)?;
        let (body, tag) = ciphertext.split_at(len);
        let in_out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        in_out.copy_from_slice(body);
        self.open_in_place(counter, authtext, in_out, tag).ok_or(snow::Error::Decrypt)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snow::params::CipherChoice;
    use snow::resolvers::{CryptoResolver, RingResolver};

    /// The same bytes as snow's own ring cipher, both ways, and a forged tag refused.
    #[test]
    fn seals_and_opens_as_snows_ring_cipher_does() {
        let key = [7u8; KEY_LEN];
        let mut theirs = RingResolver.resolve_cipher(&CipherChoice::ChaChaPoly).unwrap();
        theirs.set(&key);
        let mut ours = ChaChaPolyKey::default();
        ours.set(&key);
        let plaintext = b"a frame's plaintext";
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let n = ours.encrypt(5, b"ad", plaintext, &mut a);
        assert_eq!(theirs.encrypt(5, b"ad", plaintext, &mut b), n);
        assert_eq!(a[..n], b[..n]);
        let mut out = [0u8; 64];
        assert_eq!(ours.decrypt(5, b"ad", &b[..n], &mut out).unwrap(), plaintext.len());
        assert_eq!(&out[..plaintext.len()], plaintext);
        a[n - 1] ^= 1;
        assert!(ours.decrypt(5, b"ad", &a[..n], &mut out).is_err());
        assert!(ours.decrypt(6, b"ad", &b[..n], &mut out).is_err(), "another nonce");
        assert!(ours.decrypt(5, b"ad", &b[..n], &mut [0u8; 8]).is_err(), "no room");
        let mut exact = vec![0u8; plaintext.len()];
        assert_eq!(
            ours.decrypt(5, b"ad", &b[..n], &mut exact).unwrap(),
            plaintext.len(),
            "room for the plaintext only"
        );
        assert_eq!(&exact[..], plaintext);
        assert!(ours.decrypt(5, b"ad", &b[..15], &mut out).is_err(), "shorter than a tag");
    }

    /// In place, with empty associated data: the bytes of the `Cipher` path, and only an
    /// intact message under its own nonce opens.
    #[test]
    fn seals_and_opens_in_place_as_the_cipher_path_does() {
        let key = [9u8; KEY_LEN];
        let ours = ChaChaPolyKey::new(Zeroizing::new(key));
        let mut reference = ChaChaPolyKey::default();
        reference.set(&key);
        let plaintext = b"items of one transport message";
        let mut expected = [0u8; 64];
        let n = reference.encrypt(3, &[], plaintext, &mut expected);
        let mut sealed = plaintext.to_vec();
        let tag = ours.seal_in_place(3, &[], &mut sealed).unwrap();
        sealed.extend_from_slice(tag.as_ref());
        assert_eq!(sealed, expected[..n]);
        let (body, tag) = sealed.split_at(plaintext.len());
        let mut opened = body.to_vec();
        assert_eq!(ours.open_in_place(3, &[], &mut opened, tag), Some(()));
        assert_eq!(&opened[..], plaintext);
        assert_eq!(ours.open_in_place(4, &[], &mut body.to_vec(), tag), None, "another nonce");
        assert_eq!(ours.open_in_place(3, b"ad", &mut body.to_vec(), tag), None, "other associated data");
        let mut forged = body.to_vec();
        forged[0] ^= 1;
        assert_eq!(ours.open_in_place(3, &[], &mut forged, tag), None, "an altered byte");
        assert_eq!(ours.open_in_place(3, &[], &mut body.to_vec(), &tag[..15]), None, "a short tag");
    }

    #[test]
    fn it_holds_only_its_key() {
        assert_eq!(std::mem::size_of::<ChaChaPolyKey>(), KEY_LEN);
    }
}
