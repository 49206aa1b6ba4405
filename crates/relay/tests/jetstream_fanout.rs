//! A room's feed from the stream's RePublish against a real nats-server: messages stored before
//! the feed started are backfilled in order, later ones arrive live, nothing twice; a gap at
//! the end (no later message to reveal it) is found by the quiet probe or an append's hint;
//! and on the 3-node cluster a feed on one node follows two writers on the others.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chatroom_nats_harness::{NatsCluster, NatsServer};
use chatroom_relay::rooms::jetstream::fanout::{Delivered, Probe, RoomFeed};
use chatroom_relay::rooms::jetstream::log::{Appended, RoomLog, Tip};
use chatroom_relay::rooms::jetstream::setup::{
    connect, ensure_stream, open_stream, until_answered, STREAM, SUBSCRIPTION_CAPACITY,
};
use tokio::sync::watch;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The next delivery, or an error after a generous bound (the machine running tests is shared).
async fn next(feed: &mut RoomFeed) -> Result<Delivered, Box<dyn std::error::Error + Send + Sync>> {
    Ok(tokio::time::timeout(Duration::from_secs(20), feed.next()).await??)
}

async fn append(log: &RoomLog, id: &str) -> Result<Tip, Box<dyn std::error::Error + Send + Sync>> {
    let tip = log.tip().await?;
    match log.append(tip, id, Bytes::from(id.to_owned())).await? {
        Appended::Stored(tip) => Ok(tip),
        Appended::Duplicate(_) => Err(format!("{id} was a duplicate").into()),
    }
}

#[tokio::test]
async fn a_feed_backfills_what_came_before_it_and_then_follows_live_without_repeats() -> TestResult {
    let server = NatsServer::single()?;
    let client = connect(&server.url()).await?;
    let js = jetstream::new(client.clone());
    ensure_stream(&js, 1, 1000).await?;
    let stream = js.get_stream(STREAM).await?;
    let log = RoomLog::new(js.clone(), stream.clone(), "chat.room".into());
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(format!("early-{i}"));
        append(&log, &format!("early-{i}")).await?;
    }
    let mut from_start = RoomFeed::subscribe(&client, stream.clone(), "room", Tip::default()).await?;
    let after_two =
        log.tip().await.map(|t| Tip { chat_seq: t.chat_seq - 1, stream_seq: t.stream_seq - 1 })?;
    let mut from_third = RoomFeed::subscribe(&client, stream.clone(), "room", after_two).await?;
    for i in 1..=2 {
        ids.push(format!("live-{i}"));
        append(&log, &format!("live-{i}")).await?;
    }
    for (n, id) in ids.iter().enumerate() {
        let got = next(&mut from_start).await?;
        assert_eq!((got.tip.chat_seq, got.payload.as_ref()), (n as u64 + 1, id.as_bytes()));
    }
    for (n, id) in ids.iter().enumerate().skip(2) {
        let got = next(&mut from_third).await?;
        assert_eq!((got.tip.chat_seq, got.payload.as_ref()), (n as u64 + 1, id.as_bytes()));
    }
    // Nothing after the last: the next append is the next delivery, not a repeat.
    append(&log, "last").await?;
    assert_eq!(next(&mut from_start).await?.tip.chat_seq, 6);
    assert_eq!(next(&mut from_third).await?.tip.chat_seq, 6);
    Ok(())
}

/// A room on a single server with `early` messages stored, and a feed of it subscribed after
/// them from the start: no republished copy of those will ever reach it.
async fn feed_after_the_fact(
    early: usize,
    probe: Probe,
) -> Result<(NatsServer, RoomLog, RoomFeed, Vec<Tip>), Box<dyn std::error::Error + Send + Sync>> {
    let server = NatsServer::single()?;
    let client = connect(&server.url()).await?;
    let js = jetstream::new(client.clone());
    ensure_stream(&js, 1, 10_000).await?;
    let stream = js.get_stream(STREAM).await?;
    let log = RoomLog::new(js, stream.clone(), "chat.room".into());
    let mut tips = Vec::new();
    for i in 1..=early {
        tips.push(append(&log, &format!("early-{i}")).await?);
    }
    let feed = RoomFeed::subscribe(&client, stream, "room", Tip::default()).await?.with_probe(probe);
    Ok((server, log, feed, tips))
}

