//! End to end: real `chatroom-relay` and `chatroom --plain` processes on 127.0.0.1.

use std::error::Error;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use chatroom_e2e::{socks5_connect_target, Home, Microsocks, Relay, Tap};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

#[test]
fn prompts_on_stdin_create_a_room_and_an_invite_joins_it() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);

    // No arguments: relay, room, nickname and password are asked for, in that order; the
    // room does not exist, so creating it asks for confirmation and the password again.
    let mut alice = alice_home.spawn("alice", &[])?;
    for answer in [relay.address().as_str(), "lobby", "alice", "hunter2"] {
        alice.line(answer)?;
    }
    alice.stderr.expect("room lobby does not exist")?;
    alice.line("y")?;
    alice.line("hunter2")?;
    alice.stderr.expect("WARNING: this room password is weak")?;
    // A weak typed password is used only when confirmed.
    alice.line("y")?;
    alice.stderr.expect("created the room")?;
    let alice_code = alice.stderr.expect("safety code: ")?;
    alice.stderr.expect("end of history; now live")?;
    alice.line("hello from alice")?;

    // Bob joins with the invite URL and a password file.
    let pw = bob_home.password_file("pw", "hunter2")?;
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("lobby"), "--nick", "bob", "--password-file", pw.to_str().ok_or("path")?],
    )?;
    let bob_code = bob.stderr.expect("safety code: ")?;
    assert_eq!(alice_code, bob_code, "one room key, one safety code");
    let line = bob.stdout.expect("<alice> hello from alice")?;
    assert!(line.len() >= 8 && line.as_bytes()[2] == b':', "timestamp first: {line}");
    bob.stderr.expect("end of history; now live")?;
    alice.stderr.expect("bob joined")?;

    // Hostile text is neutralised; // sends a literal slash; unknown commands are not sent.
    bob.line("/frobnicate")?;
    bob.stderr.expect("unknown command /frobnicate, nothing was sent; /help lists the commands")?;
    bob.line("//not a command")?;
    bob.line("evil \u{1b}[2J\u{1b}]0;pwned\u{7} \u{202e}txet")?;
    bob.line("/me waves")?;
    alice.stdout.expect("<bob> /not a command")?;
    let evil = alice.stdout.expect("<bob> evil")?;
    assert!(evil.ends_with("<bob> evil ^[[2J^[]0;pwned^G <U+202E>txet"), "{evil}");
    assert!(!evil.contains('\u{1b}'));
    alice.stdout.expect("* bob waves")?;
    assert!(!alice.stdout.all().iter().any(|l| l.contains("frobnicate")), "unknown commands are never sent");

    bob.line("/who")?;
    bob.stderr.expect("members as the relay lists them (2): ")?;
    bob.line("/safety")?;
    assert_eq!(bob.stderr.expect("safety code: ")?, bob_code);

    // End of input: pending messages are acknowledged, then an exit whose status reports the
    // one line that failed (/frobnicate above).
    bob.line("bye")?;
    bob.close_stdin();
    assert!(!bob.wait()?.success(), "{:?}", bob.stderr.all());
    assert!(
        bob.stderr.all().iter().any(|l| l.contains("1 line(s) of input failed")),
        "{:?}",
        bob.stderr.all()
    );
    alice.stdout.expect("<bob> bye")?;
    alice.stderr.expect("bob left")?;
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());

    for file in ["identity.key", "known_relays"] {
        assert_eq!(mode(&alice_home.data_dir().join(file)), 0o600, "{file}");
    }
    let rooms: Vec<_> = fs::read_dir(alice_home.data_dir().join("rooms"))?.collect::<Result<_, _>>()?;
    assert!(rooms.iter().all(|e| mode(&e.path()) == 0o600));
    Ok(())
}

