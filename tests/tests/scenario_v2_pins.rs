//! Nickname pins on protocol 2 with the real binaries: a nickname is pinned to the key MLS
//! authenticated under it, `/whois` shows that key as in v1, and a third identity that calls
//! itself by a member's nickname is refused by the relay, which binds nicknames in v2 rooms as
//! in v1 (the client's own check of a second key under a pinned nickname is proved in the
//! room core's unit tests, `chatroom_session::v2`).

use std::error::Error;

use chatroom_e2e::{Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const ENTERED: &str = "you entered the room's group";

fn member(home: &Home, invite: &str, nick: &str, create: bool) -> Res<Client> {
    home.member(invite, nick, PASSWORD, create, &["--protocol", "2"])
}

/// The key tag (first 8 hex digits) a member's identity is shown with.
fn tag(home: &Home) -> Res<String> {
    let (status, out, _) = home.run(&["id"])?;
    assert!(status.success());
    Ok(out.trim().replace(' ', "").chars().take(8).collect())
}

#[test]
fn whois_shows_the_pinned_key_and_a_second_identity_cannot_take_the_nickname() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let invite = relay.invite("pins");
    let mut alice = member(&homes[0], &invite, "alice", true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;

    // Nothing pinned before bob speaks; his first message pins his key.
    alice.line("/whois bob")?;
    let line = alice
        .stderr
        .expect("bob: no signed message seen under this nickname in this room; nothing pinned")?;
    // The relay's list, which told alice of bob's arrival, is shown as its claim.
    assert!(
        line.contains("; the relay lists key") && line.ends_with("(its claim)"),
        "{line} {:?}",
        alice.stderr.all()
    );
    bob.line("hello from bob")?;
    alice.stdout.expect("hello from bob")?;
    alice.line("/whois BOB")?;
    let line = alice.stderr.expect("(pinned in this room)")?;
    assert!(line.replace(' ', "").contains(&tag(&homes[1])?), "{line}");
    assert!(line.contains("the relay lists the same key"), "{line}");

    // Mallory, another identity, calls herself bob: the relay refuses the nickname.
    let mut mallory = member(&homes[2], &invite, "bob", false)?;
    assert!(!mallory.wait()?.success());
    let err = mallory.stderr.all().join("\n");
    assert!(err.contains("that nickname belongs to another identity in this room"), "{err}");

    // Bob's pin holds.
    alice.line("/whois bob")?;
    let line = alice.stderr.expect("(pinned in this room)")?;
    assert!(line.replace(' ', "").contains(&tag(&homes[1])?), "{line}");
    for c in [&mut alice, &mut bob] {
        c.close_stdin();
        assert!(c.wait()?.success());
    }
    Ok(())
}
