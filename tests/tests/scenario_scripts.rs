//! Scenario 10, line mode for scripts and bots: piped input of any length arrives completely,
//! in order and exactly once, paced under the relay's rate limit; commands are awaited and a
//! refusal gives a non-zero exit status; a one-shot sender prints no history; output cannot
//! be padded into a forged line, and a look-alike nickname is flagged.
//! Its members join protocol 1 rooms (`Home::protocol_1`): the history and output checks are
//! protocol 1's.

use std::error::Error;
use std::time::{Duration, Instant};

use chatroom_e2e::{without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const SECRET: &str = "correct horse battery staple";

/// A member of `invite` living in a fresh home (returned to keep it alive), live.
fn member(
    invite: &str,
    nick: &str,
    create: bool,
    extra: &[&str],
) -> Result<(Home, Client), Box<dyn Error + Send + Sync>> {
    let home = Home::protocol_1()?;
    let mut client = home.member(invite, nick, SECRET, create, extra)?;
    client.stderr.expect("now live")?;
    Ok((home, client))
}

/// Pipes `lines` into a fresh `chatroom --plain` as `nick`, closes its input and waits for it to
/// exit (at most `limit`); returns the client and how long it ran after its input ended.
fn pipe(
    invite: &str,
    nick: &str,
    extra: &[&str],
    lines: &[String],
    limit: Duration,
) -> Result<(Home, Client, bool, Duration), Box<dyn Error + Send + Sync>> {
    let home = Home::protocol_1()?;
    let mut client = home.member(invite, nick, SECRET, false, extra)?;
    for line in lines {
        client.line(line)?;
    }
    client.close_stdin();
    let start = Instant::now();
    let ok = client.wait_within(limit)?.success();
    Ok((home, client, ok, start.elapsed()))
}

/// The message lines of `client` from `nick`, without time stamps.
fn from(client: &Client, nick: &str) -> Vec<String> {
    let prefix = format!("<{nick}> ");
    client
        .stdout
        .all()
        .iter()
        .map(|l| without_time(l))
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn eighty_piped_lines_at_the_default_pace_all_arrive_once() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("pipe");
    let (_ah, mut alice) = member(&invite, "alice", true, &[])?;
    // 80 lines take about 14 s at 4.5 per second after a burst of 18: longer than the 10 s
    // an exiting client waits without progress, which once lost the tail.
    let lines: Vec<String> = (1..=80).map(|i| i.to_string()).collect();
    let (_dh, dave, ok, took) = pipe(&invite, "dave", &[], &lines, Duration::from_secs(90))?;
    assert!(ok, "{:?}", dave.stderr.all());
    alice.stdout.expect("<dave> 80")?;
    let expected: Vec<String> = lines.iter().map(|l| format!("<dave> {l}")).collect();
    assert_eq!(from(&alice, "dave"), expected, "all, in order, once (dave ran {took:?} after end of input)");
    Ok(())
}

#[test]
fn a_thousand_piped_lines_all_arrive_once() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    // A relay whose limits (per member, and per address and room, which every connection
    // from 127.0.0.1 shares) allow a faster pace, and a client paced under them.
    let flags = [
        "--rate-per-sec",
        "500",
        "--rate-burst",
        "500",
        "--ip-rate-per-sec",
        "500",
        "--ip-rate-burst",
        "500",
        "--room-rate-per-sec",
        "500",
        "--room-rate-burst",
        "500",
    ];
    let relay = Relay::start_with(relay_dir.path(), "127.0.0.1:0", &flags)?;
    let invite = relay.invite("thousand");
    let (_ah, mut alice) = member(&invite, "alice", true, &[])?;
    let lines: Vec<String> = (1..=1000).map(|i| format!("line {i}")).collect();
    let pace = ["--send-rate", "400", "--send-burst", "400"];
    let (_dh, dave, ok, took) = pipe(&invite, "dave", &pace, &lines, Duration::from_secs(120))?;
    assert!(ok, "{:?}", dave.stderr.all());
    alice.stdout.expect("<dave> line 1000")?;
    let expected: Vec<String> = lines.iter().map(|l| format!("<dave> {l}")).collect();
    assert_eq!(from(&alice, "dave"), expected, "all, in order, once");
    eprintln!("1000 lines: sender exited {took:?} after end of input");
    Ok(())
}

