//! Protocol 2 (MLS) through the faults v1's scenarios put the relay and the wire through, with
//! the real binaries: `kill -9` of the relay while members send (scenario 6 of v1: nothing
//! acknowledged lost, nothing twice, order kept), and one flipped byte on the wire in either
//! direction (scenario 3: the Noise session drops the connection, the client reconnects, the
//! message arrives intact, once). In v2 a message travels as an MLS application message of
//! the current epoch; a resend after a reconnect must still open for every member.

use std::error::Error;

use chatroom_e2e::tap::Wiretap;
use chatroom_e2e::{random_hex, without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const ENTERED: &str = "you entered the room's group";
const PER_SENDER: usize = 30;

fn member(
    home: &Home,
    invite: &str,
    nick: &str,
    create: bool,
) -> Result<Client, Box<dyn Error + Send + Sync>> {
    home.member(invite, nick, PASSWORD, create, &["--protocol", "2"])
}

/// The text of a chat line from `sender` (v2 shows `<nick KEYTAG> text`), without time or
/// history marks.
fn said_by<'a>(line: &'a str, sender: &str) -> Option<&'a str> {
    let line = without_time(line).trim_start_matches("[history] ");
    let rest = line.strip_prefix(&format!("<{sender} "))?;
    Some(rest.split_once("> ")?.1)
}

/// What `sender` said, in the order `client` printed it.
fn from(client: &Client, sender: &str) -> Vec<String> {
    from_lines(client.stdout.all(), sender)
}

fn from_lines(seen: &[String], sender: &str) -> Vec<String> {
    seen.iter().filter_map(|l| said_by(l, sender)).map(str::to_owned).collect()
}

fn expected(sender: &str) -> Vec<String> {
    (0..PER_SENDER).map(|i| format!("{sender} {i}")).collect()
}

#[test]
fn v2_kill_9_while_sending_loses_and_doubles_nothing_acknowledged() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let invite = relay.invite("crash2");
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let mut alice = member(&homes[0], &invite, "alice", true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    let mut carol = member(&homes[2], &invite, "carol", false)?;
    carol.stderr.expect(ENTERED)?;
    for client in [&mut alice, &mut bob] {
        client.stderr.expect("entered the group (epoch 2)")?;
    }

    // Both type everything at once; the clients pace sending at the relay's rate limit, so
    // the messages are still going out when the relay dies.
    for i in 0..PER_SENDER {
        alice.line(&format!("alice {i}"))?;
        bob.line(&format!("bob {i}"))?;
    }
    carol.stdout.wait_until("a few messages in", |seen| seen.len() >= 8)?;
    relay.kill();
    let before_crash = carol.stdout.all().len();
    assert!(before_crash < 2 * PER_SENDER, "the relay died mid-stream ({before_crash} delivered)");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.stderr.expect("disconnected")?;
    }

    let relay = Relay::start_on(relay_dir.path(), &addr)?;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.stderr.expect("reconnected")?;
    }
    carol.stdout.wait_until("every message", |seen| seen.len() >= 2 * PER_SENDER)?;
    alice.stdout.wait_until("all of bob's messages", |seen| from_lines(seen, "bob").len() >= PER_SENDER)?;
    bob.stdout.wait_until("all of alice's messages", |seen| from_lines(seen, "alice").len() >= PER_SENDER)?;
    // End of input: a line-mode client exits 0 only once every message it sent is acknowledged.
    for client in [&mut alice, &mut bob, &mut carol] {
        client.close_stdin();
        let status = client.wait()?;
        assert!(status.success(), "every message acknowledged: {:?}", client.stderr.all());
    }
    for (who, client, sender) in [
        ("carol", &carol, "alice"),
        ("carol", &carol, "bob"),
        ("bob", &bob, "alice"),
        ("alice", &alice, "bob"),
    ] {
        let got = from(client, sender);
        assert!(
            got == expected(sender),
            "{who} must hold {sender}'s messages once each, in order; got {got:?}\n{who}'s events:\n{}",
            client.stderr.all().join("\n")
        );
    }
    assert_eq!(carol.stdout.all().len(), 2 * PER_SENDER, "nothing else: {:?}", carol.stdout.all());
    drop(relay);
    Ok(())
}

#[test]
fn v2_a_flipped_byte_either_way_breaks_the_connection_cleanly_and_the_message_arrives_intact_once(
) -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let tap = Wiretap::start(relay.addr)?;
    let direct = relay.invite("tamper2");
    let tapped = format!("chatroom://{}@{}/tamper2", relay.fingerprint, tap.address());
    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let mut alice = member(&alice_home, &direct, "alice", true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&bob_home, &tapped, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;

    // Towards bob: the frame that delivers this message arrives altered.
    let first = format!("first {}", random_hex(8));
    tap.flip_next_to_client();
    alice.line(&first)?;
    bob.stderr.expect("disconnected: ")?;
    assert_eq!(tap.flipped(), 1, "exactly one frame was altered");
    bob.stderr.expect("reconnected")?;
    bob.stdout.expect(&first)?;

    // Towards the relay: bob's frame carrying his message arrives altered; unacknowledged, it
    // is sent again after the reconnect, and alice opens it.
    let second = format!("second {}", random_hex(8));
    tap.flip_next_to_relay();
    bob.line(&second)?;
    bob.stderr.expect("disconnected: ")?;
    assert_eq!(tap.flipped(), 2, "exactly one more frame was altered");
    bob.stderr.expect("reconnected")?;
    alice.stdout.expect(&second)?;

    // Live traffic flows again both ways.
    let third = format!("third {}", random_hex(8));
    alice.line(&third)?;
    bob.stdout.expect(&third)?;
    assert!(tap.connections() >= 3, "bob reconnected through the tap twice");
    for client in [&mut bob, &mut alice] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    assert_eq!(bob.stdout.all().len(), 2, "nothing else: {:?}", bob.stdout.all());
    assert_eq!(from(&bob, "alice"), [first, third], "once each, intact");
    assert_eq!(alice.stdout.all().len(), 1, "nothing else: {:?}", alice.stdout.all());
    assert_eq!(from(&alice, "bob"), [second], "once, intact");
    Ok(())
}
