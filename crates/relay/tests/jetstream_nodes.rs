//! Two relay nodes serving rooms from one real 3-node NATS cluster, each node on its own NATS
//! server, members on both reached through real connections: one gap-free sequence for the
//! room whichever node a member sends through, the member list spans nodes, and a kick or ban
//! through one node closes the member on the other and holds there; a node follows a room's
//! feed only while the room has a member on it; sends queued behind one the silent cluster
//! never answered are refused with it; an `Ack` reaches its sender after every delivery of a
//! lower `seq`, though the other node's envelopes come through the cluster's feed.

mod common;

use std::path::Path;
use std::time::Duration;

use chatroom_crypto::RelayMessage;
use chatroom_crypto::{ClientMessage, ErrorCode, PresenceEvent};
use chatroom_nats_harness::{NatsCluster, NatsServer};
use chatroom_relay::rooms::jetstream::log::APPEND_DEADLINE;
use chatroom_relay::rooms::jetstream::state::room_token;
use chatroom_relay::Config;
use common::{member, Conn, Person, Res, TestRelay, TestResult, TestRoom};

/// A relay in `dir` whose rooms are on the cluster through the NATS server at `url`.
async fn node(dir: &Path, url: &str) -> Res<TestRelay> {
    node_with(dir, url, |_| {}).await
}

/// `node`, with its configuration changed by `tweak`.
async fn node_with(dir: &Path, url: &str, tweak: impl FnOnce(&mut Config)) -> Res<TestRelay> {
    common::cluster_node(dir, url, |_| {}, tweak).await
}

/// Whether any client of the NATS server `server` subscribes to `subject` (its monitoring).
fn subscribed(server: &NatsServer, subject: &str) -> Res<bool> {
    let connz = server.monitor("/connz?subs=1").map_err(|e| e.to_string())?;
    let connections = connz["connections"].as_array().cloned().unwrap_or_default();
    Ok(connections.iter().any(|c| {
        c["subscriptions_list"]
            .as_array()
            .is_some_and(|subs| subs.iter().any(|s| s.as_str() == Some(subject)))
    }))
}

