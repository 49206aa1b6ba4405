//! The JetStream backend passes the same conformance suite as the SQLite one, against a real
//! single nats-server and a real 3-node cluster; each check gets emptied stream and buckets
//! and a new node.

use async_nats::jetstream;
use chatroom_nats_harness::{NatsCluster, NatsServer};
use chatroom_relay::rooms::conformance;
use chatroom_relay::rooms::jetstream::setup::{connect, BUCKETS, STREAM};
use chatroom_relay::rooms::jetstream::{ClusterConfig, JetStreamRooms};
use chatroom_relay::rooms::rules::RuleLimits;
use chatroom_relay::rooms::{HistoryLimit, RoomLimits};

pub fn config(replicas: usize) -> ClusterConfig {
    ClusterConfig {
        replicas,
        limits: RoomLimits {
            history: HistoryLimit { count: 10, bytes: 1 << 20 },
            rules: RuleLimits { max_members: 1000, headroom_percent: 10, max_nicknames: 100 },
            max_rooms: 100,
        },
    }
}

/// A new node on emptied stream and buckets.
async fn fresh(urls: String, replicas: usize) -> (JetStreamRooms, ()) {
    let client = connect(&urls).await.expect("the test cluster answers");
    let rooms = JetStreamRooms::open(client.clone(), config(replicas))
        .await
        .expect("the stream and buckets are made");
    let js = jetstream::new(client);
    let names = std::iter::once(STREAM.to_owned()).chain(BUCKETS.iter().map(|(b, _)| format!("KV_{b}")));
    for name in names {
        js.get_stream(&name).await.expect("made above").purge().await.expect("purged");
    }
    (rooms, ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_rooms_on_one_nats_server_pass_the_conformance_suite() {
    let server = NatsServer::single().expect("nats-server starts (scripts/install-nats-server)");
    let url = server.url();
    // Boxed: the suite's future is large for a test thread's stack.
    Box::pin(conformance::run(|| Box::pin(fresh(url.clone(), 1)))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_rooms_on_a_three_node_cluster_pass_the_conformance_suite() {
    let cluster = NatsCluster::start().expect("the 3-node cluster starts (scripts/install-nats-server)");
    let urls = cluster.urls();
    Box::pin(conformance::run(|| Box::pin(fresh(urls.clone(), 3)))).await;
}
