//! A relay cluster end to end: two real `chatroom-relay` processes with `--nats`, each on its
//! own server of a real 3-node NATS cluster and sharing one relay key, and real `chatroom
//! --plain` members on different nodes. Messages cross nodes; a ban and a room's password
//! lockout made through one node hold on the other; a member whose node is killed moves to the
//! other node its invite lists; a protocol version 2 (MLS) room created through one node is
//! entered through the other.

use std::error::Error;
use std::time::{Duration, Instant};

use chatroom_e2e::{Home, Relay};
use chatroom_nats_harness::NatsCluster;
use chatroom_relay::rooms::jetstream::lockouts::Lockouts;
use chatroom_relay::rooms::jetstream::setup::{connect, SETUP_WITHIN};
use chatroom_relay::rooms::jetstream::state::room_token;

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const SECRET: &str = "correct horse battery staple";

/// A relay node on the NATS server at `url`: a room locks after 3 wrong passwords, and the
/// address's own lockout stays out of the way (every member here comes from 127.0.0.1).
fn node(dir: &std::path::Path, url: &str) -> Result<Relay, Box<dyn Error + Send + Sync>> {
    let extra = ["--nats", url, "--room-failures-slow", "3", "--room-failures-lockout", "3"];
    let relaxed = ["--ip-failures-slow", "50", "--ip-failures-lockout", "50"];
    // Longer than the relay's own bound for the cluster's setup answers: a relay that gives up
    // says why first.
    let limit = SETUP_WITHIN + Duration::from_secs(30);
    Relay::start_within(dir, "127.0.0.1:0", &[&extra[..], &relaxed[..]].concat(), limit)
}

