//! The real `chatroom-relay` binary's metrics endpoint, scraped over HTTP after actions whose
//! counts are known, and its JSON log lines (who kicked whom, why a member left, statistics).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatroom_crypto::{ClientMessage, ErrorCode, PresenceEvent, RelayMessage};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_chatroom-relay");

/// The relay until dropped, and where it listens.
struct Process {
    _child: KillOnDrop,
    addr: SocketAddr,
    metrics: SocketAddr,
}

fn start(dir: &Path, log: &Path, extra: &[&str]) -> Res<Process> {
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("CHATROOM_RELAY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log)?))
            .spawn()?,
    );
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut metrics = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("metrics on http://") {
            metrics = Some(url.trim_end_matches("/metrics").parse()?);
        }
        if let Some(addr) = line.strip_prefix("listening on ") {
            let metrics = metrics.ok_or("no metrics line before the listening line")?;
            return Ok(Process { _child: child, addr: addr.parse()?, metrics });
        }
    }
    Err("the relay exited before listening".into())
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> Res<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut response)).await??;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of headers")?;
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

/// The value of the sample `name` (with its labels, as printed) in a scrape.
fn sample(scrape: &str, name: &str) -> Res<f64> {
    let line = scrape
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')))
        .ok_or_else(|| format!("no sample {name} in:\n{scrape}"))?;
    Ok(line[name.len()..].trim().parse()?)
}

/// The JSON log lines so far.
fn logs(log: &Path) -> Res<Vec<serde_json::Value>> {
    std::fs::read_to_string(log)?
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not a JSON log line ({e}): {l}").into()))
        .collect()
}

