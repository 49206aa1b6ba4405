//! Room records and bans in the key-value buckets, on the 3-node cluster: of two nodes creating
//! one room at once exactly one creates it and the other gets the winner's record, and a ban
//! written through one node holds when read through another.

use async_nats::jetstream;
use bytes::Bytes;
use chatroom_nats_harness::NatsCluster;
use chatroom_relay::rooms::jetstream::setup::{connect, ensure_buckets, until_answered};
use chatroom_relay::rooms::jetstream::state::{Created, RoomState};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const IDENTITY: &str = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_nodes_creates_a_room_and_a_ban_holds_across_nodes() -> TestResult {
    let cluster = NatsCluster::start()?;
    let mut nodes = Vec::new();
    for node in &cluster.nodes()[..2] {
        let js = jetstream::new(connect(&node.url()).await?);
        until_answered(|| ensure_buckets(&js, 3)).await?;
        nodes.push(RoomState::open(&js).await?);
    }
    for round in 0..10 {
        let room = format!("race-{round}");
        let (a, b) = tokio::join!(
            nodes[0].create_room(&room, Bytes::from_static(b"from n1")),
            nodes[1].create_room(&room, Bytes::from_static(b"from n2"))
        );
        let outcome = match (a?, b?) {
            (Created::Now, Created::Existing(record)) => (record, "from n1"),
            (Created::Existing(record), Created::Now) => (record, "from n2"),
            other => return Err(format!("not exactly one creation: {other:?}").into()),
        };
        assert_eq!(outcome.0.as_ref(), outcome.1.as_bytes(), "the loser reads the winner's record");
        assert_eq!(nodes[1].room(&room).await?.as_deref(), Some(outcome.1.as_bytes()));
    }
    assert_eq!(nodes[0].room("never-made").await?, None);

    assert!(!nodes[1].is_banned("race-0", IDENTITY).await?);
    nodes[0].ban("race-0", IDENTITY, Bytes::from_static(b"by the owner")).await?;
    assert!(nodes[1].is_banned("race-0", IDENTITY).await?, "the ban holds on the other node");
    assert!(!nodes[1].is_banned("race-1", IDENTITY).await?, "only in its room");
    nodes[1].unban("race-0", IDENTITY).await?;
    assert!(!nodes[0].is_banned("race-0", IDENTITY).await?);
    Ok(())
}
