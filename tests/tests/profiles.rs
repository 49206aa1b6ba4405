//! Two members on one machine: `--profile NAME` gives the second its own identity, known
//! relays, room state and config under the default directories, so both join the same room at
//! once (one identity joining twice would replace the first, `AlreadyConnected`). Each process
//! gets a fresh `HOME`, so nothing of the machine's own chatroom state is used.

use std::error::Error;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chatroom_e2e::{bin, Lines, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// `chatroom ARGS` with `HOME` set to `home` and the XDG variables unset, so the default data
/// and config directories are under `home`.
fn chatroom(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("chatroom"));
    cmd.args(args)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

struct Member {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Member {
    fn start(home: &Path, name: &str, args: &[&str]) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let mut child = chatroom(home, args).spawn()?;
        let stdout = Lines::spawn(format!("{name} stdout"), child.stdout.take().ok_or("stdout")?);
        let stderr = Lines::spawn(format!("{name} stderr"), child.stderr.take().ok_or("stderr")?);
        Ok(Self { child, stdout, stderr })
    }

    fn line(&mut self, text: &str) -> Result<(), Box<dyn Error + Send + Sync>> {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().ok_or("stdin")?;
        writeln!(stdin, "{text}")?;
        Ok(())
    }

    fn finish(mut self) -> Result<std::process::ExitStatus, Box<dyn Error + Send + Sync>> {
        drop(self.child.stdin.take());
        Ok(self.child.wait()?)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_profile_is_a_second_member_on_the_same_machine() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let home = tempfile::tempdir()?;
    let pw = home.path().join("pw");
    std::fs::write(&pw, "correct horse battery staple\n")?;
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let pw = pw.to_str().ok_or("path")?;

    let id = |args: &[&str]| -> Result<String, Box<dyn Error + Send + Sync>> {
        let out = chatroom(home.path(), args).stdin(Stdio::null()).output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    };
    let (first, second) = (id(&["id"])?, id(&["id", "--profile", "bob"])?);
    assert_ne!(first, second, "a profile has an identity of its own");
    assert_eq!(second, id(&["id", "--profile", "bob"])?, "and keeps it");
    assert!(home.path().join(".local/share/chatroom/profiles/bob/identity.key").exists());

    let relay_addr = relay.address();
    let mut alice = Member::start(
        home.path(),
        "alice",
        &[
            "--plain",
            "--relay",
            &relay_addr,
            "--room",
            "lobby",
            "--nick",
            "alice",
            "--create",
            "--password-file",
            pw,
        ],
    )?;
    // A protocol 2 room, the default.
    alice.stderr.expect("you entered the room's group")?;
    let mut bob = Member::start(
        home.path(),
        "bob",
        &[
            "--profile",
            "bob",
            "--plain",
            "--relay",
            &relay_addr,
            "--room",
            "lobby",
            "--nick",
            "bob",
            "--password-file",
            pw,
        ],
    )?;
    bob.stderr.expect("you entered the room's group")?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    alice.line("hello from the same machine")?;
    let got = bob.stdout.expect("hello from the same machine")?;
    assert!(got.contains("<alice "), "{got}");
    bob.line("hello back")?;
    let got = alice.stdout.expect("hello back")?;
    assert!(got.contains("<bob "), "{got}");
    assert!(bob.finish()?.success());
    assert!(alice.finish()?.success(), "alice was not replaced by bob's join");

    let out = chatroom(home.path(), &["id", "--profile", "../x"]).stdin(Stdio::null()).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains("a profile name is 1 to 32 letters, digits, - or _"), "{err}");
    Ok(())
}
