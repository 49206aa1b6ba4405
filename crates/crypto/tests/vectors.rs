//! The test vectors of docs/PROTOCOL.md, checked against the code. The vectors are parsed out
//! of the document itself, so the specification and the implementation cannot drift apart.
//! On a mismatch the test prints the block the code computes.
//!
//! The names are shared out by prefix (PROTOCOL.md section 17): this file checks every name
//! outside `v2.` and the version-2 handshake and items (`v2.noise.`, `v2.item.`);
//! `crates/group/tests/vectors.rs` every other `v2.` name but the room extension
//! (`v2.extension.`, a unit test in `crates/group/src/settings.rs`) and the kind-4 and kind-5
//! payloads (`v2.rotate.`, `v2.history.`, a unit test in `crates/session/src/v2.rs`). Each
//! checks that the names of its share documented here are exactly the ones it computes, so
//! every documented vector is computed by one of them.

use std::collections::BTreeMap;
use std::error::Error;

use chatroom_crypto::internal::{
    derive_master, message_key_bytes, noise_transcript, noise_transcript_v2, seal_with_nonce,
};
use chatroom_crypto::*;

type TestResult = Result<(), Box<dyn Error>>;

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// Every `name = value` line inside the document's ```vectors blocks.
/// Whether this file checks the vector `name` (see the module comment).
fn checked_here(name: &str) -> bool {
    !name.starts_with("v2.") || name.starts_with("v2.noise.") || name.starts_with("v2.item.")
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
    let mut v: Vec<(&'static str, String)> = Vec::new();

    // Noise handshake with fixed ephemeral keys.
    let relay = StaticKeypair::from_private(&[0x42; 32]);
    let client = StaticKeypair::from_private(&[0x01; 32]);
    let [m1, m2, m3, hh] = noise_transcript(&client, &[0x02; 32], &relay, &[0x03; 32])?;
    v.push(("noise.relay_public", hex::encode(relay.public())));
    v.push(("noise.client_public", hex::encode(client.public())));
    v.push(("noise.msg1", hex::encode(&m1)));
    v.push(("noise.msg2", hex::encode(&m2)));
    v.push(("noise.msg3", hex::encode(&m3)));
    v.push(("noise.handshake_hash", hex::encode(&hh)));

    // Key derivation.
    let room = RoomName::new("general")?;
    let password = b"correct horse battery staple";
    let params = KdfParams::DEFAULT;
    let salt = room_salt(relay.public(), &room, params);
    let master = derive_master(password, relay.public(), &room, params)?;
    let keys = derive_room_keys(password, relay.public(), &room, params)?;
    v.push(("kdf.salt", hex::encode(salt)));
    v.push(("kdf.master", hex::encode(master.as_ref())));
    v.push(("kdf.message_key", hex::encode(message_key_bytes(&keys.message_key).as_ref())));
    v.push(("kdf.join_secret", hex::encode(keys.join_secret.as_bytes())));
    v.push(("kdf.join_verifier", hex::encode(keys.join_secret.verifier().0)));
    v.push(("kdf.safety_code", format!("\"{}\"", keys.safety_code())));

    // Identity.
    let alice = Identity::from_seed(&[0x11; 32]);
    v.push(("identity.public", alice.public().fingerprint()));

    // Envelope.
    let content = Content {
        timestamp_ms: 1_700_000_000_000,
        kind: ContentKind::Text,
        nick: Nick::new("alice")?,
        body: "hello, room".into(),
    };
    v.push((
        "envelope.content",
        hex::encode(chatroom_crypto::internal::encode_content(&content)?.as_slice()),
    ));
    let nonce: [u8; 24] = std::array::from_fn(|i| i as u8);
    let envelope =
        seal_with_nonce(&keys.message_key, &alice, &room, 1_700_000_000_000_000, &content, &nonce)?;
    v.push(("envelope.bytes", hex::encode(&envelope)));
    let opened = open(&keys.message_key, &room, &envelope)?;
    assert_eq!(opened.content, content);

    // Join request, signed over the handshake hash above.
    let hh: [u8; 32] = hh.as_slice().try_into()?;
    let join =
        JoinRequest::new(&alice, &hh, room.clone(), Nick::new("alice")?, keys.join_secret.clone(), true, 0);
    v.push(("join.signature", hex::encode(join.signature)));
    let mut item = Vec::new();
    ClientMessage::Join(join).encode(&mut item);
    v.push(("join.item", hex::encode(&item)));

    // Relay items.
    let mut ack = Vec::new();
    RelayMessage::Ack { counter: 1_700_000_000_000_000, seq: 7 }.encode(&mut ack);
    v.push(("item.ack", hex::encode(&ack)));
    let mut err = Vec::new();
    RelayMessage::Goodbye { code: ErrorCode::WrongPassword, detail: "wrong room password".into() }
        .encode(&mut err);
    v.push(("item.goodbye", hex::encode(&err)));
    let mut deliver = Vec::new();
    encode_deliver(7, true, &envelope, &mut deliver);
    v.push(("item.deliver_header", hex::encode(&deliver[..12])));
    let bob = Identity::from_seed(&[0x22; 32]);
    v.push(("identity.bob", bob.public().fingerprint()));
    v.extend(relay_items(&alice, &bob)?);
    v.extend(client_items(&envelope)?);
    v.extend(envelopes(&keys.message_key, &alice, &room)?);
    v.extend(transport(&item, &alice)?);
    v.extend(version_2(&alice, &room)?);
    Ok(v)
}

/// Version 2: the handshake of 17.1 under prologue `chatroom/2`, and the items v1 lacks.
fn version_2(alice: &Identity, room: &RoomName) -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let relay = StaticKeypair::from_private(&[0x42; 32]);
    let client = StaticKeypair::from_private(&[0x01; 32]);
    let [m1, m2, m3, hh] = noise_transcript_v2(&client, &[0x02; 32], &relay, &[0x03; 32])?;
    assert_eq!((m1.len(), m1.last()), (33, Some(&2)), "message 1 ends with the clear version byte");
    let hh: [u8; 32] = hh.as_slice().try_into()?;
    let secrets =
        derive_room_secrets_v2(b"correct horse battery staple", relay.public(), room, KdfParams::DEFAULT)?;
    let join =
        JoinRequest::new(alice, &hh, room.clone(), Nick::new("alice")?, secrets.join_secret.clone(), true, 0)
            .for_version_2();
    let part = GroupInfoPart { after_seq: 1, part: 0, parts: 1, chunk: b"group info".to_vec() };
    let error = |code, detail: &str| hex_item(&RelayMessage::Error { code, detail: detail.into() });
    Ok(vec![
        ("v2.noise.msg1", hex::encode(&m1)),
        ("v2.noise.msg2", hex::encode(&m2)),
        ("v2.noise.msg3", hex::encode(&m3)),
        ("v2.noise.handshake_hash", hex::encode(hh)),
        ("v2.item.join", hex_client(&ClientMessage::Join(join))),
        ("v2.item.put_group_info", hex_client(&ClientMessage::PutGroupInfo(part.clone()))),
        ("v2.item.get_group_info", hex_client(&ClientMessage::GetGroupInfo)),
        (
            "v2.item.set_verifier",
            hex_client(&ClientMessage::SetVerifier { verifier: join_verifier_v2(&secrets.join_secret).0 }),
        ),
        ("v2.item.group_info", hex_item(&RelayMessage::GroupInfo(part))),
        ("v2.item.group_info_stored", hex_item(&RelayMessage::GroupInfoStored { after_seq: 1 })),
        ("v2.item.error_too_large", error(ErrorCode::GroupInfoTooLarge, "too large")),
        ("v2.item.error_stale", error(ErrorCode::StaleGroupInfo, "stale")),
        ("v2.item.error_none", error(ErrorCode::NoGroupInfo, "none stored")),
    ])
}

