//! Protocol version 2's room operations on two relay nodes sharing one real 3-node NATS
//! cluster, members on both through real connections: the GroupInfo slot put through one node
//! is read through the other, the newest wins whichever node a put goes through, the other
//! node's members are told, and the owner's new password holds on every node.

mod common;

use std::path::Path;

use chatroom_crypto::{join_verifier_v2, sign_v2, ClientMessage, ErrorCode, RelayMessage};
use chatroom_nats_harness::NatsCluster;
use chatroom_relay::rooms::jetstream::setup::{connect, ROOMS_BUCKET};
use chatroom_relay::rooms::jetstream::state::room_token;
use chatroom_relay::Config;
use common::{fetch, member, put, upload, Conn, Joined, Person, Res, TestRelay, TestResult, TestRoom};

/// A relay in `dir` whose rooms are on the cluster through the NATS server at `url`.
async fn node(dir: &Path, url: &str) -> Res<TestRelay> {
    common::cluster_node(dir, url, |_| {}, |_| {}).await
}

async fn v2_member(relay: &TestRelay, person: &Person, room: &TestRoom, create: bool) -> Res<(Conn, Joined)> {
    let mut conn = Conn::connect_v2(relay.addr).await?;
    match conn.join(person, room, create, 0).await? {
        Ok(joined) => Ok((conn, joined)),
        Err((code, detail)) => Err(format!("v2 join refused: {code:?} {detail}").into()),
    }
}

fn refused_with(answer: RelayMessage) -> Option<ErrorCode> {
    match answer {
        RelayMessage::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_info_slot_and_password_rotation_hold_across_two_nodes() -> TestResult {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("error").try_init();
    let cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &cluster.nodes()[0].url()).await?;
    std::fs::copy(Config::new(dir_a.path()).key_path(), Config::new(dir_b.path()).key_path())?;
    let b = node(dir_b.path(), &cluster.nodes()[1].url()).await?;

    let room = TestRoom::new("mls-spanning");
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut al, joined) = v2_member(&a, &alice, &room, true).await?;
    assert_eq!(joined.group_info_seq, Some(0), "none stored yet");
    assert_eq!(upload(&mut al, 0, b"epoch 0").await?, RelayMessage::GroupInfoStored { after_seq: 0 });
    let (mut bo, joined) = v2_member(&b, &bob, &room, false).await?;
    assert_eq!(joined.group_info_seq, Some(0), "B reads what A stored");
    assert_eq!(fetch(&mut bo).await?, Ok((0, b"epoch 0".to_vec())), "put through A, read through B");

    // A commit through B, then the new epoch's GroupInfo through A: B's member is told.
    let commit = sign_v2(&bob.identity, &room.name, 1, 1, b"a commit")?;
    assert_eq!(bo.publish_ok(commit).await?, 1);
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(upload(&mut al, 1, &big).await?, RelayMessage::GroupInfoStored { after_seq: 1 });
    let told = bo.next_matching(|m| matches!(m, RelayMessage::GroupInfoStored { .. })).await?;
    assert_eq!(told, RelayMessage::GroupInfoStored { after_seq: 1 }, "a member on B is told");
    assert_eq!(fetch(&mut bo).await?, Ok((1, big)), "several parts, whole");

    // A stale put through B after the newer one through A is refused; the stored one stays.
    assert_eq!(refused_with(upload(&mut bo, 0, b"epoch 0 again").await?), Some(ErrorCode::StaleGroupInfo));
    assert_eq!(refused_with(upload(&mut bo, 2, b"ahead").await?), Some(ErrorCode::StaleGroupInfo));
    let (_c, joined) = v2_member(&b, &Person::new("carol"), &room, false).await?;
    assert_eq!(joined.group_info_seq, Some(1));

    // The owner's new password through A holds for joins through B; bob may not change it.
    let new = TestRoom { name: room.name.clone(), keys: TestRoom::new("mls-spanning").keys };
    let verifier = join_verifier_v2(&new.keys.join_secret).0;
    bo.send(&[ClientMessage::SetVerifier { verifier }]).await?;
    assert_eq!(bo.error().await?.0, ErrorCode::NotOwner, "a non-owner is refused");
    let (_d, _) = v2_member(&b, &Person::new("dave"), &room, false).await?;
    al.send(&[ClientMessage::SetVerifier { verifier }]).await?;
    let answers = al.until_pong(1).await?;
    assert!(!answers.iter().any(|m| matches!(m, RelayMessage::Error { .. })), "{answers:?}");
    let mut late = Conn::connect_v2(b.addr).await?;
    let refused =
        late.join(&Person::new("erin"), &room, false, 0).await?.err().ok_or("old password admitted")?;
    assert_eq!(refused.0, ErrorCode::WrongPassword, "the old password fails through B");
    let (_e, _) = v2_member(&b, &Person::new("erin"), &new, false).await?;
    let (_f, _) = v2_member(&a, &Person::new("frank"), &new, false).await?;
    let after = sign_v2(&bob.identity, &room.name, 2, 2, b"bob is still in")?;
    assert_eq!(bo.publish_ok(after).await?, 2);
    b.stop().await?;
    a.stop().await
}

