//! Scenario 1, room life, on protocol 2 (MLS): three members in one room and a fourth in
//! another room on the same relay, all talking at once. Every message reaches exactly the
//! members of its room, once, in the relay's order; a member who leaves is told of; a
//! newcomer reads only what is sent after it entered (v2 keeps no readable history for
//! newcomers unless the room shares it), and then talks with the others.

use std::error::Error;

use chatroom_e2e::{without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const ENTERED: &str = "you entered the room's group";
const PER_SENDER: usize = 6;

fn member(home: &Home, invite: &str, nick: &str, password: &str, create: bool) -> Res<Client> {
    home.member(invite, nick, password, create, &["--protocol", "2"])
}

/// `(sender, text)` of each chat line (v2 shows `<nick KEYTAG> text`), without time or history
/// marks.
fn messages(client: &Client) -> Vec<(String, String)> {
    client
        .stdout
        .all()
        .iter()
        .filter_map(|l| {
            let line = without_time(l).trim_start_matches("[history] ").strip_prefix('<')?;
            let (who, text) = line.split_once("> ")?;
            Some((who.split(' ').next()?.to_owned(), text.to_owned()))
        })
        .collect()
}

#[test]
fn v2_messages_reach_exactly_their_room_once_in_relay_order_and_newcomers_read_from_their_entry() -> TestResult
{
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..5).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let life = relay.invite("life2");
    let other = relay.invite("other2");

    let mut alice = member(&homes[0], &life, "alice", PASSWORD, true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&homes[1], &life, "bob", PASSWORD, false)?;
    bob.stderr.expect(ENTERED)?;
    let mut carol = member(&homes[2], &life, "carol", PASSWORD, false)?;
    carol.stderr.expect(ENTERED)?;
    for client in [&mut alice, &mut bob] {
        client.stderr.expect("entered the group (epoch 2)")?;
    }
    let mut dave = member(&homes[3], &other, "dave", "another room, another password", true)?;
    dave.stderr.expect(ENTERED)?;

    // Everyone talks at once; the relay picks one order.
    for i in 0..PER_SENDER {
        for (name, client) in
            [("alice", &mut alice), ("bob", &mut bob), ("carol", &mut carol), ("dave", &mut dave)]
        {
            client.line(&format!("{name} says {i}"))?;
        }
    }
    let last = PER_SENDER - 1;
    for (me, client) in [("alice", &mut alice), ("bob", &mut bob), ("carol", &mut carol)] {
        let wanted: Vec<String> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|o| *o != me)
            .map(|o| format!("{o} says {last}"))
            .collect();
        client.stdout.wait_until("the last message of each other member", |seen| {
            wanted.iter().all(|w| seen.iter().any(|l| l.ends_with(w.as_str())))
        })?;
    }

    // Each got the others' messages once each, in the order each sender sent them, and the
    // relay's one order: any two members agree on the order of what both received.
    let got: Vec<(&str, Vec<(String, String)>)> =
        vec![("alice", messages(&alice)), ("bob", messages(&bob)), ("carol", messages(&carol))];
    for (me, seen) in &got {
        assert_eq!(seen.len(), 2 * PER_SENDER, "{me}: {seen:?}");
        for sender in ["alice", "bob", "carol"].into_iter().filter(|s| s != me) {
            let texts: Vec<&str> =
                seen.iter().filter(|(w, _)| w == sender).map(|(_, t)| t.as_str()).collect();
            let sent: Vec<String> = (0..PER_SENDER).map(|i| format!("{sender} says {i}")).collect();
            assert_eq!(texts, sent, "{me} holds {sender}'s messages once, in order");
        }
        assert!(!seen.iter().any(|(w, _)| w == "dave"), "{me} saw the other room: {seen:?}");
    }
    for (a, seen_a) in &got {
        for (b, seen_b) in &got {
            let common = |x: &Vec<(String, String)>| -> Vec<(String, String)> {
                x.iter().filter(|(w, _)| w != a && w != b).cloned().collect()
            };
            assert_eq!(common(seen_a), common(seen_b), "{a} and {b} saw one relay order");
        }
    }

    // Carol leaves; the others are told.
    carol.close_stdin();
    assert!(carol.wait()?.success(), "{:?}", carol.stderr.all());
    alice.stderr.expect("carol left")?;
    bob.stderr.expect("carol left")?;

    // Erin enters late: nothing said before her entry, then live talk both ways.
    let mut erin = member(&homes[4], &life, "erin", PASSWORD, false)?;
    erin.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 3)")?;
    bob.stderr.expect("entered the group (epoch 3)")?;
    erin.line("erin is here")?;
    alice.stdout.expect("erin is here")?;
    bob.stdout.expect("erin is here")?;
    alice.line("welcome erin")?;
    erin.stdout.expect("welcome erin")?;
    let erin_saw = messages(&erin);
    assert_eq!(erin_saw, [("alice".to_owned(), "welcome erin".to_owned())], "only what followed her entry");

    for client in [&mut alice, &mut bob, &mut erin, &mut dave] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    assert!(dave.stdout.all().is_empty(), "dave is alone in his room: {:?}", dave.stdout.all());
    assert!(
        !dave.stderr.all().iter().any(|l| l.contains("alice") || l.contains("bob") || l.contains("carol")),
        "no presence from another room: {:?}",
        dave.stderr.all()
    );
    Ok(())
}
