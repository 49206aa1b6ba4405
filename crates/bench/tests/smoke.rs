//! Smoke run of the load generator against a real `chatroom-relay` process on 127.0.0.1: a
//! few members, a couple of senders, a few dozen messages. Every message must arrive intact at
//! every other member exactly once, and the relay must acknowledge every one.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chatroom_bench::chat::{self, ChatTarget};
use chatroom_bench::{Mode, Workload};

type TestResult = Result<(), Box<dyn Error>>;

/// A relay process, killed on drop.
struct Relay {
    child: Child,
    addr: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The limits a load generator on one address meets at once: the send rates (per member, per
/// address, per room), new connections per second and connections per address.
const LIFTED_LIMITS: &[&str] = &[
    "--rate-burst",
    "100000",
    "--rate-per-sec",
    "100000",
    "--ip-rate-burst",
    "100000",
    "--ip-rate-per-sec",
    "100000",
    "--room-rate-burst",
    "100000",
    "--room-rate-per-sec",
    "100000",
    "--handshake-burst",
    "100000",
    "--handshakes-per-sec",
    "100000",
    "--max-connections-per-ip",
    "4096",
    "--max-connections-per-48",
    "4096",
];

/// Starts the relay with those limits lifted: the smoke run sends as fast as it can.
fn start_relay(dir: &std::path::Path) -> Result<Relay, Box<dyn Error>> {
    let mut child = Command::new(chatroom_e2e::bin("chatroom-relay"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(LIFTED_LIMITS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut relay = Relay { child, addr: String::new() };
    // The relay prints `listening on ADDR` once it accepts connections; the reader ends when
    // the relay exits, so this loop is bounded by the process.
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            relay.addr = addr.trim().to_owned();
            break;
        }
    }
    if relay.addr.is_empty() {
        return Err("the relay exited before listening".into());
    }
    Ok(relay)
}

fn workload(mode: Mode) -> Workload {
    Workload {
        name: "smoke".into(),
        mode,
        members: 5,
        rooms: 1,
        senders: 2,
        messages: 50,
        bytes: 100,
        rate: None,
        concurrency: 4,
        duration: Duration::from_secs(1),
        settle: Duration::from_secs(5),
        timeout: Duration::from_secs(15),
    }
}

/// Runs `w` against a fresh relay (rate limit raised) and returns what the tool measured.
fn run_on_fresh_relay(w: &Workload) -> Result<chatroom_bench::Outcome, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path())?;
    let target = ChatTarget::single(&relay.addr, Some(relay.child.id()));
    let rt = tokio::runtime::Runtime::new()?;
    let o =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), chat::run(&target, w)).await })??;
    Ok(o)
}

#[test]
fn smoke_every_message_arrives_once_intact() -> TestResult {
    let w = workload(Mode::Deliver);
    let o = run_on_fresh_relay(&w)?;
    assert_eq!(o.expected, 2 * 50 * 4);
    assert_eq!(o.delivered, o.expected, "{o:?}");
    assert_eq!((o.lost, o.duplicated, o.corrupted), (0, 0, 0), "{o:?}");
    assert_eq!(o.sent, 100);
    assert_eq!(o.acked, 100, "every message acknowledged: {o:?}");
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert!(o.p50_ms > 0.0 && o.p50_ms <= o.p99_ms && o.p99_ms <= o.max_ms, "{o:?}");
    assert!(o.server_cpu_secs.is_some() && o.peak_rss_kib.is_some(), "reads the relay's /proc");
    Ok(())
}

#[test]
fn smoke_v2_every_message_arrives_once_intact_as_a_signed_mls_envelope() -> TestResult {
    // The same workload in protocol version 2: v2 handshake and join, MLS application messages
    // in signed envelopes; every delivery byte-identical, every envelope's signature checked.
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path())?;
    // Sealed ahead of the run: the payloads carry time 0 and latency runs from the write.
    let target =
        ChatTarget { protocol: 2, preseal: true, ..ChatTarget::single(&relay.addr, Some(relay.child.id())) };
    let w = workload(Mode::Deliver);
    let rt = tokio::runtime::Runtime::new()?;
    let o =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), chat::run(&target, &w)).await })??;
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert_eq!((o.delivered, o.lost, o.duplicated, o.corrupted), (2 * 50 * 4, 0, 0, 0), "{o:?}");
    assert_eq!(o.acked, 100, "every message acknowledged: {o:?}");
    assert!(o.p50_ms > 0.0 && o.p99_ms <= o.max_ms, "{o:?}");
    Ok(())
}

#[test]
fn smoke_v1_sealed_ahead_opens_to_payloads_that_carry_time_zero() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path())?;
    let target = ChatTarget { preseal: true, ..ChatTarget::single(&relay.addr, None) };
    let w = workload(Mode::Deliver);
    let rt = tokio::runtime::Runtime::new()?;
    let o =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), chat::run(&target, &w)).await })??;
    assert!(o.errors.is_empty(), "every sealed envelope opens to its payload: {:?}", o.errors);
    assert_eq!((o.delivered, o.lost, o.duplicated, o.corrupted), (2 * 50 * 4, 0, 0, 0), "{o:?}");
    assert!(o.p50_ms > 0.0, "{o:?}");
    Ok(())
}

