//! Which protocol version the real `chatroom` joins with: version 2 unless it knows better (a
//! flag, a saved room's `protocol`, an invite's `v=`, its own state for the room); an invite
//! without `v=` names no version. A room of the other version refuses the join,
//! and the client stops with what to do: it never joins with the other version by itself.

use std::error::Error;
use std::fs;
use std::time::Duration;

use chatroom_e2e::{random_hex, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const ENTERED: &str = "you entered the room's group";
/// How long a refused client may take to exit (it exits at once, well within this).
const EXIT: Duration = Duration::from_secs(20);

/// A protocol 1 room made by alice (`--protocol 1`), holding one message.
fn v1_room(relay: &Relay, alice: &Home, room: &str) -> Res<Client> {
    let mut a = alice.member(&relay.invite(room), "alice", PASSWORD, true, &["--protocol", "1"])?;
    a.stderr.expect("now live")?;
    a.line("hello from v1")?;
    a.line("/invite")?;
    Ok(a)
}

/// Starts `chatroom --plain --nick NICK --password-file FILE ARGS` (no invite).
fn joiner(home: &Home, nick: &str, args: &[&str]) -> Res<Client> {
    let pass = home.password_file(&format!("{nick}.pass"), PASSWORD)?;
    let pass = pass.to_str().ok_or("password file path is not UTF-8")?.to_owned();
    home.spawn(nick, &[&["--nick", nick, "--password-file", pass.as_str()], args].concat())
}

/// The names of the state files in a home's `rooms` directory.
fn state_files(home: &Home) -> Res<Vec<String>> {
    let dir = home.data_dir().join("rooms");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

#[test]
fn a_room_is_created_and_joined_with_protocol_2_by_default() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let addr = relay.address();
    let args = ["--relay", addr.as_str(), "--room", "general", "--create"];
    let mut alice = joiner(&alice_home, "alice", &args)?;
    alice.stderr.expect(ENTERED)?;
    alice.line("/safety")?;
    alice.stderr.expect("epoch 0 code: ")?;
    alice.line("/invite")?;
    let invite = alice.stderr.expect("invite: chatroom://")?;
    assert!(invite.ends_with("&v=2"), "a protocol 2 room's invite says so: {invite}");
    let url = invite.split("invite: ").nth(1).ok_or("no URL")?.to_owned();
    assert!(state_files(&alice_home)?.iter().any(|n| n.ends_with("-general.v2")));

    // An invite saying v=1 is followed even by a client whose default is 2: it is refused.
    let v1_url = url.replace("&v=2", "&v=1");
    let mut wrong = bob_home.member(&v1_url, "bob", PASSWORD, false, &[])?;
    assert!(!wrong.wait_within(EXIT)?.success());
    let said = wrong.stderr.expect("for protocol 1 (as the invite says)")?;
    assert!(said.ends_with("run again with --protocol 2"), "{said}");

    // The v=2 invite enters the group.
    let mut bob = bob_home.member(&url, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    bob.close_stdin();
    assert!(bob.wait_within(EXIT)?.success());

    // Bob's own state now says version 2, so an invite without v= (read as 1 otherwise) enters
    // the same group.
    let mut again = bob_home.member(&relay.invite("general"), "bob", PASSWORD, false, &[])?;
    again.line("/safety")?;
    again.stderr.expect("epoch 1 code: ")?;
    Ok(())
}

#[test]
fn a_protocol_2_join_of_a_protocol_1_room_stops_with_what_to_do() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let mut alice = v1_room(&relay, &alice_home, "general")?;
    let invite = alice.stderr.expect("invite: chatroom://")?;
    assert!(invite.ends_with("&v=1"), "a protocol 1 room's invite says so: {invite}");

    // The right password, no flag, an address rather than an invite: the default, 2, is
    // refused. Joining with 1 would succeed and keep running; the client exits instead.
    let addr = relay.address();
    let args = ["--relay", addr.as_str(), "--room", "general", "--fingerprint", &relay.fingerprint];
    let mut bob = joiner(&bob_home, "bob", &args)?;
    let status = bob.wait_within(EXIT)?;
    assert_eq!(status.code(), Some(1), "{:?}", bob.stderr.all());
    let said = bob.stderr.all().join("\n");
    assert!(
        said.contains("for protocol 2 (the default for a room this client knows nothing about)"),
        "{said}"
    );
    assert!(said.contains("general is a protocol 1 room"), "{said}");
    assert!(said.trim_end().ends_with("run again with --protocol 1"), "{said}");
    assert_eq!(said.matches("chatroom: error:").count(), 1, "one message: {said}");
    assert!(
        state_files(&bob_home)?.is_empty(),
        "no room state of either version: {:?}",
        state_files(&bob_home)?
    );
    assert!(!said.contains("now live"), "bob never joined the room with protocol 1: {said}");

    // As told: with --protocol 1 the same join works and reads the room's history.
    let mut bob = joiner(&bob_home, "bob", &[&args[..], &["--protocol", "1"]].concat())?;
    bob.stdout.expect("<alice> hello from v1")?;
    Ok(())
}

#[test]
fn a_protocol_1_join_of_a_protocol_2_room_stops_with_what_to_do() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::new()?, Home::new()?);
    let mut alice =
        alice_home.member(&relay.invite("general"), "alice", PASSWORD, true, &["--protocol", "2"])?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = bob_home.member(&relay.invite("general"), "bob", PASSWORD, false, &["--protocol", "1"])?;
    let status = bob.wait_within(EXIT)?;
    assert_eq!(status.code(), Some(1), "{:?}", bob.stderr.all());
    let said = bob.stderr.all().join("\n");
    assert!(said.contains("for protocol 1 (as --protocol says)"), "{said}");
    assert!(said.trim_end().ends_with("run again with --protocol 2"), "{said}");
    assert!(
        state_files(&bob_home)?.is_empty(),
        "a refused join leaves no state: {:?}",
        state_files(&bob_home)?
    );
    Ok(())
}

