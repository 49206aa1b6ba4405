//! Scenario 3, tampering on the wire: a tap flips one byte of a relay-to-client frame, or of
//! a client-to-relay frame. The Noise session detects it, the connection is dropped cleanly
//! and the client reconnects, and the message arrives intact, once; nothing altered is ever
//! shown as a message.

use std::error::Error;

use chatroom_e2e::tap::Wiretap;
use chatroom_e2e::{random_hex, without_time, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn a_flipped_byte_breaks_the_connection_cleanly_and_nothing_altered_is_shown() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let tap = Wiretap::start(relay.addr)?;
    let direct = relay.invite("tamper");
    let tapped = format!("chatroom://{}@{}/tamper", relay.fingerprint, tap.address());
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);

    let mut alice = alice_home.member(&direct, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&tapped, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.stderr.expect("bob joined")?;

    // The next frame to bob is the delivery of this message; it arrives with a flipped byte.
    let first = format!("first {}", random_hex(8));
    tap.flip_next_to_client();
    alice.line(&first)?;
    let reason = bob.stderr.expect("disconnected: ")?;
    assert_eq!(tap.flipped(), 1, "exactly one frame was altered");
    bob.stderr.expect("reconnected")?;
    // The message comes again from the relay's history after the reconnect, intact.
    let got = bob.stdout.expect(&first)?;
    assert!(got.ends_with(&format!("<alice> {first}")), "{got}");
    assert!(tap.connections() >= 2, "bob reconnected through the tap");

    // Live traffic flows again.
    let second = format!("second {}", random_hex(8));
    alice.line(&second)?;
    bob.stdout.expect(&format!("<alice> {second}"))?;

    for client in [&mut alice, &mut bob] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    let shown: Vec<&str> = bob.stdout.all().iter().map(|l| without_time(l)).collect();
    let allowed =
        [format!("<alice> {first}"), format!("[history] <alice> {first}"), format!("<alice> {second}")];
    assert_eq!(shown.len(), 2, "each message shown once, nothing else: {shown:?} (disconnect: {reason})");
    assert!(shown.iter().all(|l| allowed.iter().any(|a| a == l)), "only intact messages: {shown:?}");
    Ok(())
}

#[test]
fn a_flipped_byte_towards_the_relay_is_refused_and_the_message_resent_intact() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let tap = Wiretap::start(relay.addr)?;
    let direct = relay.invite("tamper");
    let tapped = format!("chatroom://{}@{}/tamper", relay.fingerprint, tap.address());
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);

    let mut alice = alice_home.member(&direct, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&tapped, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.stderr.expect("bob joined")?;

    // Bob's next frame carries this message; the relay receives it altered.
    let text = format!("from bob {}", random_hex(8));
    tap.flip_next_to_relay();
    bob.line(&text)?;
    bob.stderr.expect("disconnected: ")?;
    assert_eq!(tap.flipped(), 1, "exactly one frame was altered");
    bob.stderr.expect("reconnected")?;
    // Unacknowledged, so resent after the reconnect, as the same bytes.
    let got = alice.stdout.expect(&text)?;
    assert!(got.ends_with(&format!("<bob> {text}")), "{got}");
    bob.close_stdin();
    assert!(bob.wait()?.success(), "acknowledged after the resend: {:?}", bob.stderr.all());
    alice.stderr.expect("bob left")?;
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());
    let shown: Vec<&str> = alice.stdout.all().iter().map(|l| without_time(l)).collect();
    assert_eq!(shown, [format!("<bob> {text}")], "shown once, intact, nothing else");
    Ok(())
}
