//! The operator's commands of the real `chatroom-relay` binary: the config file and
//! `check-config`, `rooms`/`bans`/`owner` against a running relay (its admin socket) and a
//! stopped one (its database), and an online backup taken under load and restored.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatroom_crypto::{ClientMessage, ErrorCode};
use chatroom_relay::admin::{BanInfo, RoomInfo};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_chatroom-relay");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the binary with `args` and `--data-dir dir` (when given).
async fn relay_cmd(args: &[&str], dir: Option<&Path>) -> Res<Output> {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).env_remove("CHATROOM_RELAY_DATA_DIR").env_remove("CHATROOM_RELAY_CONFIG");
    if let Some(dir) = dir {
        cmd.arg("--data-dir").arg(dir);
    }
    Ok(tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??)
}

/// Runs a command that must succeed and returns its stdout.
async fn ok(args: &[&str], dir: &Path) -> Res<String> {
    let out = relay_cmd(args, Some(dir)).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{args:?} failed: {stderr}").into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs a command that must fail and returns its stderr.
async fn fails(args: &[&str], dir: &Path) -> Res<String> {
    let out = relay_cmd(args, Some(dir)).await?;
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    Ok(String::from_utf8(out.stderr)?)
}

async fn rooms_json(dir: &Path) -> Res<Vec<RoomInfo>> {
    Ok(serde_json::from_str(&ok(&["rooms", "list", "--json"], dir).await?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_bans_and_owner_commands_work_on_a_running_relay_and_a_stopped_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("lobby");
    let (mut alice, bob, carol) = (Person::new("alice"), Person::new("bob"), Person::new("carol"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    let (mut c, _) = member(&relay, &carol, &room, false).await?;
    a.send(&[ClientMessage::Ban { nick: carol.nick.clone() }]).await?;
    assert_eq!(c.goodbye().await?.0, ErrorCode::Banned);
    let mut bytes = 0;
    for i in 0..3 {
        let (_, envelope) = alice.seal(&room, &format!("hello {i}"));
        bytes += envelope.len() as u64;
        a.publish_ok(envelope).await?;
    }

    let rooms = rooms_json(dir.path()).await?;
    assert_eq!(rooms.len(), 1);
    let lobby = &rooms[0];
    assert_eq!(lobby.name, "lobby");
    assert_eq!(lobby.owner, hex(&alice.identity.public().0));
    assert_eq!(lobby.online, Some(2), "alice and bob; carol was banned");
    assert_eq!((lobby.latest_seq, lobby.history, lobby.history_bytes), (3, 3, Some(bytes)));
    assert_eq!((lobby.nicknames, lobby.bans), (3, 1));
    let table = ok(&["rooms", "list"], dir.path()).await?;
    let mut lines = table.lines();
    assert!(lines.next().is_some_and(|l| l.starts_with("ROOM   ONLINE  LATEST  HISTORY")), "{table}");
    assert!(lines.next().is_some_and(|l| l.starts_with("lobby  2       3       3")), "{table}");

    let bans: Vec<BanInfo> =
        serde_json::from_str(&ok(&["bans", "list", "lobby", "--json"], dir.path()).await?)?;
    assert_eq!(
        bans,
        [BanInfo { identity: hex(&carol.identity.public().0), nicknames: vec!["carol".into()] }]
    );
    let shown: RoomInfo =
        serde_json::from_str(&ok(&["rooms", "show", "lobby", "--json"], dir.path()).await?)?;
    let nicks: Vec<&str> = shown.members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(nicks, ["alice", "bob", "carol"]);
    assert!(fails(&["rooms", "show", "nosuch"], dir.path()).await?.contains("there is no room \"nosuch\""));
    let bad = fails(&["owner", "set", "lobby", "bob"], dir.path()).await?;
    assert!(bad.contains("is not an identity; give the member's full identity, 64 hex digits"), "{bad}");

    // A new owner takes effect at once: bob may now kick alice.
    let bob_hex = hex(&bob.identity.public().0);
    let done = ok(&["owner", "set", "lobby", &bob_hex], dir.path()).await?;
    assert_eq!(done.trim(), format!("{bob_hex} now owns room lobby"));
    b.send(&[ClientMessage::Kick { nick: alice.nick.clone() }]).await?;
    assert_eq!(a.goodbye().await?.0, ErrorCode::Kicked);

    // Deleting the room disconnects its members and erases it.
    assert_eq!(ok(&["rooms", "delete", "lobby"], dir.path()).await?.trim(), "deleted room lobby");
    assert_eq!(b.goodbye().await?.0, ErrorCode::NoSuchRoom);
    assert!(rooms_json(dir.path()).await?.is_empty());
    let mut again = Conn::connect(relay.addr).await?;
    assert_eq!(again.join(&bob, &room, false, 0).await?.expect_err("deleted").0, ErrorCode::NoSuchRoom);
    let (again, joined) = member(&relay, &alice, &room, true).await?;
    assert!(joined.created && joined.history.is_empty(), "a deleted room's name starts afresh");
    drop(again);

    // The same commands on the stopped relay's database.
    let other = TestRoom::new("other");
    drop(member(&relay, &alice, &other, true).await?);
    relay.stop().await?;
    assert!(!dir.path().join(chatroom_relay::admin::ADMIN_SOCKET).exists(), "the socket is removed on stop");
    let rooms = rooms_json(dir.path()).await?;
    assert_eq!(
        rooms.iter().map(|r| (r.name.as_str(), r.online)).collect::<Vec<_>>(),
        [("lobby", None), ("other", None)]
    );
    ok(&["owner", "set", "other", &bob_hex], dir.path()).await?;
    ok(&["rooms", "delete", "lobby"], dir.path()).await?;
    let rooms = rooms_json(dir.path()).await?;
    assert_eq!(
        rooms.iter().map(|r| (r.name.as_str(), r.owner.as_str())).collect::<Vec<_>>(),
        [("other", bob_hex.as_str())]
    );
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let (_, joined) = member(&relay, &alice, &other, false).await?;
    assert_eq!(joined.owner, bob.identity.public().0, "the restarted relay reads the new owner");
    let mut again = Conn::connect(relay.addr).await?;
    assert_eq!(again.join(&bob, &room, false, 0).await?.expect_err("deleted").0, ErrorCode::NoSuchRoom);
    relay.stop().await
}

#[tokio::test]
async fn admin_commands_on_a_directory_without_a_relay_say_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = fails(&["rooms", "list"], dir.path()).await?;
    assert!(err.contains("there is no relay database in"), "{err}");
    assert!(!dir.path().join(chatroom_relay::DB_FILE).exists(), "nothing was created");
    Ok(())
}

/// A backup taken while a member publishes restores to a relay that serves every message
/// acknowledged before the backup started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_load_restores_every_message_acknowledged_before_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let generous = |c: &mut chatroom_relay::Config| {
        c.history = 100_000;
        c.rate_burst = 100_000;
        c.rate_per_sec = 100_000;
        c.ip_rate_burst = 100_000;
        c.ip_rate_per_sec = 100_000;
        c.room_rate_burst = 100_000;
        c.room_rate_per_sec = 100_000;
    };
    let relay = TestRelay::start(&data, generous).await?;
    let room = Arc::new(TestRoom::new("busy"));
    let mut alice = Person::new("alice");
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    const TOTAL: u64 = 1500;
    // The highest acknowledged seq, published by the loader.
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0u64);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (sent, room) = (sent.clone(), room.clone());
        tokio::spawn(async move {
            for i in 1..=TOTAL {
                let (_, envelope) = alice.seal(&room, &format!("message {i}"));
                sent.lock().map_err(|_| "poisoned")?.push(envelope.clone());
                let seq = a.publish_ok(envelope).await.map_err(|e| e.to_string())?;
                assert_eq!(seq, i);
                acked_tx.send_replace(seq);
            }
            Ok::<(), String>(())
        })
    };
    tokio::time::timeout(Duration::from_secs(60), acked.wait_for(|seq| *seq >= 200)).await??;
    let before = *acked.borrow();
    let file = dir.path().join("backup.sqlite3");
    let file_arg = file.to_str().ok_or("path")?;
    let done = ok(&["backup", file_arg], &data).await?;
    assert_eq!(done.trim(), format!("backed up to {}", file.display()));
    let after = *acked.borrow();
    tokio::time::timeout(Duration::from_secs(120), load).await???;
    relay.stop().await?;
    assert!(fails(&["backup", file_arg], &data).await?.contains("already exists; choose a new file name"));

    // Restore: the backup becomes the database of a fresh data directory, with the same key.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored)?;
    std::fs::copy(data.join(chatroom_relay::KEY_FILE), restored.join(chatroom_relay::KEY_FILE))?;
    std::fs::copy(&file, restored.join(chatroom_relay::DB_FILE))?;
    let relay = TestRelay::start(&restored, generous).await?;
    let mut b = Conn::connect(relay.addr).await?;
    let joined = b.join(&Person::new("bob"), &room, false, 0).await?.map_err(|e| format!("{e:?}"))?;
    let seqs: Vec<u64> = joined.history.iter().map(|h| h.0).collect();
    let latest = joined.history_end;
    assert!((before..=after).contains(&latest), "backup point {latest} outside [{before}, {after}]");
    assert_eq!(seqs, (1..=latest).collect::<Vec<_>>());
    let sent = sent.lock().map_err(|_| "poisoned")?.clone();
    let envelopes: Vec<Vec<u8>> = joined.history.into_iter().map(|h| h.1).collect();
    assert_eq!(envelopes[..], sent[..latest as usize], "the restored envelopes are the ones sent");
    eprintln!("backup under load: {before} acknowledged before, {latest} in the backup, {after} after it");
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_sets_every_flag_and_flags_override_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("relay.toml");
    let data_str = data.to_str().ok_or("path")?;
    std::fs::write(
        &config,
        format!("# a relay\nlisten = \"127.0.0.1:0\"\ndata-dir = \"{data_str}\"\nhistory = 2\nsynchronous = \"normal\"\n"),
    )?;
    let config_str = config.to_str().ok_or("path")?;

    let out = ok(&["check-config", "--config", config_str, "--rate-burst", "7"], dir.path()).await?;
    assert!(out.contains("history = 2  # config file\n"), "{out}");
    assert!(out.contains("synchronous = \"normal\"  # config file\n"), "{out}");
    assert!(out.contains("rate-burst = 7  # command line\n"), "{out}");
    assert!(out.contains("max-connections = 4096  # default\n"), "{out}");
    // The printed configuration is itself a valid config file.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out)?;
    let again = relay_cmd(&["check-config", "--config", printed.to_str().ok_or("path")?], None).await?;
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8(again.stdout)?.contains("rate-burst = 7  # config file\n"));

    std::fs::write(dir.path().join("bad.toml"), "history = 2\nhistroy = 3\n")?;
    let bad =
        relay_cmd(&["check-config", "--config", dir.path().join("bad.toml").to_str().ok_or("path")?], None)
            .await?;
    let err = String::from_utf8(bad.stderr)?;
    assert!(!bad.status.success());
    assert!(
        err.contains("bad.toml line 2: unknown key \"histroy\"; valid keys are: listen, data-dir, history,"),
        "{err}"
    );
    std::fs::write(dir.path().join("bad.toml"), "history = 2\nmax-envelope = 99999\n")?;
    let bad = relay_cmd(&["--config", dir.path().join("bad.toml").to_str().ok_or("path")?], None).await?;
    assert!(String::from_utf8(bad.stderr)?.contains("--max-envelope 99999 exceeds the protocol's maximum"));

    // The relay itself runs from the file: its data directory, address and history length.
    let mut child = std::process::Command::new(BIN)
        .args(["--config", config_str])
        .env_remove("CHATROOM_RELAY_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let addr = tokio::task::spawn_blocking(move || -> Result<std::net::SocketAddr, String> {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.parse().map_err(|e| format!("{e}"));
            }
        }
        Err("no listening line".into())
    })
    .await??;
    let result = async {
        assert!(data.join(chatroom_relay::DB_FILE).exists(), "the file's data-dir is used");
        let target = TestRelay::external(addr);
        let room = TestRoom::new("short");
        let mut alice = Person::new("alice");
        let (mut a, _) = member(&target, &alice, &room, true).await?;
        for i in 0..3 {
            a.publish_ok(alice.seal(&room, &format!("m{i}")).1).await?;
        }
        let (_, joined) = member(&target, &Person::new("bob"), &room, false).await?;
        assert_eq!(
            joined.history.iter().map(|h| h.0).collect::<Vec<_>>(),
            [2, 3],
            "history = 2 from the file"
        );
        Res::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[tokio::test]
async fn the_platform_config_file_is_read_when_it_exists() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run = || {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("check-config")
            .env_remove("CHATROOM_RELAY_CONFIG")
            .env_remove("CHATROOM_RELAY_DATA_DIR")
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"));
        cmd.output()
    };
    let out = run().await?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with("# effective configuration (no config file); valid"), "{text}");
    let file = dir.path().join("config/chatroom-relay/relay.toml");
    std::fs::create_dir_all(file.parent().ok_or("parent")?)?;
    std::fs::write(&file, "history = 9\n")?;
    let out = run().await?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.starts_with(&format!("# effective configuration (config file {}); valid", file.display())),
        "{text}"
    );
    assert!(text.contains("history = 9  # config file\n"), "{text}");
    Ok(())
}

