//! End to end: the full-screen UI of the real `chatroom` binary, inside a real terminal
//! (`tmux`, Debian package `tmux`), against a real `chatroom-relay` on 127.0.0.1, with a second
//! member in line mode. Keys are typed with `tmux send-keys`; the screen is read with
//! `tmux capture-pane`. The tmux server has its own socket and is killed at the end.

use std::error::Error;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatroom_e2e::{bin, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type BoxError = Box<dyn Error + Send + Sync>;

/// How long one expected screen may take to appear.
const SCREEN_WAIT: Duration = Duration::from_secs(15);
/// The shell prompt inside tmux (the screen capture drops the trailing space).
const PROMPT: &str = "tuitest$";

/// A tmux server on a socket of its own, with one 100x30 window running `sh`.
struct Tmux {
    socket: String,
    /// The socket file, removed at the end (tmux leaves it behind).
    socket_path: Option<String>,
}

impl Tmux {
    fn start() -> Result<Self, BoxError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let mut tmux =
            Self { socket: format!("chatroom-e2e-{}-{nanos}", std::process::id()), socket_path: None };
        let shell = format!("env PS1='{PROMPT} ' sh -i");
        tmux.run(&["-f", "/dev/null", "new-session", "-d", "-s", "chat", "-x", "100", "-y", "30", &shell])
            .map_err(|e| format!("{e}; install tmux with `apt-get install -y tmux` (.ci/run does)"))?;
        tmux.socket_path = Some(tmux.flag("socket_path")?);
        Ok(tmux)
    }

    fn run(&self, args: &[&str]) -> Result<String, BoxError> {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output()?;
        if !out.status.success() {
            return Err(format!("tmux {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The visible screen, one line per row.
    fn screen(&self) -> Result<String, BoxError> {
        self.run(&["capture-pane", "-p", "-t", "chat"])
    }

    /// A pane format variable, e.g. `alternate_on`.
    fn flag(&self, name: &str) -> Result<String, BoxError> {
        Ok(self.run(&["display-message", "-p", "-t", "chat", &format!("#{{{name}}}")])?.trim().to_owned())
    }

    /// Waits until the screen shows every one of `needles`; returns the screen.
    fn wait_for(&self, needles: &[&str]) -> Result<String, BoxError> {
        self.wait_for_within(needles, SCREEN_WAIT)
    }

    /// `wait_for` with a custom time limit.
    fn wait_for_within(&self, needles: &[&str], limit: Duration) -> Result<String, BoxError> {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen()?;
            if needles.iter().all(|n| screen.contains(n)) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                return Err(format!("the screen did not show {needles:?} within {limit:?}:\n{screen}").into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the shell shows `needle` and then its prompt again on the last line, i.e.
    /// the whole command line (including the `stty -g` after `chatroom`) has finished.
    fn wait_for_shell(&self, needle: &str) -> Result<String, BoxError> {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            let screen = self.screen()?;
            let last = screen.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            if screen.contains(needle) && last.trim_end() == PROMPT {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the shell did not show {needle:?} and its prompt within {SCREEN_WAIT:?}:\n{screen}"
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` literally, then presses Enter.
    fn type_line(&self, text: &str) -> Result<(), BoxError> {
        self.run(&["send-keys", "-t", "chat", "-l", text])?;
        self.run(&["send-keys", "-t", "chat", "Enter"])?;
        Ok(())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
        if let Some(path) = &self.socket_path {
            let _ = fs::remove_file(path);
        }
    }
}

fn quoted(path: &Path) -> Result<String, BoxError> {
    let s = path.to_str().ok_or("path is not UTF-8")?;
    if s.contains('\'') {
        return Err("path contains a quote".into());
    }
    Ok(format!("'{s}'"))
}

#[test]
fn full_screen_ui_joins_chats_and_restores_the_terminal() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;
    let modes = tempfile::tempdir()?;
    let (before, after) = (modes.path().join("before"), modes.path().join("after"));

    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    // Record the terminal modes before and after, to compare them.
    let command = format!(
        "stty -g > {before}; {chatroom} --protocol 1 --relay {relay} --room lobby --nick alice --create --password-file {pw} \
         --data-dir {data} --config {config}; echo \"exit=$?\"; stty -g > {after}",
        before = quoted(&before)?,
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
        after = quoted(&after)?,
    );
    tmux.type_line(&command)?;

    // Joined: the status bar shows the room, the relay, the state, the relay fingerprint
    // and the safety code; the member list shows alice as owner.
    let screen = tmux.wait_for(&["| connected", "safety ", "1 member"])?;
    let short_fp = &relay.fingerprint[..4];
    assert!(screen.contains(&format!("lobby @ {}", relay.address())), "{screen}");
    assert!(screen.contains(&format!("relay {short_fp} ")), "{screen}");
    assert!(screen.contains("@alice"), "{screen}");
    assert_eq!(tmux.flag("alternate_on")?, "1", "full screen on the alternate screen");

    // A second member in line mode joins and talks.
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("end of history; now live")?;
    let screen = tmux.wait_for(&["2 members", "bob joined"])?;
    assert!(screen.lines().any(|l| l.trim_end().ends_with("|  bob")), "bob in the member list:\n{screen}");
    bob.line("hello from bob")?;
    bob.line("evil \u{1b}[2J\u{1b}]0;pwned\u{7} \u{202e}txet")?;
    bob.line("/me waves")?;
    let screen = tmux.wait_for(&["<bob> hello from bob", "* bob waves"])?;
    assert!(screen.contains("<bob> evil ^[[2J^[]0;pwned^G <U+202E>txet"), "neutralised:\n{screen}");
    assert!(screen.contains("2 members"), "the screen was not cleared by the escape sequence:\n{screen}");

    // Alice types; bob receives. The input line is not disturbed by incoming messages.
    tmux.run(&["send-keys", "-t", "chat", "-l", "hi b"])?;
    tmux.run(&["send-keys", "-t", "chat", "Tab"])?;
    let screen = tmux.wait_for(&["[alice] hi bob"])?;
    assert!(
        screen.lines().any(|l| l.trim_end() == "[alice] hi bob"),
        "Tab completed the nickname:\n{screen}"
    );
    bob.line("while you type")?;
    let screen = tmux.wait_for(&["<bob> while you type"])?;
    assert!(screen.lines().any(|l| l.trim_end() == "[alice] hi bob"), "input line intact:\n{screen}");
    tmux.type_line("there")?;
    bob.stdout.expect("<alice> hi bob there")?;
    tmux.wait_for(&["<alice> hi bob there"])?;

    // A resize redraws at the new size, the layout intact.
    tmux.run(&["resize-window", "-t", "chat", "-x", "64", "-y", "20"])?;
    let deadline = Instant::now() + SCREEN_WAIT;
    let screen = loop {
        let screen = tmux.screen()?;
        let rows: Vec<&str> = screen.lines().collect();
        let rule_at_46 = rows.iter().take(5).all(|r| r.chars().nth(46) == Some('|'));
        if rule_at_46 && screen.contains("safety ") && screen.contains("<alice> hi bob there") {
            break screen;
        }
        if Instant::now() >= deadline {
            return Err(format!("no redraw at 64x20:\n{screen}").into());
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(screen.lines().all(|l| l.chars().count() <= 64), "{screen}");

    // /invite shows the room's invite URL, from the relay key this session verified.
    tmux.run(&["resize-window", "-t", "chat", "-x", "200", "-y", "30"])?;
    tmux.type_line("/invite")?;
    // The invite carries the room's key-derivation parameters (the defaults here).
    tmux.wait_for(&[&format!("invite: {}?kdf=m65536t3p1&v=1 (it holds no password", relay.invite("lobby"))])?;

    // /quit leaves cleanly and gives the terminal back exactly as it was.
    tmux.type_line("/quit")?;
    // The prompt comes back only after `stty -g > after` has run.
    let screen = tmux.wait_for_shell("exit=0")?;
    bob.stderr.expect("alice left")?;
    let modes_before = fs::read_to_string(&before)?;
    assert!(modes_before.contains(':'), "stty -g recorded the modes: {modes_before:?}");
    assert_eq!(modes_before, fs::read_to_string(&after)?, "terminal modes (stty -g) restored");
    assert!(!screen.contains("members"), "the UI is gone from the screen:\n{screen}");
    assert!(
        screen.contains("-!- created a new identity"),
        "what the shell's screen showed before the UI is back:\n{screen}"
    );
    for (flag, want) in
        [("alternate_on", "0"), ("cursor_flag", "1"), ("mouse_any_flag", "0"), ("mouse_sgr_flag", "0")]
    {
        assert_eq!(tmux.flag(flag)?, want, "{flag}");
    }
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

#[test]
fn a_refused_first_join_leaves_the_full_screen_and_prints_why() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (owner_home, alice_home) = (Home::new()?, Home::new()?);
    let owner_pw = owner_home.password_file("pw", "correct horse battery staple")?;
    let wrong_pw = alice_home.password_file("pw", "not the room password")?;
    let modes = tempfile::tempdir()?;
    let (before, after) = (modes.path().join("before"), modes.path().join("after"));

    let mut owner = owner_home.spawn(
        "owner",
        &[
            "--relay",
            &relay.address(),
            "--room",
            "lobby",
            "--nick",
            "owner",
            "--create",
            "--password-file",
            owner_pw.to_str().ok_or("path")?,
        ],
    )?;
    owner.stderr.expect("end of history; now live")?;

    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "stty -g > {before}; {chatroom} {invite} --nick alice --password-file {pw} --data-dir {data} \
         --config {config}; echo \"exit=$?\"; stty -g > {after}",
        before = quoted(&before)?,
        chatroom = quoted(&bin("chatroom"))?,
        invite = relay.invite("lobby"),
        pw = quoted(&wrong_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
        after = quoted(&after)?,
    );
    tmux.type_line(&command)?;
    let screen = tmux.wait_for_shell("exit=1")?;
    assert!(screen.contains("chatroom: error: "), "the reason is printed on the normal screen:\n{screen}");
    assert!(screen.to_lowercase().contains("password"), "{screen}");
    assert_eq!(
        fs::read_to_string(&before)?,
        fs::read_to_string(&after)?,
        "terminal modes (stty -g) restored"
    );
    assert_eq!(tmux.flag("alternate_on")?, "0");
    assert_eq!(tmux.flag("cursor_flag")?, "1");
    owner.close_stdin();
    assert!(owner.wait()?.success());
    Ok(())
}

/// A process's state letter from `/proc/PID/stat` (`Z` for a zombie), or `None` once it is
/// gone.
fn process_state(pid: &str) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) S ...": the state follows the last ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// Kills a process left running by a failed test.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_state(&self.0).is_some_and(|s| s != 'Z') {
            let _ = Command::new("sh").args(["-c", &format!("kill -9 {}", self.0)]).output();
        }
    }
}

#[test]
fn a_closed_terminal_ends_the_client_and_keeps_its_room_state() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;

    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    // `exec`: the pane's process is the client itself, as under an SSH session's shell.
    let command = format!(
        "exec {chatroom} --protocol 1 --relay {relay} --room lobby --nick alice --create --password-file {pw} \
         --data-dir {data} --config {config}",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "1 member"])?;
    let pid = tmux.flag("pane_pid")?;
    let _guard = KillOnDrop(pid.clone());

    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("end of history; now live")?;
    bob.line("before the hangup")?;
    tmux.wait_for(&["<bob> before the hangup"])?;

    // The terminal goes away under the running client, as when an SSH connection drops.
    tmux.run(&["kill-server"])?;
    let killed = Instant::now();
    let limit = Duration::from_secs(10);
    while process_state(&pid).is_some_and(|s| s != 'Z') {
        if killed.elapsed() > limit {
            return Err(
                format!("the client (pid {pid}) still runs {limit:?} after its terminal closed").into()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the client exited {:?} after its terminal closed", killed.elapsed());

    // Its room state is intact: started again, it fetches only what it has not seen.
    bob.line("after the hangup")?;
    let mut alice = alice_home.spawn(
        "alice",
        &[
            "--relay",
            &relay.address(),
            "--room",
            "lobby",
            "--nick",
            "alice",
            "--password-file",
            alice_pw.to_str().ok_or("path")?,
        ],
    )?;
    alice.stdout.expect("<bob> after the hangup")?;
    assert!(
        !alice.stdout.all().iter().any(|l| l.contains("before the hangup")),
        "a message seen before the hangup was fetched again: {:?}",
        alice.stdout.all()
    );
    alice.close_stdin();
    assert!(alice.wait()?.success());
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

/// The process ids whose parent is `parent`.
fn children(parent: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
                    == Some(parent.to_owned())
            })
        })
        .collect()
}

#[test]
fn sigterm_ends_the_client_and_restores_the_terminal() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let home = Home::new()?;
    let pw = home.password_file("pw", "correct horse battery staple")?;
    let modes = tempfile::tempdir()?;
    let (before, after) = (modes.path().join("before"), modes.path().join("after"));
    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "stty -g > {before}; {chatroom} --relay {relay} --room lobby --nick alice --create --password-file {pw} \
         --data-dir {data} --config {config}; echo \"exit=$?\"; stty -g > {after}",
        before = quoted(&before)?,
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&pw)?,
        data = quoted(&home.data_dir())?,
        config = quoted(&home.config())?,
        after = quoted(&after)?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "1 member"])?;
    let shell = tmux.flag("pane_pid")?;
    let client = match children(&shell).as_slice() {
        [one] => one.clone(),
        other => return Err(format!("expected one client under the shell, found {other:?}").into()),
    };
    let _guard = KillOnDrop(client.clone());
    Command::new("sh").args(["-c", &format!("kill -TERM {client}")]).status()?;
    // The shell prints the exit status only after the client has exited.
    let screen = tmux.wait_for_shell("exit=0")?;
    assert!(!screen.contains("members"), "the UI is gone from the screen:\n{screen}");
    assert_eq!(
        fs::read_to_string(&before)?,
        fs::read_to_string(&after)?,
        "terminal modes (stty -g) restored"
    );
    assert_eq!(tmux.flag("alternate_on")?, "0");
    Ok(())
}

/// Rows of the screen that are notices (`-!-`).
fn notice_rows(screen: &str) -> Vec<&str> {
    screen.lines().filter(|l| l.contains("-!- ")).collect()
}

#[test]
fn a_relay_outage_is_two_notices_and_quit_while_offline_asks_once() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let home = Home::protocol_1()?;
    let pw = home.password_file("pw", "correct horse battery staple")?;
    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "{chatroom} --protocol 1 --relay {addr} --room lobby --nick alice --create --password-file {pw} --data-dir {data} \
         --config {config}; echo \"exit=$?\"",
        chatroom = quoted(&bin("chatroom"))?,
        pw = quoted(&pw)?,
        data = quoted(&home.data_dir())?,
        config = quoted(&home.config())?,
    );
    tmux.type_line(&command)?;
    let screen = tmux.wait_for(&["| connected", "1 member"])?;
    let before = notice_rows(&screen).len();

    // A 20-second outage: the relay is killed and started again on the same address.
    relay.kill();
    tmux.wait_for(&["connection lost: "])?;
    thread::sleep(Duration::from_secs(20));
    let mut relay = Relay::start_on(relay_dir.path(), &addr)?;
    // Reconnect attempts back off up to 30 s apart.
    let screen = tmux.wait_for_within(&["reconnected after ", "| connected"], Duration::from_secs(60))?;
    let notices = notice_rows(&screen);
    assert_eq!(notices.len(), before + 2, "one notice when lost, one when back:\n{screen}");
    assert!(notices[before].contains("connection lost: "), "{screen}");
    assert!(notices[before + 1].contains("; nothing was missed"), "{screen}");

    // Offline with a message unsent, /quit says which and asks once.
    relay.kill();
    tmux.wait_for(&["reconnecting in "])?;
    tmux.type_line("are you there?")?;
    tmux.type_line("/quit")?;
    tmux.wait_for(&["1 unsent message would be lost: \"are you there?\""])?;
    tmux.type_line("/quit")?;
    let screen = tmux.wait_for_shell("exit=1")?;
    assert!(
        screen.contains("chatroom: error: the relay did not acknowledge 1 message: \"are you there?\""),
        "{screen}"
    );
    Ok(())
}

#[test]
fn pastes_are_absorbed_at_once_and_several_lines_are_confirmed() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;
    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "{chatroom} --protocol 1 --relay {relay} --room lobby --nick alice --create --password-file {pw} --data-dir {data} \
         --config {config}; echo \"exit=$?\"",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "1 member"])?;
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("end of history; now live")?;
    tmux.wait_for(&["2 members"])?;

    // 4000 characters pasted in one go (bracketed paste: `paste-buffer -p`) fill the input
    // line at once, with the length counter showing.
    let long: String = (0..4000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    tmux.run(&["set-buffer", "-b", "long", &long])?;
    tmux.run(&["paste-buffer", "-p", "-b", "long", "-t", "chat"])?;
    tmux.wait_for(&[" 4000/4096"])?;
    tmux.run(&["send-keys", "-t", "chat", "Enter"])?;
    let received = bob.stdout.expect("<alice> abcdefghij")?;
    assert!(received.ends_with(&format!("<alice> {long}")), "the whole paste as one message");

    // Several lines wait for Enter; a line starting with / is text, not a command.
    tmux.run(&["set-buffer", "-b", "lines", "first line\n/quit\nthird line\n"])?;
    tmux.run(&["paste-buffer", "-p", "-b", "lines", "-t", "chat"])?;
    tmux.wait_for(&["[paste: 3 lines] Enter sends them, Esc cancels"])?;
    tmux.run(&["send-keys", "-t", "chat", "Enter"])?;
    bob.stdout.expect("<alice> first line")?;
    bob.stdout.expect("<alice> /quit")?;
    bob.stdout.expect("<alice> third line")?;

    // Tab completes a command name.
    tmux.run(&["send-keys", "-t", "chat", "-l", "/qu"])?;
    tmux.run(&["send-keys", "-t", "chat", "Tab"])?;
    tmux.wait_for(&["[alice] /quit"])?;
    tmux.run(&["send-keys", "-t", "chat", "Enter"])?;
    tmux.wait_for_shell("exit=0")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

#[test]
fn a_mention_while_away_rings_the_bell_and_marks_what_is_unread() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;
    let tmux = Tmux::start()?;
    // tmux tells the application when its pane gains or loses the focus.
    tmux.run(&["set-option", "-g", "focus-events", "on"])?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "{chatroom} --protocol 1 --relay {relay} --room lobby --nick alice --create --password-file {pw} --data-dir {data} \
         --config {config}",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "1 member"])?;
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("end of history; now live")?;
    // A detached tmux has no client to hold the focus, so the focus reports (ESC [ I, ESC [ O)
    // are typed as a terminal sends them: alice looks, reads, then another window takes over.
    tmux.run(&["send-keys", "-t", "chat:0", "-H", "1b", "5b", "49"])?;
    bob.line("before you left")?;
    tmux.wait_for(&["<bob> before you left"])?;
    tmux.run(&["new-window", "-t", "chat:1"])?;
    tmux.run(&["send-keys", "-t", "chat:0", "-H", "1b", "5b", "4f"])?;
    // Barrier: the terminal's input reaches the client in order, so text typed after the focus
    // report shows on the input line once the report was read; then the line is cleared.
    tmux.run(&["send-keys", "-t", "chat:0", "-l", "focus-read"])?;
    let deadline = Instant::now() + SCREEN_WAIT;
    while !tmux.run(&["capture-pane", "-p", "-t", "chat:0"])?.contains("focus-read") {
        if Instant::now() >= deadline {
            return Err("the text typed after the focus report never showed".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    tmux.run(&["send-keys", "-t", "chat:0", "C-u"])?;
    bob.line("nothing for you")?;
    // The marker above this message shows the focus report took effect.
    let deadline = Instant::now() + SCREEN_WAIT;
    loop {
        let screen = tmux.run(&["capture-pane", "-p", "-t", "chat:0"])?;
        let rows: Vec<&str> = screen.lines().collect();
        let at = rows.iter().position(|r| r.contains("<bob> nothing for you"));
        if at.is_some_and(|at| at > 0 && rows[at - 1].contains("---- unread ----")) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("no unread marker above the first unseen message:\n{screen}").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bob.line("alice: are you there?")?;
    let deadline = Instant::now() + SCREEN_WAIT;
    while tmux.run(&["display-message", "-p", "-t", "chat:0", "#{window_bell_flag}"])?.trim() != "1" {
        if Instant::now() >= deadline {
            return Err("no bell in the chat window after a mention".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    tmux.run(&["select-window", "-t", "chat:0"])?;
    let screen = tmux.wait_for(&["<bob> alice: are you there?"])?;
    let rows: Vec<&str> = screen.lines().collect();
    let at = rows.iter().position(|r| r.contains("<bob> nothing for you")).ok_or("row")?;
    assert!(rows[at - 1].contains("---- unread ----"), "the marker is above the first unseen:\n{screen}");
    assert!(rows[at - 2].contains("<bob> before you left"), "{screen}");
    assert_eq!(screen.matches("---- unread").count(), 1, "{screen}");
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

#[test]
fn the_owners_topic_reaches_a_late_joiner_and_no_one_else_can_set_it() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;
    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "{chatroom} --protocol 1 --relay {relay} --room lobby --nick alice --create --password-file {pw} --data-dir {data} \
         --config {config}",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "1 member"])?;
    tmux.type_line("/topic release on friday")?;
    tmux.wait_for(&["| topic: release on friday |", "you set the topic: release on friday"])?;

    // bob joins later: the topic comes with the history, checked against the owner's key.
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("alice set the topic: release on friday")?;
    bob.stderr.expect("end of history; now live")?;
    // bob is not the owner: his topic is refused by alice's client, which keeps the owner's.
    bob.line("/topic free pizza")?;
    let screen = tmux.wait_for(&["who is not the room owner, tried to set"])?;
    assert!(screen.contains("| topic: release on friday |"), "{screen}");
    assert!(!screen.contains("topic: free pizza"), "{screen}");
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

#[test]
fn two_rooms_on_two_relays_in_windows_switched_with_alt_keys() -> TestResult {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let relay_a = Relay::start(dir_a.path())?;
    // Another loopback address: another host as far as the client can tell.
    let relay_b = Relay::start_on(dir_b.path(), "127.0.0.2:0")?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let ops_pw = alice_home.password_file("ops-pw", "staple battery horse correct")?;
    let bob_pw = bob_home.password_file("pw", "staple battery horse correct")?;
    fs::write(
        alice_home.config(),
        format!(
            "[rooms.ops]\nrelay = \"{}\"\nroom = \"ops\"\nfingerprint = \"{}\"\npassword_file = \"{}\"\nprotocol = 1\n",
            relay_b.address(),
            relay_b.fingerprint,
            ops_pw.to_str().ok_or("path")?
        ),
    )?;
    let mut bob = bob_home.spawn(
        "bob",
        &[
            "--relay",
            &relay_b.address(),
            "--room",
            "ops",
            "--nick",
            "bob",
            "--create",
            "--password-file",
            bob_pw.to_str().ok_or("path")?,
        ],
    )?;
    bob.stderr.expect("end of history; now live")?;

    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = format!(
        "{chatroom} --protocol 1 --relay {relay} --room lobby --nick alice --create --password-file {pw} --data-dir {data} \
         --config {config}; echo \"exit=$?\"",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay_a.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "1 member"])?;

    // A second room on the second relay, from a saved room, in a window of its own.
    tmux.type_line("/join ops")?;
    tmux.wait_for(&[&format!("ops @ {}", relay_b.address()), "1:lobby [2:ops]", "2 members", "@bob"])?;
    bob.stderr.expect("alice joined")?;

    // Alt+1 shows the first room; a mention in the other raises its activity.
    tmux.run(&["send-keys", "-t", "chat", "M-1"])?;
    tmux.wait_for(&[&format!("lobby @ {}", relay_a.address()), "[1:lobby] 2:ops"])?;
    bob.line("alice: ping from ops")?;
    let screen = tmux.wait_for(&["[1:lobby] 2:ops(1!)"])?;
    assert!(!screen.contains("ping from ops"), "the other room's message is not in this window:\n{screen}");

    // Alt+2 and back.
    tmux.run(&["send-keys", "-t", "chat", "M-2"])?;
    tmux.wait_for(&["<bob> alice: ping from ops", "1:lobby [2:ops]"])?;
    tmux.type_line("pong")?;
    bob.stdout.expect("<alice> pong")?;
    tmux.run(&["send-keys", "-t", "chat", "M-1"])?;
    let screen = tmux.wait_for(&["[1:lobby] 2:ops"])?;
    assert!(!screen.contains("pong"), "{screen}");

    // /part in the second window leaves that room only.
    tmux.run(&["send-keys", "-t", "chat", "M-2"])?;
    tmux.wait_for(&["1:lobby [2:ops]"])?;
    tmux.type_line("/part")?;
    bob.stderr.expect("alice left")?;
    let screen = tmux.wait_for(&[&format!("lobby @ {}", relay_a.address())])?;
    assert!(!screen.contains("2:ops"), "{screen}");
    tmux.type_line("/quit")?;
    tmux.wait_for_shell("exit=0")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

#[test]
fn a_restart_shows_recent_context_before_the_unseen_messages() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;
    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    let command = |create: &str| -> Result<String, BoxError> {
        Ok(format!(
            "{chatroom} --protocol 1 --relay {relay} --room lobby --nick alice {create} --password-file {pw} --data-dir {data} \
             --config {config}; echo \"exit=$?\"",
            chatroom = quoted(&bin("chatroom"))?,
            relay = relay.address(),
            pw = quoted(&alice_pw)?,
            data = quoted(&alice_home.data_dir())?,
            config = quoted(&alice_home.config())?,
        ))
    };
    tmux.type_line(&command("--create")?)?;
    tmux.wait_for(&["| connected", "1 member"])?;
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", bob_pw.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("end of history; now live")?;
    bob.line("are we shipping on friday?")?;
    tmux.wait_for(&["<bob> are we shipping on friday?"])?;
    tmux.type_line("yes, if the tests pass")?;
    bob.stdout.expect("<alice> yes, if the tests pass")?;
    tmux.type_line("/quit")?;
    tmux.wait_for_shell("exit=0")?;
    bob.stderr.expect("alice left")?;
    bob.line("they pass now")?;
    // bob's message is stored (a barrier: bob's own client leaves only once it is acknowledged).
    bob.close_stdin();
    assert!(bob.wait()?.success());

    tmux.run(&["send-keys", "-t", "chat", "clear", "Enter"])?;
    tmux.type_line(&command("")?)?;
    let screen = tmux.wait_for(&["<bob> they pass now", "| connected"])?;
    let rows: Vec<&str> = screen.lines().collect();
    let find = |needle: &str| rows.iter().position(|r| r.contains(needle));
    // Our own acknowledged message counts as seen: it is context too, never shown as new.
    let order = [
        find("---- earlier, already seen"),
        find("<bob> are we shipping on friday?"),
        find("<alice> yes, if the tests pass"),
        find("---- history"),
        find("<bob> they pass now"),
    ];
    assert!(order.iter().all(Option::is_some), "{order:?}:\n{screen}");
    assert!(order.windows(2).all(|w| w[0] < w[1]), "context, then the unseen:\n{screen}");
    Ok(())
}

/// Protocol 2 is the full screen's default: alice gives no `--protocol`.
#[test]
fn full_screen_ui_speaks_protocol_2() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let bob_pw = bob_home.password_file("pw", "correct horse battery staple")?;

    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    // Wide enough that no notice wraps.
    tmux.run(&["resize-window", "-t", "chat", "-x", "220", "-y", "40"])?;
    let command = format!(
        "{chatroom} --relay {relay} --room lobby --nick alice --create --password-file {pw} \
         --data-dir {data} --config {config}; echo \"exit=$?\"",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;

    // Alice created the room and its group, in the full screen (no fallback to line mode).
    let screen = tmux.wait_for(&["| connected", "you entered the room's group (epoch", "room code: "])?;
    assert_eq!(tmux.flag("alternate_on")?, "1", "full screen on the alternate screen");
    assert!(!screen.contains("line mode instead"), "{screen}");
    assert!(!screen.contains("| safety "), "protocol 1's safety code is not in the status bar:\n{screen}");

    // Bob enters in line mode: alice's screen shows the epoch change with his key tag.
    let mut bob = bob_home.spawn(
        "bob",
        &[
            &relay.invite("lobby"),
            "--protocol",
            "2",
            "--nick",
            "bob",
            "--password-file",
            bob_pw.to_str().ok_or("path")?,
        ],
    )?;
    bob.stderr.expect("you entered the room's group")?;
    let (status, out, _) = bob_home.run(&["id"])?;
    assert!(status.success());
    let bob_tag: String = out.trim().replace(' ', "").chars().take(8).collect();
    tmux.wait_for(&[&format!("member {bob_tag} entered the group (epoch 1)")])?;

    // Messages both ways; bob's carry his key tag on alice's screen.
    bob.line("hello from bob")?;
    bob.line("/me waves")?;
    tmux.wait_for(&[&format!("<bob {bob_tag}> hello from bob"), "* bob "])?;
    tmux.type_line("hi bob")?;
    bob.stdout.expect("> hi bob")?;
    tmux.type_line("/me waves back")?;
    bob.stdout.expect("* alice (")?;

    // /safety shows the epoch code, the same as bob's.
    tmux.type_line("/safety")?;
    let screen = tmux.wait_for(&["epoch 1 code: ", "room code: "])?;
    bob.line("/safety")?;
    let bob_code = bob.stderr.expect("epoch 1 code: ")?;
    let bob_code = bob_code.split("epoch 1 code: ").nth(1).ok_or("no code")?.trim().to_owned();
    assert!(screen.contains(&format!("epoch 1 code: {bob_code}")), "the same epoch code:\n{screen}");

    // /who lists the members.
    tmux.type_line("/who")?;
    tmux.wait_for(&["members as the relay lists them (2)"])?;

    // The owner rotates the password from the full screen; bob is told and stays.
    let new_pw = alice_home.password_file("pw2", "another correct horse battery staple")?;
    tmux.type_line(&format!("/rotate-password {}", new_pw.to_str().ok_or("path")?))?;
    // The new password's Argon2id derivation runs first, slow in a debug build on a busy machine.
    tmux.wait_for_within(&["(generation 1); the old one no longer enters"], Duration::from_secs(90))?;
    bob.stderr.expect_within("rotated the room's password (generation 1)", Duration::from_secs(90))?;
    bob.line("still here")?;
    tmux.wait_for(&[&format!("<bob {bob_tag}> still here")])?;

    // /quit leaves cleanly.
    tmux.type_line("/quit")?;
    tmux.wait_for_shell("exit=0")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}

#[test]
fn full_screen_ui_joins_a_saved_protocol_2_room_and_shows_the_history_a_member_shares() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let alice_pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let den_pw = alice_home.password_file("den-pw", "staple battery horse correct")?;
    let bob_pw = bob_home.password_file("pw", "staple battery horse correct")?;

    // Bob creates "den" sharing its last 2 messages with newcomers, and says 3 things.
    let mut bob = bob_home.spawn(
        "bob",
        &[
            &relay.invite("den"),
            "--nick",
            "bob",
            "--create",
            "--history-share",
            "2",
            "--password-file",
            bob_pw.to_str().ok_or("path")?,
        ],
    )?;
    bob.stderr.expect("you entered the room's group")?;
    for line in ["first word", "second word", "third word"] {
        bob.line(line)?;
    }
    // The relay answers /who after the messages sent before it on the connection.
    bob.line("/who")?;
    bob.stderr.expect("members as the relay lists them")?;

    // A saved room without `protocol`: the default, 2, in a window of its own.
    fs::write(
        alice_home.config(),
        format!(
            "[rooms.den]\nrelay = \"{}\"\nroom = \"den\"\nfingerprint = \"{}\"\npassword_file = \"{}\"\n",
            relay.address(),
            relay.fingerprint,
            den_pw.to_str().ok_or("path")?
        ),
    )?;
    let tmux = Tmux::start()?;
    tmux.wait_for(&[PROMPT])?;
    tmux.run(&["resize-window", "-t", "chat", "-x", "220", "-y", "40"])?;
    let command = format!(
        "{chatroom} --relay {relay} --room lobby --nick alice --create --password-file {pw} \
         --data-dir {data} --config {config}; echo \"exit=$?\"",
        chatroom = quoted(&bin("chatroom"))?,
        relay = relay.address(),
        pw = quoted(&alice_pw)?,
        data = quoted(&alice_home.data_dir())?,
        config = quoted(&alice_home.config())?,
    );
    tmux.type_line(&command)?;
    tmux.wait_for(&["| connected", "you entered the room's group (epoch"])?;
    tmux.type_line("/join den")?;
    let screen = tmux.wait_for(&[
        "1:lobby [2:den]",
        "you entered the room's group (epoch 1)",
        "shows each newcomer the last 2",
        "shared 2 message(s) sent before you entered",
        "[shared by bob ",
        "<bob> second word",
        "<bob> third word",
    ])?;
    assert!(!screen.contains("first word"), "only the last 2 are shared:\n{screen}");
    bob.stderr.expect("entered the group (epoch 1)")?;

    // The window talks to bob, and the first room saw none of it.
    tmux.type_line("thanks bob")?;
    bob.stdout.expect("> thanks bob")?;
    tmux.run(&["send-keys", "-t", "chat", "M-1"])?;
    let screen = tmux.wait_for(&["[1:lobby] 2:den"])?;
    assert!(!screen.contains("shared by") && !screen.contains("thanks bob"), "{screen}");
    tmux.type_line("/quit")?;
    tmux.wait_for_shell("exit=0")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    Ok(())
}
