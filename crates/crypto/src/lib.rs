//! The sans-IO core of chatroom: room key derivation, end-to-end envelopes, member identities,
//! the join proof, the Noise handshake wrapper, and the frame and message codec.
//!
//! Nothing here opens a socket: functions take bytes and return values, and the relay and the
//! client own all I/O. `docs/PROTOCOL.md` is the specification this crate implements.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod envelope;
mod envelope_v2;
mod error;
mod frame;
mod handshake;
mod identity;
mod join;
mod kdf;
mod kdf_v2;
mod keyfile;
mod message;
mod names;
mod noise_cipher;
mod noise_dh;

pub use envelope::{
    open, seal, seal_with, Content, ContentKind, EnvelopeHeader, Opened, ENVELOPE_VERSION, HEADER_LEN,
    MAX_BODY_LEN, MAX_ENVELOPE_LEN, MIN_ENVELOPE_LEN, PAD_BLOCK,
};
pub use envelope_v2::{
    sign_v2, verify_v2, SignedMls, ENVELOPE_V2_HEADER_LEN, ENVELOPE_V2_VERSION, MAX_ENVELOPE_V2_LEN,
    MAX_MLS_LEN, MIN_ENVELOPE_V2_LEN,
};
pub use error::{DecodeError, Error, JoinError, KdfError, KeyFileError, NoiseError, OpenError};
pub use frame::{
    check_frame_header, decode_frame, encode_frame, FrameDecoder, FRAME_HEADER_LEN, MAX_FRAME_LEN,
};
pub use handshake::{
    Initiator, InitiatorAwaitingReply, InitiatorReadyToFinish, Responder, ResponderAwaitingFinish,
    StaticKeypair, Transport, TransportReceiver, TransportSender, HANDSHAKE1_LEN, HANDSHAKE1_V2_LEN,
    HANDSHAKE2_LEN, HANDSHAKE3_LEN, NOISE_PARAMS, PROLOGUE, PROLOGUE_V2,
};
pub use identity::{short_fingerprint, Identity, PublicIdentity};
pub use join::{JoinRequest, SignedJoin, VerifiedJoin};
pub use kdf::{
    derive_room_keys, room_salt, JoinSecret, JoinVerifier, KdfParams, MessageKey, RoomKeys, SafetyCode,
};
pub use kdf_v2::{
    derive_master_v2, derive_room_secrets_v2, epoch_code, join_verifier_v2, room_salt_v2, split_master_v2,
    GroupInfoKey, RoomPsk, RoomSecretsV2, ROOM_SECRETS_V2_LEN,
};
pub use keyfile::{load_or_create_identity, load_or_create_static, read_key_file, write_key_file, KeyKind};
pub use message::{
    encode_deliver, items, ClientMessage, ErrorCode, GroupInfoPart, Member, PresenceEvent, RelayMessage,
    ITEM_HEADER_LEN, MAX_DETAIL_LEN, MAX_GROUP_INFO_CHUNK, MAX_MEMBERS_PER_ITEM, MAX_PLAINTEXT_LEN,
    PROTOCOL_VERSION, PROTOCOL_VERSION_2,
};
pub use names::{Nick, RoomName, MAX_NICK_LEN, MAX_ROOM_LEN};

/// Re-exported so callers can hold secrets the same way this crate does.
pub use zeroize::{Zeroize, Zeroizing};

/// Hooks for the fuzz targets and the protocol's test vectors; not a stable API.
#[doc(hidden)]
pub mod internal {
    pub use crate::kdf::split_master;

    use crate::{Content, DecodeError, Identity, KdfError, KdfParams, MessageKey, NoiseError, RoomName};
    use crate::{StaticKeypair, Zeroizing};

    /// The Argon2id master key before the HKDF split.
    pub fn derive_master(
        password: &[u8],
        relay_key: &[u8; 32],
        room: &RoomName,
        params: KdfParams,
    ) -> Result<Zeroizing<[u8; 32]>, KdfError> {
        crate::kdf::derive_master(password, relay_key, room, params)
    }

    /// The raw message key.
    pub fn message_key_bytes(key: &MessageKey) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(key.0)
    }

    /// A message key from raw bytes.
    pub fn message_key_from_bytes(bytes: [u8; 32]) -> MessageKey {
        MessageKey(bytes)
    }

    /// Seals with a fixed nonce (vectors only).
    pub fn seal_with_nonce(
        key: &MessageKey,
        sender: &Identity,
        room: &RoomName,
        counter: u64,
        content: &Content,
        nonce: &[u8; 24],
    ) -> Result<Vec<u8>, DecodeError> {
        crate::envelope::seal_with_nonce(key, sender, room, counter, content, nonce)
    }

    /// The padded plaintext an envelope encrypts.
    pub fn encode_content(content: &Content) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        content.encode()
    }

    /// A handshake with fixed ephemeral keys: messages 1-3 and the handshake hash.
    pub fn noise_transcript(
        initiator: &StaticKeypair,
        initiator_ephemeral: &[u8; 32],
        responder: &StaticKeypair,
        responder_ephemeral: &[u8; 32],
    ) -> Result<[Vec<u8>; 4], NoiseError> {
        crate::handshake::vector_transcript(1, initiator, initiator_ephemeral, responder, responder_ephemeral)
    }

    /// `noise_transcript` for protocol version 2: prologue `chatroom/2`, message 1 carrying
    /// the clear payload `0x02` (33 bytes).
    pub fn noise_transcript_v2(
        initiator: &StaticKeypair,
        initiator_ephemeral: &[u8; 32],
        responder: &StaticKeypair,
        responder_ephemeral: &[u8; 32],
    ) -> Result<[Vec<u8>; 4], NoiseError> {
        crate::handshake::vector_transcript(2, initiator, initiator_ephemeral, responder, responder_ephemeral)
    }

    /// The fixed-key handshake of `noise_transcript`, both ends in transport mode:
    /// (client, relay).
    pub fn noise_transports(
        initiator: &StaticKeypair,
        initiator_ephemeral: &[u8; 32],
        responder: &StaticKeypair,
        responder_ephemeral: &[u8; 32],
    ) -> Result<(crate::Transport, crate::Transport), NoiseError> {
        crate::handshake::vector_transports(initiator, initiator_ephemeral, responder, responder_ephemeral)
    }

    /// Bytes a `FrameDecoder` holds and its buffer capacity: the fuzz targets check both stay
    /// within one header plus one maximal frame.
    pub fn frame_decoder_buffered(decoder: &crate::FrameDecoder) -> (usize, usize) {
        decoder.buffered()
    }

    /// Every `name = value` line inside the ```` ```vectors ```` blocks of `markdown`
    /// (docs/PROTOCOL.md), trimmed, in document order: what the tests of each crate check
    /// against the code.
    pub fn documented_vectors(markdown: &str) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in markdown.lines() {
            let t = line.trim();
            if t.starts_with("```") {
                inside = t == "```vectors";
                continue;
            }
            if let (true, Some((k, v))) = (inside, t.split_once(" = ")) {
                out.push((k.trim(), v.trim()));
            }
        }
        out
    }
}
