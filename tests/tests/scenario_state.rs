//! Scenario 11, room state files: a state file holding 100,000 senders (what a room with many
//! throwaway identities leaves behind) still loads, the room works, and the file written back
//! is bounded; once the pin store is full it fails closed; a state file cut short is refused
//! with the fix, not read as a smaller state.

use std::error::Error;
use std::fs;
use std::path::PathBuf;

use chatroom_e2e::{Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const SECRET: &str = "correct horse battery staple";

/// The state file of `room` on `relay` in `home`.
fn state_path(home: &Home, relay: &Relay, room: &str) -> PathBuf {
    home.data_dir().join("rooms").join(format!("{}-{room}", &relay.fingerprint[..16]))
}

/// A state file with `senders` made-up senders, each with a counter, the first `pins` of
/// them with a pin.
fn crowded_state(senders: u64, pins: u64) -> String {
    let mut text = String::from("chatroom room state v2\nlast_seq 0\nlast_counter 0\ncounter_floor 0\n");
    for i in 0..senders {
        let key = format!("{i:016x}{}", "5a".repeat(24));
        text.push_str(&format!("counter {key} {}\n", 1_000_000 + i));
        if i < pins {
            text.push_str(&format!("pin x{i} {key}\n"));
        }
    }
    text.push_str("end\n");
    text
}

#[test]
fn a_state_file_with_100000_senders_loads_and_is_written_back_bounded() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("crowded");
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let path = state_path(&bob_home, &relay, "crowded");
    fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    // Bob's own pin joins them: 99,998 + bob leaves room for alice's.
    fs::write(&path, crowded_state(100_000, 99_998))?;
    let written = fs::metadata(&path)?.len();

    let mut alice = alice_home.member(&invite, "alice", SECRET, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&invite, "bob", SECRET, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.line("still works")?;
    bob.stdout.expect("<alice> still works")?;
    bob.line("so it does")?;
    alice.stdout.expect("<bob> so it does")?;
    bob.close_stdin();
    assert!(bob.wait()?.success(), "{:?}", bob.stderr.all());

    let text = fs::read_to_string(&path)?;
    let counters = text.lines().filter(|l| l.starts_with("counter ")).count();
    assert!(counters <= 10_000, "{counters} counters kept");
    assert!(text.lines().any(|l| l.starts_with("counter_floor ") && l != "counter_floor 0"));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("pin ")).count(),
        100_000,
        "pins are kept, with alice and bob"
    );
    assert!(fs::metadata(&path)?.len() < written, "compacted");
    assert_eq!(text.lines().last(), Some("end"));

    // The pin store is now full: a newcomer's message is not shown as theirs (fail closed).
    let carol_home = Home::protocol_1()?;
    let mut carol = carol_home.member(&invite, "carol", SECRET, false, &[])?;
    carol.stderr.expect("now live")?;
    let mut bob = bob_home.member(&invite, "bob", SECRET, false, &[])?;
    bob.stderr.expect("now live")?;
    carol.line("hi, new here")?;
    alice.stdout.expect("<carol> hi, new here")?;
    let warning = bob.stderr.expect("pin store is full")?;
    assert!(
        warning.contains("WARNING") && warning.contains("carol") && warning.contains("not shown as theirs"),
        "{warning}"
    );
    alice.line("alice is pinned")?;
    bob.stdout.expect("<alice> alice is pinned")?;
    assert!(!bob.stdout.all().iter().any(|l| l.contains("<carol>")), "{:?}", bob.stdout.all());
    Ok(())
}

#[test]
fn a_state_file_cut_short_is_refused_with_the_fix() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("cut");
    let home = Home::protocol_1()?;
    let mut alice = home.member(&invite, "alice", SECRET, true, &[])?;
    alice.line("hello")?;
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());
    let path = state_path(&home, &relay, "cut");
    let text = fs::read_to_string(&path)?;
    fs::write(&path, &text[..text.len() - 8])?;

    let mut alice = home.member(&invite, "alice", SECRET, false, &[])?;
    assert!(!alice.wait()?.success());
    let err = alice.stderr.all().join("\n");
    assert!(err.contains("cut short") && err.contains(&format!("mv {}", path.display())), "{err}");
    assert!(!err.contains("now live"), "{err}");
    // The fix works.
    fs::rename(&path, path.with_extension("damaged"))?;
    let mut alice = home.member(&invite, "alice", SECRET, false, &[])?;
    alice.stderr.expect("now live")?;
    Ok(())
}
