//! Appending to a room's log against a real nats-server, on one replica (single node) and on
//! three (3-node cluster), where the server checks deduplication and compare-and-set in
//! different orders: concurrent writers share one gap-free room sequence, and a resend of a
//! stored message is answered with the original, whatever tip it is sent after.

use std::collections::BTreeSet;

use async_nats::jetstream;
use bytes::Bytes;
use chatroom_nats_harness::{NatsCluster, NatsServer};
use chatroom_relay::rooms::jetstream::log::{Appended, RoomLog, Tip, CHAT_SEQ};
use chatroom_relay::rooms::jetstream::setup::{connect, ensure_stream, open_stream, until_answered, STREAM};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Appends per writer.
const EACH: u64 = 30;

async fn room_log(
    url: &str,
    replicas: usize,
    room: &str,
) -> Result<RoomLog, Box<dyn std::error::Error + Send + Sync>> {
    let js = jetstream::new(connect(url).await?);
    until_answered(|| ensure_stream(&js, replicas, 1000)).await?;
    let stream = until_answered(|| open_stream(&js, STREAM)).await?;
    Ok(RoomLog::new(js, stream, format!("chat.{room}")))
}

/// Appends `EACH` messages, each after the tip the previous append returned.
async fn write(log: RoomLog, writer: &str) -> Result<Vec<Tip>, Box<dyn std::error::Error + Send + Sync>> {
    let mut tip = Tip::default();
    let mut tips = Vec::new();
    for i in 0..EACH {
        match log.append(tip, &format!("{writer}-{i}"), Bytes::from(format!("{writer} {i}"))).await? {
            Appended::Stored(stored) => tip = stored,
            Appended::Duplicate(original) => {
                return Err(format!("a new message was a duplicate of {original:?}").into())
            }
        }
        tips.push(tip);
    }
    Ok(tips)
}

async fn two_writers_share_one_sequence(urls: [&str; 2], replicas: usize) -> TestResult {
    let (a, b) = (room_log(urls[0], replicas, "r1").await?, room_log(urls[1], replicas, "r1").await?);
    let other_room = room_log(urls[1], replicas, "r2").await?;
    let (a, b, other) = tokio::join!(write(a, "a"), write(b, "b"), write(other_room.clone(), "o"));
    let tips: Vec<Tip> = a?.into_iter().chain(b?).collect();
    let seqs: BTreeSet<u64> = tips.iter().map(|t| t.chat_seq).collect();
    assert_eq!(seqs, (1..=2 * EACH).collect(), "one gap-free sequence, no seq twice");
    let other: Vec<u64> = other?.iter().map(|t| t.chat_seq).collect();
    assert_eq!(other, (1..=EACH).collect::<Vec<_>>(), "another room counts on its own");
    // What was stored says the same as what the appends answered.
    let js = jetstream::new(connect(urls[0]).await?);
    let stream = until_answered(|| open_stream(&js, STREAM)).await?;
    for tip in tips {
        let stored = stream.get_raw_message(tip.stream_seq).await?;
        assert_eq!(
            stored.headers.get(CHAT_SEQ).map(|v| v.as_str().to_owned()),
            Some(tip.chat_seq.to_string())
        );
    }
    Ok(())
}

async fn a_resend_returns_the_original(url: &str, replicas: usize) -> TestResult {
    let log = room_log(url, replicas, "resend").await?;
    let Appended::Stored(first) = log.append(Tip::default(), "m1", Bytes::from_static(b"one")).await? else {
        return Err("the first message was not stored".into());
    };
    let Appended::Stored(second) = log.append(first, "m2", Bytes::from_static(b"two")).await? else {
        return Err("the second message was not stored".into());
    };
    assert_eq!((first.chat_seq, second.chat_seq), (1, 2));
    // Sent again after the tip it was first sent after (stale now), after the current tip, and
    // after none: always the original.
    for after in [Tip::default(), first, second] {
        assert_eq!(
            log.append(after, "m1", Bytes::from_static(b"one")).await?,
            Appended::Duplicate(first),
            "after {after:?}"
        );
    }
    assert_eq!(log.tip().await?, second, "nothing stored twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_replica_writers_share_one_sequence_and_resends_are_answered_once() -> TestResult {
    let server = NatsServer::single()?;
    let url = server.url();
    two_writers_share_one_sequence([&url, &url], 1).await?;
    a_resend_returns_the_original(&url, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_three_replicas_writers_on_two_nodes_share_one_sequence_and_resends_are_answered_once(
) -> TestResult {
    let cluster = NatsCluster::start()?;
    let (n1, n2) = (cluster.nodes()[0].url(), cluster.nodes()[1].url());
    two_writers_share_one_sequence([&n1, &n2], 3).await?;
    a_resend_returns_the_original(&cluster.urls(), 3).await
}

/// An append through the NATS server that led the stream, killed with SIGKILL: the client
/// moves to another server, where a publish first finds nobody answering for the stream (no
/// leader yet, or its interest not routed there yet). The append waits through that and the
/// election instead of failing at once, and stores the message next in the room's sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waits_through_the_killing_of_the_stream_leader_it_was_connected_to() -> TestResult {
    let mut cluster = NatsCluster::start()?;
    let setup = room_log(&cluster.urls(), 3, "failover").await?;
    let Appended::Stored(first) = setup.append(Tip::default(), "m1", Bytes::from_static(b"one")).await?
    else {
        return Err("the first message was not stored".into());
    };
    let js = jetstream::new(connect(&cluster.urls()).await?);
    let leader = until_answered(|| open_stream(&js, STREAM))
        .await?
        .info()
        .await?
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone());
    let leader = leader.and_then(|name| cluster.index_of(&name)).ok_or("the stream has no leader")?;
    // A client of the leader alone (it learns the other servers from the leader's INFO).
    let log = room_log(&cluster.nodes()[leader].url(), 3, "failover").await?;
    cluster.kill(leader)?;
    let appended = log.append(first, "m2", Bytes::from_static(b"two")).await?;
    let Appended::Stored(second) = appended else {
        return Err(format!("the append after the kill: {appended:?}").into());
    };
    assert_eq!(second.chat_seq, 2);
    // Sent again through the new leader: the original, nothing stored twice.
    assert_eq!(log.append(first, "m2", Bytes::from_static(b"two")).await?, Appended::Duplicate(second));
    assert_eq!(log.tip().await?, second);
    Ok(())
}