#[test]
fn a_saved_room_from_config_toml_connects_and_gives_its_invite() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let home = Home::new()?;
    let pw = home.password_file("work.pass", "k7m2p-xq9ra-4tnvb-ce8hw")?;
    fs::write(
        home.config(),
        format!(
            "[rooms.work]\nrelay = \"{}\"\nroom = \"work\"\nnick = \"carol\"\nfingerprint = \"{}\"\npassword_file = \"{}\"\n",
            relay.address(),
            relay.fingerprint,
            pw.display()
        ),
    )?;
    let mut carol = home.spawn("carol", &["work", "--create"])?;
    carol.stderr.expect("created the room")?;
    carol.stderr.expect("now live")?;
    assert!(!carol.stderr.all().iter().any(|l| l.contains("weak")), "a generated passphrase is not weak");
    carol.line("saved rooms work")?;
    carol.close_stdin();
    assert!(carol.wait()?.success(), "{:?}", carol.stderr.all());

    let (status, out, err) = home.run(&["invite", "work"])?;
    assert!(status.success(), "{err}");
    assert_eq!(
        out.trim(),
        format!("{}?kdf=m65536t3p1&v=2", relay.invite("work")),
        "a protocol 2 room, the default"
    );
    assert!(!out.contains("k7m2p"), "an invite never holds the password");
    let (status, out, _) = home.run(&["relays", "list"])?;
    assert!(status.success());
    assert_eq!(out.trim(), format!("{} {}", relay.address(), relay.fingerprint));

    // A password in config.toml is refused with advice.
    fs::write(home.config(), "[rooms.x]\nrelay = \"127.0.0.1:1\"\nroom = \"x\"\npassword = \"oops\"\n")?;
    let (status, _, err) = home.run(&["x"])?;
    assert!(!status.success());
    assert!(err.contains("password_file") && !err.contains("oops"), "{err}");
    Ok(())
}

#[test]
fn a_wrong_password_is_refused_and_a_readable_password_file_too() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, eve_home) = (Home::new()?, Home::new()?);
    let pw = alice_home.password_file("pw", "correct horse battery staple")?;
    let mut alice = alice_home.spawn(
        "alice",
        &[
            &relay.invite("vault"),
            "--nick",
            "alice",
            "--create",
            "--password-file",
            pw.to_str().ok_or("path")?,
        ],
    )?;
    alice.stderr.expect("now live")?;

    let wrong = eve_home.password_file("pw", "correct horse battery stapler")?;
    let mut eve = eve_home.spawn(
        "eve",
        &[&relay.invite("vault"), "--nick", "eve", "--password-file", wrong.to_str().ok_or("path")?],
    )?;
    let status = eve.wait()?;
    assert!(!status.success());
    let err = eve.stderr.all().join("\n");
    // A room of the default version 2; the client cannot tell a wrong password from a room
    // of the other version, and says both.
    assert!(err.contains("the relay refused the password of room vault for protocol 2"), "{err}");
    assert!(err.contains("Either the password is wrong"), "{err}");
    // The word, not a part of one ("every" is in protocol 2's notices).
    let names_eve = |l: &String| l.split(|c: char| !c.is_alphanumeric()).any(|w| w == "eve");
    assert!(!alice.stderr.all().iter().any(names_eve), "eve never joined");

    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o644))?;
    let (status, _, err) = eve_home.run(&[
        &relay.invite("vault"),
        "--nick",
        "eve",
        "--password-file",
        wrong.to_str().ok_or("path")?,
    ])?;
    assert!(!status.success());
    assert!(err.contains(&format!("chmod 600 {}", wrong.display())), "{err}");
    alice.close_stdin();
    assert!(alice.wait()?.success());
    Ok(())
}

