//! Protocol version 2's envelope (docs/PROTOCOL.md section 22.1): one MLSMessage,
//! signed by its sender's Ed25519 identity, with the clear header the relay checks.
//!
//! ```text
//! version(1)=2 | sender(32) | counter(8) | kind(1) | mls(n) | signature(64)
//! signed_data = "chatroom/2 envelope sig" || bytes8(room) || envelope[0..42+n]
//! ```
//! The relay reads the header only ([`EnvelopeHeader::parse_v2`]); MLS authenticates the
//! content, and the signature binds the counter (the relay's de-duplication key) to the sender.

use crate::codec::{put_bytes8, put_u64, put_u8};
use crate::envelope::EnvelopeHeader;
use crate::error::{DecodeError, OpenError};
use crate::identity::{Identity, PublicIdentity};
use crate::names::RoomName;

/// Version byte of a v2 envelope.
pub const ENVELOPE_V2_VERSION: u8 = 2;
/// version, sender, counter, kind.
pub const ENVELOPE_V2_HEADER_LEN: usize = 1 + 32 + 8 + 1;
/// The largest MLSMessage an envelope carries: 16 384 bytes (`MAX_MLS`).
pub const MAX_MLS_LEN: usize = 16_384;
const SIG_LEN: usize = 64;
/// Shortest v2 envelope: one byte of MLS (107 bytes).
pub const MIN_ENVELOPE_V2_LEN: usize = ENVELOPE_V2_HEADER_LEN + 1 + SIG_LEN;
/// Longest v2 envelope: `MAX_MLS_LEN` bytes of MLS (16 490 bytes).
pub const MAX_ENVELOPE_V2_LEN: usize = ENVELOPE_V2_HEADER_LEN + MAX_MLS_LEN + SIG_LEN;

/// A v2 envelope whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMls {
    /// Who signed it.
    pub sender: PublicIdentity,
    /// The sender's counter.
    pub counter: u64,
    /// The kind byte: 1 commit, 2 application message, 3 other handshake message.
    pub kind: u8,
    /// The MLSMessage, for the MLS layer.
    pub mls: Vec<u8>,
}

impl EnvelopeHeader {
    /// Checks a v2 envelope's length and version and reads its header, without any crypto:
    /// what the relay does before storing it.
    pub fn parse_v2(envelope: &[u8]) -> Result<Self, DecodeError> {
        if envelope.len() > MAX_ENVELOPE_V2_LEN {
            return Err(DecodeError::TooLong {
                what: "envelope",
                len: envelope.len(),
                max: MAX_ENVELOPE_V2_LEN,
            });
        }
        if envelope.len() < MIN_ENVELOPE_V2_LEN {
            return Err(DecodeError::TooShort {
                what: "envelope",
                len: envelope.len(),
                min: MIN_ENVELOPE_V2_LEN,
            });
        }
        if envelope[0] != ENVELOPE_V2_VERSION {
            return Err(DecodeError::UnsupportedVersion(envelope[0]));
        }
        let sender = PublicIdentity(envelope[1..33].try_into().map_err(|_| DecodeError::Truncated)?);
        let counter = u64::from_be_bytes(envelope[33..41].try_into().map_err(|_| DecodeError::Truncated)?);
        Ok(Self { sender, counter })
    }
}

fn signed_data(room: &RoomName, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(23 + 1 + room.as_str().len() + body.len());
    msg.extend_from_slice(b"chatroom/2 envelope sig");
    put_bytes8(&mut msg, room.as_str().as_bytes());
    msg.extend_from_slice(body);
    msg
}

