//! End-to-end envelopes: what a member seals for the room and the relay carries blind.
//!
//! ```text
//! version(1)=1 | sender(32) | counter(8) | nonce(24) | ciphertext(len(content)+16) | signature(64)
//! ```
//! XChaCha20-Poly1305 under the room's message key with associated data binding room, sender
//! and counter; then an Ed25519 signature by the sender over everything before it.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRngCore, OsRng};
use zeroize::Zeroizing;

use crate::codec::{put_bytes16, put_bytes8, put_u64, put_u8, Reader};
use crate::error::{DecodeError, OpenError};
use crate::identity::{Identity, PublicIdentity};
use crate::kdf::MessageKey;
use crate::names::{Nick, RoomName, MAX_NICK_LEN};

/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Longest message body, in bytes of UTF-8.
pub const MAX_BODY_LEN: usize = 4096;
/// Content is zero-padded to a multiple of this, hiding exact lengths from the relay.
pub const PAD_BLOCK: usize = 64;
/// Bytes before the ciphertext: version, sender, counter, nonce.
pub const HEADER_LEN: usize = 1 + 32 + 8 + 24;
const TAG_LEN: usize = 16;
const SIG_LEN: usize = 64;
const CONTENT_FIXED_LEN: usize = 8 + 1 + 1 + 2;
/// Longest valid envelope: a maximal body, padded, sealed and signed (4305 bytes).
pub const MAX_ENVELOPE_LEN: usize = HEADER_LEN
    + (CONTENT_FIXED_LEN + MAX_NICK_LEN + MAX_BODY_LEN).div_ceil(PAD_BLOCK) * PAD_BLOCK
    + TAG_LEN
    + SIG_LEN;
/// Shortest valid envelope: one padding block of content.
pub const MIN_ENVELOPE_LEN: usize = HEADER_LEN + PAD_BLOCK + TAG_LEN + SIG_LEN;

/// What kind of line a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// An ordinary message.
    Text = 1,
    /// An action (`/me waves`).
    Action = 2,
    /// The room's topic, set by its owner (`/topic`). Receivers ignore one from anyone else.
    Topic = 3,
}

/// The plaintext inside an envelope. Its `Debug` leaves out the body, so a stray `{:?}` in a
/// log line cannot leak what members said.
#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    /// Sender's clock, milliseconds since the Unix epoch. Informational only.
    pub timestamp_ms: u64,
    /// Text or action.
    pub kind: ContentKind,
    /// The sender's nickname, as the sender sees it.
    pub nick: Nick,
    /// The message, UTF-8, at most `MAX_BODY_LEN` bytes. Displayers must still neutralise
    /// control characters: the body is whatever another member typed.
    pub body: String,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Content")
            .field("timestamp_ms", &self.timestamp_ms)
            .field("kind", &self.kind)
            .field("nick", &self.nick)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Content {
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        if self.body.len() > MAX_BODY_LEN {
            return Err(DecodeError::TooLong {
                what: "message body",
                len: self.body.len(),
                max: MAX_BODY_LEN,
            });
        }
        let unpadded = CONTENT_FIXED_LEN + self.nick.as_str().len() + self.body.len();
        let mut out = Zeroizing::new(Vec::with_capacity(unpadded.div_ceil(PAD_BLOCK) * PAD_BLOCK));
        put_u64(&mut out, self.timestamp_ms);
        put_u8(&mut out, self.kind as u8);
        put_bytes8(&mut out, self.nick.as_str().as_bytes());
        put_bytes16(&mut out, self.body.as_bytes());
        let padded = unpadded.div_ceil(PAD_BLOCK).max(1) * PAD_BLOCK;
        out.resize(padded, 0);
        Ok(out)
    }

    /// The content's padded encoding (v1 section 8), which protocol version 2 carries as MLS
    /// application data.
    pub fn to_padded_bytes(&self) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        self.encode()
    }

    /// Decodes `to_padded_bytes`'s output, refusing non-zero padding.
    pub fn from_padded_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let timestamp_ms = r.u64()?;
        let kind = match r.u8()? {
            1 => ContentKind::Text,
            2 => ContentKind::Action,
            3 => ContentKind::Topic,
            other => return Err(DecodeError::UndefinedValue { what: "content kind", value: other.into() }),
        };
        let nick_bytes = r.bytes8("nickname", MAX_NICK_LEN)?;
        let nick = Nick::new(std::str::from_utf8(nick_bytes).map_err(|_| DecodeError::NotUtf8("nickname"))?)?;
        let body = r.str16("message body", MAX_BODY_LEN)?.to_owned();
        if r.remaining().iter().any(|&b| b != 0) {
            return Err(DecodeError::BadPadding);
        }
        Ok(Self { timestamp_ms, kind, nick, body })
    }
}