#[test]
fn a_relay_with_a_different_key_is_refused_until_forgotten() -> TestResult {
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut first = Relay::start(dir_a.path())?;
    let addr = first.address();
    let home = Home::new()?;
    let pw = home.password_file("pw", "correct horse battery staple")?;
    let pw = pw.to_str().ok_or("path")?;
    let args = ["--relay", addr.as_str(), "--room", "r", "--nick", "alice", "--password-file", pw];

    // First use: the key is pinned.
    let mut alice = home.spawn("alice", &[&args[..], &["--create"]].concat())?;
    alice.stderr.expect(&format!("first connection to {addr}: pinned its key {}", first.fingerprint))?;
    alice.stderr.expect("now live")?;
    alice.close_stdin();
    assert!(alice.wait()?.success());
    let old_fp = first.fingerprint.clone();
    first.kill();

    // Another relay (another key) on the same address.
    let second = Relay::start_on(dir_b.path(), &addr)?;
    let mut alice = home.spawn("alice", &args)?;
    assert!(!alice.wait()?.success());
    let err = alice.stderr.all().join("\n");
    assert!(err.contains("RELAY KEY MISMATCH"), "{err}");
    assert!(err.contains(&old_fp) && err.contains(&second.fingerprint), "{err}");
    assert!(err.contains(&format!("chatroom relays forget {addr}")), "{err}");
    assert!(!err.contains("deriving the room key"), "refused before any key derivation or join");

    // An invite naming the old key is refused as well, even without a known-relays entry.
    let fresh = Home::new()?;
    let invite = format!("chatroom://{old_fp}@{addr}/r");
    let (status, _, err) = fresh.run(&[&invite, "--nick", "bob", "--password-file", pw])?;
    assert!(!status.success());
    assert!(err.contains("RELAY KEY MISMATCH") && err.contains("the invite"), "{err}");

    // After forgetting, the new key is accepted on first use.
    let (status, _, err) = home.run(&["relays", "forget", &addr])?;
    assert!(status.success(), "{err}");
    let mut alice = home.spawn("alice", &[&args[..], &["--create"]].concat())?;
    alice.stderr.expect(&format!("pinned its key {}", second.fingerprint))?;
    alice.stderr.expect("now live")?;
    alice.close_stdin();
    assert!(alice.wait()?.success());
    Ok(())
}

#[test]
fn a_nickname_with_a_new_identity_key_and_an_identity_with_a_new_nickname_are_refused() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home, mallory_home) = (Home::new()?, Home::new()?, Home::new()?);
    let secret = "correct horse battery staple";
    let pa = alice_home.password_file("pw", secret)?;
    let mut alice = alice_home.spawn(
        "alice",
        &[
            &relay.invite("club"),
            "--nick",
            "alice",
            "--create",
            "--password-file",
            pa.to_str().ok_or("path")?,
        ],
    )?;
    alice.stderr.expect("now live")?;

    let pb = bob_home.password_file("pw", secret)?;
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("club"), "--nick", "bob", "--password-file", pb.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("now live")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    alice.stderr.expect("bob left")?;
    // Bob's identity under another nickname: one nickname per identity per room.
    let mut robert = bob_home.spawn(
        "robert",
        &[&relay.invite("club"), "--nick", "robert", "--password-file", pb.to_str().ok_or("path")?],
    )?;
    assert!(!robert.wait()?.success());
    let err = robert.stderr.all().join("\n");
    assert!(err.contains("NickBound") && err.contains("known in this room as bob"), "{err}");

    // Same nickname, another identity (another data directory), right password.
    let pm = mallory_home.password_file("pw", secret)?;
    let mut mallory = mallory_home.spawn(
        "mallory",
        &[&relay.invite("club"), "--nick", "Bob", "--password-file", pm.to_str().ok_or("path")?],
    )?;
    assert!(!mallory.wait()?.success());
    let err = mallory.stderr.all().join("\n");
    assert!(err.contains("that nickname belongs to another identity in this room"), "{err}");
    alice.close_stdin();
    assert!(alice.wait()?.success());
    let joins: Vec<_> = alice.stderr.all().iter().filter(|l| l.contains(" joined (key ")).cloned().collect();
    assert_eq!(joins.len(), 1, "the second key never joined: {joins:?}");
    assert!(joins[0].starts_with("-!- relay says: bob joined"), "{joins:?}");
    Ok(())
}