#[tokio::test]
async fn a_quiet_feed_finds_the_messages_no_later_one_revealed_and_repeats_none() -> TestResult {
    let fast = Probe { first: Duration::from_millis(20), max: Duration::from_millis(40) };
    let (_server, log, mut feed, _) = feed_after_the_fact(3, fast).await?;
    for seq in 1..=3 {
        assert_eq!(next(&mut feed).await?.tip.chat_seq, seq);
    }
    // Several probes find the same last message: none is delivered again.
    let more = tokio::time::timeout(Duration::from_millis(300), feed.next()).await;
    assert!(more.is_err(), "a probe delivered again: {more:?}");
    append(&log, "live").await?;
    assert_eq!(next(&mut feed).await?.tip.chat_seq, 4);
    Ok(())
}

#[tokio::test]
async fn a_busy_feed_whose_subscription_overflowed_finds_the_lost_tail() -> TestResult {
    let fast = Probe { first: Duration::from_millis(20), max: Duration::from_millis(40) };
    let (_server, log, mut feed, _) = feed_after_the_fact(0, fast).await?;
    // More than the subscription buffers, appended while nobody reads: the newest are dropped,
    // and nothing after them reveals the gap. The feed is busy (each delivery puts the next
    // probe later) until the buffered ones are read.
    let total = SUBSCRIPTION_CAPACITY as u64 + 100;
    let mut tip = Tip::default();
    for i in 1..=total {
        match log.append(tip, &format!("m{i}"), Bytes::from(format!("m{i}"))).await? {
            Appended::Stored(next) => tip = next,
            Appended::Duplicate(_) => return Err(format!("m{i} was a duplicate").into()),
        }
    }
    for seq in 1..=total {
        assert_eq!(next(&mut feed).await?.tip.chat_seq, seq);
    }
    Ok(())
}

#[tokio::test]
async fn a_hinted_append_whose_copy_never_came_is_read_from_the_stream() -> TestResult {
    let hour = Duration::from_secs(3600);
    let only_hints = Probe { first: hour, max: hour };
    let (_server, _log, feed, tips) = feed_after_the_fact(2, only_hints).await?;
    let (hint, hints) = watch::channel(Tip::default());
    let mut feed = feed.with_hints(hints);
    hint.send_replace(tips[1]);
    for seq in 1..=2 {
        assert_eq!(next(&mut feed).await?.tip.chat_seq, seq);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_a_feed_on_one_node_follows_two_writers_on_the_others_in_order() -> TestResult {
    let cluster = NatsCluster::start()?;
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let reader = connect(&urls[0]).await?;
    let js = jetstream::new(reader.clone());
    until_answered(|| ensure_stream(&js, 3, 1000)).await?;
    let stream = until_answered(|| open_stream(&js, STREAM)).await?;
    let mut feed = RoomFeed::subscribe(&reader, stream, "shared", Tip::default()).await?;
    let mut writers = Vec::new();
    for (w, url) in urls[1..].iter().enumerate() {
        let js = jetstream::new(connect(url).await?);
        // A new connection's first requests may go unanswered on a loaded machine: its reply
        // subject reaches the other nodes a moment later. The relay asks again; so does this.
        let stream = until_answered(|| open_stream(&js, STREAM)).await?;
        let log = RoomLog::new(js.clone(), stream, "chat.shared".into());
        writers.push(tokio::spawn(async move {
            for i in 0..20 {
                append(&log, &format!("w{w}-{i}")).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    let mut seen = std::collections::BTreeSet::new();
    for expected in 1..=40 {
        let got = next(&mut feed).await?;
        assert_eq!(got.tip.chat_seq, expected);
        assert!(seen.insert(got.payload), "delivered twice");
    }
    for writer in writers {
        writer.await??;
    }
    Ok(())
}