#[test]
fn old_invites_saved_rooms_and_v1_state_keep_protocol_1_rooms_working() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home, carol_home) = (Home::new()?, Home::new()?, Home::new()?);
    let mut alice = v1_room(&relay, &alice_home, "general")?;
    let invite = alice.stderr.expect("invite: chatroom://")?;
    let url = invite.split("invite: ").nth(1).ok_or("no URL")?.to_owned();

    // The invite's v=1, no flag.
    let mut bob = bob_home.member(&url, "bob", PASSWORD, false, &[])?;
    bob.stdout.expect("<alice> hello from v1")?;
    bob.close_stdin();
    assert!(bob.wait_within(EXIT)?.success());
    // Bob's v1 state now decides without invite or flag.
    let addr = relay.address();
    let mut bob = joiner(&bob_home, "bob", &["--relay", addr.as_str(), "--room", "general"])?;
    bob.stderr.expect("now live")?;
    bob.close_stdin();
    assert!(bob.wait_within(EXIT)?.success());

    // An invite without v= (from the relay's invite prefix, or written before invites carried
    // the version) names none: the default is refused, with what to do.
    let old = relay.invite("general");
    assert!(!old.contains("v="));
    let mut carol = carol_home.member(&old, "carol", PASSWORD, false, &[])?;
    assert_eq!(carol.wait_within(EXIT)?.code(), Some(1));
    let said = carol.stderr.all().join("\n");
    assert!(said.contains("for protocol 2 (the default: the invite names no version"), "{said}");
    assert!(said.trim_end().ends_with("run again with --protocol 1"), "{said}");
    let mut carol = carol_home.member(&old, "carol", PASSWORD, false, &["--protocol", "1"])?;
    carol.stdout.expect("<alice> hello from v1")?;
    carol.close_stdin();
    assert!(carol.wait_within(EXIT)?.success());
    // Once joined, carol's v1 state decides for the same invite.
    let mut carol = carol_home.member(&old, "carol", PASSWORD, false, &[])?;
    carol.stderr.expect("now live")?;
    carol.close_stdin();
    assert!(carol.wait_within(EXIT)?.success());

    // A saved room with protocol = 1 (dave has no state for the room).
    let dave_home = Home::new()?;
    let pass = dave_home.password_file("dave.pass", PASSWORD)?;
    let config = format!(
        "[rooms.old]\nrelay = \"{}\"\nroom = \"general\"\nnick = \"dave\"\nfingerprint = \"{}\"\n\
         password_file = \"{}\"\nprotocol = 1\n",
        relay.address(),
        relay.fingerprint,
        pass.display()
    );
    fs::write(dave_home.config(), config)?;
    let mut dave = dave_home.spawn("dave", &["old"])?;
    dave.stdout.expect("<alice> hello from v1")?;
    let marker = random_hex(4);
    dave.line(&marker)?;
    alice.stdout.expect(&format!("<dave> {marker}"))?;
    Ok(())
}