/// The admin socket answers a malformed or oversized request with an error and keeps serving.
#[tokio::test]
async fn the_admin_socket_refuses_bad_requests_and_keeps_serving() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    // A completed join shows the relay is serving, so its admin socket is there.
    let _member = member(&relay, &Person::new("alice"), &TestRoom::new("r"), true).await?;
    let socket = dir.path().join(chatroom_relay::admin::ADMIN_SOCKET);
    let ask = |bytes: Vec<u8>| {
        let socket = socket.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&socket).await?;
            // The relay may answer (and close) before reading all of an oversized request.
            let _ = stream.write_all(&bytes).await;
            let mut reply = String::new();
            tokio::time::timeout(STEP, stream.read_to_string(&mut reply)).await??;
            Res::Ok(reply)
        }
    };
    let reply = ask(b"{\"op\":\"rooms-drop\"}\n".to_vec()).await?;
    assert!(reply.starts_with("{\"error\":\"not a request: unknown variant `rooms-drop`"), "{reply}");
    let reply = ask(vec![b'x'; 70 * 1024]).await?;
    assert_eq!(
        reply, "{\"error\":\"the request must be one line of JSON\"}\n",
        "a 64 KiB cap, no newline found"
    );
    let reply = ask(b"{\"op\":\"bans-list\",\"room\":\"r\"}\n".to_vec()).await?;
    assert_eq!(reply, "{\"bans\":[]}\n");
    relay.stop().await
}
