//! The real `chatroom-relay` binary: start-up output, the fingerprint subcommand, `kill -9`
//! and restart, SIGTERM, a database of another schema version, a lost key, a mistyped data
//! directory, and what reaches the disk and the logs.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatroom_crypto::ErrorCode;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_chatroom-relay");

/// A relay process and what it printed on start-up.
struct Process {
    child: KillOnDrop,
    addr: SocketAddr,
    fingerprint: String,
    stdout: Vec<String>,
}

/// Starts the binary on port 0 with logs at trace level appended to `log`, and waits for
/// its `listening on` line.
fn start(dir: &Path, log: &Path) -> Res<Process> {
    let log = File::options().create(true).append(true).open(log)?;
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .arg("-vv")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?,
    );
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            let addr: SocketAddr = addr.parse()?;
            let fingerprint = lines
                .iter()
                .find_map(|l: &String| l.strip_prefix("fingerprint ").map(str::to_owned))
                .ok_or("no fingerprint line")?;
            lines.push(line);
            return Ok(Process { child, addr, fingerprint, stdout: lines });
        }
        lines.push(line);
    }
}

fn relay_at(addr: SocketAddr) -> TestRelay {
    TestRelay::external(addr)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_and_nothing_on_disk_or_in_logs_is_plaintext() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let log = dir.path().join("relay.log");
    let mut relay = start(&data, &log)?;
    assert!(relay.stdout.iter().any(|l| l.starts_with("created a new relay key")), "{:?}", relay.stdout);
    let invite = format!("invite prefix chatroom://{}@{}/", relay.fingerprint, relay.addr);
    assert!(relay.stdout.iter().any(|l| l.starts_with(&invite)), "{:?}", relay.stdout);

    let room = TestRoom::new("durable");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let canary = format!("canary-{}", hex(&chatroom_crypto::Identity::generate().public().0));
    let target = relay_at(relay.addr);
    let (mut a, _) = member(&target, &alice, &room, true).await?;
    let (mut b, _) = member(&target, &bob, &room, false).await?;
    assert_eq!(a.relay_key, hex_decode(&relay.fingerprint)?, "the printed fingerprint is the Noise key");
    let mut sent = Vec::new();
    for i in 0..20 {
        let (_, envelope) = alice.seal(&room, &format!("{canary} #{i}"));
        assert_eq!(a.publish_ok(envelope.clone()).await?, i + 1);
        sent.push(envelope);
    }
    assert_eq!(b.delivery().await?.0, 1);

    // SIGKILL: no shutdown code runs.
    relay.child.kill()?;
    relay.child.wait()?;
    drop((a, b));

    let relay = start(&data, &log)?;
    assert!(!relay.stdout.iter().any(|l| l.starts_with("created a new relay key")), "the key is reused");
    let target = relay_at(relay.addr);
    let mut b = Conn::connect(target.addr).await?;
    let joined = b.join(&bob, &room, false, 0).await?.expect("bob rejoins");
    assert_eq!(joined.history.iter().map(|h| h.0).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    assert_eq!(joined.history.iter().map(|h| h.1.clone()).collect::<Vec<_>>(), sent);
    let (_, envelope) = alice.seal(&room, "after the restart");
    let (mut a, _) = member(&target, &alice, &room, false).await?;
    assert_eq!(a.publish_ok(envelope).await?, 21, "numbering continues");
    drop((a, b));
    drop(relay);

    // Envelopes are stored (the room name is there in clear), the plaintext never is.
    let mut files = 0;
    for entry in fs::read_dir(&data)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue; // the admin socket a killed relay left behind
        }
        let path = entry.path();
        let bytes = fs::read(&path)?;
        assert!(!contains(&bytes, canary.as_bytes()), "{} holds plaintext", path.display());
        if path.to_string_lossy().contains("relay.sqlite3") {
            files += 1;
            if path.extension().is_some_and(|e| e == "sqlite3") {
                assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
            }
        }
    }
    assert!(files >= 1);
    let db = fs::read(data.join("relay.sqlite3"))?;
    let wal = fs::read(data.join("relay.sqlite3-wal")).unwrap_or_default();
    assert!(contains(&db, b"durable") || contains(&wal, b"durable"), "the search reads real data");
    let logs = fs::read(&log)?;
    assert!(contains(&logs, b"joined"), "trace logs were captured");
    assert!(!contains(&logs, canary.as_bytes()), "logs hold plaintext");
    assert!(!contains(&logs, hex(room.keys.join_secret.as_bytes()).as_bytes()), "logs hold the join secret");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_say_goodbye_and_exit_zero() -> TestResult {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir()?;
        let mut relay = start(dir.path(), &dir.path().join("log"))?;
        let target = relay_at(relay.addr);
        let room = TestRoom::new("term");
        let (mut a, _) = member(&target, &Person::new("alice"), &room, true).await?;
        let status = Command::new("kill").args([signal, &relay.child.id().to_string()]).status()?;
        assert!(status.success());
        assert_eq!(a.goodbye().await?.0, ErrorCode::ShuttingDown, "{signal}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = relay.child.try_wait()? {
                break exit;
            }
            assert!(Instant::now() < deadline, "the relay did not exit after {signal}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "{signal}: {exit:?}");
    }
    Ok(())
}