#[test]
fn smoke_rate_limited_relay_shows_up_as_errors_and_loss() -> TestResult {
    // Against the default rate limit (burst 20, 5/s) a fast sender loses messages: the tool
    // must report them as lost and name the relay's error, not count them as delivered.
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(chatroom_e2e::bin("chatroom-relay"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut addr = String::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(a) = line?.strip_prefix("listening on ") {
            addr = a.trim().to_owned();
            break;
        }
    }
    let relay = Relay { child, addr };
    let target = ChatTarget::single(&relay.addr, None);
    let mut w = workload(Mode::Deliver);
    w.settle = Duration::from_secs(1);
    let rt = tokio::runtime::Runtime::new()?;
    let o =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), chat::run(&target, &w)).await })??;
    assert!(o.lost > 0, "{o:?}");
    assert_eq!(o.delivered + o.lost, o.expected);
    assert_eq!(o.duplicated, 0);
    assert!(o.errors.iter().any(|e| e.contains("RateLimited")), "{:?}", o.errors);
    Ok(())
}

#[test]
fn smoke_idle_members_measure_relay_memory() -> TestResult {
    let w = workload(Mode::Idle);
    let o = run_on_fresh_relay(&w)?;
    assert_eq!(o.joined, 5);
    assert!(o.kib_per_member.is_some(), "{o:?}");
    Ok(())
}

#[test]
fn smoke_connect_mode_counts_completed_joins() -> TestResult {
    let w = workload(Mode::Connect);
    let o = run_on_fresh_relay(&w)?;
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert!(o.joined > 0, "{o:?}");
    let rate = o.joins_per_sec.ok_or("no join rate")?;
    assert!((rate - o.joined as f64 / o.join_secs).abs() < 1e-6, "{o:?}");
    assert!(o.join_secs >= w.duration.as_secs_f64(), "loops run for the whole duration: {o:?}");
    assert!(o.x25519_per_sec.is_some_and(|x| x > 0.0), "{o:?}");
    assert!(o.server_cpu_secs.is_some(), "reads the relay's /proc");
    Ok(())
}

/// The rooms a relay's database holds, read while it runs (WAL: committed rows are visible).
fn rooms_in(dir: &std::path::Path) -> Result<i64, Box<dyn Error>> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("relay.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(db.query_row("SELECT count(*) FROM rooms", [], |r| r.get(0))?)
}

#[test]
fn smoke_members_are_spread_over_relay_addresses() -> TestResult {
    // Two relays sharing one key, two rooms, members round robin over the addresses: member i
    // joins room i mod 2 through relay i mod 2, so each relay holds exactly one room, and every
    // delivery stays on its relay. Without the spreading one relay would hold both rooms.
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = start_relay(dir_a.path())?;
    std::fs::copy(dir_a.path().join("relay.key"), dir_b.path().join("relay.key"))?;
    let b = start_relay(dir_b.path())?;
    let target = ChatTarget {
        addrs: vec![a.addr.clone(), b.addr.clone()],
        pids: vec![a.child.id(), b.child.id()],
        backend_pids: vec![std::process::id()],
        fingerprint: None,
        protocol: 1,
        preseal: false,
    };
    let w = Workload { members: 6, rooms: 2, ..workload(Mode::Deliver) };
    let rt = tokio::runtime::Runtime::new()?;
    let o =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), chat::run(&target, &w)).await })??;
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert_eq!((o.delivered, o.lost, o.duplicated, o.corrupted), (2 * 50 * 2, 0, 0, 0), "{o:?}");
    assert_eq!((rooms_in(dir_a.path())?, rooms_in(dir_b.path())?), (1, 1), "one room per relay");
    assert!(o.server_cpu_secs.is_some() && o.backend_cpu_secs.is_some(), "{o:?}");
    Ok(())
}

#[test]
fn smoke_a_relay_address_with_another_key_is_refused() -> TestResult {
    // Every address must present the key the first one presented (one fingerprint pins a
    // cluster): a relay with its own key fails its members' handshakes, naming the address.
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = start_relay(dir_a.path())?;
    let b = start_relay(dir_b.path())?;
    let target = ChatTarget {
        addrs: vec![a.addr.clone(), b.addr.clone()],
        pids: Vec::new(),
        backend_pids: Vec::new(),
        fingerprint: None,
        protocol: 1,
        preseal: false,
    };
    let w = Workload { members: 4, rooms: 2, ..workload(Mode::Deliver) };
    let rt = tokio::runtime::Runtime::new()?;
    let got =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), chat::run(&target, &w)).await })?;
    let e = got.expect_err("a relay with another key must be refused").to_string();
    assert!(e.contains(&format!("handshake with {} failed", b.addr)), "{e}");
    Ok(())
}