#[test]
fn reconnect_after_a_relay_restart_loses_and_doubles_nothing() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let secret = "correct horse battery staple";
    let pa = alice_home.password_file("pw", secret)?;
    let pb = bob_home.password_file("pw", secret)?;
    let invite = relay.invite("ops");
    let alice_args = [invite.as_str(), "--nick", "alice", "--password-file", pa.to_str().ok_or("path")?];
    let bob_args = [invite.as_str(), "--nick", "bob", "--password-file", pb.to_str().ok_or("path")?];

    let mut alice = alice_home.spawn("alice", &[&alice_args[..], &["--create"]].concat())?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.spawn("bob", &bob_args)?;
    bob.stderr.expect("now live")?;
    alice.line("m1")?;
    bob.stdout.expect("<alice> m1")?;

    relay.kill();
    alice.stderr.expect("disconnected")?;
    bob.stderr.expect("disconnected")?;
    // Typed while offline: queued, then sent once, in order.
    alice.line("m2")?;
    alice.line("m3")?;
    let relay = Relay::start_on(relay_dir.path(), &addr)?;
    alice.stderr.expect("reconnected")?;
    bob.stderr.expect("reconnected")?;
    bob.stdout.expect("<alice> m2")?;
    bob.stdout.expect("<alice> m3")?;
    alice.line("sentinel")?;
    bob.stdout.expect("<alice> sentinel")?;
    for m in ["m1", "m2", "m3", "sentinel"] {
        assert_eq!(bob.stdout.count_ending_with(&format!("<alice> {m}")), 1, "{m}: {:?}", bob.stdout.all());
    }

    // Bob leaves; what alice says meanwhile is history for bob, and only that is replayed.
    bob.close_stdin();
    assert!(bob.wait()?.success());
    alice.line("m4")?;
    alice.close_stdin();
    assert!(alice.wait()?.success(), "m4 acknowledged before exit: {:?}", alice.stderr.all());
    let mut bob = bob_home.spawn("bob", &bob_args)?;
    let m4 = bob.stdout.expect("<alice> m4")?;
    assert!(m4.contains("[history] <alice> m4"), "{m4}");
    assert!(
        bob.stdout.all().iter().all(|l| !l.contains("<alice> m") || l.ends_with("m4")),
        "{:?}",
        bob.stdout.all()
    );
    bob.stderr.expect("now live")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    drop(relay);
    Ok(())
}

#[test]
fn a_socks5_proxy_gets_the_host_name_and_the_client_resolves_nothing() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let proxy = Microsocks::start()?;
    let tap = Tap::start(([127, 0, 0, 1], proxy.port).into())?;
    let home = Home::new()?;
    let pw = home.password_file("pw", "correct horse battery staple")?;
    let target = format!("localhost:{}", relay.addr.port());
    let mut alice = home.spawn(
        "alice",
        &[
            "--proxy",
            &format!("socks5h://127.0.0.1:{}", tap.port),
            "--relay",
            &target,
            "--fingerprint",
            &relay.fingerprint,
            "--room",
            "tor",
            "--nick",
            "alice",
            "--create",
            "--password-file",
            pw.to_str().ok_or("path")?,
        ],
    )?;
    alice.stderr.expect(&format!("connecting to {target} via socks5h://127.0.0.1:{}", tap.port))?;
    alice.stderr.expect("now live")?;
    let (atyp, host, port) = socks5_connect_target(&tap.recorded())?;
    assert_eq!(
        (atyp, host.as_str(), port),
        (3, "localhost", relay.addr.port()),
        "the name went to the proxy"
    );
    alice.close_stdin();
    assert!(alice.wait()?.success());
    Ok(())
}

#[test]
fn the_owner_kicks_and_bans_and_others_may_not() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let secret = "correct horse battery staple";
    let pa = alice_home.password_file("pw", secret)?;
    let pb = bob_home.password_file("pw", secret)?;
    let invite = relay.invite("mod");
    let bob_args = [invite.as_str(), "--nick", "bob", "--password-file", pb.to_str().ok_or("path")?];
    let mut alice = alice_home.spawn(
        "alice",
        &[invite.as_str(), "--nick", "alice", "--create", "--password-file", pa.to_str().ok_or("path")?],
    )?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.spawn("bob", &bob_args)?;
    bob.stderr.expect("now live")?;

    bob.line("/kick alice")?;
    bob.stderr.expect("(NotOwner)")?;
    alice.line("/kick bob")?;
    alice.stderr.expect("bob was kicked")?;
    assert!(!bob.wait()?.success());
    assert!(
        bob.stderr.all().join("\n").contains("the room owner removed you from the room"),
        "{:?}",
        bob.stderr.all()
    );

    let mut bob = bob_home.spawn("bob", &bob_args)?;
    bob.stderr.expect("now live")?;
    alice.line("/ban bob")?;
    alice.stderr.expect("bob was banned")?;
    assert!(!bob.wait()?.success());
    let (status, _, err) = bob_home.run(&bob_args)?;
    assert!(!status.success());
    assert!(err.contains("the room owner banned this identity. Ask the owner to /unban you"), "{err}");
    alice.line("/unban bob")?;
    alice.stderr.expect("bob was unbanned")?;
    alice.close_stdin();
    assert!(alice.wait()?.success());
    Ok(())
}