#[test]
fn the_fingerprint_subcommand_prints_the_same_key_every_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run = || -> Res<String> {
        let out = Command::new(BIN).arg("fingerprint").arg("--data-dir").arg(dir.path()).output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let first = run()?;
    assert_eq!(first.len(), 64);
    assert!(first.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(run()?, first);
    let key = dir.path().join(chatroom_relay::KEY_FILE);
    assert_eq!(fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    // The running relay presents the same key.
    let relay = start(dir.path(), &dir.path().join("log"))?;
    assert_eq!(relay.fingerprint, first);
    Ok(())
}

#[test]
fn a_database_of_another_schema_version_is_refused_with_a_clear_message() -> TestResult {
    let dir = tempfile::tempdir()?;
    // The key first: a database without its key is refused for that reason.
    assert!(Command::new(BIN)
        .arg("fingerprint")
        .arg("--data-dir")
        .arg(dir.path())
        .output()?
        .status
        .success());
    let conn = rusqlite::Connection::open(dir.path().join(chatroom_relay::DB_FILE))?;
    conn.pragma_update(None, "application_id", chatroom_relay::APPLICATION_ID)?;
    conn.pragma_update(None, "user_version", chatroom_relay::SCHEMA_VERSION + 1)?;
    conn.execute_batch("CREATE TABLE rooms (x)")?;
    drop(conn);
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    let found = format!("schema version {}", chatroom_relay::SCHEMA_VERSION + 1);
    assert!(stderr.contains(&found) && stderr.contains("--data-dir"), "{stderr}");
    assert!(!String::from_utf8(out.stdout)?.contains("listening on"));
    Ok(())
}

#[test]
fn a_lost_key_beside_its_database_is_refused_not_replaced() -> TestResult {
    let dir = tempfile::tempdir()?;
    let first = start(dir.path(), &dir.path().join("log"))?;
    drop(first);
    let key = dir.path().join(chatroom_relay::KEY_FILE);
    fs::remove_file(&key)?;
    for args in [&["--listen", "127.0.0.1:0"][..], &["fingerprint"][..]] {
        let out =
            Command::new(BIN).args(args).arg("--data-dir").arg(dir.path()).stdin(Stdio::null()).output()?;
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8(out.stderr)?;
        assert!(stderr.contains(&format!("the relay key {} does not", key.display())), "{stderr}");
        assert!(stderr.contains("Restore") && stderr.contains("mv "), "{stderr}");
        assert!(String::from_utf8(out.stdout)?.is_empty(), "no fingerprint, no listening");
        assert!(!key.exists(), "no new key was made");
    }
    Ok(())
}

#[test]
fn the_fingerprint_subcommand_refuses_a_missing_data_directory() -> TestResult {
    let dir = tempfile::tempdir()?;
    let typo = dir.path().join("relya");
    let out = Command::new(BIN).arg("fingerprint").arg("--data-dir").arg(&typo).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("is not a directory") && stderr.contains("mkdir -p"), "{stderr}");
    assert!(!typo.exists(), "nothing created");
    Ok(())
}

#[test]
fn bad_flags_are_refused_with_the_fix() -> TestResult {
    let out = Command::new(BIN).args(["--max-envelope", "999999", "--data-dir", "/nonexistent"]).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("use a value up to"), "{stderr}");
    // A version 2 room's group information must fit at the room's member limit.
    let out = Command::new(BIN)
        .args([
            "--max-group-info-bytes",
            "100000",
            "--max-room-members",
            "1000",
            "--data-dir",
            "/nonexistent",
        ])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("raise it to at least 290000 or lower --max-room-members"), "{stderr}");
    let out = Command::new(BIN).args(["--history-bytes", "16000", "--data-dir", "/nonexistent"]).output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("use at least 16490"), "{stderr}");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Res<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2).ok_or("short")?, 16)?;
    }
    Ok(out)
}
