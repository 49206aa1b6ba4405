//! Room key derivation: room password -> Argon2id (RFC 9106) -> room master key -> HKDF-SHA256
//! (RFC 5869) subkeys for message encryption, the relay join secret and the safety code.

use std::fmt;
use std::str::FromStr;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KdfError;
use crate::names::RoomName;

/// Argon2id cost parameters of a room. They are part of the room's identity (an invite carries
/// them; the default needs no mention) and are never taken from the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The v1 default and floor: 64 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams { m_kib: 65_536, t: 3, p: 1 };
    /// The ceiling: 1 GiB, 16 passes, 8 lanes.
    pub const MAX: KdfParams = KdfParams { m_kib: 1_048_576, t: 16, p: 8 };

    /// Checks the parameters against the floor and the ceiling.
    ///
    /// # Security
    /// A client must call this on parameters from any outside source (invite, config) so that
    /// nobody can weaken derivation or make a client spend minutes or gigabytes.
    pub fn validate(self) -> Result<Self, KdfError> {
        let floor = Self::DEFAULT;
        if self.m_kib < floor.m_kib || self.t < floor.t || self.p < floor.p {
            return Err(KdfError::TooWeak(self.to_string()));
        }
        let max = Self::MAX;
        if self.m_kib > max.m_kib || self.t > max.t || self.p > max.p {
            return Err(KdfError::TooCostly(self.to_string()));
        }
        Ok(self)
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}t{}p{}", self.m_kib, self.t, self.p)
    }
}

impl FromStr for KdfParams {
    type Err = KdfError;

    /// Parses `m65536t3p1` and validates it.
    fn from_str(s: &str) -> Result<Self, KdfError> {
        let syntax = || KdfError::Syntax(s.chars().take(40).collect());
        let rest = s.strip_prefix('m').ok_or_else(syntax)?;
        let (m, rest) = rest.split_once('t').ok_or_else(syntax)?;
        let (t, p) = rest.split_once('p').ok_or_else(syntax)?;
        let num = |v: &str| -> Result<u32, KdfError> {
            if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            v.parse().map_err(|_| syntax())
        };
        KdfParams { m_kib: num(m)?, t: num(t)?, p: num(p)? }.validate()
    }
}

/// The room salt: `SHA-256("chatroom/1 room salt" || len(room) || room || relay_key || params)`.
/// It depends only on what every member knows (room name, pinned relay key, parameters), so
/// the relay cannot choose it, and it differs per relay and per room, so no guess can be
/// precomputed across rooms.
pub fn room_salt(relay_key: &[u8; 32], room: &RoomName, params: KdfParams) -> [u8; 32] {
    labelled_room_salt(b"chatroom/1 room salt", relay_key, room, params)
}

/// SHA-256 over `label | len(room) | room | relay_key | m | t | p`: the salt layout every
/// protocol version shares, told apart by its label.
pub(crate) fn labelled_room_salt(
    label: &[u8],
    relay_key: &[u8; 32],
    room: &RoomName,
    params: KdfParams,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update([room.as_str().len() as u8]);
    h.update(room.as_str().as_bytes());
    h.update(relay_key);
    h.update(params.m_kib.to_be_bytes());
    h.update(params.t.to_be_bytes());
    h.update(params.p.to_be_bytes());
    h.finalize().into()
}

/// The secret a member shows the relay to join a room. The relay keeps only its verifier.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct JoinSecret([u8; 32]);

impl JoinSecret {
    /// Wraps bytes received from the wire.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for encoding a join request.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `SHA-256("chatroom/1 join verifier" || secret)`: what the relay stores. A copy of the
    /// relay's disk holds only this, which does not let anyone join.
    pub fn verifier(&self) -> JoinVerifier {
        let mut h = Sha256::new();
        h.update(b"chatroom/1 join verifier");
        h.update(self.0);
        JoinVerifier(h.finalize().into())
    }
}

impl PartialEq for JoinSecret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for JoinSecret {}

impl fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinSecret")
    }
}

/// The hash of a room's join secret, as the relay stores it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JoinVerifier(pub [u8; 32]);

impl JoinVerifier {
    /// Constant-time comparison with another verifier (that of a presented secret).
    pub(crate) fn ct_equals(&self, other: &JoinVerifier) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// Whether `secret` is this (version-1) verifier's join secret, compared in constant time.
    pub fn matches(&self, secret: &JoinSecret) -> bool {
        bool::from(self.0.ct_eq(&secret.verifier().0))
    }
}

impl fmt::Debug for JoinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinVerifier")
    }
}

/// The symmetric key that seals envelopes of one room.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MessageKey(pub(crate) [u8; 32]);

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey")
    }
}

/// Everything a member derives from the room password.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RoomKeys {
    /// Seals and opens envelopes.
    pub message_key: MessageKey,
    /// Shown to the relay at join.
    pub join_secret: JoinSecret,
    #[zeroize(skip)]
    safety_code: SafetyCode,
}

impl fmt::Debug for RoomKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomKeys")
    }
}

impl RoomKeys {
    /// The code members compare out of band to confirm they share one room key.
    pub fn safety_code(&self) -> &SafetyCode {
        &self.safety_code
    }
}

/// 25 decimal digits in five groups, e.g. `04821 99310 ...`, derived from the room key.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyCode(String);

impl SafetyCode {
    /// Five groups of `u32(4 bytes) mod 100000`, zero-padded, from 20 bytes (every version's
    /// codes: v1's safety code, v2's room and epoch codes).
    pub(crate) fn from_code_bytes(code: &[u8; 20]) -> Self {
        let groups: Vec<String> = code
            .chunks_exact(4)
            .map(|c| format!("{:05}", u32::from_be_bytes([c[0], c[1], c[2], c[3]]) % 100_000))
            .collect();
        Self(groups.join(" "))
    }

