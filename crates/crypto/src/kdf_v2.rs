//! Protocol v2 key derivation (docs/PROTOCOL.md section 20): the same Argon2id
//! parameters and rules as v1, under `chatroom/2` labels, split by HKDF-SHA256 into four
//! independent outputs. The password only decides who may enter; message keys come from MLS.

use std::fmt;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KdfError;
use crate::kdf::{argon2id_master, labelled_room_salt, JoinSecret, JoinVerifier, KdfParams, SafetyCode};
use crate::names::RoomName;

/// Everything a v2 member derives from the room password. `master` and the HKDF state are
/// wiped before this exists. Cloned only to enter again (each `V2Room` owns one copy).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RoomSecretsV2 {
    /// Shown to the relay at join (admission, as in v1).
    pub join_secret: JoinSecret,
    /// The MLS external pre-shared key every entry commit must carry.
    pub room_psk: RoomPsk,
    /// Seals the room's GroupInfo stored at the relay.
    pub group_info_key: GroupInfoKey,
    /// The 20 bytes the room code is formatted from.
    code_bytes: [u8; 20],
    #[zeroize(skip)]
    room_code: SafetyCode,
}

/// Length of `RoomSecretsV2::to_bytes`: join secret (32), room code bytes (20), MLS pre-shared
/// key (32), GroupInfo key (32).
pub const ROOM_SECRETS_V2_LEN: usize = 32 + 20 + 32 + 32;

impl RoomSecretsV2 {
    /// The code everyone holding the same password, relay key and parameters sees.
    pub fn room_code(&self) -> &SafetyCode {
        &self.room_code
    }

    /// `join_secret | code_bytes | room_psk | group_info_key`: how a password rotation carries
    /// the new outputs to members, and how a member's state file keeps them.
    pub fn to_bytes(&self) -> Zeroizing<[u8; ROOM_SECRETS_V2_LEN]> {
        let mut out = Zeroizing::new([0u8; ROOM_SECRETS_V2_LEN]);
        out[..32].copy_from_slice(self.join_secret.as_bytes());
        out[32..52].copy_from_slice(&self.code_bytes);
        out[52..84].copy_from_slice(self.room_psk.as_bytes());
        out[84..].copy_from_slice(self.group_info_key.as_bytes());
        out
    }

    /// The inverse of `to_bytes`.
    pub fn from_bytes(bytes: &[u8; ROOM_SECRETS_V2_LEN]) -> Self {
        let mut join = [0u8; 32];
        let mut code = [0u8; 20];
        let mut psk = [0u8; 32];
        let mut gik = [0u8; 32];
        join.copy_from_slice(&bytes[..32]);
        code.copy_from_slice(&bytes[32..52]);
        psk.copy_from_slice(&bytes[52..84]);
        gik.copy_from_slice(&bytes[84..]);
        let secrets = Self {
            join_secret: JoinSecret::from_bytes(join),
            code_bytes: code,
            room_psk: RoomPsk(psk),
            group_info_key: GroupInfoKey(gik),
            room_code: SafetyCode::from_code_bytes(&code),
        };
        // Clear intermediates
        join.zeroize();
        code.zeroize();
        psk.zeroize();
        gik.zeroize();
        secrets
    }
}

impl PartialEq for RoomSecretsV2 {
    /// In constant time.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.to_bytes().as_slice().ct_eq(other.to_bytes().as_slice()))
    }
}
impl Eq for RoomSecretsV2 {}

impl fmt::Debug for RoomSecretsV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomSecretsV2")
    }
}

/// The 32-byte value of the room's MLS external pre-shared key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RoomPsk([u8; 32]);

/// The 32-byte key that seals the room's GroupInfo (XChaCha20-Poly1305).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GroupInfoKey([u8; 32]);