/// Under `torsocks`, the client's ordinary name lookup and connect are taken over: the .onion
/// name goes to the SOCKS5 proxy as a name. (microsocks cannot reach onion services, so the
/// connection itself then fails, which the client reports.)
#[test]
fn an_unmodified_client_is_redirected_by_torsocks() -> TestResult {
    let proxy = Microsocks::start()?;
    let tap = Tap::start(([127, 0, 0, 1], proxy.port).into())?;
    let home = Home::new()?;
    let pw = home.password_file("pw", "correct horse battery staple")?;
    let conf = home.password_file("torsocks.conf", &format!("TorAddress 127.0.0.1\nTorPort {}", tap.port))?;
    let onion = "chatroomtestrelayxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion";
    let out = std::process::Command::new("torsocks")
        .env("TORSOCKS_CONF_FILE", &conf)
        .arg(chatroom_e2e::bin("chatroom"))
        .args([
            "--plain",
            "--relay",
            &format!("{onion}:7777"),
            "--room",
            "t",
            "--nick",
            "alice",
            "--password-file",
        ])
        .arg(&pw)
        .arg("--data-dir")
        .arg(home.data_dir())
        .arg("--config")
        .arg(home.config())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run torsocks ({e}); install it with `apt-get install -y torsocks` (.ci/run does)")
        })?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("cannot connect to {onion}:7777")), "{err}");
    let (atyp, host, port) = socks5_connect_target(&tap.recorded())?;
    assert_eq!((atyp, host.as_str(), port), (3, onion, 7777), "torsocks handed the name to the proxy");
    Ok(())
}

#[test]
fn a_pasted_burst_is_paced_under_the_relay_rate_limit_and_fully_delivered() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let secret = "correct horse battery staple";
    let pa = alice_home.password_file("pw", secret)?;
    let pb = bob_home.password_file("pw", secret)?;
    let invite = relay.invite("burst");
    let mut alice = alice_home.spawn(
        "alice",
        &[invite.as_str(), "--nick", "alice", "--create", "--password-file", pa.to_str().ok_or("path")?],
    )?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home
        .spawn("bob", &[invite.as_str(), "--nick", "bob", "--password-file", pb.to_str().ok_or("path")?])?;
    bob.stderr.expect("now live")?;
    // 25 lines at once: more than the relay's burst of 20.
    for i in 0..25 {
        alice.line(&format!("line {i}"))?;
    }
    alice.close_stdin();
    assert!(alice.wait()?.success(), "{:?}", alice.stderr.all());
    for i in 0..25 {
        bob.stdout.expect(&format!("<alice> line {i}"))?;
    }
    assert!(!alice.stderr.all().iter().any(|l| l.contains("not delivered")), "{:?}", alice.stderr.all());
    assert_eq!(bob.stdout.all().len(), 25, "in order, each once: {:?}", bob.stdout.all());
    Ok(())
}

#[test]
fn a_mistyped_password_confirmation_creates_nothing() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let home = Home::new()?;
    let mut alice =
        home.spawn("alice", &["--relay", &relay.address(), "--room", "r", "--nick", "alice", "--create"])?;
    alice.line("correct horse battery staple")?;
    alice.line("correct horse battery stapel")?;
    assert!(!alice.wait()?.success());
    let err = alice.stderr.all().join("\n");
    assert!(err.contains("the two passwords differ; nothing was created"), "{err}");
    assert!(!err.contains("connecting"), "{err}");
    Ok(())
}