fn hex_item(message: &RelayMessage) -> String {
    let mut out = Vec::new();
    message.encode(&mut out);
    hex::encode(out)
}

fn hex_client(message: &ClientMessage) -> String {
    let mut out = Vec::new();
    message.encode(&mut out);
    hex::encode(out)
}

/// The relay's first transport plaintext to the creator of "general": `Joined`, `Members`,
/// `HistoryEnd`.
fn first_relay_plaintext(alice: &Identity) -> Result<Vec<u8>, Box<dyn Error>> {
    let mut out = Vec::new();
    RelayMessage::Joined { created: true, owner: alice.public(), latest_seq: 0, oldest_seq: 0 }
        .encode(&mut out);
    let members = vec![Member { nick: Nick::new("alice")?, identity: alice.public() }];
    RelayMessage::Members { more: false, members }.encode(&mut out);
    RelayMessage::HistoryEnd { latest_seq: 0 }.encode(&mut out);
    Ok(out)
}

fn relay_items(alice: &Identity, bob: &Identity) -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let members = vec![
        Member { nick: Nick::new("alice")?, identity: alice.public() },
        Member { nick: Nick::new("Bob")?, identity: bob.public() },
    ];
    Ok(vec![
        (
            "item.joined",
            hex_item(&RelayMessage::Joined {
                created: false,
                owner: alice.public(),
                latest_seq: 9,
                oldest_seq: 4,
            }),
        ),
        ("item.members_more", hex_item(&RelayMessage::Members { more: true, members })),
        ("item.members_last", hex_item(&RelayMessage::Members { more: false, members: Vec::new() })),
        (
            "item.presence",
            hex_item(&RelayMessage::Presence {
                event: PresenceEvent::Joined,
                nick: Nick::new("Bob")?,
                identity: bob.public(),
            }),
        ),
        ("item.history_end", hex_item(&RelayMessage::HistoryEnd { latest_seq: 9 })),
        (
            "item.error",
            hex_item(&RelayMessage::Error {
                code: ErrorCode::NotOwner,
                detail: "only the room owner may kick, ban or unban".into(),
            }),
        ),
        (
            "item.send_error",
            hex_item(&RelayMessage::SendError {
                counter: 1_700_000_000_000_000,
                code: ErrorCode::Internal,
                detail: "try again later".into(),
            }),
        ),
        ("item.relay_ping", hex_item(&RelayMessage::Ping { token: 1 })),
        ("item.relay_pong", hex_item(&RelayMessage::Pong { token: 2 })),
    ])
}