/// Reads presence notices until `event`, returning the nickname it names.
async fn until_presence(conn: &mut Conn, event: PresenceEvent) -> Res<String> {
    loop {
        let (seen, nick) = conn.presence().await?;
        if seen == event {
            return Ok(nick);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_comes_after_every_delivery_of_a_lower_seq_sent_through_the_other_node() -> TestResult {
    let cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let fast = |c: &mut Config| {
        c.rate_burst = 10_000;
        c.rate_per_sec = 10_000;
    };
    let a = node_with(dir_a.path(), &cluster.nodes()[0].url(), fast).await?;
    std::fs::copy(Config::new(dir_a.path()).key_path(), Config::new(dir_b.path()).key_path())?;
    let b = node_with(dir_b.path(), &cluster.nodes()[1].url(), fast).await?;
    let room = TestRoom::new("ordered");
    let (mut alice, mut bob) = (Person::new("alice"), Person::new("bob"));
    let (mut al, _) = member(&a, &alice, &room, true).await?;
    let (mut bo, _) = member(&b, &bob, &room, false).await?;
    for round in 0..3 {
        let seen = common::interleaved((&mut alice, &mut al), (&mut bob, &mut bo), &room, 40).await?;
        assert_eq!(common::ack_after_lower_deliveries(&seen), None, "round {round}");
        for _ in 0..40 {
            bo.answer_within(APPEND_DEADLINE).await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_nodes_share_one_sequence_and_moderation_reaches_across() -> TestResult {
    // The relay's errors (why the cluster was unavailable, say) are shown if the test fails.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("error").try_init();
    let cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &cluster.nodes()[0].url()).await?;
    // Every node serves with one relay key, so members pin one fingerprint.
    std::fs::copy(Config::new(dir_a.path()).key_path(), Config::new(dir_b.path()).key_path())?;
    let b = node(dir_b.path(), &cluster.nodes()[1].url()).await?;
    assert_eq!(a.key, b.key);

    let room = TestRoom::new("spanning");
    let (mut owner, mut alice, bob) = (Person::new("owner"), Person::new("alice"), Person::new("bob"));
    let (mut o, _) = member(&a, &owner, &room, true).await?;
    let (mut al, joined) = member(&b, &alice, &room, false).await?;
    let listed: Vec<String> = joined.members.iter().map(|m| m.nick.to_string()).collect();
    assert_eq!(listed, ["alice", "owner"], "the list names the member on the other node");
    assert_eq!(until_presence(&mut o, PresenceEvent::Joined).await?, "alice", "a join on B is told on A");

    let mut seqs = Vec::new();
    for i in 0..10 {
        let (_, envelope) = owner.seal(&room, &format!("from A {i}"));
        seqs.push(o.publish_ok(envelope.clone()).await?);
        assert_eq!(al.delivery().await?, (*seqs.last().ok_or("sent")?, envelope));
        let (_, envelope) = alice.seal(&room, &format!("from B {i}"));
        seqs.push(al.publish_ok(envelope.clone()).await?);
        assert_eq!(o.delivery().await?, (*seqs.last().ok_or("sent")?, envelope));
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "one gap-free sequence across both nodes");

    // A member joining through B after all that replays the whole room in order.
    let (mut bo, joined) = member(&b, &bob, &room, false).await?;
    let replayed: Vec<u64> = joined.history.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(replayed, (1..=20).collect::<Vec<u64>>());
    assert_eq!(joined.history_end, 20);

    o.send(&[ClientMessage::Kick { nick: bob.nick.clone() }]).await?;
    assert_eq!(bo.goodbye().await?.0, ErrorCode::Kicked, "a kick through A closes the member on B");
    assert_eq!(until_presence(&mut al, PresenceEvent::Kicked).await?, "bob");
    let (bo, _) = member(&b, &bob, &room, false).await?;
    o.send(&[ClientMessage::Ban { nick: alice.nick.clone() }]).await?;
    assert_eq!(al.goodbye().await?.0, ErrorCode::Banned, "a ban through A closes the member on B");
    let mut again = Conn::connect(b.addr).await?;
    let refused = again.join(&alice, &room, false, 0).await?.err().ok_or("a banned member joined B")?;
    assert_eq!(refused.0, ErrorCode::Banned, "the ban holds on B");

    // B follows the room's feed while it has a member there, and stops once it has none.
    let server_b = &cluster.nodes()[1];
    let fan = format!("fan.{}", room_token(room.name.as_str()));
    assert!(subscribed(server_b, &fan)?, "B subscribes to {fan} while bob is on B");
    drop(bo);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while subscribed(server_b, &fan)? {
        assert!(std::time::Instant::now() < deadline, "B still follows the room without a member there");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.stop().await?;
    a.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_disconnected_by_its_node_while_the_cluster_keeps_delivering(
) -> TestResult {
    let cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    // Alice sends as fast as the cluster stores.
    let a = node_with(dir_a.path(), &cluster.nodes()[0].url(), |c| c.rate_burst = 10_000).await?;
    let b = node_with(dir_b.path(), &cluster.nodes()[1].url(), |c| {
        c.outbound_queue_bytes = 65_536;
    })
    .await?;
    let room = TestRoom::new("slow-across");
    let (mut alice, bob, carol) = (Person::new("alice"), Person::new("bob"), Person::new("carol"));
    let (mut al, _) = member(&a, &alice, &room, true).await?;
    let (mut bo, _) = member(&b, &bob, &room, false).await?;
    // Carol joins through B, then never reads again.
    let mut c = Conn::connect_small_buffer(b.addr).await?;
    c.join(&carol, &room, false, 0).await?.map_err(|e| format!("carol's join was refused: {e:?}"))?;
    assert_eq!(until_presence(&mut al, PresenceEvent::Joined).await?, "bob");
    assert_eq!(until_presence(&mut al, PresenceEvent::Joined).await?, "carol");

    // Alice's messages come to B through the room's feed; carol's socket buffers fill, then
    // her queue on B, then B closes her, and the cluster tells A.
    let body = "x".repeat(4000);
    let mut sent = 0u64;
    let mut carol_left = false;
    while !carol_left {
        assert!(sent < 4000, "carol was never disconnected");
        let batch: Vec<ClientMessage> =
            (0..10).map(|_| ClientMessage::Send { envelope: alice.seal(&room, &body).1 }).collect();
        al.send(&batch).await?;
        for _ in 0..10 {
            sent += 1;
            loop {
                match al.recv().await? {
                    RelayMessage::Ack { seq, .. } => {
                        assert_eq!(seq, sent);
                        break;
                    }
                    RelayMessage::Presence { event: PresenceEvent::Left, nick, .. } => {
                        assert_eq!(nick.as_str(), "carol");
                        carol_left = true;
                    }
                    other => return Err(format!("alice got {other:?}").into()),
                }
            }
        }
        for i in sent - 9..=sent {
            assert_eq!(bo.delivery().await?.0, i, "bob, on carol's node, keeps receiving everything");
        }
    }
    assert_eq!(until_presence(&mut bo, PresenceEvent::Left).await?, "carol");
    let (_, envelope) = alice.seal(&room, "after carol");
    let total = al.publish_ok(envelope).await?;
    assert_eq!(total, sent + 1);
    assert_eq!(bo.delivery().await?.0, total);
    // Carol finds her connection closed, joins again through A and catches up from history.
    c.closed().await?;
    let (_, joined) = member(&a, &carol, &room, false).await?;
    let replayed: Vec<u64> = joined.history.iter().map(|(seq, _)| *seq).collect();
    let oldest = total + 1 - replayed.len() as u64;
    assert_eq!(replayed, (oldest..=total).collect::<Vec<u64>>(), "the retained history, in order");
    b.stop().await?;
    a.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_list_names_every_member_on_every_node() -> TestResult {
    let cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &cluster.nodes()[0].url()).await?;
    let b = node(dir_b.path(), &cluster.nodes()[2].url()).await?;
    let room = TestRoom::new("crowd");
    let people: Vec<Person> = (0..40).map(|i| Person::new(&format!("m{i:02}"))).collect();
    let mut connections = Vec::new();
    for (i, person) in people.iter().enumerate() {
        let relay = if i % 2 == 0 { &a } else { &b };
        let (conn, joined) = member(relay, person, &room, i == 0).await?;
        // Each joiner's list: everyone who joined before it, through either node, and itself.
        let mut listed: Vec<String> = joined.members.iter().map(|m| m.nick.to_string()).collect();
        listed.sort();
        let expected: Vec<String> = people[..=i].iter().map(|p| p.nick.to_string()).collect();
        assert_eq!(listed, expected, "the list {} got", person.nick);
        connections.push(conn);
    }
    drop(connections);
    b.stop().await?;
    a.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_queued_behind_one_the_silent_cluster_never_answered_are_refused_with_it() -> TestResult {
    let mut cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir()?;
    let relay = node(dir.path(), &cluster.nodes()[0].url()).await?;
    let room = TestRoom::new("silent");
    let mut owner = Person::new("owner");
    let (mut o, _) = member(&relay, &owner, &room, true).await?;
    o.publish_ok(owner.seal(&room, "stored").1).await?;

    // No majority left: the stream can store nothing, and its one node says nothing.
    cluster.kill(1).map_err(|e| e.to_string())?;
    cluster.kill(2).map_err(|e| e.to_string())?;
    let sends: Vec<ClientMessage> = (0..3)
        .map(|i| ClientMessage::Send { envelope: owner.seal(&room, &format!("queued {i}")).1 })
        .collect();
    o.send(&sends).await?;
    let first = o.answer_within(APPEND_DEADLINE + Duration::from_secs(15)).await?;
    assert!(
        matches!(first, RelayMessage::SendError { code: ErrorCode::Internal, .. }),
        "the first send is refused once the append deadline passes: {first:?}"
    );
    // The two queued behind it are refused with it, not one deadline each: before the Pong
    // of a Ping sent only now.
    let before = o.until_pong(1).await?;
    let refused = before
        .iter()
        .filter(|m| matches!(m, RelayMessage::SendError { code: ErrorCode::Internal, .. }))
        .count();
    assert_eq!(refused, 2, "{before:?}");
    Ok(())
}