/// The cleartext header of an envelope: what the relay may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Who signed it.
    pub sender: PublicIdentity,
    /// The sender's message counter: strictly increasing per sender and room.
    pub counter: u64,
}

impl EnvelopeHeader {
    /// The counter field (bytes 33..41) of anything at least that long, whatever else is
    /// wrong with it: the relay names it when it refuses a `Send`, so the sender can tell
    /// which of its envelopes the refusal answers.
    pub fn peek_counter(envelope: &[u8]) -> Option<u64> {
        let bytes = envelope.get(33..41)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }

    /// Checks an envelope's length and version and reads its header, without any crypto. The
    /// relay uses this to refuse envelopes that claim another sender before relaying them.
    pub fn parse(envelope: &[u8]) -> Result<Self, DecodeError> {
        if envelope.len() > MAX_ENVELOPE_LEN {
            return Err(DecodeError::TooLong {
                what: "envelope",
                len: envelope.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        if envelope.len() < MIN_ENVELOPE_LEN {
            return Err(DecodeError::TooShort {
                what: "envelope",
                len: envelope.len(),
                min: MIN_ENVELOPE_LEN,
            });
        }
        let mut r = Reader::new(envelope);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let sender = PublicIdentity(r.array()?);
        let counter = r.u64()?;
        Ok(Self { sender, counter })
    }
}

/// A successfully opened envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// Who signed it (verified).
    pub sender: PublicIdentity,
    /// The sender's counter (authenticated).
    pub counter: u64,
    /// The decrypted content.
    pub content: Content,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("sender", &self.sender)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

fn associated_data(room: &RoomName, header: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(20 + 1 + room.as_str().len() + 41);
    ad.extend_from_slice(b"chatroom/1 envelope");
    put_bytes8(&mut ad, room.as_str().as_bytes());
    ad.extend_from_slice(&header[..41]);
    ad
}

fn signed_data(room: &RoomName, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(24 + 1 + room.as_str().len() + body.len());
    msg.extend_from_slice(b"chatroom/1 envelope sig");
    put_bytes8(&mut msg, room.as_str().as_bytes());
    msg.extend_from_slice(body);
    msg
}

/// Seals content for a room with a random nonce from the operating system.
pub fn seal(
    key: &MessageKey,
    sender: &Identity,
    room: &RoomName,
    counter: u64,
    content: &Content,
) -> Result<Vec<u8>, DecodeError> {
    seal_with(key, sender, room, counter, content, &mut OsRng)
}

/// Seals content with the given random number generator (tests, vectors).
pub fn seal_with(
    key: &MessageKey,
    sender: &Identity,
    room: &RoomName,
    counter: u64,
    content: &Content,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, DecodeError> {
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    seal_with_nonce(key, sender, room, counter, content, &nonce)
}

/// Seals with a caller-chosen nonce. Only for test vectors: a repeated nonce under one key
/// breaks confidentiality.
pub(crate) fn seal_with_nonce(
    key: &MessageKey,
    sender: &Identity,
    room: &RoomName,
    counter: u64,
    content: &Content,
    nonce: &[u8; 24],
) -> Result<Vec<u8>, DecodeError> {
    let plaintext = content.encode()?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN + SIG_LEN);
    put_u8(&mut out, ENVELOPE_VERSION);
    out.extend_from_slice(&sender.public().0);
    put_u64(&mut out, counter);
    out.extend_from_slice(nonce);
    let ad = associated_data(room, &out);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    // Encryption fails only for plaintexts beyond 2^38 bytes; ours are at most a few KiB.
    let ciphertext =
        cipher.encrypt(XNonce::from_slice(nonce), Payload { msg: &plaintext, aad: &ad }).map_err(|_| {
            DecodeError::TooLong { what: "message body", len: plaintext.len(), max: MAX_BODY_LEN }
        })?;
    out.extend_from_slice(&ciphertext);
    let signature = sender.sign(&signed_data(room, &out));
    out.extend_from_slice(&signature);
    Ok(out)
}

/// Opens an envelope of `room`: checks structure, the AEAD tag, the sender's signature and the
/// content, and releases the content only if all pass. Every crypto failure is one opaque
/// `OpenError`.
pub fn open(key: &MessageKey, room: &RoomName, envelope: &[u8]) -> Result<Opened, OpenError> {
    let header = EnvelopeHeader::parse(envelope).map_err(|_| OpenError)?;
    let (body, signature) = envelope.split_at_checked(envelope.len() - SIG_LEN).ok_or(OpenError)?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| OpenError)?;
    let (head, ciphertext) = body.split_at_checked(HEADER_LEN).ok_or(OpenError)?;
    let nonce = XNonce::from_slice(&head[41..HEADER_LEN]);
    let ad = associated_data(room, head);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let plaintext =
        Zeroizing::new(cipher.decrypt(nonce, Payload { msg: ciphertext, aad: &ad }).map_err(|_| OpenError)?);
    if !header.sender.verify(&signed_data(room, body), &signature) {
        return Err(OpenError);
    }
    // Authenticated but malformed content means a member's client is broken or hostile;
    // to the reader it is the same: not a message.
    let content = Content::decode(&plaintext).map_err(|_| OpenError)?;
    Ok(Opened { sender: header.sender, counter: header.counter, content })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::split_master;
    use proptest::prelude::*;

    fn fixture() -> (MessageKey, Identity, RoomName, Content) {
        let keys = split_master(&[9; 32]);
        let content = Content {
            timestamp_ms: 1_700_000_000_000,
            kind: ContentKind::Text,
            nick: Nick::new("alice").unwrap(),
            body: "hello, room".into(),
        };
        (keys.message_key.clone(), Identity::from_seed(&[1; 32]), RoomName::new("general").unwrap(), content)
    }

    #[test]
    fn seal_open_round_trip() {
        let (key, id, room, content) = fixture();
        let env = seal(&key, &id, &room, 42, &content).unwrap();
        assert_eq!(env.len(), MIN_ENVELOPE_LEN);
        let opened = open(&key, &room, &env).unwrap();
        assert_eq!(opened.sender, id.public());
        assert_eq!(opened.counter, 42);
        assert_eq!(opened.content, content);
        assert_eq!(EnvelopeHeader::parse(&env).unwrap(), EnvelopeHeader { sender: id.public(), counter: 42 });
    }

    #[test]
    fn largest_body_fits_the_maximum_and_one_more_byte_is_refused() {
        let (key, id, room, mut content) = fixture();
        content.nick = Nick::new(&"n".repeat(MAX_NICK_LEN)).unwrap();
        content.body = "x".repeat(MAX_BODY_LEN);
        let env = seal(&key, &id, &room, 1, &content).unwrap();
        assert_eq!(env.len(), MAX_ENVELOPE_LEN);
        assert!(open(&key, &room, &env).is_ok());
        content.body.push('x');
        assert!(seal(&key, &id, &room, 1, &content).is_err());
    }

    #[test]
    fn padding_edges_follow_the_specification() {
        let (_, _, _, mut content) = fixture();
        // 12 fixed bytes + "alice" + 47 bytes of body fill one block exactly: no padding.
        content.body = "b".repeat(47);
        let exact = content.encode().unwrap();
        assert_eq!(exact.len(), PAD_BLOCK);
        assert_eq!(Content::decode(&exact).unwrap(), content);
        content.body.push('b');
        assert_eq!(content.encode().unwrap().len(), 2 * PAD_BLOCK, "one byte more: a second block");
        // Receivers accept extra zero padding, and refuse a non-zero byte in it.
        let mut extra = exact.to_vec();
        extra.extend_from_slice(&[0; PAD_BLOCK + 3]);
        assert!(Content::decode(&extra).is_ok());
        *extra.last_mut().unwrap() = 1;
        assert_eq!(Content::decode(&extra), Err(DecodeError::BadPadding));
    }

    #[test]
    fn the_counter_is_read_from_anything_that_reaches_it() {
        let (key, id, room, content) = fixture();
        let env = seal(&key, &id, &room, 0x0102_0304_0506_0708, &content).unwrap();
        assert_eq!(EnvelopeHeader::peek_counter(&env), Some(0x0102_0304_0506_0708));
        assert_eq!(EnvelopeHeader::peek_counter(&env[..41]), Some(0x0102_0304_0506_0708));
        assert_eq!(EnvelopeHeader::peek_counter(&env[..40]), None);
    }

    #[test]
    fn every_kind_round_trips_and_an_undefined_one_is_refused() {
        let (_, _, _, mut content) = fixture();
        for kind in [ContentKind::Text, ContentKind::Action, ContentKind::Topic] {
            content.kind = kind;
            let bytes = content.encode().unwrap();
            assert_eq!(Content::decode(&bytes).unwrap().kind, kind);
        }
        let mut bytes = content.encode().unwrap();
        // timestamp_ms (8 bytes), then the kind.
        bytes[8] = 4;
        assert!(matches!(
            Content::decode(&bytes),
            Err(DecodeError::UndefinedValue { what: "content kind", value: 4 })
        ));
    }

    #[test]
    fn debug_never_shows_the_body() {
        let (_, _, _, content) = fixture();
        let shown = format!("{content:?}");
        assert!(!shown.contains("hello, room"), "{shown}");
        assert!(shown.contains("body_len: 11"), "{shown}");
    }

    #[test]
    fn wrong_room_or_key_fails() {
        let (key, id, room, content) = fixture();
        let env = seal(&key, &id, &room, 1, &content).unwrap();
        assert_eq!(open(&key, &RoomName::new("other").unwrap(), &env), Err(OpenError));
        let other = split_master(&[8; 32]);
        assert_eq!(open(&other.message_key, &room, &env), Err(OpenError));
    }

    #[test]
    fn retagged_sender_fails() {
        // Mallory holds the room key and re-signs Alice's envelope under her own identity.
        let (key, alice, room, content) = fixture();
        let mallory = Identity::from_seed(&[2; 32]);
        let mut env = seal(&key, &alice, &room, 1, &content).unwrap();
        env[1..33].copy_from_slice(&mallory.public().0);
        let body_len = env.len() - SIG_LEN;
        let sig = mallory.sign(&signed_data(&room, &env[..body_len]));
        env[body_len..].copy_from_slice(&sig);
        assert_eq!(open(&key, &room, &env), Err(OpenError));
    }

    #[test]
    fn member_with_room_key_cannot_forge_another_members_signature() {
        let (key, alice, room, content) = fixture();
        let mallory = Identity::from_seed(&[2; 32]);
        // Mallory seals a message claiming Alice's key in the header but signs it herself.
        let mut env = seal(&key, &mallory, &room, 1, &content).unwrap();
        env[1..33].copy_from_slice(&alice.public().0);
        assert_eq!(open(&key, &room, &env), Err(OpenError));
    }

    #[test]
    fn counter_is_authenticated() {
        let (key, id, room, content) = fixture();
        let mut env = seal(&key, &id, &room, 5, &content).unwrap();
        env[40] ^= 1;
        assert_eq!(open(&key, &room, &env), Err(OpenError));
    }

    #[test]
    fn header_parse_refuses_bad_sizes_and_versions() {
        let (key, id, room, content) = fixture();
        let env = seal(&key, &id, &room, 5, &content).unwrap();
        let mut v2 = env.clone();
        v2[0] = 2;
        assert_eq!(EnvelopeHeader::parse(&v2), Err(DecodeError::UnsupportedVersion(2)));
        assert!(matches!(
            EnvelopeHeader::parse(&env[..MIN_ENVELOPE_LEN - 1]),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(
            EnvelopeHeader::parse(&vec![1; MAX_ENVELOPE_LEN + 1]),
            Err(DecodeError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_bit_flip_fails(byte in 0usize..MIN_ENVELOPE_LEN, bit in 0u8..8) {
            let (key, id, room, content) = fixture();
            let mut env = seal(&key, &id, &room, 1, &content).unwrap();
            env[byte] ^= 1 << bit;
            prop_assert_eq!(open(&key, &room, &env), Err(OpenError));
        }

        #[test]
        fn truncation_or_extension_fails(cut in 1usize..MIN_ENVELOPE_LEN, extra in proptest::collection::vec(any::<u8>(), 1..80)) {
            let (key, id, room, content) = fixture();
            let env = seal(&key, &id, &room, 1, &content).unwrap();
            prop_assert_eq!(open(&key, &room, &env[..env.len() - cut]), Err(OpenError));
            let mut longer = env.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(open(&key, &room, &longer), Err(OpenError));
        }

        #[test]
        fn any_body_round_trips(body in "\\PC{0,300}", ts in any::<u64>(), action in any::<bool>(), counter in any::<u64>()) {
            let (key, id, room, mut content) = fixture();
            content.body = body;
            content.timestamp_ms = ts;
            content.kind = if action { ContentKind::Action } else { ContentKind::Text };
            let env = seal(&key, &id, &room, counter, &content).unwrap();
            prop_assert_eq!(env.len() % PAD_BLOCK, (HEADER_LEN + TAG_LEN + SIG_LEN) % PAD_BLOCK);
            let opened = open(&key, &room, &env).unwrap();
            prop_assert_eq!(opened.content, content);
            prop_assert_eq!(opened.counter, counter);
        }

        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (key, _, room, _) = fixture();
            prop_assert_eq!(open(&key, &room, &bytes), Err(OpenError));
        }
    }
}
