//! Support for the end-to-end tests: real `chatroom-relay` and `chatroom` processes on
//! 127.0.0.1 with temporary data directories, and their output read line by line with
//! timeouts.
//!
//! The binaries are taken from the target directory next to the test executable; if they are
//! missing or older than their sources they are built once per test process with
//! `cargo build --bin chatroom --bin chatroom-relay`.
#![forbid(unsafe_code)]
// Test support: panicking with a clear message is the right failure mode here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod liar;
pub mod tap;

/// How long any single expected output may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Errors in tests.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn target_dir() -> PathBuf {
    // target/debug/deps/e2e-<hash> -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target directory").to_path_buf()
}

/// What `cargo test` sets for the test it runs and for no shell: the package's identity, its
/// directories, the build script's output.
const SET_FOR_THIS_TEST: [&str; 8] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Runs a `cargo` started by a test as from the user's shell: without what `cargo test` set
/// for this test (`SET_FOR_THIS_TEST`, `CARGO_PKG_*`, `CARGO_BIN_*`). Build scripts that watch
/// those variables (ring's) would otherwise see a change and rebuild, and the next build from
/// a shell (the rest of `scripts/test`, `scripts/dist`) would rebuild them and everything above
/// them again. What configures cargo itself (`CARGO_HOME`, `CARGO_INCREMENTAL`,
/// `CARGO_TARGET_DIR`...) is kept.
pub fn as_from_a_shell(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("CARGO_PKG_")
            || text.starts_with("CARGO_BIN_")
            || SET_FOR_THIS_TEST.contains(&&*text)
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}

fn build_once() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let status = as_from_a_shell(&mut Command::new(cargo))
            .current_dir(&workspace)
            .args(["build", "--bin", "chatroom", "--bin", "chatroom-relay"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build --bin chatroom --bin chatroom-relay failed: {status}"))
        }
    })
}

fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// Whether `bin` is missing or older than a source file of the crates it is built from.
fn stale(bin: &Path) -> bool {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else { return true };
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    ["client/src", "relay/src", "crypto/src"]
        .iter()
        .filter_map(|dir| newest_source(&crates.join(dir)))
        .any(|source| source > built)
}

/// The path of one of our binaries. `cargo test --workspace` builds them; when one is missing
/// or older than its sources (e.g. `cargo test -p chatroom-e2e` after an edit), both are built
/// once per test process.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    if stale(&target_dir().join("chatroom")) || stale(&target_dir().join("chatroom-relay")) {
        if let Err(e) = build_once() {
            panic!("{e}");
        }
    }
    assert!(path.exists(), "{} does not exist after building", path.display());
    path
}

/// Lines of one output stream, read by a thread. `expect` looks at lines after the last
/// line it matched, so a test can wait for the same text twice.
#[derive(Debug)]
pub struct Lines {
    name: String,
    rx: Receiver<String>,
    seen: Vec<String>,
    cursor: usize,
}

impl Lines {
    /// Reads `stream` line by line on a thread; `name` labels errors.
    pub fn spawn(name: String, stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { name, rx, seen: Vec::new(), cursor: 0 }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> Result<String, BoxError> {
        self.expect_within(needle, WAIT)
    }

    /// `expect` with a custom time limit.
    pub fn expect_within(&mut self, needle: &str, limit: Duration) -> Result<String, BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.seen[self.cursor..].iter().position(|l| l.contains(needle)) {
                self.cursor += i + 1;
                return Ok(self.seen[self.cursor - 1].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("within {limit:?}"),
                        RecvTimeoutError::Disconnected => "before the stream ended".into(),
                    };
                    return Err(format!(
                        "{}: no line containing {needle:?} {why}; saw:\n{}",
                        self.name,
                        self.seen.join("\n")
                    )
                    .into());
                }
            }
        }
    }

    /// Waits until the lines read so far satisfy `done` (at most `WAIT`); `what` names the
    /// condition in the error.
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> Result<(), BoxError> {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    return Err(format!(
                        "{}: not {what} within {WAIT:?}; saw:\n{}",
                        self.name,
                        self.seen.join("\n")
                    )
                    .into())
                }
            }
        }
        Ok(())
    }

    /// Reads whatever is left until the stream ends (the process exited) or `limit` passes.
    pub fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
    }

    /// Every line read so far.
    pub fn all(&self) -> &[String] {
        &self.seen
    }

    /// How many lines read so far end with `suffix`.
    pub fn count_ending_with(&self, suffix: &str) -> usize {
        self.seen.iter().filter(|l| l.ends_with(suffix)).count()
    }
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its fingerprint (64 hex digits).
    pub fingerprint: String,
    /// Its stdout.
    pub stdout: Lines,
    /// Its stderr.
    pub stderr: Lines,
}