/// Wraps an MLSMessage for `room`: header, then the sender's signature.
pub fn sign_v2(
    sender: &Identity,
    room: &RoomName,
    counter: u64,
    kind: u8,
    mls: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    if mls.is_empty() {
        return Err(DecodeError::TooShort { what: "MLS message", len: 0, min: 1 });
    }
    if mls.len() > MAX_MLS_LEN {
        return Err(DecodeError::TooLong { what: "MLS message", len: mls.len(), max: MAX_MLS_LEN });
    }
    let mut out = Vec::with_capacity(ENVELOPE_V2_HEADER_LEN + mls.len() + SIG_LEN);
    put_u8(&mut out, ENVELOPE_V2_VERSION);
    out.extend_from_slice(&sender.public().0);
    put_u64(&mut out, counter);
    put_u8(&mut out, kind);
    out.extend_from_slice(mls);
    let signature = sender.sign(&signed_data(room, &out));
    out.extend_from_slice(&signature);
    Ok(out)
}

/// Checks a v2 envelope of `room`: structure, a kind of 1 to 3, and the sender's signature.
pub fn verify_v2(room: &RoomName, envelope: &[u8]) -> Result<SignedMls, OpenError> {
    let header = EnvelopeHeader::parse_v2(envelope).map_err(|_| OpenError)?;
    let (body, signature) = envelope.split_at_checked(envelope.len() - SIG_LEN).ok_or(OpenError)?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| OpenError)?;
    let kind = body[ENVELOPE_V2_HEADER_LEN - 1];
    if !(1..=3).contains(&kind) || !header.sender.verify(&signed_data(room, body), &signature) {
        return Err(OpenError);
    }
    Ok(SignedMls {
        sender: header.sender,
        counter: header.counter,
        kind,
        mls: body[ENVELOPE_V2_HEADER_LEN..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn a_signed_envelope_verifies_only_unchanged_and_in_its_room() {
        let alice = Identity::from_seed(&[1; 32]);
        let env = sign_v2(&alice, &room("general"), 7, 2, b"mls bytes").unwrap();
        assert_eq!(env.len(), ENVELOPE_V2_HEADER_LEN + 9 + 64);
        let header = EnvelopeHeader::parse_v2(&env).unwrap();
        assert_eq!((header.sender, header.counter), (alice.public(), 7));
        let ok = verify_v2(&room("general"), &env).unwrap();
        assert_eq!((ok.kind, ok.mls.as_slice()), (2, &b"mls bytes"[..]));
        assert_eq!(verify_v2(&room("other"), &env), Err(OpenError));
        for i in [0, 1, 33, 41, 42, env.len() - 1] {
            let mut bad = env.clone();
            bad[i] ^= 1;
            assert_eq!(verify_v2(&room("general"), &bad), Err(OpenError), "byte {i} changed");
        }
    }

    #[test]
    fn lengths_versions_and_kinds_are_checked() {
        let alice = Identity::from_seed(&[1; 32]);
        let general = room("general");
        assert!(sign_v2(&alice, &general, 0, 1, &[]).is_err());
        assert!(sign_v2(&alice, &general, 0, 1, &[0; MAX_MLS_LEN + 1]).is_err());
        let max = sign_v2(&alice, &general, 0, 1, &[0; MAX_MLS_LEN]).unwrap();
        assert_eq!(max.len(), MAX_ENVELOPE_V2_LEN);
        assert!(verify_v2(&general, &max).is_ok());
        let mut long = max.clone();
        long.push(0);
        assert!(matches!(EnvelopeHeader::parse_v2(&long), Err(DecodeError::TooLong { .. })));
        assert!(matches!(
            EnvelopeHeader::parse_v2(&[2; MIN_ENVELOPE_V2_LEN - 1]),
            Err(DecodeError::TooShort { .. })
        ));
        let mut v1 = sign_v2(&alice, &general, 0, 1, b"x").unwrap();
        v1[0] = 1;
        assert_eq!(EnvelopeHeader::parse_v2(&v1), Err(DecodeError::UnsupportedVersion(1)));
        let kind4 = sign_v2(&alice, &general, 0, 4, b"x").unwrap();
        assert_eq!(verify_v2(&general, &kind4), Err(OpenError), "kind 4 is not defined");
    }
}
