//! Scenario 2, nothing readable on the wire or on the relay's disk: a tap between the
//! clients and the relay records every byte both ways; a random canary sent as a message and
//! the room password appear nowhere in the recorded bytes, in the relay's database files or in
//! its logs (at trace level), while the receiving member prints the canary.

use std::error::Error;
use std::fs;
use std::time::Duration;

use chatroom_e2e::tap::Wiretap;
use chatroom_e2e::{random_hex, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_canary_and_the_password_never_appear_on_the_wire_on_disk_or_in_logs() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start_with(relay_dir.path(), "127.0.0.1:0", &["-vv"])?;
    let tap = Wiretap::start(relay.addr)?;
    let room = format!("vault-{}", random_hex(4));
    let password = format!("pw-{}", random_hex(16));
    let canary = format!("canary-{}", random_hex(16));
    // Both members reach the relay only through the tap.
    let invite = format!("chatroom://{}@{}/{room}", relay.fingerprint, tap.address());
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);

    let mut alice = alice_home.member(&invite, "alice", &password, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&invite, "bob", &password, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.line(&canary)?;
    alice.line(&format!("/me whispers {canary}"))?;
    let line = bob.stdout.expect(&format!("<alice> {canary}"))?;
    assert!(line.ends_with(&format!("<alice> {canary}")), "{line}");
    bob.stdout.expect(&format!("* alice whispers {canary}"))?;
    for client in [&mut alice, &mut bob] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    // A late joiner reads the canary from the relay's stored history, still through the tap.
    let carol_home = Home::protocol_1()?;
    let mut carol = carol_home.member(&invite, "carol", &password, false, &[])?;
    carol.stdout.expect(&format!("[history] <alice> {canary}"))?;
    carol.close_stdin();
    assert!(carol.wait()?.success(), "{:?}", carol.stderr.all());

    // Stop the relay without letting it tidy up (the write-ahead log stays on disk).
    relay.kill();
    relay.stdout.drain(Duration::from_secs(2));
    relay.stderr.drain(Duration::from_secs(2));

    let secrets = [("canary", canary.as_bytes()), ("password", password.as_bytes())];
    let (up, down) = (tap.to_relay(), tap.to_client());
    assert!(tap.connections() >= 3, "every member went through the tap");
    assert!(
        up.len() > 1000 && down.len() > 1000,
        "the tap recorded the sessions: {} / {} bytes",
        up.len(),
        down.len()
    );
    for (what, secret) in secrets {
        assert!(!contains(&up, secret), "the {what} is readable in client->relay bytes");
        assert!(!contains(&down, secret), "the {what} is readable in relay->client bytes");
    }

    let mut files = 0;
    let mut room_seen = false;
    for entry in fs::read_dir(relay_dir.path())? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let bytes = fs::read(&path)?;
        files += 1;
        room_seen |= contains(&bytes, room.as_bytes());
        for (what, secret) in secrets {
            assert!(!contains(&bytes, secret), "the {what} is readable in {}", path.display());
        }
    }
    assert!(files >= 2, "the relay's key and database were searched");
    assert!(room_seen, "the room name (not secret) is stored, so the right files were searched");

    let logs = [relay.stdout.all(), relay.stderr.all()].concat().join("\n");
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "trace logging was on: {logs}");
    for (what, secret) in secrets {
        assert!(!contains(logs.as_bytes(), secret), "the {what} is readable in the relay's logs");
    }
    Ok(())
}