impl Relay {
    /// Starts a relay on a free port of 127.0.0.1 with `data_dir`.
    pub fn start(data_dir: &Path) -> Result<Self, BoxError> {
        Self::start_on(data_dir, "127.0.0.1:0")
    }

    /// Starts a relay listening on `listen`.
    pub fn start_on(data_dir: &Path, listen: &str) -> Result<Self, BoxError> {
        Self::start_with(data_dir, listen, &[])
    }

    /// Starts a relay listening on `listen` with extra command-line options.
    pub fn start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<Self, BoxError> {
        Self::start_within(data_dir, listen, extra, WAIT)
    }

    /// `start_with`, waiting up to `limit` for it to listen (a relay on a NATS cluster may wait
    /// for the cluster first); a relay that does not start in time is reported with its stderr.
    pub fn start_within(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        limit: Duration,
    ) -> Result<Self, BoxError> {
        let mut child = Command::new(bin("chatroom-relay"))
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = Lines::spawn("relay stdout".into(), child.stdout.take().expect("piped"));
        let mut stderr = Lines::spawn("relay stderr".into(), child.stderr.take().expect("piped"));
        let started = stdout.expect_within("fingerprint ", limit).and_then(|fingerprint| {
            let address = stdout.expect("listening on ")?;
            Ok((fingerprint, address))
        });
        let (fingerprint, address) = match started {
            Ok(lines) => lines,
            Err(e) => {
                stderr.drain(Duration::from_millis(100));
                return Err(format!("{e}\nrelay stderr:\n{}", stderr.all().join("\n")).into());
            }
        };
        let fingerprint = fingerprint.trim_start_matches("fingerprint ").trim().to_owned();
        let addr = address.trim_start_matches("listening on ").trim().parse()?;
        Ok(Self { child, addr, fingerprint, stdout, stderr })
    }

    /// `HOST:PORT` for clients.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// An invite URL for `room`.
    pub fn invite(&self, room: &str) -> String {
        format!("chatroom://{}@{}/{room}", self.fingerprint, self.addr)
    }

    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the relay (SIGKILL, like `kill -9`) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client's home: data directory, config file and password files.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    /// Arguments added to every chat run (not to `id`, `passphrase` or `relays`).
    chat_args: &'static [&'static str],
}

/// Subcommands that take no chat arguments.
const PLAIN_SUBCOMMANDS: [&str; 4] = ["id", "passphrase", "relays", "generate-assets"];

impl Home {
    /// A fresh, empty home; its member joins with the client's default protocol (2).
    pub fn new() -> Result<Self, BoxError> {
        Ok(Self { dir: tempfile::tempdir()?, chat_args: &[] })
    }

    /// A fresh, empty home whose member joins protocol 1 rooms: every chat run (and
    /// `chatroom invite`) gets `--protocol 1`, for the tests of protocol 1 itself.
    pub fn protocol_1() -> Result<Self, BoxError> {
        Ok(Self { dir: tempfile::tempdir()?, chat_args: &["--protocol", "1"] })
    }

