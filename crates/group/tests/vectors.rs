//! The version-2 test vectors of docs/PROTOCOL.md (section 17.10: key derivation, group and
//! PSK ids, the epoch code, the outer envelope, the sealed GroupInfo), parsed out of the
//! document and checked against the code, so the two cannot drift apart. On a mismatch the
//! test prints the block the code computes.
//!
//! This file checks every `v2.` name outside the prefixes other tests own (see
//! `crates/crypto/tests/vectors.rs`, which checks every name outside `v2.`).

use std::collections::BTreeMap;
use std::error::Error;

use chatroom_crypto::{derive_master_v2, epoch_code, join_verifier_v2, room_salt_v2, split_master_v2};
use chatroom_crypto::{sign_v2, verify_v2, Identity, KdfParams, RoomName};
use chatroom_group::{open_group_info, seal_group_info_with_nonce, RoomRef};

type TestResult = Result<(), Box<dyn Error>>;

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");
/// Prefixes of `v2.` names that other tests check.
const CHECKED_ELSEWHERE: [&str; 5] = ["v2.noise.", "v2.item.", "v2.extension.", "v2.rotate.", "v2.history."];
/// `noise.relay_public` of docs/PROTOCOL.md section 17.1, the v1 vectors' relay key.
const RELAY_KEY: &str = "132c442be010fbd57e72603328aa76e71fccc1503aae219327d14d9c9993f472";

/// Whether this file checks the vector `name`.
fn checked_here(name: &str) -> bool {
    name.starts_with("v2.") && !CHECKED_ELSEWHERE.iter().any(|p| name.starts_with(p))
}

fn documented() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in chatroom_crypto::internal::documented_vectors(PROTOCOL_MD) {
        let previous = out.insert(k.to_owned(), v.to_owned());
        assert!(previous.is_none(), "vector {k} is documented twice");
    }
    out
}

fn computed() -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let relay_key: [u8; 32] = hex::decode(RELAY_KEY)?.try_into().map_err(|_| "relay key length")?;
    let room = RoomName::new("general")?;
    let params = KdfParams::DEFAULT;
    let master = derive_master_v2(b"correct horse battery staple", &relay_key, &room, params)?;
    let keys = split_master_v2(&master);
    let room_ref = RoomRef { room: room.clone(), relay_key, psk_generation: 0 };
    let sealed = seal_group_info_with_nonce(&keys.group_info_key, &room_ref, 1, b"group info", &[0x24; 24])?;
    assert_eq!(open_group_info(&keys.group_info_key, &room_ref, &sealed)?.group_info, b"group info");
    let envelope = sign_v2(&Identity::from_seed(&[0x01; 32]), &room, 1, 2, b"mls message")?;
    assert_eq!(verify_v2(&room, &envelope)?.mls, b"mls message");
    let quoted = |s: &str| format!("\"{s}\"");
    Ok(vec![
        ("v2.salt", hex::encode(room_salt_v2(&relay_key, &room, params))),
        ("v2.master", hex::encode(*master)),
        ("v2.join_secret", hex::encode(keys.join_secret.as_bytes())),
        ("v2.join_verifier", hex::encode(join_verifier_v2(&keys.join_secret).0)),
        ("v2.room_code", quoted(keys.room_code().as_str())),
        ("v2.room_psk", hex::encode(keys.room_psk.as_bytes())),
        ("v2.group_info_key", hex::encode(keys.group_info_key.as_bytes())),
        ("v2.psk_id", hex::encode(&*room_ref.psk_id())),
        ("v2.group_id", hex::encode(room_ref.group_id())),
        ("v2.epoch_code", quoted(epoch_code(1, &[0xab; 32]).as_str())),
        ("v2.sealed_group_info", hex::encode(sealed)),
        ("v2.envelope", hex::encode(envelope)),
    ])
}

#[test]
fn protocol_md_v2_vectors_match_the_code() -> TestResult {
    let doc: BTreeMap<String, String> = documented().into_iter().filter(|(k, _)| checked_here(k)).collect();
    let computed = computed()?;
    let block: String = computed.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    for (key, value) in &computed {
        match doc.get(*key) {
            Some(documented) if documented == value => {}
            other => {
                panic!("vector {key}: documented {other:?}, computed {value}\n\ncomputed block:\n{block}")
            }
        }
    }
    assert!(computed.iter().all(|(k, _)| checked_here(k)), "a computed name outside this file's share");
    assert_eq!(doc.len(), computed.len(), "docs/PROTOCOL.md documents v2 vectors the test does not check");
    Ok(())
}