/// Waits until the cluster counted `at_least` failed joins against `room` (read through the
/// NATS server at `url`), bounded: the node counts each one just after refusing it.
fn counted(url: &str, room: &str, at_least: u64) -> TestResult {
    tokio::runtime::Runtime::new()?.block_on(async {
        let js = async_nats::jetstream::new(connect(url).await?);
        let lockouts = Lockouts::open(&js).await?;
        let key = format!("room.{}", room_token(room));
        let deadline = Instant::now() + Duration::from_secs(10);
        while lockouts.failures(&key).await? < at_least {
            if Instant::now() > deadline {
                return Err("the failed joins were not counted in the cluster within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
}

#[test]
fn members_on_two_relay_nodes_talk_and_a_ban_and_a_lockout_through_one_hold_on_the_other() -> TestResult {
    let cluster = NatsCluster::start()?;
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &urls[0])?;
    // One relay key for every node: members pin one fingerprint.
    std::fs::copy(dir_a.path().join("relay.key"), dir_b.path().join("relay.key"))?;
    let b = node(dir_b.path(), &urls[1])?;
    assert_eq!(a.fingerprint, b.fingerprint);

    let (alice_home, bob_home, carol_home) = (Home::protocol_1()?, Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = alice_home.member(&a.invite("cluster"), "alice", SECRET, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&b.invite("cluster"), "bob", SECRET, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.line("hello from node A")?;
    bob.stdout.expect("<alice> hello from node A")?;
    bob.line("hello from node B")?;
    alice.stdout.expect("<bob> hello from node B")?;

    alice.line("/ban bob")?;
    alice.stderr.expect("bob was banned")?;
    assert!(!bob.wait()?.success(), "the ban through A closed bob on B");
    let bob_pw = bob_home.password_file("again.pass", SECRET)?;
    let invite_b = b.invite("cluster");
    let (status, _, err) =
        bob_home.run(&[&invite_b, "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?])?;
    assert!(!status.success());
    assert!(err.contains("the room owner banned this identity"), "the ban holds on B: {err}");

    // Three wrong passwords through A...
    for n in 0..3 {
        let home = Home::protocol_1()?;
        let pw = home.password_file("wrong.pass", "not the password")?;
        let nick = format!("guess{n}");
        let (status, _, err) = home.run(&[
            &a.invite("cluster"),
            "--nick",
            &nick,
            "--password-file",
            pw.to_str().ok_or("path")?,
        ])?;
        assert!(!status.success() && err.contains("the relay refused the password of room cluster"), "{err}");
    }
    counted(&urls[2], "cluster", 3)?;
    // ... lock the room on B too, even for the right password.
    let pw = carol_home.password_file("right.pass", SECRET)?;
    let (status, _, err) = carol_home.run(&[
        &b.invite("cluster"),
        "--nick",
        "carol",
        "--password-file",
        pw.to_str().ok_or("path")?,
    ])?;
    assert!(!status.success());
    assert!(err.contains("too many failed attempts to join"), "the lockout holds on B: {err}");
    alice.close_stdin();
    assert!(alice.wait()?.success());
    Ok(())
}

#[test]
fn a_member_whose_relay_node_dies_reconnects_to_the_other_node_its_invite_lists() -> TestResult {
    let cluster = NatsCluster::start()?;
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = node(dir_a.path(), &urls[0])?;
    std::fs::copy(dir_a.path().join("relay.key"), dir_b.path().join("relay.key"))?;
    let b = node(dir_b.path(), &urls[1])?;
    assert_eq!(a.fingerprint, b.fingerprint);
    // One invite naming both nodes, in two orders: each member starts on the first it lists.
    let (fp, on_a, on_b) = (a.fingerprint.clone(), a.address(), b.address());
    let a_first = format!("chatroom://{fp}@{on_a},{on_b}/failover");
    let b_first = format!("chatroom://{fp}@{on_b},{on_a}/failover");

    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = alice_home.member(&a_first, "alice", SECRET, true, &[])?;
    alice.stderr.expect(&format!("connecting to {on_a}"))?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&b_first, "bob", SECRET, false, &[])?;
    bob.stderr.expect(&format!("connecting to {on_b}"))?;
    bob.stderr.expect("now live")?;
    alice.line("before the failure")?;
    bob.stdout.expect("<alice> before the failure")?;

    // Node A dies; alice's client moves to node B by itself.
    a.kill();
    alice.stderr.expect(&format!("reconnected to {on_b}"))?;
    alice.line("from alice after the failure")?;
    bob.stdout.expect("<alice> from alice after the failure")?;
    bob.line("from bob after the failure")?;
    alice.stdout.expect("<bob> from bob after the failure")?;

    alice.close_stdin();
    assert!(alice.wait()?.success());
    bob.close_stdin();
    assert!(bob.wait()?.success());
    alice.stdout.drain(Duration::from_secs(1));
    bob.stdout.drain(Duration::from_secs(1));
    assert_eq!(alice.stdout.count_ending_with("<bob> from bob after the failure"), 1, "shown once");
    for text in ["before the failure", "from alice after the failure"] {
        assert_eq!(bob.stdout.count_ending_with(&format!("<alice> {text}")), 1, "{text}: shown once");
    }
    // Each address alice used is pinned to the invite's fingerprint.
    let known = std::fs::read_to_string(alice_home.data_dir().join("known_relays"))?;
    for addr in [&on_a, &on_b] {
        assert!(
            known.lines().any(|l| l.contains(addr.as_str()) && l.contains(fp.as_str())),
            "{addr}: {known}"
        );
    }
    Ok(())
}

/// Protocol version 2 across nodes: alice creates an MLS room through A, bob enters it
/// through B (the GroupInfo alice stored through A, read through B), and messages flow both
/// ways, through a key change by the entry's commit.
#[test]
fn a_version_2_room_created_through_one_node_is_entered_and_used_through_the_other() -> TestResult {
    let cluster = NatsCluster::start()?;
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &urls[0])?;
    std::fs::copy(dir_a.path().join("relay.key"), dir_b.path().join("relay.key"))?;
    let b = node(dir_b.path(), &urls[1])?;

    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let v2 = ["--protocol", "2"];
    let mut alice = alice_home.member(&a.invite("mls"), "alice", SECRET, true, &v2)?;
    alice.stderr.expect("you entered the room's group")?;
    let mut bob = bob_home.member(&b.invite("mls"), "bob", SECRET, false, &v2)?;
    bob.stderr.expect("you entered the room's group")?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    alice.line("hello over A")?;
    bob.stdout.expect("hello over A")?;
    bob.line("hello over B")?;
    alice.stdout.expect("hello over B")?;
    alice.close_stdin();
    bob.close_stdin();
    assert!(alice.wait()?.success() && bob.wait()?.success());
    Ok(())
}
