//! Failures of a relay cluster, with real processes: two `chatroom-relay --nats` processes
//! sharing one relay key on a real 3-node NATS cluster, and protocol-level members on both.
//! `kill -9` of the nats-server leading the room stream while members send through both relay
//! processes loses no acknowledged message, stores none twice and leaves one gap-free sequence,
//! and sending resumes (the pause is measured and printed); `kill -9` of a relay process: its
//! members reconnect to the other one and catch up with no gap and no duplicate, and a send that
//! was in flight at the kill, sent again with the same counter, is stored exactly once.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chatroom_crypto::{ClientMessage, ErrorCode, RelayMessage};
use chatroom_nats_harness::NatsCluster;
use chatroom_relay::rooms::jetstream::setup::{SETUP_WITHIN, STREAM};
use common::{member, Conn, KillOnDrop, Person, Res, TestRelay, TestResult, TestRoom};

const BIN: &str = env!("CARGO_BIN_EXE_chatroom-relay");
/// How long a relay process on a cluster may take to print `listening on`: longer than the
/// relay's own bound on its setup, so a relay that gives up says why before the test does.
const LISTENING_WITHIN: Duration = Duration::from_secs(SETUP_WITHIN.as_secs() + 30);
/// How long a send may wait for its answer: the relay holds it up to its append deadline (30 s)
/// plus as long again for the feed to bring it back, during a leader election.
const ANSWER_WITHIN: Duration = Duration::from_secs(75);
/// How often one envelope is sent again after a "try again" refusal, at most: the relay holds
/// a send through a leader election (up to its 30 s append deadline) instead of refusing it,
/// so more refusals in a row mean it refuses where it should wait.
const MAX_RESENDS: usize = 3;
/// Bounds for the waits on the cluster's own state (elections, catching up).
const CLUSTER_WITHIN: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(20);

fn cluster_error(e: chatroom_nats_harness::Error) -> Box<dyn std::error::Error> {
    e.to_string().into()
}

/// A relay process on the cluster, killed (SIGKILL) on drop; what it wrote on stderr is kept.
struct Node {
    child: KillOnDrop,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// SIGKILLs the process (no shutdown, as a crash) and reaps it.
    fn kill(&mut self) -> Res<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Forwards each line of `from` to `to` until either ends.
fn lines_into(from: impl Read + Send + 'static, to: impl Fn(String) -> bool + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if !to(line) {
                break;
            }
        }
    });
}

/// Starts a relay process in `dir` on the NATS servers `urls`, without send-rate limits (the
/// members here send as fast as the cluster stores), and waits for `listening on`; its
/// stderr is reported if it does not get there.
fn node(dir: &Path, urls: &str) -> Res<Node> {
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--nats", urls, "--data-dir"])
            .arg(dir)
            .args(["--rate-burst", "100000", "--rate-per-sec", "100000"])
            .args(["--ip-rate-burst", "100000", "--ip-rate-per-sec", "100000"])
            .args(["--room-rate-burst", "100000", "--room-rate-per-sec", "100000"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let kept = stderr.clone();
    lines_into(child.stderr.take().ok_or("no stderr")?, move |line| {
        kept.lock().unwrap_or_else(PoisonError::into_inner).push(line);
        true
    });
    let (tx, rx) = mpsc::channel();
    lines_into(child.stdout.take().ok_or("no stdout")?, move |line| tx.send(line).is_ok());
    let deadline = Instant::now() + LISTENING_WITHIN;
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(|e| {
            let said = stderr.lock().unwrap_or_else(PoisonError::into_inner).join("\n");
            format!("the relay on {urls} did not print `listening on` within {LISTENING_WITHIN:?} ({e}); its stderr:\n{said}")
        })?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            return Ok(Node { child, addr: addr.parse()?, stderr });
        }
    }
}

/// Two relay processes on `cluster`, sharing one relay key, each given every NATS server with
/// a different one first.
fn two_nodes(cluster: &NatsCluster) -> Res<(Node, Node, [tempfile::TempDir; 2])> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let servers: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let a = node(dirs[0].path(), &servers.join(","))?;
    std::fs::copy(chatroom_relay::key_path(dirs[0].path()), chatroom_relay::key_path(dirs[1].path()))?;
    let rotated = [&servers[1..], &servers[..1]].concat();
    let b = node(dirs[1].path(), &rotated.join(","))?;
    Ok((a, b, dirs))
}

