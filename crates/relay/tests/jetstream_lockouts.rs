//! Join-failure counts shared by the nodes of the 3-node cluster: failures counted at the same
//! time through two nodes all count, and a count disappears a window after its last failure.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use chatroom_nats_harness::NatsCluster;
use chatroom_relay::rooms::jetstream::lockouts::Lockouts;
use chatroom_relay::rooms::jetstream::setup::{connect, ensure_buckets, until_answered};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WINDOW: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_through_two_nodes_all_count_and_expire_after_their_window() -> TestResult {
    let cluster = NatsCluster::start()?;
    let mut nodes = Vec::new();
    for node in &cluster.nodes()[..2] {
        let js = jetstream::new(connect(&node.url()).await?);
        until_answered(|| ensure_buckets(&js, 3)).await?;
        nodes.push(Lockouts::open(&js).await?);
    }
    let guess = |lockouts: Lockouts| async move {
        let mut counts = Vec::new();
        for _ in 0..10 {
            counts.push(lockouts.record_failure("ip.7f000001", WINDOW).await?);
        }
        Ok::<_, chatroom_relay::rooms::jetstream::state::StateError>(counts)
    };
    let (a, b) = tokio::join!(guess(nodes[0].clone()), guess(nodes[1].clone()));
    let mut counts: Vec<u64> = a?.into_iter().chain(b?).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<_>>(), "no failure lost, none counted twice");
    assert_eq!(nodes[1].failures("ip.7f000001").await?, 20);
    assert_eq!(nodes[0].failures("ip.7f000002").await?, 0, "each key counts on its own");

    // A one-second window: the count is there, then the server expires it.
    assert_eq!(nodes[0].record_failure("room.61", Duration::from_secs(1)).await?, 1);
    assert_eq!(nodes[1].failures("room.61").await?, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[1].failures("room.61").await? != 0 {
        assert!(Instant::now() < deadline, "the count outlived its window by far");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Counting starts afresh after the expiry marker.
    assert_eq!(nodes[1].record_failure("room.61", WINDOW).await?, 1);
    Ok(())
}
