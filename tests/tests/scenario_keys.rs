//! Scenario 12, keys and secrets: the room password does not stay in a member's memory once
//! the room key is derived; invites always carry the room's key-derivation parameters, taken
//! from the room's saved state when `--kdf` is not given.

use std::error::Error;
use std::fs;
use std::io::{Read, Seek, SeekFrom};

use chatroom_e2e::{random_hex, without_time, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// Where `needle` occurs in the writable memory of process `pid` (a child of this test, which
/// may read it): the address ranges' names, one per hit.
fn find_in_memory(pid: u32, needle: &[u8]) -> Result<Vec<String>, Box<dyn Error + Send + Sync>> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut mem = fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut hits = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms)) = (fields.first(), fields.get(1)) else { continue };
        // Secrets live in writable memory (heap, stacks, anonymous maps), not in the program's code.
        if !perms.starts_with("rw") || line.contains("[vvar]") || line.contains("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').ok_or("bad maps line")?;
        let (start, end) = (u64::from_str_radix(start, 16)?, u64::from_str_radix(end, 16)?);
        let mut buf = vec![0u8; usize::try_from(end - start)?];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            hits.push(line.to_owned());
        }
    }
    Ok(hits)
}

#[test]
fn the_room_password_is_not_in_memory_once_the_key_is_derived() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let invite = relay.invite("secret");
    let password = format!("canary {}", random_hex(16));
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = alice_home.member(&invite, "alice", &password, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&invite, "bob", &password, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.line("after the key")?;
    bob.stdout.expect("<alice> after the key")?;
    // The scan itself must be able to find a secret: the room name is in memory for good.
    assert!(!find_in_memory(bob.pid(), b"secret")?.is_empty(), "the memory scan reads nothing");
    let hits = find_in_memory(bob.pid(), password.as_bytes())?;
    assert!(hits.is_empty(), "the password is still in memory at {hits:?}");
    Ok(())
}

#[test]
fn an_invite_from_saved_room_state_carries_non_default_kdf_parameters() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let password = "correct horse battery staple";
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let pw = alice_home.password_file("pw", password)?;
    let pw = pw.to_str().ok_or("path")?;
    let create = ["--relay", &addr, "--room", "costly", "--nick", "alice", "--password-file", pw];
    let mut alice =
        alice_home.spawn("alice", &[&create[..], &["--create", "--kdf", "m131072t3p1"]].concat())?;
    alice.stderr.expect("now live")?;
    alice.line("made with costly parameters")?;
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());

    // No --kdf: the parameters come from alice's saved state for the room.
    let (status, invite, err) = alice_home.run(&["invite", "--relay", &addr, "--room", "costly"])?;
    assert!(status.success(), "{err}");
    let invite = invite.trim();
    assert_eq!(invite, format!("chatroom://{}@{addr}/costly?kdf=m131072t3p1&v=1", relay.fingerprint));

    let mut bob = bob_home.member(invite, "bob", password, false, &[])?;
    bob.stderr.expect("now live")?;
    let line = bob.stdout.expect("made with costly parameters")?;
    assert_eq!(without_time(&line), "[history] <alice> made with costly parameters");
    // A default room's invite names the default too.
    let (status, invite, _) = bob_home.run(&["invite", "--relay", &addr, "--room", "other"])?;
    assert!(status.success());
    assert!(invite.trim().ends_with("/other?kdf=m65536t3p1&v=1"), "{invite}");
    Ok(())
}

#[test]
fn a_new_relay_key_in_an_invite_is_offered_and_the_relay_is_checked_before_the_password() -> TestResult {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut first = Relay::start(dir_a.path())?;
    let addr = first.address();
    let home = Home::protocol_1()?;
    let mut alice = home.member(&first.invite("r"), "alice", "correct horse battery staple", true, &[])?;
    alice.stderr.expect("now live")?;
    alice.close_stdin();
    assert!(alice.wait()?.success());
    let old_fp = first.fingerprint.clone();
    first.kill();
    let second = Relay::start_on(dir_b.path(), &addr)?;

    // Without an invite, the changed key is refused before the password is asked for.
    let mut alice = home.spawn("alice", &["--relay", &addr, "--room", "r", "--nick", "alice"])?;
    assert!(!alice.wait()?.success());
    let err = alice.stderr.all().join("\n");
    assert!(err.contains("RELAY KEY MISMATCH") && err.contains(&second.fingerprint), "{err}");
    assert!(!err.contains("password"), "no password asked for: {err}");

    // An invite with the new key: both keys are named; declining changes nothing.
    let invite = second.invite("r");
    let mut alice = home.spawn("alice", &[&invite, "--nick", "alice", "--create"])?;
    let warning = alice.stderr.expect("gives relay")?;
    assert!(warning.contains(&old_fp) && warning.contains(&second.fingerprint), "{warning}");
    alice.line("n")?;
    assert!(!alice.wait()?.success());
    assert!(alice.stderr.all().iter().any(|l| l.contains("nothing changed")), "{:?}", alice.stderr.all());
    let (_, known, _) = home.run(&["relays", "list"])?;
    assert!(known.contains(&old_fp), "{known}");

    // Accepting pins the new key; the password is asked for only then.
    let mut alice = home.spawn("alice", &[&invite, "--nick", "alice", "--create"])?;
    alice.stderr.expect("gives relay")?;
    alice.line("y")?;
    alice.stderr.expect(&format!("is now pinned to {}", second.fingerprint))?;
    alice.line("correct horse battery staple")?;
    alice.line("correct horse battery staple")?;
    alice.stderr.expect("now live")?;
    let (_, known, _) = home.run(&["relays", "list"])?;
    assert!(known.contains(&second.fingerprint) && !known.contains(&old_fp), "{known}");
    Ok(())
}

#[test]
fn a_weak_password_at_creation_asks_first_and_an_empty_one_is_generated() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let home = Home::protocol_1()?;
    let args = ["--relay", addr.as_str(), "--room", "weak", "--nick", "alice", "--create"];

    // Weak, declined: nothing is created.
    let mut alice = home.spawn("alice", &args)?;
    alice.line("hunter2")?;
    alice.line("hunter2")?;
    alice.stderr.expect("WARNING: this room password is weak")?;
    alice.line("n")?;
    assert!(!alice.wait()?.success());
    let err = alice.stderr.all().join("\n");
    assert!(err.contains("nothing was created") && err.contains("empty for a generated one"), "{err}");
    assert!(!err.contains("created the room"), "{err}");

    // Empty: a strong passphrase is generated, shown once, and the room is created with it.
    let mut alice = home.spawn("alice", &args)?;
    alice.line("")?;
    let shown = alice.stderr.expect("generated room password: ")?;
    let generated = shown.rsplit(": ").next().ok_or("no passphrase")?.trim().to_owned();
    alice.stderr.expect("created the room")?;
    assert!(!alice.stderr.all().iter().any(|l| l.contains("weak")), "{:?}", alice.stderr.all());
    alice.line("hello")?;
    let bob_home = Home::protocol_1()?;
    let mut bob = bob_home.member(&relay.invite("weak"), "bob", &generated, false, &[])?;
    bob.stdout.expect("[history] <alice> hello")?;
    Ok(())
}