fn client_items(envelope: &[u8]) -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let send = hex_client(&ClientMessage::Send { envelope: envelope.to_vec() });
    let bob = Nick::new("Bob")?;
    Ok(vec![
        ("item.send_header", send[..6].to_owned()),
        ("item.who", hex_client(&ClientMessage::Who)),
        ("item.kick", hex_client(&ClientMessage::Kick { nick: bob.clone() })),
        ("item.ban", hex_client(&ClientMessage::Ban { nick: bob.clone() })),
        ("item.unban", hex_client(&ClientMessage::Unban { nick: bob })),
        ("item.client_ping", hex_client(&ClientMessage::Ping { token: 3 })),
        ("item.client_pong", hex_client(&ClientMessage::Pong { token: 1 })),
    ])
}

/// An action (`/me`) envelope, and content whose encoding is exactly one padding block.
fn envelopes(
    key: &MessageKey,
    alice: &Identity,
    room: &RoomName,
) -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    use chatroom_crypto::internal::encode_content;
    let action = Content {
        timestamp_ms: 1_700_000_000_001,
        kind: ContentKind::Action,
        nick: Nick::new("alice")?,
        body: "waves".into(),
    };
    let nonce: [u8; 24] = std::array::from_fn(|i| 0x20 + i as u8);
    let sealed = seal_with_nonce(key, alice, room, 1_700_000_000_001_000, &action, &nonce)?;
    assert_eq!(open(key, room, &sealed)?.content, action);
    let exact = Content {
        timestamp_ms: 1_700_000_000_002,
        kind: ContentKind::Text,
        nick: Nick::new("alice")?,
        body: "exactly forty-seven bytes fill the first block.".into(),
    };
    let exact_bytes = encode_content(&exact)?;
    assert_eq!(exact_bytes.len(), 64, "12 fixed bytes + 5 + 47: no padding");
    let longer = Content { body: format!("{}!", exact.body), ..exact.clone() };
    let longer_bytes = encode_content(&longer)?;
    assert_eq!(longer_bytes.len(), 128, "one byte more: a second block");
    Ok(vec![
        ("envelope.action_content", hex::encode(encode_content(&action)?.as_slice())),
        ("envelope.action_bytes", hex::encode(&sealed)),
        ("envelope.content_one_block", hex::encode(exact_bytes.as_slice())),
        ("envelope.content_two_blocks", hex::encode(longer_bytes.as_slice())),
    ])
}

/// The first transport frame in each direction after the handshake of 17.1: the client's
/// holds `join.item`, the relay's `Joined`, `Members` and `HistoryEnd`.
fn transport(join_item: &[u8], alice: &Identity) -> Result<Vec<(&'static str, String)>, Box<dyn Error>> {
    let relay = StaticKeypair::from_private(&[0x42; 32]);
    let client = StaticKeypair::from_private(&[0x01; 32]);
    let (mut c, mut r) =
        chatroom_crypto::internal::noise_transports(&client, &[0x02; 32], &relay, &[0x03; 32])?;
    let mut up = Vec::new();
    c.seal_frame(join_item, &mut up)?;
    let relay_plaintext = first_relay_plaintext(alice)?;
    let mut down = Vec::new();
    r.seal_frame(&relay_plaintext, &mut down)?;
    assert_eq!(r.open(&up[2..])?, join_item);
    assert_eq!(c.open(&down[2..])?, relay_plaintext);
    Ok(vec![
        ("transport.relay_plaintext", hex::encode(&relay_plaintext)),
        ("transport.client_frame", hex::encode(&up)),
        ("transport.relay_frame", hex::encode(&down)),
    ])
}

#[test]
fn protocol_md_vectors_match_the_code() -> TestResult {
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
    assert_eq!(doc.len(), computed.len(), "docs/PROTOCOL.md documents vectors the test does not check");
    Ok(())
}

#[test]
fn documented_envelope_opens_and_reports_its_header() -> TestResult {
    let doc = documented();
    let key = hex::decode(doc.get("kdf.message_key").ok_or("missing kdf.message_key")?)?;
    let key = chatroom_crypto::internal::message_key_from_bytes(key.as_slice().try_into()?);
    let envelope = hex::decode(doc.get("envelope.bytes").ok_or("missing envelope.bytes")?)?;
    let opened = open(&key, &RoomName::new("general")?, &envelope)?;
    assert_eq!(opened.content.body, "hello, room");
    assert_eq!(opened.counter, 1_700_000_000_000_000);
    assert_eq!(opened.sender.fingerprint(), doc["identity.public"]);
    Ok(())
}
