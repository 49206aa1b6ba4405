//! The real `chatroom-relay` binary with `--nats`: refused with a clear message for an
//! unreachable NATS server, a nats-server older than 2.12 (Debian's 2.9, a real process) and a
//! stream or bucket configured otherwise; and two relay processes on one real 3-node cluster,
//! members on both, where a ban and a room's password lockout made through one hold on the other,
//! and `rooms list`, `rooms show` and `bans list` on one show the room and ban made through the
//! other, while `backup` is refused saying what to back up instead.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use chatroom_crypto::{ClientMessage, ErrorCode};
use chatroom_nats_harness::{NatsCluster, NatsServer, TestPki};
use chatroom_relay::admin::{BanInfo, RoomInfo};
use chatroom_relay::rooms::jetstream::lockouts::Lockouts;
use chatroom_relay::rooms::jetstream::setup::{
    connect, stream_config, PRESENCE_BUCKET, SETUP_WITHIN, STREAM,
};
use chatroom_relay::rooms::jetstream::state::room_token;
use common::{member, Conn, KillOnDrop, Person, Res, TestRelay, TestResult, TestRoom};

const BIN: &str = env!("CARGO_BIN_EXE_chatroom-relay");
/// Where the old nats-server is (scripts/install-old-nats-server; scripts/test sets it).
const OLD_ENV: &str = "CHATROOM_OLD_NATS_SERVER";

fn cluster_error(e: chatroom_nats_harness::Error) -> Box<dyn std::error::Error> {
    e.to_string().into()
}

/// Runs the relay against `nats` until it exits (it must refuse to start), bounded by the
/// connection timeout.
fn refused(nats: &str, dir: &Path) -> Res<String> {
    refused_with(nats, dir, &[])
}

/// [`refused`] with `extra` arguments.
fn refused_with(nats: &str, dir: &Path, extra: &[&std::ffi::OsStr]) -> Res<String> {
    let out: Output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--nats-replicas", "1", "--nats", nats, "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()?;
    assert!(!out.status.success(), "the relay started against {nats}");
    assert!(!String::from_utf8(out.stdout)?.contains("listening on"));
    Ok(String::from_utf8(out.stderr)?)
}

#[test]
fn an_unreachable_nats_server_is_refused_saying_what_to_check() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A port nothing listens on any more.
    let port = TcpListener::bind("127.0.0.10:0")?.local_addr()?.port();
    let url = format!("nats://127.0.0.10:{port}");
    let stderr = refused(&url, dir.path())?;
    assert!(
        stderr.contains(&format!("cannot connect to NATS at {url}"))
            && stderr.contains("check the --nats addresses"),
        "{stderr}"
    );
    // The same from the config file's `nats` key.
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, format!("nats = \"{url}\"\nnats-replicas = 1\n"))?;
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        !out.status.success() && stderr.contains(&format!("cannot connect to NATS at {url}")),
        "{stderr}"
    );
    Ok(())
}

/// Where Debian's nats-server 2.9 listens when started with [`OldServer::start`].
const OLD_HOST: [u8; 4] = [127, 0, 0, 14];

