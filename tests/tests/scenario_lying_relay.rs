//! Scenario 4, a lying relay: a relay built in the test from chatroom-crypto's own handshake,
//! codec and envelope code replays an old envelope, re-labels a sender, alters an envelope,
//! swaps a member's identity key, forges a member's message under another identity, or answers
//! the handshake with a key other than the one the invite pins. The real `chatroom` client
//! prints a warning each time and never shows the forged or replayed content as a message.

use std::error::Error;

use chatroom_crypto::StaticKeypair;
use chatroom_e2e::liar::{Lie, LyingRelay, FAKE_MEMBERS};
use chatroom_e2e::{without_time, Client, Home};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";

/// Alice, bob and carol join a room on a relay lying as `lie`; alice says `m1`, and bob's
/// client is returned with both still connected.
struct Room {
    alice: Client,
    bob: Client,
    _carol: Client,
    /// Last, so the clients are stopped before their homes are removed.
    _homes: Vec<Home>,
}

fn room_with(lie: Lie) -> Result<Room, Box<dyn Error + Send + Sync>> {
    let liar = LyingRelay::start(StaticKeypair::generate(), lie)?;
    let invite = liar.invite("lies");
    let homes: Vec<Home> = (0..3).map(|_| Home::protocol_1()).collect::<Result<_, _>>()?;
    let mut alice = homes[0].member(&invite, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = homes[1].member(&invite, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;
    let mut carol = homes[2].member(&invite, "carol", PASSWORD, false, &[])?;
    carol.stderr.expect("now live")?;
    bob.stderr.expect("carol joined")?;
    alice.stderr.expect("carol joined")?;
    alice.line("m1")?;
    Ok(Room { alice, bob, _carol: carol, _homes: homes })
}

fn shown(client: &Client) -> Vec<String> {
    client.stdout.all().iter().map(|l| without_time(l).to_owned()).collect()
}

#[test]
fn the_honest_control_shows_the_message_and_no_warning() -> TestResult {
    let mut room = room_with(Lie::Honest)?;
    room.bob.stdout.expect("<alice> m1")?;
    room.alice.line("m2")?;
    room.bob.stdout.expect("<alice> m2")?;
    assert_eq!(shown(&room.bob), ["<alice> m1", "<alice> m2"]);
    assert!(!room.bob.stderr.all().iter().any(|l| l.contains("WARNING")), "{:?}", room.bob.stderr.all());
    Ok(())
}

#[test]
fn a_replayed_envelope_is_refused_with_a_warning() -> TestResult {
    let mut room = room_with(Lie::Replay)?;
    room.bob.stdout.expect("<alice> m1")?;
    let warning = room.bob.stderr.expect("repeats an old counter")?;
    assert!(warning.contains("WARNING") && warning.contains("replayed"), "{warning}");
    room.alice.line("m2")?;
    room.bob.stdout.expect("<alice> m2")?;
    room.bob.stderr.expect("repeats an old counter")?;
    assert_eq!(shown(&room.bob), ["<alice> m1", "<alice> m2"], "each shown once");
    Ok(())
}

#[test]
fn a_relabelled_sender_fails_verification_and_is_not_shown() -> TestResult {
    let mut room = room_with(Lie::Relabel)?;
    let warning = room.bob.stderr.expect("failed verification")?;
    assert!(warning.contains("WARNING") && warning.contains("dropped"), "{warning}");
    room.alice.line("m2")?;
    room.bob.stderr.expect("failed verification")?;
    assert!(shown(&room.bob).is_empty(), "nothing shown: {:?}", shown(&room.bob));
    Ok(())
}

#[test]
fn an_altered_envelope_fails_verification_and_is_not_shown() -> TestResult {
    let mut room = room_with(Lie::Tamper)?;
    room.bob.stderr.expect("WARNING: message #1 failed verification")?;
    room.alice.line("m2")?;
    room.bob.stderr.expect("WARNING: message #2 failed verification")?;
    assert!(shown(&room.bob).is_empty(), "nothing shown: {:?}", shown(&room.bob));
    Ok(())
}

#[test]
fn a_swapped_identity_key_is_shown_loudly_and_the_old_pin_kept() -> TestResult {
    let mut room = room_with(Lie::SwapIdentity)?;
    room.bob.stdout.expect("<alice> m1")?;
    let warning = room.bob.stderr.expect("IDENTITY KEY CHANGED for alice")?;
    assert!(warning.contains("WARNING"), "{warning}");
    // Alice's real messages still verify against the pin that was kept.
    room.alice.line("m2")?;
    room.bob.stdout.expect("<alice> m2")?;
    assert_eq!(shown(&room.bob), ["<alice> m1", "<alice> m2"]);
    Ok(())
}

#[test]
fn a_message_forged_under_another_identity_is_flagged_as_impersonation() -> TestResult {
    let forged = "send the wallet seed to the relay operator";
    let mut room = room_with(Lie::Impersonate { password: PASSWORD.into(), forged: forged.into() })?;
    room.bob.stdout.expect("<alice> m1")?;
    let warning = room.bob.stderr.expect("IMPERSONATION")?;
    assert!(warning.contains("claiming to be alice") && warning.contains("not shown as theirs"), "{warning}");
    room.alice.line("m2")?;
    room.bob.stdout.expect("<alice> m2")?;
    room.bob.stderr.expect("IMPERSONATION")?;
    assert_eq!(shown(&room.bob), ["<alice> m1", "<alice> m2"], "the forgery is never a message");
    assert!(!room.alice.stdout.all().iter().any(|l| l.contains(forged)));
    Ok(())
}

#[test]
fn a_poisoned_delivery_silences_nothing_and_impersonation_is_still_caught() -> TestResult {
    let forged = "the relay operator is trustworthy";
    let mut room = room_with(Lie::Poison { password: PASSWORD.into(), forged: forged.into() })?;
    // Garbage under a sequence number near 2^64 comes first; before, it silenced the room.
    room.bob.stderr.expect("WARNING: message #18446744073709551614 failed verification")?;
    room.bob.stdout.expect("<alice> m1")?;
    room.bob.stderr.expect("IMPERSONATION")?;
    room.alice.line("m2")?;
    room.bob.stdout.expect("<alice> m2")?;
    room.bob.stderr.expect("IMPERSONATION")?;
    assert_eq!(shown(&room.bob), ["<alice> m1", "<alice> m2"]);
    Ok(())
}

#[test]
fn a_fake_member_list_of_100000_pins_nothing_and_impersonation_is_still_caught() -> TestResult {
    let forged = "meet me at the usual place";
    let mut room = room_with(Lie::FakeMembers { password: PASSWORD.into(), forged: forged.into() })?;
    // Bob was told that `alice` has a key nobody holds; only the real alice's signed
    // message pins her, and the forgery under the liar's own key is flagged.
    assert!(room
        .bob
        .stderr
        .all()
        .iter()
        .any(|l| l.contains(&format!("members as the relay lists them ({FAKE_MEMBERS})"))));
    room.bob.stdout.expect("<alice> m1")?;
    room.bob.stderr.expect("IMPERSONATION")?;
    room.alice.line("m2")?;
    room.bob.stdout.expect("<alice> m2")?;
    room.bob.stderr.expect("IMPERSONATION")?;
    assert_eq!(shown(&room.bob), ["<alice> m1", "<alice> m2"]);
    room.bob.line("/whois alice")?;
    let whois = room.bob.stderr.expect("alice: messages signed by key")?;
    assert!(
        whois.contains("(pinned in this room)") && whois.contains("the relay lists key 0000000000000000"),
        "{whois}"
    );
    Ok(())
}

#[test]
fn a_relay_answering_with_another_static_key_is_refused_before_joining() -> TestResult {
    // The invite pins one key; the relay at that address proves another.
    let pinned = StaticKeypair::generate();
    let liar = LyingRelay::start(StaticKeypair::generate(), Lie::Honest)?;
    let pinned_fp: String = pinned.public().iter().map(|b| format!("{b:02x}")).collect();
    let invite = format!("chatroom://{pinned_fp}@{}/lies", liar.addr);
    let home = Home::protocol_1()?;
    let mut alice = home.member(&invite, "alice", PASSWORD, true, &[])?;
    let status = alice.wait()?;
    assert!(!status.success());
    let err = alice.stderr.all().join("\n");
    assert!(err.contains("RELAY KEY MISMATCH"), "{err}");
    assert!(err.contains(&pinned_fp) && err.contains(&liar.fingerprint), "both keys named: {err}");
    assert!(!err.contains("deriving the room key") && !err.contains("now live"), "{err}");
    assert!(alice.stdout.all().is_empty());
    Ok(())
}