/// The `cluster` part of the room stream's `/jsz` entry, as one running node reports it.
fn stream_cluster(cluster: &NatsCluster, running: &[usize]) -> Option<serde_json::Value> {
    running.iter().find_map(|&i| {
        let jsz = cluster.nodes()[i].monitor("/jsz?accounts=true&streams=true").ok()?;
        let accounts = jsz["account_details"].as_array()?.clone();
        accounts.iter().find_map(|account| {
            let streams = account["stream_detail"].as_array()?;
            let chat = streams.iter().find(|s| s["name"] == STREAM)?;
            Some(chat["cluster"].clone()).filter(|c| c["leader"].as_str().is_some_and(|l| !l.is_empty()))
        })
    })
}

/// The index of the node leading the room stream.
fn stream_leader(cluster: &NatsCluster) -> Res<usize> {
    let deadline = Instant::now() + CLUSTER_WITHIN;
    loop {
        if let Some(info) = stream_cluster(cluster, &[0, 1, 2]) {
            let leader = info["leader"].as_str().unwrap_or_default();
            return Ok(cluster.index_of(leader).ok_or_else(|| format!("no node named {leader}"))?);
        }
        if Instant::now() > deadline {
            return Err(format!("no node reported a leader of {STREAM} within {CLUSTER_WITHIN:?}").into());
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The room stream's cluster part as its leader reports it (only the leader follows how far
/// each replica is).
fn leader_view(cluster: &NatsCluster) -> Option<serde_json::Value> {
    let leader = stream_cluster(cluster, &[0, 1, 2])?["leader"].as_str()?.to_owned();
    let view = stream_cluster(cluster, &[cluster.index_of(&leader)?])?;
    Some(view).filter(|v| v["leader"] == leader.as_str())
}

/// Waits until node `i` leads the room stream or its leader lists it as a current replica: it
/// rejoined and caught up.
fn wait_replica_current(cluster: &NatsCluster, i: usize) -> Res<()> {
    let name = cluster.nodes()[i].name().to_owned();
    let deadline = Instant::now() + CLUSTER_WITHIN;
    loop {
        let current = leader_view(cluster).is_some_and(|c| {
            c["leader"] == name.as_str()
                || c["replicas"].as_array().is_some_and(|replicas| {
                    replicas.iter().any(|r| r["name"] == name.as_str() && r["current"] == true)
                })
        });
        if current {
            return Ok(());
        }
        if Instant::now() > deadline {
            let seen = leader_view(cluster);
            return Err(format!(
                "{name} was not a current replica of {STREAM} within {CLUSTER_WITHIN:?}: {seen:?}"
            )
            .into());
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// A member sending through one relay process, and what the relay acknowledged to it.
struct Sender {
    person: Person,
    conn: Conn,
    acked: Vec<(u64, Vec<u8>)>,
    /// Sends refused with "try again" and sent again with the same counter.
    resent: usize,
    /// When the first send written after the kill was acknowledged.
    first_after_kill: Option<Instant>,
    /// The longest a send waited for its acknowledgement.
    longest_wait: Duration,
}

/// When the leader was killed, once it was.
type KilledAt = Arc<Mutex<Option<Instant>>>;

/// Sends `count` envelopes one after another, each until acknowledged: a "try again" refusal
/// is answered by sending the same envelope (same counter) again.
async fn send_all(
    mut s: Sender,
    room: Arc<TestRoom>,
    count: usize,
    acks: Arc<AtomicUsize>,
    killed: KilledAt,
) -> Res<Sender> {
    for i in 0..count {
        let (counter, envelope) = s.person.seal(&room, &format!("{} {i}", s.person.nick));
        let started = Instant::now();
        let mut resends = 0;
        let seq = loop {
            let after_kill = killed.lock().unwrap_or_else(PoisonError::into_inner).is_some();
            s.conn.send(&[ClientMessage::Send { envelope: envelope.clone() }]).await?;
            match s.conn.answer_within(ANSWER_WITHIN).await? {
                RelayMessage::Ack { counter: c, seq } if c == counter => {
                    if after_kill && s.first_after_kill.is_none() {
                        s.first_after_kill = Some(Instant::now());
                    }
                    break seq;
                }
                RelayMessage::SendError { counter: c, code: ErrorCode::Internal, .. }
                    if c == counter && resends < MAX_RESENDS =>
                {
                    resends += 1;
                }
                other => {
                    return Err(format!("{}: answer to counter {counter}: {other:?}", s.person.nick).into())
                }
            }
        };
        s.resent += resends;
        s.longest_wait = s.longest_wait.max(started.elapsed());
        s.acked.push((seq, envelope));
        acks.fetch_add(1, Ordering::Relaxed);
    }
    Ok(s)
}

/// Reads `conn`'s live deliveries until it has `want`, then up to a Pong: nothing more came.
async fn deliveries(conn: &mut Conn, want: usize) -> Res<Vec<(u64, Vec<u8>)>> {
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        got.push(conn.delivery().await?);
    }
    let extra: Vec<RelayMessage> =
        conn.until_pong(7).await?.into_iter().filter(|m| matches!(m, RelayMessage::Deliver { .. })).collect();
    assert!(extra.is_empty(), "deliveries beyond the {want} sent by others: {extra:?}");
    Ok(got)
}

/// Every acknowledged envelope by its seq; fails on two envelopes acknowledged at one seq.
fn by_seq<'a>(acked: impl Iterator<Item = &'a (u64, Vec<u8>)>) -> BTreeMap<u64, Vec<u8>> {
    let mut all = BTreeMap::new();
    for (seq, envelope) in acked {
        if let Some(other) = all.insert(*seq, envelope.clone()) {
            assert_eq!(&other, envelope, "two envelopes acknowledged at seq {seq}");
        }
    }
    all
}

const MEMBERS_PER_NODE: usize = 2;
const SENDS_PER_MEMBER: usize = 25;
/// Acknowledged sends before the kill.
const KILL_AFTER: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_and_duplicates_nothing_acknowledged_and_sending_resumes(
) -> TestResult {
    let mut cluster = NatsCluster::start().map_err(cluster_error)?;
    let (a, b, _dirs) = two_nodes(&cluster)?;
    let (ra, rb) = (TestRelay::external(a.addr), TestRelay::external(b.addr));
    let room = Arc::new(TestRoom::new("failover"));
    let mut senders = Vec::new();
    for i in 0..2 * MEMBERS_PER_NODE {
        let person = Person::new(&format!("m{i}"));
        let relay = if i % 2 == 0 { &ra } else { &rb };
        let (conn, _) = member(relay, &person, &room, i == 0).await?;
        senders.push(Sender {
            person,
            conn,
            acked: Vec::new(),
            resent: 0,
            first_after_kill: None,
            longest_wait: Duration::ZERO,
        });
    }
    let leader = stream_leader(&cluster)?;

    let (acks, killed): (Arc<AtomicUsize>, KilledAt) = Default::default();
    let mut tasks: Vec<_> = senders
        .into_iter()
        .map(|s| {
            let sending = send_all(s, room.clone(), SENDS_PER_MEMBER, acks.clone(), killed.clone());
            tokio::spawn(async move { sending.await.map_err(|e| e.to_string()) })
        })
        .collect();
    let deadline = Instant::now() + CLUSTER_WITHIN;
    while acks.load(Ordering::Relaxed) < KILL_AFTER {
        assert!(Instant::now() < deadline, "the members' first {KILL_AFTER} sends were not acknowledged");
        if let Some(stopped) = tasks.iter().position(|t| t.is_finished()) {
            let why = tasks.swap_remove(stopped).await?.err().unwrap_or_default();
            return Err(format!("a member stopped sending before the kill: {why}").into());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    cluster.kill(leader).map_err(cluster_error)?;
    let kill = Instant::now();
    *killed.lock().unwrap_or_else(PoisonError::into_inner) = Some(kill);
    let acked_before = acks.load(Ordering::Relaxed);

    let mut senders = Vec::new();
    for task in tasks {
        senders.push(task.await?.map_err(|e| {
            let said = [&a, &b].map(|n| n.stderr.lock().unwrap_or_else(PoisonError::into_inner).join("\n"));
            format!("{e}; relay A's stderr:\n{}\nrelay B's stderr:\n{}", said[0], said[1])
        })?);
    }
    let total = senders.len() * SENDS_PER_MEMBER;
    assert!(acked_before < total, "every send was acknowledged before the kill: nothing tested");
    let resumed = senders.iter().filter_map(|s| s.first_after_kill).min().ok_or("no send after the kill")?;
    let longest = senders.iter().map(|s| s.longest_wait).max().unwrap_or_default();
    let resent: usize = senders.iter().map(|s| s.resent).sum();
    println!(
        "killed stream leader {}: first acknowledged send written after the kill {:?} after it; \
         longest wait for one acknowledgement {longest:?}; {resent} sends refused and sent again; \
         {acked_before} of {total} acknowledged before the kill",
        cluster.nodes()[leader].name(),
        resumed - kill,
    );

    // Each envelope acknowledged once, at one seq of 1..=total: nothing stored twice.
    let all = by_seq(senders.iter().flat_map(|s| s.acked.iter()));
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), (1..=total as u64).collect::<Vec<_>>());
    // Every member got everyone else's envelopes, each once, in seq order, as acknowledged.
    for s in &mut senders {
        let own: HashSet<u64> = s.acked.iter().map(|(seq, _)| *seq).collect();
        let got = deliveries(&mut s.conn, total - own.len()).await?;
        let expected: Vec<(u64, Vec<u8>)> =
            all.iter().filter(|(seq, _)| !own.contains(seq)).map(|(seq, e)| (*seq, e.clone())).collect();
        assert!(got == expected, "{} got {:?}", s.person.nick, got.iter().map(|d| d.0).collect::<Vec<_>>());
    }

    // The killed node comes back, catches up, and the room takes sends through both relays.
    cluster.restart(leader).map_err(cluster_error)?;
    wait_replica_current(&cluster, leader)?;
    let mut next = total as u64;
    for i in 0..2 {
        let (_, envelope) = {
            let s = &mut senders[i];
            s.person.seal(&room, "after the restart")
        };
        next += 1;
        assert_eq!(senders[i].conn.publish_ok(envelope.clone()).await?, next);
        assert_eq!(senders[1 - i].conn.delivery().await?, (next, envelope));
    }
    drop((a, b));
    Ok(())
}

/// What a member's connection brought until the relay closed it: deliveries and acknowledged seqs.
async fn until_closed(conn: &mut Conn) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
    let (mut delivered, mut acked) = (Vec::new(), Vec::new());
    // Ends at the closed socket (or, failing that, at a silence of `STEP`).
    while let Ok(message) = conn.recv().await {
        match message {
            RelayMessage::Deliver { seq, envelope, .. } => delivered.push((seq, envelope)),
            RelayMessage::Ack { seq, .. } => acked.push(seq),
            _ => {}
        }
    }
    (delivered, acked)
}

/// Joins through `relay` after `history_after`; returns the connection and the replay.
async fn rejoin(
    relay: &TestRelay,
    person: &Person,
    room: &TestRoom,
    history_after: u64,
) -> Res<(Conn, Vec<(u64, Vec<u8>)>)> {
    let mut conn = Conn::connect(relay.addr).await?;
    let joined = conn.join(person, room, false, history_after).await?.map_err(|(code, detail)| {
        format!("{} could not join again after the kill: {code:?} {detail}", person.nick)
    })?;
    assert_eq!(joined.history.last().map_or(history_after, |(seq, _)| *seq), joined.history_end);
    Ok((conn, joined.history))
}

/// Whether `seqs` go up one by one.
fn gap_free(seqs: impl Iterator<Item = u64>) -> bool {
    let seqs: Vec<u64> = seqs.collect();
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_killed_relay_process_catch_up_through_the_other_once_each() -> TestResult {
    let cluster = NatsCluster::start().map_err(cluster_error)?;
    let (a, mut b, _dirs) = two_nodes(&cluster)?;
    let (ra, rb) = (TestRelay::external(a.addr), TestRelay::external(b.addr));
    let room = TestRoom::new("moving");
    let (mut owner, mut carol, mut dave) = (Person::new("owner"), Person::new("carol"), Person::new("dave"));
    let (mut o, _) = member(&ra, &owner, &room, true).await?;
    let (mut c, _) = member(&rb, &carol, &room, false).await?;
    let (mut d, _) = member(&rb, &dave, &room, false).await?;
    // What the relays acknowledged, by seq.
    let mut acked = BTreeMap::new();
    let mut carol_own = Vec::new();
    for i in 0..3 {
        let (_, envelope) = owner.seal(&room, &format!("before {i}"));
        acked.insert(o.publish_ok(envelope.clone()).await?, envelope);
        let (_, envelope) = carol.seal(&room, &format!("carol {i}"));
        let seq = c.publish_ok(envelope.clone()).await?;
        carol_own.push((seq, envelope.clone()));
        acked.insert(seq, envelope);
    }
    // Dave's send is in flight when B dies: B may or may not have stored it.
    let (_, in_flight) = dave.seal(&room, "in flight");
    d.send(&[ClientMessage::Send { envelope: in_flight.clone() }]).await?;
    b.kill()?;
    let (carol_before, _) = until_closed(&mut c).await;
    let (dave_before, dave_acked) = until_closed(&mut d).await;
    for i in 0..3 {
        let (_, envelope) = owner.seal(&room, &format!("while away {i}"));
        acked.insert(o.publish_ok(envelope.clone()).await?, envelope);
    }

    // They reconnect to A after the last seq each saw; dave sends his envelope again, with the
    // same counter, and is answered once, whether B had stored it or not.
    let carol_seen = carol_before.iter().chain(&carol_own).map(|(seq, _)| *seq).max().unwrap_or(0);
    let dave_seen = dave_before.iter().map(|(seq, _)| *seq).chain(dave_acked).max().unwrap_or(0);
    let (mut d, dave_replay) = rejoin(&ra, &dave, &room, dave_seen).await?;
    let dave_seq = d.publish_ok(in_flight.clone()).await?;
    acked.insert(dave_seq, in_flight.clone());
    let (mut c, carol_replay) = rejoin(&ra, &carol, &room, carol_seen).await?;

    // The room holds each acknowledged envelope once, in one gap-free sequence.
    let (_, full) = rejoin(&ra, &Person::new("erin"), &room, 0).await?;
    let full_map: BTreeMap<u64, Vec<u8>> = full.iter().cloned().collect();
    assert!(gap_free(full.iter().map(|(seq, _)| *seq)) && full.first().map(|f| f.0) == Some(1));
    assert!(full_map == acked, "stored {:?}, acknowledged {:?}", full_map.keys(), acked.keys());
    // A send through A after all that reaches both, live.
    let (_, last) = owner.seal(&room, "welcome back");
    let last_seq = o.publish_ok(last.clone()).await?;
    assert_eq!(last_seq, full.len() as u64 + 1);
    assert_eq!(c.delivery().await?, (last_seq, last.clone()));
    let dave_live = d.delivery().await?;
    assert_eq!(dave_live, (last_seq, last.clone()));

    // Each saw every envelope once: before the kill, in the replay, as its own, or live.
    let expected: Vec<(u64, Vec<u8>)> = full.iter().cloned().chain([(last_seq, last)]).collect();
    let mut carol_view: Vec<(u64, Vec<u8>)> =
        carol_before.into_iter().chain(carol_own).chain(carol_replay).collect();
    carol_view.push((last_seq, expected[expected.len() - 1].1.clone()));
    carol_view.sort();
    assert!(carol_view == expected, "carol saw {:?}", carol_view.iter().map(|v| v.0).collect::<Vec<_>>());
    let mut dave_view: Vec<(u64, Vec<u8>)> = dave_before.into_iter().chain(dave_replay).collect();
    if !dave_view.iter().any(|(seq, _)| *seq == dave_seq) {
        dave_view.push((dave_seq, in_flight));
    }
    dave_view.push(dave_live);
    dave_view.sort();
    assert!(dave_view == expected, "dave saw {:?}", dave_view.iter().map(|v| v.0).collect::<Vec<_>>());
    drop((a, b));
    Ok(())
}