macro_rules! secret_bytes {
    ($t:ident) => {
        impl $t {
            /// Wraps raw bytes (a state file, a test).
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            /// The raw bytes, for the MLS library or the AEAD.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    };
}
secret_bytes!(RoomPsk);
secret_bytes!(GroupInfoKey);

/// The v2 room salt: as v1's with the label `chatroom/2 room salt`, so no v2 key equals a v1 one.
pub fn room_salt_v2(relay_key: &[u8; 32], room: &RoomName, params: KdfParams) -> [u8; 32] {
    labelled_room_salt(b"chatroom/2 room salt", relay_key, room, params)
}

/// Argon2id (version 0x13, 32 bytes) of the password under the v2 salt, then the four outputs.
/// Deliberately slow: run it off the UI thread.
pub fn derive_room_secrets_v2(
    password: &[u8],
    relay_key: &[u8; 32],
    room: &RoomName,
    params: KdfParams,
) -> Result<RoomSecretsV2, KdfError> {
    let master = derive_master_v2(password, relay_key, room, params)?;
    Ok(split_master_v2(&master))
}

/// The Argon2id master of v2 (exposed for the test vectors).
pub fn derive_master_v2(
    password: &[u8],
    relay_key: &[u8; 32],
    room: &RoomName,
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    let params = params.validate()?;
    argon2id_master(password, &room_salt_v2(relay_key, room, params), params)
}

/// HKDF-SHA256 with salt `"chatroom/2"` over the master; one `info` label per output.
pub fn split_master_v2(master: &[u8; 32]) -> RoomSecretsV2 {
    let hk = Hkdf::<Sha256>::new(Some(b"chatroom/2"), master);
    let mut join = [0u8; 32];
    let mut psk = [0u8; 32];
    let mut gik = [0u8; 32];
    let mut code = Zeroizing::new([0u8; 20]);
    // The output lengths are far below HKDF's 255 * 32 byte limit, so expand cannot fail.
    let _ = hk.expand(b"chatroom/2 join secret", &mut join);
    let _ = hk.expand(b"chatroom/2 room code", code.as_mut());
    let _ = hk.expand(b"chatroom/2 mls psk", &mut psk);
    let _ = hk.expand(b"chatroom/2 group info key", &mut gik);
    let secrets = RoomSecretsV2 {
        join_secret: JoinSecret::from_bytes(join),
        code_bytes: *code,
        room_psk: RoomPsk(psk),
        group_info_key: GroupInfoKey(gik),
        room_code: SafetyCode::from_code_bytes(&code),
    };
    // Clear intermediates
    join.zeroize();
    psk.zeroize();
    gik.zeroize();
    secrets
}

/// `SHA-256("chatroom/2 join verifier" || join_secret)`: what a v2 relay stores.
pub fn join_verifier_v2(secret: &JoinSecret) -> JoinVerifier {
    let mut h = Sha256::new();
    h.update(b"chatroom/2 join verifier");
    h.update(secret.as_bytes());
    JoinVerifier(h.finalize().into())
}

/// The epoch code: `SHA-256("chatroom/2 epoch code" || u64(epoch) || epoch_authenticator)`,
/// first 20 bytes, formatted as the room code. Equal codes at one epoch mean one group state.
pub fn epoch_code(epoch: u64, epoch_authenticator: &[u8]) -> SafetyCode {
    let mut h = Sha256::new();
    h.update(b"chatroom/2 epoch code");
    h.update(epoch.to_be_bytes());
    h.update(epoch_authenticator);
    let digest: [u8; 32] = h.finalize().into();
    let mut code = [0u8; 20];
    code.copy_from_slice(&digest[..20]);
    SafetyCode::from_code_bytes(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_independent_and_differ_from_v1() {
        let v2 = split_master_v2(&[7; 32]);
        let v1 = crate::kdf::split_master(&[7; 32]);
        let outputs = [v2.join_secret.as_bytes(), v2.room_psk.as_bytes(), v2.group_info_key.as_bytes()];
        assert_ne!(outputs[0], outputs[1]);
        assert_ne!(outputs[1], outputs[2]);
        assert_ne!(outputs[0], outputs[2]);
        assert_ne!(v1.join_secret.as_bytes(), v2.join_secret.as_bytes());
        assert_ne!(v1.safety_code().as_str(), v2.room_code().as_str());
        assert_ne!(join_verifier_v2(&v2.join_secret), v2.join_secret.verifier());
    }

    #[test]
    fn secrets_round_trip_through_bytes_and_compare() {
        let s = split_master_v2(&[7; 32]);
        let back = RoomSecretsV2::from_bytes(&s.to_bytes());
        assert!(back == s);
        assert_eq!(back.room_code(), s.room_code());
        assert!(split_master_v2(&[8; 32]) != s);
    }

    #[test]
    fn salt_differs_from_v1_and_binds_inputs() {
        let room = RoomName::new("general").unwrap();
        let p = KdfParams::DEFAULT;
        assert_ne!(room_salt_v2(&[1; 32], &room, p), crate::kdf::room_salt(&[1; 32], &room, p));
        assert_ne!(room_salt_v2(&[1; 32], &room, p), room_salt_v2(&[2; 32], &room, p));
    }

    #[test]
    fn epoch_code_binds_epoch_and_authenticator() {
        let a = epoch_code(1, &[9; 32]);
        assert_ne!(a, epoch_code(2, &[9; 32]));
        assert_ne!(a, epoch_code(1, &[8; 32]));
        assert_eq!(a.as_str().len(), 29);
    }

    #[test]
    fn weak_params_refused_and_secrets_hidden_in_debug() {
        let room = RoomName::new("r").unwrap();
        let weak = KdfParams { m_kib: 8, t: 1, p: 1 };
        assert!(matches!(derive_room_secrets_v2(b"pw", &[0; 32], &room, weak), Err(KdfError::TooWeak(_))));
        let s = split_master_v2(&[7; 32]);
        assert_eq!(
            format!("{s:?} {:?} {:?}", s.room_psk, s.group_info_key),
            "RoomSecretsV2 RoomPsk GroupInfoKey"
        );
    }
}
