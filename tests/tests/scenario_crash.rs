//! Scenario 6, crash and restart: the relay is killed with SIGKILL while members are sending
//! and restarted on the same data directory and port. Every message a sender saw acknowledged
//! is delivered to every other member after the reconnect, none twice, in the order sent.
//! Also: a message the relay's storage refuses is reported to its sender alone, and the
//! sender's later messages are still acknowledged and delivered.
//!
//! A line-mode client exits 0 at end of input only once the relay has acknowledged every
//! message it sent (docs/CLIENT.md), so a clean exit of both senders means every message was
//! acknowledged, some before the crash and the rest after the reconnect (resent as the same
//! bytes). Messages acknowledged before the crash are never resent: if the relay lost one, it
//! would be missing below.

use std::error::Error;

use chatroom_e2e::{without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const PER_SENDER: usize = 30;

fn from(client: &Client, sender: &str) -> Vec<String> {
    client
        .stdout
        .all()
        .iter()
        .map(|l| without_time(l).trim_start_matches("[history] ").to_owned())
        .filter(|l| l.starts_with(&format!("<{sender}> ")))
        .collect()
}

fn expected(sender: &str) -> Vec<String> {
    (0..PER_SENDER).map(|i| format!("<{sender}> {sender} {i}")).collect()
}

#[test]
fn kill_9_while_sending_loses_and_doubles_nothing_acknowledged() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let invite = relay.invite("crash");
    let homes: Vec<Home> = (0..3).map(|_| Home::protocol_1()).collect::<Result<_, _>>()?;
    let mut alice = homes[0].member(&invite, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = homes[1].member(&invite, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;
    let mut carol = homes[2].member(&invite, "carol", PASSWORD, false, &[])?;
    carol.stderr.expect("now live")?;

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
    // Everything arrives, then end of input: each sender exits 0 only when every message it
    // sent is acknowledged.
    carol.stdout.wait_until("every message", |seen| seen.len() >= 2 * PER_SENDER)?;
    // (A sender's own messages may come back to it from history after the reconnect, as
    // docs/CLIENT.md says, so count the other sender's lines only.)
    let count =
        |seen: &[String], sender: &str| seen.iter().filter(|l| l.contains(&format!(" <{sender}> "))).count();
    alice.stdout.wait_until("all of bob's messages", |seen| count(seen, "bob") >= PER_SENDER)?;
    bob.stdout.wait_until("all of alice's messages", |seen| count(seen, "alice") >= PER_SENDER)?;
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
fn a_message_the_relay_fails_to_store_is_reported_and_the_next_one_still_acknowledged() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    // A real storage failure: a SQLite trigger refuses to store long envelopes. The relay
    // holds its database exclusively, so the trigger goes in between two runs.
    Relay::start(relay_dir.path())?.kill();
    let db = rusqlite::Connection::open(relay_dir.path().join("relay.sqlite3"))?;
    db.execute_batch(
        "CREATE TRIGGER refuse_long BEFORE INSERT ON history WHEN length(NEW.envelope) > 1000 \
         BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END;",
    )?;
    drop(db);
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("disk");
    let homes: Vec<Home> = (0..2).map(|_| Home::protocol_1()).collect::<Result<_, _>>()?;
    let mut alice = homes[0].member(&invite, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = homes[1].member(&invite, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;

    alice.line("before")?;
    bob.stdout.expect("<alice> before")?;
    alice.line(&"long ".repeat(300))?;
    let failed = alice.stderr.expect("message not delivered")?;
    assert!(failed.contains("could not store") && failed.contains("(Internal)"), "{failed}");
    alice.line("after")?;
    bob.stdout.expect("<alice> after")?;
    // At end of input exactly the one refused line counts as failed: the relay acknowledged
    // "after", matched to the right message.
    alice.close_stdin();
    let status = alice.wait()?;
    assert_eq!(status.code(), Some(1), "one line failed: {:?}", alice.stderr.all());
    assert!(
        alice
            .stderr
            .all()
            .iter()
            .any(|l| l.contains("1 line(s) of input failed") && l.contains("everything else was delivered")),
        "every other message acknowledged: {:?}",
        alice.stderr.all()
    );
    assert!(
        !alice.stderr.all().iter().any(|l| l.contains("warning")),
        "no answer was matched to the wrong message: {:?}",
        alice.stderr.all()
    );
    let from_alice = from(&bob, "alice");
    assert_eq!(from_alice, ["<alice> before", "<alice> after"], "the failed message reached nobody");
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}