    /// `args` with this home's chat arguments, unless they choose a version themselves or
    /// run a subcommand without chat arguments.
    fn with_chat_args<'a>(&self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        let plain = args.first().is_some_and(|a| PLAIN_SUBCOMMANDS.contains(a));
        if !plain && !args.iter().any(|a| a.starts_with("--protocol")) {
            all.extend_from_slice(self.chat_args);
        }
        all
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file (may not exist).
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes `password` to a 0600 file and returns its path.
    pub fn password_file(&self, name: &str, password: &str) -> Result<PathBuf, BoxError> {
        let path = self.dir.path().join(name);
        fs::write(&path, format!("{password}\n"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }

    /// Runs `chatroom ARGS` to completion (no stdin) and returns (status, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> Result<(ExitStatus, String, String), BoxError> {
        let out = Command::new(bin("chatroom"))
            .args(self.with_chat_args(args))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::null())
            .output()?;
        Ok((out.status, String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
    }

    /// Starts `chatroom --plain INVITE --nick NICK --password-file FILE [--create] EXTRA...`,
    /// the password written to a fresh 0600 file.
    pub fn member(
        &self,
        invite: &str,
        nick: &str,
        password: &str,
        create: bool,
        extra: &[&str],
    ) -> Result<Client, BoxError> {
        let pw = self.password_file(&format!("{nick}.pass"), password)?;
        let pw = pw.to_str().ok_or("password file path is not UTF-8")?.to_owned();
        let mut args = vec![invite, "--nick", nick, "--password-file", pw.as_str()];
        if create {
            args.push("--create");
        }
        args.extend_from_slice(extra);
        self.spawn(nick, &args)
    }

    /// Starts `chatroom --plain ARGS` with piped stdin, stdout and stderr.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Result<Client, BoxError> {
        self.spawn_command(name, Command::new(bin("chatroom")), args)
    }

    /// Starts `WRAPPER chatroom --plain ARGS` (for example `torsocks`) with extra environment.
    pub fn spawn_wrapped(
        &self,
        name: &str,
        wrapper: &str,
        env: &[(&str, &Path)],
        args: &[&str],
    ) -> Result<Client, BoxError> {
        let mut cmd = Command::new(wrapper);
        cmd.arg(bin("chatroom"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        self.spawn_command(name, cmd, args)
    }

    fn spawn_command(&self, name: &str, mut cmd: Command, args: &[&str]) -> Result<Client, BoxError> {
        let mut child = cmd
            .arg("--plain")
            .args(self.with_chat_args(args))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = Lines::spawn(format!("{name} stdout"), child.stdout.take().expect("piped"));
        let stderr = Lines::spawn(format!("{name} stderr"), child.stderr.take().expect("piped"));
        let stdin = child.stdin.take();
        Ok(Client { child, stdin, stdout, stderr })
    }
}

/// A running `chatroom --plain`.
#[derive(Debug)]
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Received messages.
    pub stdout: Lines,
    /// Events.
    pub stderr: Lines,
}

impl Client {
    /// Types a line.
    pub fn line(&mut self, text: &str) -> Result<(), BoxError> {
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        stdin.write_all(format!("{text}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin (end of input: the client flushes and quits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `WAIT`.
    pub fn wait(&mut self) -> Result<ExitStatus, BoxError> {
        self.wait_within(WAIT)
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> Result<ExitStatus, BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.stdout.drain(Duration::from_secs(2));
                self.stderr.drain(Duration::from_secs(2));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Err(format!(
                    "client did not exit within {limit:?}; stderr:\n{}",
                    self.stderr.all().join("\n")
                )
                .into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The part of a line-mode message line after its `HH:MM:SS ` time stamp, e.g.
/// `<alice> hi` or `[history] <alice> hi`.
pub fn without_time(line: &str) -> &str {
    line.split_once(' ').map_or(line, |(_, rest)| rest)
}

/// A random lowercase hex string of `bytes` random bytes, from the operating system.
pub fn random_hex(bytes: usize) -> String {
    use rand_core::RngCore;
    let mut buf = vec![0u8; bytes];
    rand_core::OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS line")?.parse()?)
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `microsocks` SOCKS5 proxy on 127.0.0.1.
#[derive(Debug)]
pub struct Microsocks {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Microsocks {
    /// Starts microsocks (Debian package `microsocks`) and waits until it accepts connections.
    pub fn start() -> Result<Self, BoxError> {
        Self::start_with(&[])
    }

    /// Starts microsocks with extra flags (e.g. `-b 127.0.0.2`: connect out from that address).
    pub fn start_with(extra: &[&str]) -> Result<Self, BoxError> {
        let port = free_port()?;
        let child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run microsocks ({e}); install it with `apt-get install -y microsocks` (.ci/run does)")
            })?;
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err("microsocks did not start listening".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, port })
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP tap: accepts connections on 127.0.0.1 and forwards them to `upstream`, recording
/// every byte the client sent.
#[derive(Debug)]
pub struct Tap {
    /// Where clients connect.
    pub port: u16,
    recorded: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    /// Starts a tap in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = recorded.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { break };
                let Ok(mut server) = TcpStream::connect(upstream) else { break };
                let (Ok(mut client2), Ok(mut server2)) = (client.try_clone(), server.try_clone()) else {
                    break;
                };
                let rec = rec.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = client.read(&mut buf) {
                        if n == 0 || server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = server.shutdown(std::net::Shutdown::Write);
                });
                thread::spawn(move || {
                    let _ = std::io::copy(&mut server2, &mut client2);
                    let _ = client2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Self { port, recorded })
    }

    /// Every byte clients sent so far.
    pub fn recorded(&self) -> Vec<u8> {
        self.recorded.lock().unwrap().clone()
    }
}

/// The address a SOCKS5 CONNECT request asked for, parsed from the start of a client's
/// byte stream: `(address type, host, port)`.
pub fn socks5_connect_target(bytes: &[u8]) -> Result<(u8, String, u16), BoxError> {
    // Greeting: VER=5, NMETHODS, METHODS...
    let (&ver, rest) = bytes.split_first().ok_or("no greeting")?;
    if ver != 5 {
        return Err(format!("not SOCKS5 (version byte {ver})").into());
    }
    let (&n, rest) = rest.split_first().ok_or("truncated greeting")?;
    let rest = rest.get(usize::from(n)..).ok_or("truncated methods")?;
    // Request: VER CMD RSV ATYP ADDR PORT
    let [5, 1, 0, atyp, rest @ ..] = rest else { return Err("no CONNECT request".into()) };
    let (host, rest) = match atyp {
        1 => {
            let ip = rest.get(..4).ok_or("truncated IPv4")?;
            (format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]), &rest[4..])
        }
        3 => {
            let (&len, rest) = rest.split_first().ok_or("truncated name length")?;
            let name = rest.get(..usize::from(len)).ok_or("truncated name")?;
            (String::from_utf8(name.to_vec())?, &rest[usize::from(len)..])
        }
        4 => ("(IPv6)".into(), rest.get(16..).ok_or("truncated IPv6")?),
        other => return Err(format!("unknown address type {other}").into()),
    };
    let port = rest.get(..2).ok_or("truncated port")?;
    Ok((*atyp, host, u16::from_be_bytes([port[0], port[1]])))
}

/// A TCP relay in front of a server that can stop passing the server's bytes to the client
/// (they are discarded) and cut every open connection: a lost acknowledgement, on demand.
#[derive(Debug)]
pub struct Cutter {
    /// Where clients connect.
    pub port: u16,
    swallow: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cutter {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self, BoxError> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let swallow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (swallow2, open2) = (swallow.clone(), open.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { break };
                let Ok(mut server) = TcpStream::connect(upstream) else { break };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(mut client2), Ok(mut server2)) = (client.try_clone(), server.try_clone()) else {
                    break;
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    open2.lock().unwrap().extend([c, s]);
                }
                thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut server);
                    let _ = server.shutdown(std::net::Shutdown::Write);
                });
                let swallow = swallow2.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = server2.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if !swallow.load(Ordering::SeqCst) && client2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Self { port, swallow, open })
    }

    /// From now on, bytes from the server are discarded instead of reaching the client.
    pub fn swallow_replies(&self) {
        self.swallow.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every open connection; later connections pass everything again.
    pub fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.swallow.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `cargo test` this process has the package's variables; a command made "as from a
    /// shell" removes exactly those and keeps the rest (`PATH`, what configures cargo).
    #[test]
    fn a_cargo_from_a_test_runs_without_the_tests_variables() {
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some(), "run this under cargo test");
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some(), "run this under cargo test");
        let mut cmd = Command::new("cargo");
        cmd.env("CARGO_INCREMENTAL", "0");
        as_from_a_shell(&mut cmd);
        let removed: Vec<String> = cmd
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        assert!(removed.iter().any(|n| n == "CARGO_MANIFEST_DIR"), "{removed:?}");
        assert!(removed.iter().any(|n| n == "CARGO_PKG_NAME"), "{removed:?}");
        for name in ["PATH", "HOME", "CARGO_HOME", "CARGO_INCREMENTAL", "CARGO_TARGET_DIR", "CARGO"] {
            assert!(!removed.iter().any(|n| n == name), "{name} removed: {removed:?}");
        }
        assert_eq!(
            cmd.get_envs().find(|(n, _)| *n == "CARGO_INCREMENTAL").and_then(|(_, v)| v),
            Some("0".as_ref())
        );
    }
}