fn field<'a>(line: &'a serde_json::Value, key: &str) -> &'a str {
    line["fields"][key].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_what_members_did_and_the_json_log_says_who_and_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("relay.log");
    let relay = start(
        &dir.path().join("data"),
        &log,
        &[
            "--queue-bytes",
            "65536",
            "--rate-burst",
            "100000",
            "--ip-rate-burst",
            "100000",
            "--room-rate-burst",
            "100000",
            "--stats-interval",
            "1s",
        ],
    )?;
    let target = TestRelay::external(relay.addr);
    let room = TestRoom::new("metered");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&target, &alice, &room, true).await?;
    let (mut b, _) = member(&target, &bob, &room, false).await?;
    let mut wrong = Conn::connect(relay.addr).await?;
    let refused = wrong.join(&Person::new("eve"), &TestRoom::new("metered"), false, 0).await?;
    assert_eq!(refused.expect_err("wrong password").0, ErrorCode::WrongPassword);
    let mut envelope_bytes = 0.0;
    for i in 0..5 {
        let (_, envelope) = alice.seal(&room, &format!("metered {i}"));
        envelope_bytes += envelope.len() as f64;
        a.publish_ok(envelope).await?;
    }
    for seq in 1..=5 {
        assert_eq!(b.delivery().await?.0, seq);
    }

    let (status, scrape) = get(relay.metrics, "/metrics").await?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&scrape, "chatroom_joins_total")?, 2.0);
    assert_eq!(sample(&scrape, "chatroom_join_refusals_total{code=\"WrongPassword\"}")?, 1.0);
    assert_eq!(sample(&scrape, "chatroom_connections{state=\"joined\"}")?, 2.0);
    assert_eq!(sample(&scrape, "chatroom_connections_accepted_total")?, 3.0);
    assert_eq!(sample(&scrape, "chatroom_deliveries_total")?, 5.0, "five envelopes, each to bob only");
    assert!(sample(&scrape, "chatroom_delivered_bytes_total")? > envelope_bytes);
    assert!(sample(&scrape, "chatroom_received_bytes_total")? > envelope_bytes);
    assert!(sample(&scrape, "chatroom_sent_bytes_total")? > envelope_bytes);
    assert_eq!(sample(&scrape, "chatroom_rooms")?, 1.0);
    assert_eq!(sample(&scrape, "chatroom_rooms_loaded")?, 1.0);
    assert_eq!(sample(&scrape, "chatroom_history_envelopes")?, 5.0);
    assert!(
        sample(&scrape, "chatroom_store_commit_seconds_count")? >= 5.0,
        "one commit per acknowledged send at most"
    );
    assert_eq!(sample(&scrape, "chatroom_slow_consumer_closes_total")?, 0.0);
    let (status, _) = get(relay.metrics, "/other").await?;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // A request head over 8 KiB is not answered.
    let mut stream = tokio::net::TcpStream::connect(relay.metrics).await?;
    let _ =
        stream.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "y".repeat(9000)).as_bytes()).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut reply)).await?;
    assert!(reply.is_empty(), "an oversized request head was answered");

    // Carol stops reading: she is closed as a slow consumer once her queue of 64 KiB is full.
    let carol = Person::new("carol");
    let mut c = Conn::connect_small_buffer(relay.addr).await?;
    c.join(&carol, &room, false, 0).await?.map_err(|e| format!("{e:?}"))?;
    let body = "x".repeat(4000);
    let mut carol_left = false;
    for _ in 0..400 {
        let batch: Vec<ClientMessage> =
            (0..10).map(|_| ClientMessage::Send { envelope: alice.seal(&room, &body).1 }).collect();
        a.send(&batch).await?;
        let mut acks = 0;
        while acks < 10 {
            match a.recv().await? {
                RelayMessage::Ack { .. } => acks += 1,
                RelayMessage::Presence { event: PresenceEvent::Left, nick, .. }
                    if nick.as_str() == "carol" =>
                {
                    carol_left = true
                }
                _ => {}
            }
        }
        for _ in 0..10 {
            b.delivery().await?; // bob keeps up
        }
        if carol_left {
            break;
        }
    }
    assert!(carol_left, "carol was never disconnected");
    let (_, scrape) = get(relay.metrics, "/metrics").await?;
    assert_eq!(sample(&scrape, "chatroom_slow_consumer_closes_total")?, 1.0);

    // Alice kicks bob: the log says who kicked whom, and why bob left.
    a.send(&[ClientMessage::Kick { nick: bob.nick.clone() }]).await?;
    assert_eq!(b.goodbye().await?.0, ErrorCode::Kicked);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = logs(&log)?;
        let message = |l: &serde_json::Value, m: &str| l["fields"]["message"].as_str() == Some(m);
        let kicked = lines
            .iter()
            .any(|l| message(l, "member kicked") && field(l, "by") == "alice" && field(l, "target") == "bob");
        let bob_left = lines.iter().any(|l| {
            message(l, "left") && field(l, "nick") == "bob" && field(l, "reason").contains("Kicked")
        });
        let carol_left = lines.iter().any(|l| {
            message(l, "left")
                && field(l, "nick") == "carol"
                && field(l, "reason").starts_with("slow consumer")
        });
        let stats = lines.iter().any(|l| message(l, "stats") && l["fields"]["joins"].as_u64() == Some(3));
        // Connections are counted closed once they end, after their goodbye and a linger.
        let (_, scrape) = get(relay.metrics, "/metrics").await?;
        let closed = |reason: &str| {
            sample(&scrape, &format!("chatroom_connections_closed_total{{reason=\"{reason}\"}}")).ok()
        };
        let ended = (closed("slow_consumer"), closed("refused"), closed("kicked"));
        if kicked && bob_left && carol_left && stats && ended == (Some(1.0), Some(1.0), Some(1.0)) {
            break;
        }
        assert!(Instant::now() < deadline, "log lines or closes missing (kicked {kicked}, bob left {bob_left}, carol left {carol_left}, stats {stats}, closed {ended:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[test]
fn metrics_on_a_public_address_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = Command::new(BIN)
        .args(["--metrics", "0.0.0.0:9187", "--data-dir"])
        .arg(dir.path())
        .env_remove("CHATROOM_RELAY_CONFIG")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("--metrics 0.0.0.0:9187 is not a loopback address"), "{err}");
    Ok(())
}
