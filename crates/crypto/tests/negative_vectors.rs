//! Negative vectors: each file in `tests/negative/` is one hostile input with an `expect:`
//! header giving the exact error it must produce. Kinds: `envelope` (opened with the message
//! key of docs/PROTOCOL.md 17.2 in room "general"), `client-items` and `relay-items` (a
//! transport plaintext), `frame-32` (a frame header checked against the 32-byte limit of
//! handshake message 1).

use std::error::Error;
use std::fs;
use std::path::Path;

use chatroom_crypto::internal::message_key_from_bytes;
use chatroom_crypto::{check_frame_header, open, ClientMessage, RelayMessage, RoomName};

type TestResult = Result<(), Box<dyn Error>>;

const MESSAGE_KEY: &str = "c334b61c45036a1deb1a2424112e61149341d4e6f5b4f1232d1e77eb0ab31605";

fn outcome(kind: &str, bytes: &[u8]) -> Result<String, Box<dyn Error>> {
    let err = match kind {
        "envelope" => {
            let key = message_key_from_bytes(hex::decode(MESSAGE_KEY)?.as_slice().try_into()?);
            open(&key, &RoomName::new("general")?, bytes).err().map(|e| e.to_string())
        }
        "client-items" => ClientMessage::decode_all(bytes).err().map(|e| e.to_string()),
        "relay-items" => RelayMessage::decode_all(bytes).err().map(|e| e.to_string()),
        "frame-32" => {
            let header: [u8; 2] = bytes.try_into()?;
            check_frame_header(header, 32).err().map(|e| e.to_string())
        }
        other => return Err(format!("unknown kind {other}").into()),
    };
    Ok(err.unwrap_or_else(|| "accepted".to_owned()))
}

#[test]
fn every_negative_vector_fails_as_expected() -> TestResult {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/negative");
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let text = fs::read_to_string(&path)?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .ok_or(format!("{path:?}: no {name}"))
        };
        let got = outcome(field("kind:")?, &hex::decode(field("hex:")?)?)?;
        if got != field("expect:")? {
            failures.push(format!("{}: expected {:?}, got {got:?}", path.display(), field("expect:")?));
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} negative vectors found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