#[test]
fn a_message_whose_ack_was_lost_is_resent_and_delivered_once() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let cutter = chatroom_e2e::Cutter::start(relay.addr)?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let secret = "correct horse battery staple";
    let pa = alice_home.password_file("pw", secret)?;
    let pb = bob_home.password_file("pw", secret)?;
    // Alice reaches the relay through the cutter; bob directly.
    let via_cutter = format!("chatroom://{}@127.0.0.1:{}/acks", relay.fingerprint, cutter.port);
    let mut alice = alice_home.spawn(
        "alice",
        &[via_cutter.as_str(), "--nick", "alice", "--create", "--password-file", pa.to_str().ok_or("path")?],
    )?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.spawn(
        "bob",
        &[&relay.invite("acks"), "--nick", "bob", "--password-file", pb.to_str().ok_or("path")?],
    )?;
    bob.stderr.expect("now live")?;
    alice.stderr.expect("bob joined")?;

    // The relay stores and relays "once", but its Ack never reaches alice.
    cutter.swallow_replies();
    alice.line("once")?;
    bob.stdout.expect("<alice> once")?;
    cutter.cut();
    alice.stderr.expect("reconnected")?;
    // The same envelope was sent again; the relay recognised it and only acknowledged it.
    alice.line("after")?;
    bob.stdout.expect("<alice> after")?;
    assert_eq!(bob.stdout.count_ending_with("<alice> once"), 1, "{:?}", bob.stdout.all());
    alice.close_stdin();
    assert!(alice.wait()?.success(), "every message acknowledged: {:?}", alice.stderr.all());
    Ok(())
}

#[test]
fn messages_beyond_the_relays_history_are_reported_as_missed() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start_with(relay_dir.path(), "127.0.0.1:0", &["--history", "3"])?;
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let secret = "correct horse battery staple";
    let pa = alice_home.password_file("pw", secret)?;
    let pb = bob_home.password_file("pw", secret)?;
    let invite = relay.invite("short");
    let bob_args = [invite.as_str(), "--nick", "bob", "--password-file", pb.to_str().ok_or("path")?];
    let mut alice = alice_home.spawn(
        "alice",
        &[invite.as_str(), "--nick", "alice", "--create", "--password-file", pa.to_str().ok_or("path")?],
    )?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.spawn("bob", &bob_args)?;
    bob.stderr.expect("now live")?;
    alice.line("m0")?;
    bob.stdout.expect("<alice> m0")?;
    bob.close_stdin();
    assert!(bob.wait()?.success());
    for i in 1..=6 {
        alice.line(&format!("m{i}"))?;
    }
    alice.close_stdin();
    assert!(alice.wait()?.success());
    // Seq 1 was m0; m1..m6 are seq 2..7, of which the relay keeps the last three.
    let mut bob = bob_home.spawn("bob", &bob_args)?;
    bob.stderr.expect("WARNING: messages #2 to #4 expired from the relay's history")?;
    for m in ["m4", "m5", "m6"] {
        bob.stdout.expect(&format!("[history] <alice> {m}"))?;
    }
    bob.stderr.expect("now live")?;
    assert_eq!(bob.stdout.all().len(), 3, "{:?}", bob.stdout.all());
    Ok(())
}

#[test]
fn id_prints_a_stable_fingerprint_and_passphrase_a_fresh_strong_one() -> TestResult {
    let home = Home::new()?;
    let (status, first, err) = home.run(&["id"])?;
    assert!(status.success(), "{err}");
    assert!(err.contains("created a new identity"), "{err}");
    let first = first.trim().to_owned();
    assert!(first.len() == 64 && first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_eq!(mode(&home.data_dir().join("identity.key")), 0o600);
    let (_, again, err) = home.run(&["id"])?;
    assert_eq!(again.trim(), first);
    assert!(!err.contains("created"), "{err}");

    let (status, a, _) = home.run(&["passphrase"])?;
    let (_, b, _) = home.run(&["passphrase"])?;
    assert!(status.success());
    assert_ne!(a, b);
    let a = a.trim();
    assert_eq!(a.len(), 23, "{a}");
    assert!(a
        .split('-')
        .all(|g| g.len() == 5 && g.bytes().all(|c| b"abcdefghijkmnpqrstuvwxyz23456789".contains(&c))));
    Ok(())
}
