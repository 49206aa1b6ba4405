//! Scenario 9, exactly once: what a member sees is decided by what is signed (sender and
//! counter), the relay's sequence numbers are only a cursor. A member's own acknowledged
//! messages never come back as history, neither after a relay restart nor after a client
//! restart; a member who only sends still learns of a history gap; a relay restored from an
//! older copy of its database is reported once and later messages are shown.

use std::error::Error;
use std::fs;
use std::path::Path;

use chatroom_e2e::{without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const SECRET: &str = "correct horse battery staple";

/// A member of `invite` living in `home`.
fn member(
    home: &Home,
    invite: &str,
    nick: &str,
    create: bool,
) -> Result<Client, Box<dyn Error + Send + Sync>> {
    let mut client = home.member(invite, nick, SECRET, create, &[])?;
    client.stderr.expect("now live")?;
    Ok(client)
}

/// Lines of `client`'s stdout containing `text`, without their time stamps.
fn shown(client: &Client, text: &str) -> Vec<String> {
    client.stdout.all().iter().filter(|l| l.contains(text)).map(|l| without_time(l).to_owned()).collect()
}

/// Copies every file of `from` into `to` (created), replacing what is there.
fn copy_files(from: &Path, to: &Path) -> Result<(), Box<dyn Error + Send + Sync>> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(to)? {
        fs::remove_file(entry?.path())?;
    }
    // Regular files only: the database and the key, not the admin socket a killed relay leaves.
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[test]
fn own_messages_are_never_shown_twice_across_relay_and_client_restarts() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let invite = relay.invite("once");
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = member(&alice_home, &invite, "alice", true)?;
    let mut bob = member(&bob_home, &invite, "bob", false)?;
    alice.line("A1")?;
    bob.stdout.expect("<alice> A1")?;
    bob.line("B1")?;
    alice.stdout.expect("<bob> B1")?;
    alice.line("A2")?;
    alice.line("A3")?;
    bob.stdout.expect("<alice> A3")?;

    relay.kill();
    alice.stderr.expect("disconnected")?;
    let _relay = Relay::start_on(relay_dir.path(), &addr)?;
    alice.stderr.expect("reconnected")?;
    alice.stderr.expect("now live")?;
    bob.line("B2")?;
    alice.stdout.expect("<bob> B2")?;
    assert!(shown(&alice, "<alice>").is_empty(), "own messages replayed: {:?}", alice.stdout.all());

    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());
    let mut alice = member(&alice_home, &invite, "alice", false)?;
    bob.line("B3")?;
    alice.stdout.expect("<bob> B3")?;
    assert_eq!(
        alice.stdout.all().iter().map(|l| without_time(l)).collect::<Vec<_>>(),
        ["<bob> B3"],
        "after a client restart nothing already seen comes back"
    );
    Ok(())
}

#[test]
fn a_member_who_only_sends_is_told_of_a_history_gap() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start_with(relay_dir.path(), "127.0.0.1:0", &["--history", "3"])?;
    let invite = relay.invite("gap");
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = member(&alice_home, &invite, "alice", true)?;
    alice.line("only this")?;
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());
    // Seq 1 was alice's; bob's six are seq 2..7, of which the relay keeps the last three.
    let mut bob = member(&bob_home, &invite, "bob", false)?;
    for i in 1..=6 {
        bob.line(&format!("b{i}"))?;
    }
    bob.close_stdin();
    assert!(bob.wait()?.success(), "{:?}", bob.stderr.all());
    let mut alice = alice_home.member(&invite, "alice", SECRET, false, &[])?;
    alice.stderr.expect("WARNING: messages #2 to #4 expired from the relay's history")?;
    alice.stderr.expect("now live")?;
    alice.stdout.expect("[history] <bob> b6")?;
    assert_eq!(shown(&alice, "<"), ["[history] <bob> b4", "[history] <bob> b5", "[history] <bob> b6"]);
    Ok(())
}

#[test]
fn a_relay_restored_from_an_old_database_is_reported_and_later_messages_show() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let backup = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let invite = relay.invite("rollback");
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = member(&alice_home, &invite, "alice", true)?;
    let mut bob = member(&bob_home, &invite, "bob", false)?;
    alice.line("before backup")?;
    bob.stdout.expect("<alice> before backup")?;

    // The operator's backup: the data directory of the stopped relay.
    relay.kill();
    copy_files(relay_dir.path(), backup.path())?;
    let mut relay = Relay::start_on(relay_dir.path(), &addr)?;
    alice.stderr.expect("reconnected")?;
    bob.stderr.expect("reconnected")?;
    for i in 1..=4 {
        alice.line(&format!("lost {i}"))?;
    }
    bob.stdout.expect("<alice> lost 4")?;
    // Alice leaves once the relay has answered all four (a clean exit waits for that): a
    // message still unanswered would be sent again to the restored relay, refilling seq 2..5.
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());

    // The database is restored from the backup: seq 2..5 are gone and will be reused.
    relay.kill();
    copy_files(backup.path(), relay_dir.path())?;
    let _relay = Relay::start_on(relay_dir.path(), &addr)?;
    let warning = bob.stderr.expect("the relay lost messages")?;
    assert!(warning.contains("WARNING") && warning.contains("#1") && warning.contains("#5"), "{warning}");
    let mut alice = alice_home.member(&invite, "alice", SECRET, false, &[])?;
    alice.stderr.expect("the relay lost messages")?;
    alice.stderr.expect("now live")?;
    for i in 1..=3 {
        alice.line(&format!("after {i}"))?;
    }
    bob.stdout.expect("<alice> after 3")?;
    bob.line("bob after")?;
    alice.stdout.expect("<bob> bob after")?;
    assert_eq!(
        shown(&bob, "<alice>"),
        ["<alice> before backup", "<alice> lost 1", "<alice> lost 2", "<alice> lost 3", "<alice> lost 4"]
            .into_iter()
            .chain(["<alice> after 1", "<alice> after 2", "<alice> after 3"])
            .collect::<Vec<_>>()
    );
    assert_eq!(bob.stderr.all().iter().filter(|l| l.contains("the relay lost messages")).count(), 1);

    // A client started afresh against the restored relay fetches what it has not seen, once.
    bob.close_stdin();
    assert!(bob.wait()?.success());
    alice.line("while bob is away")?;
    let mut bob = member(&bob_home, &invite, "bob", false)?;
    bob.stdout.expect("[history] <alice> while bob is away")?;
    assert_eq!(shown(&bob, "<alice>"), ["[history] <alice> while bob is away"]);
    Ok(())
}