/// A node that missed a deletion's notice (the record purged behind its back) learns it at the
/// next join: the join is refused as for any missing room, and its members there are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_finds_a_room_deleted_without_the_node_hearing_of_it() -> TestResult {
    let server = chatroom_nats_harness::NatsServer::single().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir()?;
    let a = common::cluster_node(dir.path(), &server.url(), |c| c.replicas = 1, |_| {}).await?;
    let room = TestRoom::new("gone");
    let (mut al, _) = member(&a, &Person::new("alice"), &room, true).await?;

    let js = async_nats::jetstream::new(connect(&server.url()).await?);
    let subject = format!("$KV.{ROOMS_BUCKET}.{}", room_token(room.name.as_str()));
    js.get_stream(format!("KV_{ROOMS_BUCKET}")).await?.purge().filter(subject).await?;

    let mut late = Conn::connect(a.addr).await?;
    let refused =
        late.join(&Person::new("bob"), &room, false, 0).await?.err().ok_or("joined a deleted room")?;
    assert_eq!(refused.0, ErrorCode::NoSuchRoom, "{}", refused.1);
    let (code, detail) = al.goodbye().await?;
    assert_eq!(code, ErrorCode::NoSuchRoom, "{detail}");
    a.stop().await
}

/// Puts racing through two nodes: each is stored or refused as stale (never lost to the race
/// without an answer that says so), and the slot ends with the newest one put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_puts_through_two_nodes_keep_the_newest() -> TestResult {
    let cluster = NatsCluster::start().map_err(|e| e.to_string())?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &cluster.nodes()[0].url()).await?;
    std::fs::copy(Config::new(dir_a.path()).key_path(), Config::new(dir_b.path()).key_path())?;
    let b = node(dir_b.path(), &cluster.nodes()[1].url()).await?;
    let room = TestRoom::new("mls-race");
    let people: Vec<Person> = ["p0", "p1", "p2", "p3"].into_iter().map(Person::new).collect();
    let mut conns = Vec::new();
    for (i, person) in people.iter().enumerate() {
        let relay = if i % 2 == 0 { &a } else { &b };
        conns.push(v2_member(relay, person, &room, i == 0).await?.0);
    }
    for counter in 1..=8 {
        let envelope = sign_v2(&people[0].identity, &room.name, counter, 2, b"m")?;
        conns[0].publish_ok(envelope).await?;
    }
    // Each connection puts after_seq i, i+4 (i = 1..4), all four at once.
    let puts = conns.iter_mut().enumerate().map(|(i, conn)| async move {
        let mut answers = Vec::new();
        for after_seq in [i as u64 + 1, i as u64 + 5] {
            // The answer, not another put's notice: each after_seq is put by one connection.
            for item in put(after_seq, format!("after {after_seq}").as_bytes()) {
                conn.send(&[item]).await?;
            }
            let answer = conn
                .next_matching(|m| match m {
                    RelayMessage::GroupInfoStored { after_seq: at } => *at == after_seq,
                    RelayMessage::Error { .. } => true,
                    _ => false,
                })
                .await?;
            answers.push((after_seq, answer));
        }
        Res::Ok(answers)
    });
    let mut stored = Vec::new();
    for answers in futures_util::future::join_all(puts).await {
        for (after_seq, answer) in answers? {
            match answer {
                RelayMessage::GroupInfoStored { after_seq } => stored.push(after_seq),
                RelayMessage::Error { code: ErrorCode::StaleGroupInfo, .. } => {}
                other => return Err(format!("put after {after_seq}: unexpected {other:?}").into()),
            }
        }
    }
    assert!(!stored.is_empty());
    let newest = stored.iter().copied().max().ok_or("none stored")?;
    assert_eq!(newest, 8, "the newest put always wins: nothing is newer than it");
    let read = fetch(&mut conns[1]).await?;
    assert_eq!(read, Ok((8, b"after 8".to_vec())));
    b.stop().await?;
    a.stop().await
}
