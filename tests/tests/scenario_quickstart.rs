//! Scenario 8, README's quickstart executed literally: `cargo run --release --bin
//! chatroom-relay` (defaults: 127.0.0.1:7878 and the platform data directory), then
//! `cargo run --release --bin chatroom` twice, answering its prompts on stdin (relay address,
//! room, nickname, password; the first run creates the room, a protocol 2 room by default),
//! and the same with `--protocol 1` (README: how a protocol 1 room is joined). Step 3, `./scripts/test`, is the
//! command CI runs around this test.
//!
//! Each process gets a fresh `HOME`, so the default data and config directories are new and
//! nothing of the machine's own chatroom state is read or written. Building the release
//! binaries is part of steps 1 and 2, so the first wait of each is long. The test needs
//! 127.0.0.1:7878 to itself, so `scripts/test` runs it on its own, after the rest of the suite.

use std::error::Error;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chatroom_e2e::{as_from_a_shell, random_hex, Lines};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// Step 1 may build the release binaries first.
const BUILD_AND_START: Duration = Duration::from_secs(900);
const STEP: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `cargo ARGS` in the workspace with `HOME` set to `home` (the toolchain still found where it is).
fn cargo(home: &Path, args: &[&str]) -> Result<Command, Box<dyn Error + Send + Sync>> {
    let real_home = PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?);
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(|| real_home.join(".cargo"), PathBuf::from);
    let rustup_home =
        std::env::var_os("RUSTUP_HOME").map_or_else(|| real_home.join(".rustup"), PathBuf::from);
    let mut cmd = Command::new("cargo");
    as_from_a_shell(&mut cmd)
        .args(args)
        .current_dir(workspace())
        .env("HOME", home)
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cmd)
}

struct Proc {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Proc {
    fn start(name: &str, mut cmd: Command) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let mut child = cmd.spawn()?;
        let stdout = Lines::spawn(format!("{name} stdout"), child.stdout.take().ok_or("stdout")?);
        let stderr = Lines::spawn(format!("{name} stderr"), child.stderr.take().ok_or("stderr")?);
        Ok(Self { child, stdout, stderr })
    }

    fn answer(&mut self, lines: &[&str]) -> TestResult {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().ok_or("stdin closed")?;
        for line in lines {
            writeln!(stdin, "{line}")?;
        }
        stdin.flush()?;
        Ok(())
    }

    fn finish(&mut self) -> TestResult {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                assert!(status.success(), "exit {status}: {:?}", self.stderr.all());
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("did not exit within {STEP:?}: {:?}", self.stderr.all()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_readme_quickstart_works_as_written() -> TestResult {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    for step in [
        "cargo run --release --bin chatroom-relay",
        "cargo run --release --bin chatroom\n",
        "-- --protocol 1",
    ] {
        assert!(readme.contains(step), "README's quickstart no longer says {step:?}: update this test");
    }
    if TcpListener::bind("127.0.0.1:7878").is_err() {
        return Err(
            "127.0.0.1:7878, the quickstart's relay address, is in use; stop what listens there".into()
        );
    }
    let (relay_home, alice_home, bob_home) =
        (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);

    // 1. The relay, with its defaults.
    let mut relay =
        Proc::start("relay", cargo(relay_home.path(), &["run", "--release", "--bin", "chatroom-relay"])?)?;
    relay.stdout.expect_within("created a new relay key in", BUILD_AND_START)?;
    let fingerprint = relay.stdout.expect_within("fingerprint ", STEP)?;
    let invite_prefix = relay.stdout.expect_within("invite prefix chatroom://", STEP)?;
    assert!(invite_prefix.contains("@127.0.0.1:7878/"), "{invite_prefix}");
    relay.stdout.expect_within("listening on 127.0.0.1:7878", STEP)?;
    assert!(
        relay_home.path().join(".local/share/chatroom-relay/relay.key").exists(),
        "default data directory"
    );

    // 2. A member creates a room by answering the prompts: a protocol 2 room, the default.
    let password = format!("quickstart {}", random_hex(8));
    let mut alice =
        Proc::start("alice", cargo(alice_home.path(), &["run", "--release", "--bin", "chatroom"])?)?;
    alice.answer(&["127.0.0.1:7878", "lobby", "alice", &password])?;
    alice.stderr.expect_within("room lobby does not exist", BUILD_AND_START)?;
    alice.answer(&["y", &password])?;
    alice.stderr.expect_within("you entered the room's group", STEP)?;
    let fp = fingerprint.trim_start_matches("fingerprint ").trim();
    assert!(
        alice.stderr.all().iter().any(|l| l.contains(&format!("pinned its key {fp}"))),
        "{:?}",
        alice.stderr.all()
    );

    // ... and another joins it the same way; they talk once both are in the group.
    let mut bob = Proc::start("bob", cargo(bob_home.path(), &["run", "--release", "--bin", "chatroom"])?)?;
    bob.answer(&["127.0.0.1:7878", "lobby", "bob", &password])?;
    bob.stderr.expect_within("you entered the room's group", BUILD_AND_START)?;
    alice.stderr.expect_within("entered the group (epoch 1)", STEP)?;
    alice.answer(&["forward secret hello"])?;
    bob.stdout.expect_within("forward secret hello", STEP)?;
    bob.answer(&["hi alice"])?;
    alice.stdout.expect_within("hi alice", STEP)?;
    bob.finish()?;
    alice.finish()?;
    assert!(alice_home.path().join(".local/share/chatroom/identity.key").exists(), "default data directory");

    // The same with `--protocol 1`, as README's quickstart says for a protocol 1 room; a
    // newcomer reads the history there.
    let v1 = ["run", "--release", "--bin", "chatroom", "--", "--protocol", "1"];
    let mut alice = Proc::start("alice v1", cargo(alice_home.path(), &v1)?)?;
    alice.answer(&["127.0.0.1:7878", "lobby1", "alice", &password])?;
    alice.stderr.expect_within("room lobby1 does not exist", STEP)?;
    alice.answer(&["y", &password])?;
    alice.stderr.expect_within("created the room", STEP)?;
    alice.stderr.expect_within("now live", STEP)?;
    alice.answer(&["hello from the quickstart"])?;
    let mut bob = Proc::start("bob v1", cargo(bob_home.path(), &v1)?)?;
    bob.answer(&["127.0.0.1:7878", "lobby1", "bob", &password])?;
    bob.stdout.expect_within("<alice> hello from the quickstart", STEP)?;
    bob.stderr.expect_within("now live", STEP)?;
    bob.answer(&["hi again"])?;
    alice.stdout.expect_within("<bob> hi again", STEP)?;
    bob.finish()?;
    alice.finish()?;
    Ok(())
}