    /// The code as displayed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyCode({})", self.0)
    }
}

/// Derives the room master key with Argon2id and splits it into the room's keys.
///
/// This is deliberately slow (about 0.1 s of one core and 64 MiB at the defaults in an
/// optimised build); run it off the UI thread.
pub fn derive_room_keys(
    password: &[u8],
    relay_key: &[u8; 32],
    room: &RoomName,
    params: KdfParams,
) -> Result<RoomKeys, KdfError> {
    let master = derive_master(password, relay_key, room, params)?;
    Ok(split_master(&master))
}

/// Argon2id (version 0x13, 32-byte output) of the password under the room salt.
pub(crate) fn derive_master(
    password: &[u8],
    relay_key: &[u8; 32],
    room: &RoomName,
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    let params = params.validate()?;
    argon2id_master(password, &room_salt(relay_key, room, params), params)
}

/// Argon2id (version 0x13, 32-byte output) of the password under `salt`, with validated
/// parameters; shared by every protocol version.
pub(crate) fn argon2id_master(
    password: &[u8],
    salt: &[u8; 32],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    let argon_params = Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| KdfError::Argon2(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params.clone());
    let mut master = Zeroizing::new([0u8; 32]);
    // argon2's own allocation is freed without being wiped; its 64 MiB or more of
    // password-dependent blocks live in a buffer we zeroize on drop instead.
    let blocks = Zeroizing::new(vec![Block::default(); argon_params.block_count()]);
    argon
        .hash_password_into_with_memory(password, salt, master.as_mut(), blocks)
        .map_err(|e| KdfError::Argon2(e.to_string()))?;
    Ok(master)
}

/// HKDF-SHA256 with salt `"chatroom/1"` over the master key; one `info` label per subkey.
pub fn split_master(master: &[u8; 32]) -> RoomKeys {
    let hk = Hkdf::<Sha256>::new(Some(b"chatroom/1"), master);
    let mut message_key = [0u8; 32];
    let mut join_secret = [0u8; 32];
    let mut code = Zeroizing::new([0u8; 20]);
    // The output lengths are far below HKDF's 255 * 32 byte limit, so expand cannot fail.
    let _ = hk.expand(b"chatroom/1 message key", &mut message_key);
    let _ = hk.expand(b"chatroom/1 join secret", &mut join_secret);
    let _ = hk.expand(b"chatroom/1 safety code", code.as_mut());
    let keys = RoomKeys {
        message_key: MessageKey(message_key),
        join_secret: JoinSecret(join_secret),
        safety_code: SafetyCode::from_code_bytes(&code),
    };
    // Clear intermediates
    message_key.zeroize();
    join_secret.zeroize();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_bounds() {
        assert_eq!("m65536t3p1".parse::<KdfParams>(), Ok(KdfParams::DEFAULT));
        assert_eq!("m131072t4p2".parse::<KdfParams>(), Ok(KdfParams { m_kib: 131_072, t: 4, p: 2 }));
        assert!(matches!("m1024t3p1".parse::<KdfParams>(), Err(KdfError::TooWeak(_))));
        assert!(matches!("m65536t2p1".parse::<KdfParams>(), Err(KdfError::TooWeak(_))));
        assert!(matches!("m65536t3p0".parse::<KdfParams>(), Err(KdfError::TooWeak(_))));
        assert!(matches!("m2097152t3p1".parse::<KdfParams>(), Err(KdfError::TooCostly(_))));
        assert!(matches!("m65536t17p1".parse::<KdfParams>(), Err(KdfError::TooCostly(_))));
        for bad in ["", "65536t3p1", "m65536t3", "m-1t3p1", "m+65536t3p1", "m99999999999t3p1", "mt3p1"] {
            assert!(matches!(bad.parse::<KdfParams>(), Err(KdfError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn derive_refuses_weak_params_before_any_work() {
        let room = RoomName::new("r").unwrap();
        let weak = KdfParams { m_kib: 8, t: 1, p: 1 };
        assert!(matches!(derive_room_keys(b"pw", &[0; 32], &room, weak), Err(KdfError::TooWeak(_))));
    }

    #[test]
    fn salt_binds_room_relay_and_params() {
        let a = RoomName::new("a").unwrap();
        let b = RoomName::new("b").unwrap();
        let p = KdfParams::DEFAULT;
        let base = room_salt(&[1; 32], &a, p);
        assert_ne!(base, room_salt(&[1; 32], &b, p));
        assert_ne!(base, room_salt(&[2; 32], &a, p));
        assert_ne!(base, room_salt(&[1; 32], &a, KdfParams { t: 4, ..p }));
    }

    #[test]
    fn subkeys_are_independent_and_verifier_matches_in_constant_time() {
        let keys = split_master(&[7; 32]);
        assert_ne!(keys.message_key.0, *keys.join_secret.as_bytes());
        let v = keys.join_secret.verifier();
        assert!(v.matches(&keys.join_secret));
        assert!(!v.matches(&JoinSecret::from_bytes([0; 32])));
        let code = keys.safety_code().as_str();
        assert_eq!(code.len(), 29);
        assert!(code.split(' ').all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let keys = split_master(&[7; 32]);
        assert_eq!(format!("{keys:?}"), "RoomKeys");
        assert_eq!(format!("{:?}", keys.join_secret), "JoinSecret");
        assert_eq!(format!("{:?}", keys.message_key), "MessageKey");
    }
}
