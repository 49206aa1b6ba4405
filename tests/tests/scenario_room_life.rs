//! Scenario 1, room life: three members in one room and a fourth in another room on the same
//! relay. Every message reaches exactly the members of its room, once, in relay order; join
//! and leave notices arrive; a member who joins late gets the history.

use std::error::Error;

use chatroom_e2e::{without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const PER_SENDER: usize = 6;

/// The `<nick> text` lines of a client's stdout, without time stamps or `[history]`.
fn messages(client: &Client) -> Vec<String> {
    client.stdout.all().iter().map(|l| without_time(l).trim_start_matches("[history] ").to_owned()).collect()
}

/// `sub` appears in `full` in the same relative order.
fn is_subsequence(sub: &[String], full: &[String]) -> bool {
    let mut it = full.iter();
    sub.iter().all(|s| it.any(|f| f == s))
}

#[test]
fn messages_reach_exactly_their_room_once_in_relay_order_and_late_joiners_get_history() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..5).map(|_| Home::protocol_1()).collect::<Result<_, _>>()?;
    let life = relay.invite("life");
    let other = relay.invite("other");

    let mut alice = homes[0].member(&life, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = homes[1].member(&life, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.stderr.expect("bob joined")?;
    let mut carol = homes[2].member(&life, "carol", PASSWORD, false, &[])?;
    carol.stderr.expect("now live")?;
    alice.stderr.expect("carol joined")?;
    bob.stderr.expect("carol joined")?;
    let mut dave = homes[3].member(&other, "dave", "another room, another password", true, &[])?;
    dave.stderr.expect("now live")?;
    carol.line("/who")?;
    carol.stderr.expect("members as the relay lists them (3): ")?;

    // Everyone talks at once; the relay picks one order.
    for i in 0..PER_SENDER {
        alice.line(&format!("alice says {i}"))?;
        bob.line(&format!("bob says {i}"))?;
        carol.line(&format!("carol says {i}"))?;
        dave.line(&format!("dave says {i}"))?;
    }
    let last = PER_SENDER - 1;
    for (me, client) in [("alice", &mut alice), ("bob", &mut bob), ("carol", &mut carol)] {
        let wanted: Vec<String> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|o| *o != me)
            .map(|o| format!("<{o}> {o} says {last}"))
            .collect();
        client.stdout.wait_until("the last message of each other member", |seen| {
            wanted.iter().all(|w| seen.iter().any(|l| l.ends_with(w.as_str())))
        })?;
    }

    // Carol leaves; the others are told.
    carol.close_stdin();
    assert!(carol.wait()?.success(), "{:?}", carol.stderr.all());
    alice.stderr.expect("carol left")?;
    bob.stderr.expect("carol left")?;

    // Erin joins late and gets the whole conversation from history, in relay order.
    let mut erin = homes[4].member(&life, "erin", PASSWORD, false, &[])?;
    erin.stderr.expect("end of history; now live")?;
    erin.stdout.wait_until("the whole history", |seen| seen.len() >= 3 * PER_SENDER)?;
    let history: Vec<String> = messages(&erin);
    assert_eq!(history.len(), 3 * PER_SENDER, "the whole history, nothing else: {history:?}");
    assert!(erin.stdout.all().iter().all(|l| l.contains(" [history] <")), "{:?}", erin.stdout.all());
    for sender in ["alice", "bob", "carol"] {
        let mine: Vec<String> = (0..PER_SENDER).map(|i| format!("<{sender}> {sender} says {i}")).collect();
        let got: Vec<String> =
            history.iter().filter(|m| m.starts_with(&format!("<{sender}>"))).cloned().collect();
        assert_eq!(got, mine, "each sender's messages once, in the order sent");
    }
    alice.stderr.expect("erin joined")?;

    // Each live member got every message of the room except its own, exactly once, in the
    // relay's order (the order of the history), and nothing from the other room.
    for (me, client) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let got = messages(client);
        let want: Vec<String> =
            history.iter().filter(|m| !m.starts_with(&format!("<{me}>"))).cloned().collect();
        assert_eq!(got.len(), want.len(), "{me}: {got:?}");
        assert!(is_subsequence(&got, &history), "{me} saw relay order: {got:?} vs {history:?}");
        assert!(!got.iter().any(|m| m.contains("dave")), "{me} saw the other room: {got:?}");
    }
    assert!(dave.stdout.all().is_empty(), "dave is alone in his room: {:?}", dave.stdout.all());
    assert!(
        !dave.stderr.all().iter().any(|l| l.contains("alice") || l.contains("bob") || l.contains("carol")),
        "no presence from another room: {:?}",
        dave.stderr.all()
    );

    // Live again: erin's message reaches alice and bob, and not dave.
    erin.line("erin is here")?;
    alice.stdout.expect("<erin> erin is here")?;
    bob.stdout.expect("<erin> erin is here")?;
    for client in [&mut alice, &mut bob, &mut erin, &mut dave] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    assert!(dave.stdout.all().is_empty(), "nothing from room life reached dave: {:?}", dave.stdout.all());
    Ok(())
}
