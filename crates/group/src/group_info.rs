//! The sealed GroupInfo the relay stores (docs/PROTOCOL.md section 22.3): XChaCha20-Poly1305 under the
//! password's GroupInfo key, with the room, the relay key, the PSK generation and the epoch in
//! the associated data, so the relay can neither read it nor move it to another room or epoch.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chatroom_crypto::GroupInfoKey;
use rand_core::{OsRng, RngCore};

use crate::error::GroupError;
use crate::ids::RoomRef;

/// Version byte of the sealed GroupInfo.
pub const SEALED_GROUP_INFO_VERSION: u8 = 0x02;
/// version (1) | psk_generation (4) | epoch (8) | nonce (24).
pub const SEALED_HEADER_LEN: usize = 37;
/// The largest sealed GroupInfo a client opens: 8 MiB (the relay's own limit is lower).
pub const MAX_SEALED_GROUP_INFO: usize = 8 * 1024 * 1024;
const TAG_LEN: usize = 16;

/// A GroupInfo taken out of its seal, with the header fields it was bound to.
#[derive(Debug)]
pub struct OpenedGroupInfo {
    /// The password generation the GroupInfo was sealed under.
    pub psk_generation: u32,
    /// The epoch the sealer claims (checked against the GroupInfo itself on entry).
    pub epoch: u64,
    /// The MLSMessage holding the GroupInfo.
    pub group_info: Vec<u8>,
}

fn associated_data(room: &RoomRef, header: &[u8]) -> Vec<u8> {
    let name = room.room.as_str().as_bytes();
    let mut ad = Vec::with_capacity(21 + 1 + name.len() + 32 + header.len());
    ad.extend_from_slice(b"chatroom/2 group info");
    ad.push(name.len() as u8);
    ad.extend_from_slice(name);
    ad.extend_from_slice(&room.relay_key);
    ad.extend_from_slice(header);
    ad
}

/// Seals a GroupInfo of `epoch` for the relay, under a fresh random nonce.
pub fn seal(
    key: &GroupInfoKey,
    room: &RoomRef,
    epoch: u64,
    group_info: &[u8],
) -> Result<Vec<u8>, GroupError> {
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(key, room, epoch, group_info, &nonce)
}

/// `seal` with a chosen nonce (test vectors only).
pub fn seal_with_nonce(
    key: &GroupInfoKey,
    room: &RoomRef,
    epoch: u64,
    group_info: &[u8],
    nonce: &[u8; 24],
) -> Result<Vec<u8>, GroupError> {
    if SEALED_HEADER_LEN + group_info.len() + TAG_LEN > MAX_SEALED_GROUP_INFO {
        return Err(GroupError::MalformedGroupInfo("larger than the 8 MiB limit"));
    }
    let mut out = Vec::with_capacity(SEALED_HEADER_LEN + group_info.len() + TAG_LEN);
    out.push(SEALED_GROUP_INFO_VERSION);
    out.extend_from_slice(&room.psk_generation.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(nonce);
    let ad = associated_data(room, &out);
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(nonce), Payload { msg: group_info, aad: &ad })
        .map_err(|_| GroupError::MalformedGroupInfo("cannot be sealed"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what the relay returned. Every AEAD failure is one opaque `GroupInfoKey` error.
pub fn open(key: &GroupInfoKey, room: &RoomRef, sealed: &[u8]) -> Result<OpenedGroupInfo, GroupError> {
    if sealed.len() > MAX_SEALED_GROUP_INFO {
        return Err(GroupError::MalformedGroupInfo("larger than the 8 MiB limit"));
    }
    if sealed.len() < SEALED_HEADER_LEN + TAG_LEN {
        return Err(GroupError::MalformedGroupInfo("shorter than its header and tag"));
    }
    let (header, body) = sealed.split_at(SEALED_HEADER_LEN);
    if header[0] != SEALED_GROUP_INFO_VERSION {
        return Err(GroupError::MalformedGroupInfo("unknown version"));
    }
    let mut generation = [0u8; 4];
    generation.copy_from_slice(&header[1..5]);
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&header[5..13]);
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let ad = associated_data(room, header);
    let group_info = cipher
        .decrypt(XNonce::from_slice(&header[13..37]), Payload { msg: body, aad: &ad })
        .map_err(|_| GroupError::GroupInfoKey)?;
    Ok(OpenedGroupInfo {
        psk_generation: u32::from_be_bytes(generation),
        epoch: u64::from_be_bytes(epoch),
        group_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatroom_crypto::RoomName;

    fn room(name: &str) -> RoomRef {
        RoomRef { room: RoomName::new(name).unwrap(), relay_key: [5; 32], psk_generation: 0 }
    }

    #[test]
    fn round_trip_binds_key_room_relay_and_header() {
        let key = GroupInfoKey::from_bytes([1; 32]);
        let sealed = seal(&key, &room("general"), 7, b"group info").unwrap();
        let opened = open(&key, &room("general"), &sealed).unwrap();
        assert_eq!((opened.epoch, opened.group_info.as_slice()), (7, &b"group info"[..]));

        let wrong_key = GroupInfoKey::from_bytes([2; 32]);
        assert!(matches!(open(&wrong_key, &room("general"), &sealed), Err(GroupError::GroupInfoKey)));
        assert!(matches!(open(&key, &room("other"), &sealed), Err(GroupError::GroupInfoKey)));
        let other_relay = RoomRef { relay_key: [6; 32], ..room("general") };
        assert!(matches!(open(&key, &other_relay, &sealed), Err(GroupError::GroupInfoKey)));
        // A relay that relabels the epoch (byte 12 is the epoch's last byte) is caught.
        let mut relabelled = sealed.clone();
        relabelled[12] ^= 1;
        assert!(matches!(open(&key, &room("general"), &relabelled), Err(GroupError::GroupInfoKey)));
    }

    #[test]
    fn malformed_input_is_refused_before_decrypting() {
        let key = GroupInfoKey::from_bytes([1; 32]);
        let r = room("general");
        assert!(matches!(open(&key, &r, &[2; 52]), Err(GroupError::MalformedGroupInfo(_))));
        let mut sealed = seal(&key, &r, 0, b"x").unwrap();
        sealed[0] = 1;
        assert!(matches!(open(&key, &r, &sealed), Err(GroupError::MalformedGroupInfo(_))));
        let huge = vec![0u8; MAX_SEALED_GROUP_INFO + 1];
        assert!(matches!(open(&key, &r, &huge), Err(GroupError::MalformedGroupInfo(_))));
        assert!(matches!(seal(&key, &r, 0, &huge), Err(GroupError::MalformedGroupInfo(_))));
    }
}