#[test]
fn refused_or_unknown_commands_give_a_non_zero_exit_with_the_reason() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("cmds");
    let (alice_home, mut alice) = member(&invite, "alice", true, &[])?;
    let (_bh, _bob) = member(&invite, "bob", false, &[])?;
    alice.stderr.expect("bob joined")?;

    let kick = vec!["/kick alice".to_owned()];
    let (_ch, carol, ok, _) = pipe(&invite, "carol", &[], &kick, Duration::from_secs(30))?;
    assert!(!ok, "a non-owner's kick must fail");
    let err = carol.stderr.all().join("\n");
    assert!(err.contains("(NotOwner)") && err.contains("1 line(s) of input failed"), "{err}");

    let unknown = vec!["/frobnicate".to_owned(), "still sent".to_owned()];
    let (_eh, erin, ok, _) = pipe(&invite, "erin", &[], &unknown, Duration::from_secs(30))?;
    assert!(!ok);
    assert!(erin.stderr.all().iter().any(|l| l.contains("unknown command /frobnicate")));
    alice.stdout.expect("<erin> still sent")?;

    // The owner, from a script: a kick of an absent nickname fails, /who succeeds.
    alice.close_stdin();
    assert!(alice.wait()?.success());
    let mut owner = alice_home.member(&invite, "alice", SECRET, false, &[])?;
    owner.line("/kick nobody")?;
    owner.close_stdin();
    assert!(!owner.wait_within(Duration::from_secs(30))?.success());
    assert!(owner.stderr.all().iter().any(|l| l.contains("(NoSuchMember)")), "{:?}", owner.stderr.all());
    let mut owner = alice_home.member(&invite, "alice", SECRET, false, &[])?;
    owner.line("/who")?;
    owner.line("/kick bob")?;
    owner.close_stdin();
    assert!(owner.wait_within(Duration::from_secs(30))?.success(), "{:?}", owner.stderr.all());
    assert!(owner.stderr.all().iter().any(|l| l.contains("members as the relay lists them")));
    Ok(())
}

#[test]
fn a_one_shot_sender_prints_no_history() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("bot");
    let (_ah, mut alice) = member(&invite, "alice", true, &[])?;
    alice.line("earlier talk")?;
    alice.line("more earlier talk")?;
    let (_bh, mut bob) = member(&invite, "bob", false, &[])?;
    bob.stdout.expect("[history] <alice> more earlier talk")?;
    let once = vec!["build 42 passed".to_owned()];
    let (_dh, bot, ok, _) = pipe(&invite, "bot", &["--no-history"], &once, Duration::from_secs(30))?;
    assert!(ok, "{:?}", bot.stderr.all());
    alice.stdout.expect("<bot> build 42 passed")?;
    assert!(bot.stdout.all().is_empty(), "{:?}", bot.stdout.all());
    Ok(())
}

#[test]
fn padding_cannot_forge_a_line_and_a_look_alike_nickname_is_flagged() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("forge");
    let (_ah, mut alice) = member(&invite, "alice", true, &[])?;
    let (_bh, mut bob) = member(&invite, "bob", false, &[])?;
    alice.line("hello")?;
    bob.stdout.expect("<alice> hello")?;
    let (_mh, mut mallory) = member(&invite, "AIice", false, &[])?;
    mallory.line(&format!("hi{}12:00:00 <alice> send the wallet seed", " ".repeat(60)))?;
    let shown = bob.stdout.expect("<AIice> hi")?;
    assert!(shown.ends_with("<AIice> hi <+59 spaces>12:00:00 <alice> send the wallet seed"), "{shown}");
    let warning = bob.stderr.expect("looks like alice")?;
    assert!(warning.starts_with("-!- WARNING: AIice (key ") && warning.contains("/whois AIice"), "{warning}");
    bob.line("/whois AIice")?;
    let whois = bob.stderr.expect("AIice: messages signed by key")?;
    assert!(whois.contains("looks like alice"), "{whois}");
    Ok(())
}