/// Debian's nats-server 2.9, listening on a free port until dropped.
struct OldServer {
    _child: KillOnDrop,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl OldServer {
    fn start() -> Res<Self> {
        Self::start_on(OLD_HOST, TcpListener::bind(SocketAddr::from((OLD_HOST, 0)))?.local_addr()?.port())
    }

    /// On `host`: each test its own, so that no other test's old server can take its port
    /// between the port's choice and the server's start.
    fn start_on(host: [u8; 4], port: u16) -> Res<Self> {
        let binary = std::env::var_os(OLD_ENV).map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/nats-server-2.9.10/nats-server")
        });
        if !binary.is_file() {
            return Err(format!(
                "nats-server 2.9.10 is missing ({}): install it with ./scripts/install-old-nats-server (.ci/run does)",
                binary.display()
            )
            .into());
        }
        let addr = SocketAddr::from((host, port));
        let log = tempfile::NamedTempFile::new()?;
        let child = KillOnDrop(
            Command::new(binary)
                .args(["-a", &addr.ip().to_string(), "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(log.reopen()?)
                .spawn()?,
        );
        let server = Self { _child: child, addr, log };
        // Ready once it accepts connections: bounded, the machine is shared.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(server.addr).is_err() {
            if Instant::now() > deadline {
                return Err("the old nats-server did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// What the server printed.
    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

#[test]
fn a_nats_server_older_than_2_12_is_refused_saying_to_upgrade() -> TestResult {
    // A connection refused means the old server was not there any more: once in a few runs
    // of this binary under load, cause not found (its own log, kept in its directory, is
    // shown when every attempt fails). It is started again; the refusal checked is the
    // relay's own answer to a server it reached.
    let mut seen = Vec::new();
    let stderr = loop {
        let old = OldServer::start()?;
        let dir = tempfile::tempdir()?;
        let stderr = refused(&format!("nats://{}", old.addr), dir.path())?;
        if !stderr.contains("Connection refused") {
            break stderr;
        }
        seen.push(format!("{stderr}\nold server log:\n{}", old.log_text()));
        assert!(seen.len() < 3, "{}", seen.join("\n"));
    };
    assert!(
        stderr.contains("nats-server 2.9.10 is too old") && stderr.contains("2.12.0 or newer"),
        "{stderr}"
    );
    assert!(stderr.contains("upgrade every NATS node"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_or_bucket_configured_otherwise_is_refused_naming_the_setting() -> TestResult {
    let server = NatsServer::single().map_err(cluster_error)?;
    let js = jetstream::new(connect(&server.url()).await?);
    // Made by nodes with another --history.
    js.create_stream(stream_config(1, 50)).await?;
    let dir = tempfile::tempdir()?;
    let url = server.url();
    let stderr =
        tokio::task::spawn_blocking(move || refused(&url, dir.path()).map_err(|e| e.to_string())).await??;
    assert!(
        stderr.contains("the stream CHAT") && stderr.contains("history") && stderr.contains("fix or remove"),
        "{stderr}"
    );

    js.delete_stream(STREAM).await?;
    js.create_key_value(kv::Config { bucket: PRESENCE_BUCKET.into(), ..Default::default() }).await?;
    let dir = tempfile::tempdir()?;
    let url = server.url();
    let stderr =
        tokio::task::spawn_blocking(move || refused(&url, dir.path()).map_err(|e| e.to_string())).await??;
    assert!(stderr.contains(PRESENCE_BUCKET) && stderr.contains("allow_msg_ttl"), "{stderr}");
    Ok(())
}

/// A relay process, killed when dropped: also when a test fails before it listens.
/// A relay process on the cluster, until dropped, with every line it printed so far.
struct Node {
    child: KillOnDrop,
    addr: SocketAddr,
    lines: Lines,
}

/// How long a test waits for a relay to start on the cluster: longer than the relay's own
/// bound, so a relay that gives up says why before the test does.
const START_WITHIN: Duration = Duration::from_secs(SETUP_WITHIN.as_secs() + 30);

/// A process's stdout and stderr lines as they come, and those already seen.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(child: &mut Child) -> Res<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let pipe = |tx: std::sync::mpsc::Sender<String>, from: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        };
        pipe(tx.clone(), Box::new(stdout));
        pipe(tx, Box::new(stderr));
        Ok(Self { rx, seen: Vec::new() })
    }

    /// The first new line containing `needle`, within `limit`; else an error with every line.
    fn expect(&mut self, needle: &str, limit: Duration) -> Res<String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(e) => {
                    let why = match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout => format!("within {limit:?}"),
                        std::sync::mpsc::RecvTimeoutError::Disconnected => "before it exited".to_owned(),
                    };
                    return Err(format!(
                        "the relay printed no {needle:?} {why}; it printed:\n{}",
                        self.seen.join("\n")
                    )
                    .into());
                }
            }
        }
    }
}

/// Starts a relay process in `dir` on the NATS server `url`, with a room lockout after 3 wrong
/// passwords (the address's lockout out of the way).
fn spawn_node(dir: &Path, url: &str, extra: &[&std::ffi::OsStr]) -> Res<(KillOnDrop, Lines)> {
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--nats", url, "--data-dir"])
            .arg(dir)
            .args(extra)
            .args(["--room-failures-slow", "3", "--room-failures-lockout", "3"])
            .args(["--ip-failures-slow", "50", "--ip-failures-lockout", "50"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let lines = Lines::of(&mut child);
    Ok((child, lines?))
}

/// Waits for the `listening on` line of a relay from [`spawn_node`].
fn listening(child: KillOnDrop, mut lines: Lines) -> Res<Node> {
    let line = lines.expect("listening on ", START_WITHIN)?;
    let addr = line.trim_start_matches("listening on ").trim().parse()?;
    Ok(Node { child, addr, lines })
}

/// A relay process on the NATS server `url`, serving.
fn node(dir: &Path, url: &str) -> Res<Node> {
    let (child, lines) = spawn_node(dir, url, &[])?;
    listening(child, lines)
}

/// A join's refusal code.
async fn refusal(relay: &TestRelay, person: &Person, room: &TestRoom) -> Res<ErrorCode> {
    let mut conn = Conn::connect(relay.addr).await?;
    let joined = conn.join(person, room, false, 0).await?;
    Ok(joined.err().ok_or_else(|| format!("{} joined through {}", person.nick, relay.addr))?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_and_a_password_lockout_through_one_relay_process_hold_on_the_other() -> TestResult {
    let cluster = NatsCluster::start().map_err(cluster_error)?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &cluster.nodes()[0].url())?;
    let key = chatroom_relay::key_path(dir_a.path());
    std::fs::copy(&key, chatroom_relay::key_path(dir_b.path()))?;
    let b = node(dir_b.path(), &cluster.nodes()[1].url())?;
    let (ra, rb) = (TestRelay::external(a.addr), TestRelay::external(b.addr));

    let room = TestRoom::new("guarded");
    let (mut owner, bob) = (Person::new("owner"), Person::new("bob"));
    let (mut o, _) = member(&ra, &owner, &room, true).await?;
    let (mut bo, _) = member(&rb, &bob, &room, false).await?;
    let (_, envelope) = owner.seal(&room, "through A");
    let seq = o.publish_ok(envelope.clone()).await?;
    assert_eq!(bo.delivery().await?, (seq, envelope), "the process on B delivers what A stored");

    o.send(&[ClientMessage::Ban { nick: bob.nick.clone() }]).await?;
    assert_eq!(bo.goodbye().await?.0, ErrorCode::Banned);
    assert_eq!(refusal(&rb, &bob, &room).await?, ErrorCode::Banned, "the ban through A holds on B");

    // Three wrong passwords through A lock the room on A...
    let wrong = TestRoom { name: room.name.clone(), keys: TestRoom::new("other").keys };
    for _ in 0..3 {
        assert_eq!(refusal(&ra, &Person::new("guess"), &wrong).await?, ErrorCode::WrongPassword);
    }
    let stranger = Person::new("stranger");
    assert_eq!(refusal(&ra, &stranger, &room).await?, ErrorCode::TooManyAttempts);
    // A counts each failure in the cluster just after refusing it: the barrier is the shared
    // count itself, read through the third NATS node (bounded: the machine is shared).
    let js = jetstream::new(connect(&cluster.nodes()[2].url()).await?);
    let lockouts = Lockouts::open(&js).await?;
    let key = format!("room.{}", room_token(room.name.as_str()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while lockouts.failures(&key).await? < 3 {
        assert!(Instant::now() < deadline, "the failures through A were not counted in the cluster");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and on B, even for the right password; the owner, bound in the room, still gets in.
    assert_eq!(refusal(&rb, &stranger, &room).await?, ErrorCode::TooManyAttempts, "the lockout holds on B");
    let mut again = Conn::connect(rb.addr).await?;
    again.join(&owner, &room, false, 0).await?.map_err(|(code, detail)| format!("{code:?} {detail}"))?;
    drop((a, b));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_while_the_cluster_has_no_majority_serves_once_it_is_back() -> TestResult {
    let mut cluster = NatsCluster::start().map_err(cluster_error)?;
    cluster.kill(1).map_err(cluster_error)?;
    cluster.kill(2).map_err(cluster_error)?;
    let dir = tempfile::tempdir()?;
    let (child, mut lines) = spawn_node(dir.path(), &cluster.nodes()[0].url(), &[])?;
    // The one node left cannot create the stream without a majority: the relay keeps asking.
    lines.expect("the NATS cluster did not answer; asking again", START_WITHIN)?;
    cluster.restart(1).map_err(cluster_error)?;
    let relay = listening(child, lines)?;
    assert!(
        relay.lines.seen.iter().all(|l| !l.contains("ERROR")),
        "the relay logged an error while waiting: {:?}",
        relay.lines.seen
    );
    carries_a_message(&relay).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reconnects_to_a_nats_server_older_than_2_12_stops_saying_to_upgrade() -> TestResult {
    let mut new = NatsServer::single().map_err(cluster_error)?;
    // The old server's address is in the list from the start but listens only later.
    let old_host = [127, 0, 0, 15];
    let old_port = TcpListener::bind(SocketAddr::from((old_host, 0)))?.local_addr()?.port();
    let urls = format!("{},nats://127.0.0.15:{old_port}", new.url());
    let dir = tempfile::tempdir()?;
    let (child, lines) = spawn_node(dir.path(), &urls, &["--nats-replicas".as_ref(), "1".as_ref()])?;
    let mut relay = listening(child, lines)?;
    let _old = OldServer::start_on(old_host, old_port)?;
    new.kill().map_err(cluster_error)?;

    let said = relay.lines.expect("too old", START_WITHIN)?;
    assert!(said.contains("nats-server 2.9.10 is too old") && said.contains("2.12.0 or newer"), "{said}");
    let deadline = Instant::now() + START_WITHIN;
    let status = loop {
        if let Some(status) = relay.child.try_wait()? {
            break status;
        }
        assert!(Instant::now() < deadline, "the relay still runs on nats-server 2.9.10");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    Ok(())
}

/// A member joins through `relay` and one envelope makes the round trip to a second member.
async fn carries_a_message(relay: &Node) -> TestResult {
    let (ra, room) = (TestRelay::external(relay.addr), TestRoom::new("carried"));
    let (mut owner, bob) = (Person::new("owner"), Person::new("bob"));
    let (mut o, _) = member(&ra, &owner, &room, true).await?;
    let (mut b, _) = member(&ra, &bob, &room, false).await?;
    let (_, envelope) = owner.seal(&room, "through the relay");
    let seq = o.publish_ok(envelope.clone()).await?;
    assert_eq!(b.delivery().await?, (seq, envelope));
    Ok(())
}

/// Runs an admin command against the relay serving `dir` (through its admin socket), bounded.
async fn admin(args: &[&str], dir: &Path) -> Res<Output> {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(dir);
    cmd.env_remove("CHATROOM_RELAY_DATA_DIR").env_remove("CHATROOM_RELAY_CONFIG").env_remove("RUST_LOG");
    Ok(tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??)
}

/// The stdout of an admin command that must succeed.
async fn admin_ok(args: &[&str], dir: &Path) -> Res<String> {
    let out = admin(args, dir).await?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_bans_made_through_one_relay_process_are_listed_by_the_other() -> TestResult {
    let cluster = NatsCluster::start().map_err(cluster_error)?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = node(dir_a.path(), &cluster.nodes()[0].url())?;
    let b = node(dir_b.path(), &cluster.nodes()[1].url())?;
    let ra = TestRelay::external(a.addr);

    let room = TestRoom::new("listed");
    let (mut owner, bob) = (Person::new("owner"), Person::new("bob"));
    let (mut o, _) = member(&ra, &owner, &room, true).await?;
    let (mut bo, _) = member(&ra, &bob, &room, false).await?;
    let (_, envelope) = owner.seal(&room, "one");
    o.publish_ok(envelope).await?;
    let (_, envelope) = owner.seal(&room, "two");
    let seq = o.publish_ok(envelope).await?;
    o.send(&[ClientMessage::Ban { nick: bob.nick.clone() }]).await?;
    assert_eq!(bo.goodbye().await?.0, ErrorCode::Banned, "the ban is stored before bob is sent off");
    let (owner_id, bob_id) = (hex(&owner.identity.public().0), hex(&bob.identity.public().0));

    // Node B has no member and nothing in its own database: all of this comes from the cluster.
    let dir = dir_b.path();
    let rooms: Vec<RoomInfo> = serde_json::from_str(&admin_ok(&["rooms", "list", "--json"], dir).await?)?;
    let [listed] = rooms.as_slice() else { return Err(format!("one room expected: {rooms:?}").into()) };
    assert_eq!((listed.name.as_str(), listed.owner.as_str()), ("listed", owner_id.as_str()));
    assert_eq!((listed.latest_seq, listed.history, listed.nicknames, listed.bans), (seq, 2, 2, 1));
    assert_eq!((listed.created, listed.history_bytes), (None, None), "not kept by the cluster");
    assert!(listed.online >= Some(1), "the owner, connected through A, is online: {:?}", listed.online);

    let table = admin_ok(&["rooms", "list"], dir).await?;
    assert!(table.lines().any(|l| l.starts_with("listed ") && l.contains(&owner_id)), "{table}");
    let shown: RoomInfo =
        serde_json::from_str(&admin_ok(&["rooms", "show", "listed", "--json"], dir).await?)?;
    let nicks: Vec<(&str, &str)> =
        shown.members.iter().map(|m| (m.nick.as_str(), m.identity.as_str())).collect();
    assert_eq!(nicks, [("bob", bob_id.as_str()), ("owner", owner_id.as_str())]);
    let detail = admin_ok(&["rooms", "show", "listed"], dir).await?;
    assert!(detail.contains(&format!("{seq}")) && detail.contains("envelopes, - bytes"), "{detail}");

    let bans: Vec<BanInfo> =
        serde_json::from_str(&admin_ok(&["bans", "list", "listed", "--json"], dir).await?)?;
    assert_eq!(bans, [BanInfo { identity: bob_id.clone(), nicknames: vec!["bob".into()] }]);
    let text = admin_ok(&["bans", "list", "listed"], dir).await?;
    assert!(text.lines().any(|l| l.starts_with(&bob_id) && l.ends_with("bob")), "{text}");
    let missing = admin(&["bans", "list", "nowhere"], dir).await?;
    assert!(
        !missing.status.success()
            && String::from_utf8(missing.stderr)?.contains("there is no room \"nowhere\"")
    );

    // `backup` copies a database the cluster's rooms are not in: refused, saying what to back up.
    let file = dir.join("backup.sqlite3");
    let out = admin(&["backup", file.to_str().ok_or("path")?], dir).await?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && stderr.contains("nats stream backup"), "{stderr}");
    assert!(!file.exists(), "nothing was written");
    drop((a, b));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_speaks_tls_to_nats_with_its_ca_and_client_certificate_and_is_refused_without() -> TestResult {
    let certs = tempfile::tempdir()?;
    let pki = TestPki::new(certs.path()).map_err(cluster_error)?;
    let server = NatsServer::single_with(&pki.server_config(true)).map_err(cluster_error)?;
    let url = server.url();
    let (ca, cert, key) = (pki.ca.as_os_str(), pki.client_cert.as_os_str(), pki.client_key.as_os_str());

    // Not trusting the server's certificate authority.
    let (dir, url2) = (tempfile::tempdir()?, url.clone());
    let stderr =
        tokio::task::spawn_blocking(move || refused(&url2, dir.path()).map_err(|e| e.to_string())).await??;
    assert!(stderr.contains("cannot connect to NATS at") && stderr.contains("--nats-ca"), "{stderr}");
    // Trusting it, but without the client certificate this server asks for.
    let (dir, url2, ca2) = (tempfile::tempdir()?, url.clone(), ca.to_owned());
    let stderr = tokio::task::spawn_blocking(move || {
        refused_with(&url2, dir.path(), &["--nats-ca".as_ref(), &ca2]).map_err(|e| e.to_string())
    })
    .await??;
    assert!(stderr.contains("cannot connect to NATS at") && stderr.contains("--nats-cert"), "{stderr}");
    // A CA file that is not there.
    let (dir, url2) = (tempfile::tempdir()?, url.clone());
    let stderr = tokio::task::spawn_blocking(move || {
        refused_with(&url2, dir.path(), &["--nats-ca".as_ref(), "/nonexistent/ca.pem".as_ref()])
            .map_err(|e| e.to_string())
    })
    .await??;
    assert!(stderr.contains("cannot read /nonexistent/ca.pem (given with --nats-ca)"), "{stderr}");

    let dir = tempfile::tempdir()?;
    let extra =
        ["--nats-replicas".as_ref(), "1".as_ref(), "--nats-ca".as_ref(), ca, "--nats-cert".as_ref(), cert];
    let (child, lines) = spawn_node(dir.path(), &url, &[&extra[..], &["--nats-key".as_ref(), key]].concat())?;
    let relay = listening(child, lines)?;
    carries_a_message(&relay).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_in_to_nats_with_the_password_in_its_url_and_never_shows_it() -> TestResult {
    let server =
        NatsServer::single_with("authorization {\n  user: relay\n  password: \"tr0ub4dor-and-3\"\n}\n")
            .map_err(cluster_error)?;
    let with = |password: &str| server.url().replacen("nats://", &format!("nats://relay:{password}@"), 1);

    let (dir, wrong) = (tempfile::tempdir()?, with("not-the-password"));
    let stderr =
        tokio::task::spawn_blocking(move || refused(&wrong, dir.path()).map_err(|e| e.to_string())).await??;
    assert!(stderr.contains("cannot connect to NATS at nats://relay:***@"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    let dir = tempfile::tempdir()?;
    let (child, lines) =
        spawn_node(dir.path(), &with("tr0ub4dor-and-3"), &["--nats-replicas".as_ref(), "1".as_ref()])?;
    let mut relay = listening(child, lines)?;
    carries_a_message(&relay).await?;
    // Its stderr is read apart from its stdout: the log line may come after `listening on`.
    let shown = "nats=nats://relay:***@";
    if !relay.lines.seen.iter().any(|l| l.contains(shown)) {
        relay.lines.expect(shown, START_WITHIN)?;
    }
    assert!(relay.lines.seen.iter().all(|l| !l.contains("tr0ub4dor")), "{:?}", relay.lines.seen);
    Ok(())
}

/// Writes `text` to a new file `path` with permission bits `mode`.
fn private_file(path: &Path, text: &str, mode: u32) -> Res<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_in_to_nats_as_an_nkey_user_from_a_private_seed_file() -> TestResult {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed()?;
    let users = format!("authorization {{\n  users = [ {{ nkey: \"{}\" }} ]\n}}\n", user.public_key());
    let server = NatsServer::single_with(&users).map_err(cluster_error)?;
    let url = server.url();
    let keys = tempfile::tempdir()?;
    let [good, loose, other, garbage] =
        ["user.nk", "loose.nk", "other.nk", "garbage.nk"].map(|name| keys.path().join(name));
    private_file(&good, &format!("{seed}\n"), 0o600)?;
    private_file(&loose, &seed, 0o644)?;
    private_file(&other, &nkeys::KeyPair::new_user().seed()?, 0o600)?;
    private_file(&garbage, "not a seed", 0o600)?;

    let attempt = |extra: Vec<std::ffi::OsString>| {
        let (url, dir) = (url.clone(), tempfile::tempdir());
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_os_str()).collect();
            let dir = dir.map_err(|e| e.to_string())?;
            refused_with(&url, dir.path(), &extra).map_err(|e| e.to_string())
        })
    };
    let with = |file: &Path| vec!["--nats-nkey".into(), file.as_os_str().to_owned()];
    // No nkey, or another user's: the server refuses the login.
    for extra in [vec![], with(&other)] {
        let stderr = attempt(extra).await??;
        assert!(stderr.contains("cannot connect to NATS at") && stderr.contains("--nats-nkey"), "{stderr}");
    }
    // A seed file others may read, or one without a seed: refused before connecting.
    let stderr = attempt(with(&loose)).await??;
    assert!(stderr.contains("others may read it") && stderr.contains("chmod 600"), "{stderr}");
    let stderr = attempt(with(&garbage)).await??;
    assert!(stderr.contains("does not hold one NATS user seed"), "{stderr}");
    assert!(!stderr.contains("not a seed"), "the file's content is not shown: {stderr}");

    let dir = tempfile::tempdir()?;
    let extra = ["--nats-replicas".as_ref(), "1".as_ref(), "--nats-nkey".as_ref(), good.as_os_str()];
    let (child, lines) = spawn_node(dir.path(), &url, &extra)?;
    let relay = listening(child, lines)?;
    carries_a_message(&relay).await?;
    assert!(relay.lines.seen.iter().all(|l| !l.contains(seed.as_str())), "{:?}", relay.lines.seen);
    Ok(())
}
