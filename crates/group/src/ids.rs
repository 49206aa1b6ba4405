//! Names fixed by the protocol: the ciphersuite, the group id and the PSK id.

use chatroom_crypto::RoomName;
use mls_rs::psk::ExternalPskId;
use mls_rs::CipherSuite;
use sha2::{Digest, Sha256};

/// `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519` (0x0003), the only suite v2 uses.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::CURVE25519_CHACHA;

/// Which room on which relay a group belongs to, and the password generation it was entered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRef {
    /// The room's name.
    pub room: RoomName,
    /// The pinned relay's static public key.
    pub relay_key: [u8; 32],
    /// 0 for the room's first password, +1 per rotation.
    pub psk_generation: u32,
}

impl RoomRef {
    /// `SHA-256("chatroom/2 group id" || bytes8(room) || relay_key)`: one group per room and relay.
    pub fn group_id(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"chatroom/2 group id");
        h.update([self.room.as_str().len() as u8]);
        h.update(self.room.as_str().as_bytes());
        h.update(self.relay_key);
        h.finalize().to_vec()
    }

    /// `"chatroom/2 psk" || u32(psk_generation)`.
    pub fn psk_id(&self) -> ExternalPskId {
        let mut id = b"chatroom/2 psk".to_vec();
        id.extend_from_slice(&self.psk_generation.to_be_bytes());
        ExternalPskId::new(id)
    }
}
