//! Protocol 2 (MLS) with the real binaries: `chatroom --protocol 2` clients and a
//! `chatroom-relay` process on 127.0.0.1. The proofs of version 2's promises (docs/PROTOCOL.md part II):
//! a wrong password cannot enter, and neither can whoever holds the relay's database and the
//! join secret without the password's MLS pre-shared key (5); the password plus a copy of the
//! relay's database plus a fresh client decrypt no message of an earlier epoch (1); a member the
//! owner removed reads nothing sent afterwards with its saved state and the password, and its
//! entering again is seen by every member (2). Two members' commits on one epoch: one wins,
//! the other is built again, and all end on one epoch code (4). A member offline across epochs
//! reads everything in order when back; one offline beyond the relay's history enters again by
//! itself, seen by all (6). And, as v1's wiretap scenario, a canary and the password never
//! appear on the wire or on the relay's disk.

use std::error::Error;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chatroom_crypto::{
    derive_room_secrets_v2, verify_v2, ClientMessage, Identity, JoinRequest, KdfParams, Nick, RelayMessage,
    RoomName,
};
use chatroom_e2e::tap::Wiretap;
use chatroom_e2e::{random_hex, Client, Cutter, Home, Relay, WAIT};
use chatroom_group::{message_epoch, open_group_info, RoomRef};
use chatroom_session::session::{handshake_v2, join, Handshaken};
use chatroom_session::trust::RelayPin;
use chatroom_session::v2::{V2Event, V2Room};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const ENTERED: &str = "you entered the room's group";

fn member(home: &Home, invite: &str, nick: &str, create: bool) -> Res<Client> {
    home.member(invite, nick, PASSWORD, create, &["--protocol", "2"])
}

fn relay_key(relay: &Relay) -> Res<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(&relay.fingerprint, &mut key)?;
    Ok(key)
}

/// The key tag (first 8 hex digits) a member's identity is shown with.
fn tag(home: &Home) -> Res<String> {
    let (status, out, _) = home.run(&["id"])?;
    assert!(status.success());
    Ok(out.trim().replace(' ', "").chars().take(8).collect())
}

/// Alice creates the room; bob enters (epoch 1).
fn two_members(relay: &Relay, homes: &[Home], room: &str) -> Res<(Client, Client)> {
    let invite = relay.invite(room);
    let mut alice = member(&homes[0], &invite, "alice", true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    Ok((alice, bob))
}

/// The relay's database file, opened read-only.
fn database(dir: &Path) -> Res<rusqlite::Connection> {
    Ok(rusqlite::Connection::open_with_flags(
        dir.join("relay.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

/// Every envelope the relay stores for `room`, in `seq` order.
fn stored_log(db: &rusqlite::Connection, room: &str) -> Res<Vec<(u64, Vec<u8>)>> {
    let mut stmt = db.prepare("SELECT seq, envelope FROM history WHERE room = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([room], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A raw v2 connection that joined with `join_secret`, as a relay operator could.
async fn raw_join(
    relay: &Relay,
    room: &RoomName,
    identity: &Identity,
    join_secret: chatroom_crypto::JoinSecret,
) -> Res<Handshaken> {
    let stream = tokio::net::TcpStream::connect(relay.addr).await?;
    let mut conn = handshake_v2(stream, &relay.address(), &RelayPin::default()).await?;
    let request = JoinRequest::new(
        identity,
        &conn.handshake_hash,
        room.clone(),
        Nick::new("mallory")?,
        join_secret,
        false,
        0,
    )
    .for_version_2();
    join(&mut conn, request).await?;
    Ok(conn)
}

/// The next relay item `pick` accepts, within `WAIT`.
async fn next<T>(conn: &mut Handshaken, mut pick: impl FnMut(RelayMessage) -> Option<T>) -> Res<T> {
    let wait = async {
        loop {
            for m in conn.reader.recv().await? {
                if let Some(found) = pick(m) {
                    return Ok::<T, Box<dyn Error + Send + Sync>>(found);
                }
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await?
}

#[test]
fn neither_a_wrong_password_nor_the_relay_with_the_join_secret_can_enter() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let (mut alice, mut bob) = two_members(&relay, &homes, "vault")?;

    // A wrong password: the relay refuses it, the client says so plainly.
    let wrong = homes[2].password_file("wrong.pass", "not the password")?;
    let invite = relay.invite("vault");
    let (status, _, err) = homes[2].run(&[
        &invite,
        "--plain",
        "--protocol",
        "2",
        "--nick",
        "eve",
        "--password-file",
        wrong.to_str().ok_or("path")?,
    ])?;
    assert!(!status.success());
    assert!(
        err.contains("the relay refused the password of room vault for protocol 2 (as --protocol says)"),
        "{err}"
    );
    assert!(!err.contains(ENTERED), "{err}");

    // The relay's side: its database (the sealed GroupInfo, the log) opens with nothing it has,
    // and with the join secret (which every join shows it) and even the GroupInfo key, but
    // not the password's MLS pre-shared key, its entry is refused by every member.
    let key = relay_key(&relay)?;
    let room = RoomName::new("vault")?;
    let real = derive_room_secrets_v2(PASSWORD.as_bytes(), &key, &room, KdfParams::DEFAULT)?;
    let mut forged = derive_room_secrets_v2(b"the relay's guess", &key, &room, KdfParams::DEFAULT)?;
    let refd = RoomRef { room: room.clone(), relay_key: key, psk_generation: 0 };
    let db = database(relay_dir.path())?;
    let sealed: Vec<u8> =
        db.query_row("SELECT sealed FROM group_info WHERE room = 'vault'", [], |r| r.get(0))?;
    assert!(
        open_group_info(&forged.group_info_key, &refd, &sealed).is_err(),
        "the relay opened the GroupInfo"
    );
    forged.join_secret = real.join_secret.clone();
    forged.group_info_key = real.group_info_key.clone();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mallory = Identity::from_seed(&[0x66; 32]);
    let (seq, mut conn, mut room_state) = runtime.block_on(async {
        let mut conn = raw_join(&relay, &room, &mallory, forged.join_secret.clone()).await?;
        conn.writer.send(&[ClientMessage::GetGroupInfo]).await?;
        let part = next(&mut conn, |m| match m {
            RelayMessage::GroupInfo(p) if p.parts == 1 => Some(p),
            _ => None,
        })
        .await?;
        let me = Identity::from_seed(&[0x66; 32]);
        let (state, entry) = V2Room::enter(me, room.clone(), &key, forged, (part.after_seq, &part.chunk))?;
        conn.writer.send(&[ClientMessage::Send { envelope: entry }]).await?;
        let seq = next(&mut conn, |m| match m {
            RelayMessage::Ack { seq, .. } => Some(seq),
            _ => None,
        })
        .await?;
        Res::Ok((seq, conn, state))
    })?;
    let refused = format!("entry #{seq} of the room's log was refused");
    alice.stderr.expect(&refused)?;
    bob.stderr.expect(&refused)?;

    // The group goes on without mallory: alice's next message reaches bob, not mallory.
    alice.line("only for members")?;
    bob.stdout.expect("only for members")?;
    let envelope = runtime.block_on(next(&mut conn, |m| match m {
        RelayMessage::Deliver { seq, envelope, .. } => Some((seq, envelope)),
        _ => None,
    }))?;
    assert!(!matches!(room_state.on_deliver(envelope.0, &envelope.1), Ok(V2Event::Message { .. })));
    for client in [&alice, &bob] {
        assert!(!client.stderr.all().iter().any(|l| l.contains("epoch 2")), "{:?}", client.stderr.all());
    }
    // Alice and bob still agree on one group state.
    alice.line("/safety")?;
    bob.line("/safety")?;
    let code_a = alice.stderr.expect("epoch 1 code: ")?;
    let code_b = bob.stderr.expect("epoch 1 code: ")?;
    assert_eq!(code_a, code_b);
    let log = stored_log(&db, "vault")?;
    assert!(log.iter().all(|(_, e)| !e.windows(16).any(|w| w == b"only for members")), "plaintext stored");
    Ok(())
}

/// Copies the files of a stopped relay's data directory.
fn copy_dir(from: &Path, to: &Path) -> TestResult {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[test]
fn the_password_and_the_relays_database_decrypt_no_earlier_epoch() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..4).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let (mut alice, mut bob) = two_members(&relay, &homes, "past")?;
    alice.line("said in epoch one")?;
    bob.stdout.expect("said in epoch one")?;
    // A later epoch: carol enters.
    let mut carol = member(&homes[2], &relay.invite("past"), "carol", false)?;
    carol.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 2)")?;
    bob.stderr.expect("entered the group (epoch 2)")?;
    alice.line("/safety")?;
    alice.stderr.expect("epoch 2 code")?;
    // Carol publishes epoch 2's GroupInfo after her entry won; the copy must hold it, or no
    // newcomer can enter there (its entry from epoch 1's loses, and no member is online to
    // publish a newer one).
    let live = database(relay_dir.path())?;
    poll("epoch 2's GroupInfo stored", || {
        let last = stored_log(&live, "past")?.last().map_or(0, |(seq, _)| *seq);
        let stored: i64 =
            live.query_row("SELECT after_seq FROM group_info WHERE room = 'past'", [], |r| r.get(0))?;
        Ok(stored as u64 >= last)
    })?;
    drop(live);

    // The attacker: the password, a full copy of the relay's database and key, a fresh client.
    let key = relay_key(&relay)?;
    relay.kill();
    let copy = tempfile::tempdir()?;
    copy_dir(relay_dir.path(), copy.path())?;
    let db = database(copy.path())?;
    let log = stored_log(&db, "past")?;
    assert!(log.len() >= 3, "{} entries", log.len());
    assert!(log.iter().all(|(_, e)| !e.windows(9).any(|w| w == b"epoch one")), "plaintext stored");

    // In process: a member of the latest epoch (its entry from the stored GroupInfo taken as
    // the winner), its cursor set back to 0, fed the whole stored log: nothing earlier opens.
    let room = RoomName::new("past")?;
    let secrets = derive_room_secrets_v2(PASSWORD.as_bytes(), &key, &room, KdfParams::DEFAULT)?;
    let (after_seq, sealed): (i64, Vec<u8>) =
        db.query_row("SELECT after_seq, sealed FROM group_info WHERE room = 'past'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let me = || Identity::from_seed(&[0x77; 32]);
    let (mut attacker, entry) =
        V2Room::enter(me(), room.clone(), &key, secrets.clone(), (after_seq as u64, &sealed))?;
    let next_seq = log.last().map_or(0, |(s, _)| *s) + 1;
    assert_eq!(attacker.on_deliver(next_seq, &entry)?, V2Event::Entered);
    let state = copy.path().join("attacker.v2");
    attacker.save(&state)?;
    let mut bytes = fs::read(&state)?;
    bytes[1..9].copy_from_slice(&0u64.to_be_bytes());
    fs::write(&state, &bytes)?;
    let mut attacker = V2Room::load(me(), room, &key, secrets, &state)?;
    assert_eq!(attacker.cursor(), 0);
    for (seq, envelope) in &log {
        let event = attacker.on_deliver(*seq, envelope);
        assert!(!matches!(event, Ok(V2Event::Message { .. })), "seq {seq} decrypted: {event:?}");
    }

    // And the real client against a relay running on the copy: it enters, reads nothing earlier.
    let copied = Relay::start(copy.path())?;
    assert_eq!(copied.fingerprint, hex::encode(key), "the same relay key");
    let mut fresh = member(&homes[3], &copied.invite("past"), "mallory", false)?;
    fresh.stderr.expect(ENTERED)?;
    fresh.line("/safety")?;
    fresh.stderr.expect("epoch 3 code")?;
    fresh.stdout.drain(Duration::from_millis(500));
    assert!(fresh.stdout.all().is_empty(), "a fresh client read: {:?}", fresh.stdout.all());
    Ok(())
}

#[test]
fn a_removed_members_state_and_the_password_read_nothing_after_and_reentry_is_seen() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let (mut alice, mut bob) = two_members(&relay, &homes, "club")?;
    let invite = relay.invite("club");
    let mut carol = member(&homes[2], &invite, "carol", false)?;
    carol.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 2)")?;
    bob.stderr.expect("entered the group (epoch 2)")?;
    let bob_tag = tag(&homes[1])?;

    // The owner kicks bob: the relay disconnects him, and alice's client removes him from the group.
    alice.line("/kick bob")?;
    assert!(!bob.wait()?.success());
    let removed = format!("removed from the group: {bob_tag} (epoch 3)");
    alice.stderr.expect(&removed)?;
    carol.stderr.expect(&removed)?;
    alice.line("said after the removal")?;
    carol.stdout.expect("said after the removal")?;

    // Bob's saved state and the password: his client reads the removal and stops, unread.
    let mut again = member(&homes[1], &invite, "bob", false)?;
    assert!(!again.wait()?.success());
    let err = again.stderr.all().join("\n");
    assert!(err.contains("the room's owner removed you from the room's group"), "{err}");
    assert!(again.stdout.all().is_empty(), "read after the removal: {:?}", again.stdout.all());

    // Running it again enters anew, which every member sees; what was said before stays unread.
    let mut back = member(&homes[1], &invite, "bob", false)?;
    back.stderr.expect(ENTERED)?;
    let entered = format!("member {bob_tag} entered the group (epoch 4)");
    alice.stderr.expect(&entered)?;
    carol.stderr.expect(&entered)?;
    alice.line("welcome back")?;
    back.stdout.expect("welcome back")?;
    assert!(
        !back.stdout.all().iter().any(|l| l.contains("said after the removal")),
        "{:?}",
        back.stdout.all()
    );
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_canary_and_the_password_never_appear_on_the_wire_or_on_the_relays_disk() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let tap = Wiretap::start(relay.addr)?;
    let password = format!("pw-{}", random_hex(16));
    let canary = format!("canary-{}", random_hex(16));
    let invite = format!("chatroom://{}@{}/tapped", relay.fingerprint, tap.address());
    let homes: Vec<Home> = (0..2).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let mut alice = homes[0].member(&invite, "alice", &password, true, &["--protocol", "2"])?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = homes[1].member(&invite, "bob", &password, false, &["--protocol", "2"])?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    alice.line(&canary)?;
    bob.stdout.expect(&canary)?;
    for client in [&mut alice, &mut bob] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    relay.kill();
    let (up, down) = (tap.to_relay(), tap.to_client());
    assert!(tap.connections() >= 2 && up.len() > 1000 && down.len() > 1000, "{} / {}", up.len(), down.len());
    let mut files = 0;
    for entry in fs::read_dir(relay_dir.path())? {
        let path = entry?.path();
        if path.is_file() {
            files += 1;
            let bytes = fs::read(&path)?;
            for secret in [&canary, &password] {
                assert!(!contains(&bytes, secret.as_bytes()), "{secret} in {}", path.display());
            }
        }
    }
    assert!(files >= 2, "the relay's files were read");
    for secret in [&canary, &password] {
        assert!(
            !contains(&up, secret.as_bytes()) && !contains(&down, secret.as_bytes()),
            "{secret} on the wire"
        );
    }
    Ok(())
}

#[test]
fn a_member_renews_its_keys_after_its_heal_messages_and_everyone_follows() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..2).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let invite = relay.invite("heal");
    let mut alice = member(&homes[0], &invite, "alice", true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob =
        homes[1].member(&invite, "bob", PASSWORD, false, &["--protocol", "2", "--heal-messages", "2"])?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    let bob_tag = tag(&homes[1])?;

    // Bob's second message makes his update due: alice sees his commit, then reads on.
    bob.line("one")?;
    bob.line("two")?;
    alice.stderr.expect(&format!("the group's keys changed (epoch 2, by {bob_tag})"))?;
    bob.line("three")?;
    alice.stdout.expect("three")?;
    for client in [&mut alice, &mut bob] {
        client.line("/safety")?;
        client.stderr.expect("epoch 2 code")?;
    }
    Ok(())
}

/// Polls `done` until it holds, at most `WAIT`; `what` names the condition in the error. For
/// what only the relay's database shows (a write whose answer is held back or never sent).
fn poll(what: &str, mut done: impl FnMut() -> Res<bool>) -> TestResult {
    let deadline = std::time::Instant::now() + WAIT;
    while !done()? {
        if std::time::Instant::now() >= deadline {
            return Err(format!("not {what} within {WAIT:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until the relay stored at least `n` envelopes of `room`; returns them.
fn stored_at_least(db: &rusqlite::Connection, room: &str, n: usize) -> Res<Vec<(u64, Vec<u8>)>> {
    poll(&format!("{n} envelopes stored"), || Ok(stored_log(db, room)?.len() >= n))?;
    stored_log(db, room)
}

/// The commits of a stored log, in `seq` order: (the epoch each was built on, as its clear MLS
/// header says, and its sender's key tag), each envelope's signature checked.
fn stored_commits(log: &[(u64, Vec<u8>)], room: &RoomName) -> Res<Vec<(u64, String)>> {
    let mut commits = Vec::new();
    for (seq, envelope) in log {
        let signed = verify_v2(room, envelope).map_err(|_| format!("entry #{seq} does not verify"))?;
        if signed.kind == 1 {
            let epoch = message_epoch(&signed.mls).ok_or(format!("entry #{seq}: no MLS epoch"))?;
            commits.push((epoch, hex::encode(&signed.sender.0[..4])));
        }
    }
    Ok(commits)
}

/// `/safety` of each client: its "epoch N code: ..." line, at `epoch`.
fn safety_lines(clients: &mut [&mut Client], epoch: u64) -> Res<Vec<String>> {
    let mut lines = Vec::new();
    for client in clients.iter_mut() {
        client.line("/safety")?;
        let line = client.stderr.expect(&format!("epoch {epoch} code: "))?;
        lines.push(line.split_once("code: ").map(|(_, code)| code.to_owned()).ok_or("no code")?);
    }
    Ok(lines)
}

#[test]
fn two_commits_in_one_epoch_converge_on_one_group_state() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect::<Result<_, _>>()?;
    // Alice and bob reach the relay through cutters (their replies can be held back), carol
    // directly; alice and bob renew their keys after every message they send.
    let (cut_a, cut_b) = (Cutter::start(relay.addr)?, Cutter::start(relay.addr)?);
    let via = |c: &Cutter| format!("chatroom://{}@127.0.0.1:{}/race", relay.fingerprint, c.port);
    let heal = ["--protocol", "2", "--heal-messages", "1"];
    let mut alice = homes[0].member(&via(&cut_a), "alice", PASSWORD, true, &heal)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = homes[1].member(&via(&cut_b), "bob", PASSWORD, false, &heal)?;
    bob.stderr.expect(ENTERED)?;
    let mut carol = member(&homes[2], &relay.invite("race"), "carol", false)?;
    carol.stderr.expect(ENTERED)?;
    for client in [&mut alice, &mut bob] {
        client.stderr.expect("entered the group (epoch 2)")?;
    }
    let (alice_tag, bob_tag) = (tag(&homes[0])?, tag(&homes[1])?);

    // Neither alice nor bob hears from the relay: each sends a message and its update commit
    // on epoch 2, without seeing the other's. Alice's reach the log first.
    let db = database(relay_dir.path())?;
    let before = stored_log(&db, "race")?.len();
    cut_a.swallow_replies();
    cut_b.swallow_replies();
    alice.line("from alice")?;
    carol.stdout.expect("from alice")?;
    carol.stderr.expect(&format!("the group's keys changed (epoch 3, by {alice_tag})"))?;
    bob.line("from bob")?;
    let log = stored_at_least(&db, "race", before + 4)?;
    let room = RoomName::new("race")?;
    let race: Vec<(u64, String)> =
        stored_commits(&log, &room)?.into_iter().filter(|(e, _)| *e == 2).collect();
    assert_eq!(race, [(2, alice_tag.clone()), (2, bob_tag.clone())], "two commits on epoch 2 in the log");

    // Both hear again: they read the log in order, the first commit of epoch 2 (alice's) won.
    // Bob's lost: he seals his message again on epoch 3 at once, then builds his update again
    // on epoch 3 (epoch 4), which his message therefore precedes.
    cut_a.cut();
    cut_b.cut();
    for client in [&mut alice, &mut bob, &mut carol] {
        client.stderr.expect(&format!("the group's keys changed (epoch 4, by {bob_tag})"))?;
    }
    bob.stdout.expect("from alice")?;
    for client in [&mut alice, &mut carol] {
        client.stdout.expect("from bob")?;
        assert_eq!(client.stdout.count_ending_with("from bob"), 1, "{:?}", client.stdout.all());
    }
    let codes = safety_lines(&mut [&mut alice, &mut bob, &mut carol], 4)?;
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");

    // And they go on talking in the one group; the race cost one commit more, not two.
    carol.line("after the race")?;
    alice.stdout.expect("after the race")?;
    bob.stdout.expect("after the race")?;
    for client in [&alice, &bob, &carol] {
        let lines = client.stderr.all();
        assert!(!lines.iter().any(|l| l.contains("was refused") || l.contains("(epoch 5")), "{lines:?}");
    }
    Ok(())
}

/// The messages among `lines` (a client's stdout) whose text starts with `prefix`, in order.
fn said(lines: &[String], prefix: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split_once("> ").map(|(_, text)| text.to_owned()))
        .filter(|text| text.starts_with(prefix))
        .collect()
}

#[test]
fn a_member_offline_across_epochs_reads_everything_in_order_when_back() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..4).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let invite = relay.invite("away");
    let heal = ["--protocol", "2", "--heal-messages", "1"];
    let mut alice = homes[0].member(&invite, "alice", PASSWORD, true, &heal)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    let mut carol = member(&homes[2], &invite, "carol", false)?;
    carol.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 2)")?;
    bob.stderr.expect("entered the group (epoch 2)")?;
    let alice_tag = tag(&homes[0])?;

    // Bob quits. Meanwhile: messages, alice's updates (epochs 3 and 5), dave's entry (4).
    bob.close_stdin();
    assert!(bob.wait()?.success(), "{:?}", bob.stderr.all());
    alice.line("away 1")?;
    carol.stdout.expect("away 1")?;
    carol.stderr.expect(&format!("the group's keys changed (epoch 3, by {alice_tag})"))?;
    let mut dave = member(&homes[3], &invite, "dave", false)?;
    dave.stderr.expect(ENTERED)?;
    carol.stderr.expect("entered the group (epoch 4)")?;
    carol.line("away 2")?;
    alice.stdout.expect("away 2")?;
    alice.line("away 3")?;
    carol.stdout.expect("away 3")?;
    carol.stderr.expect(&format!("the group's keys changed (epoch 5, by {alice_tag})"))?;
    carol.line("away 4")?;
    dave.stdout.expect("away 4")?;

    // Bob comes back with his saved state: he reads all of it, in order, in the same group.
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stdout.expect("away 4")?;
    assert_eq!(said(bob.stdout.all(), "away "), ["away 1", "away 2", "away 3", "away 4"]);
    let codes = safety_lines(&mut [&mut alice, &mut bob, &mut carol, &mut dave], 5)?;
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
    dave.line("welcome back")?;
    bob.stdout.expect("welcome back")?;
    // He caught up as the member he was: no entry, nothing missed.
    let err = bob.stderr.all();
    assert!(!err.iter().any(|l| l.contains(ENTERED) || l.contains("not retained")), "{err:?}");
    assert!(
        !alice.stderr.all().iter().any(|l| l.contains("entered the group again")),
        "{:?}",
        alice.stderr.all()
    );
    Ok(())
}

#[test]
fn a_member_offline_beyond_the_retained_history_enters_again_by_itself() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start_with(relay_dir.path(), "127.0.0.1:0", &["--history", "4"])?;
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let invite = relay.invite("brief");
    let (mut alice, mut bob) = two_members(&relay, &homes, "brief")?;
    let mut carol = member(&homes[2], &invite, "carol", false)?;
    carol.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 2)")?;
    bob.stderr.expect("entered the group (epoch 2)")?;
    let bob_tag = tag(&homes[1])?;

    // Bob quits; six messages push what he last read out of the relay's four.
    bob.close_stdin();
    assert!(bob.wait()?.success(), "{:?}", bob.stderr.all());
    for i in 1..=6 {
        alice.line(&format!("gone {i}"))?;
    }
    carol.stdout.expect("gone 6")?;

    // Back, he says what he cannot read and enters again by himself; everyone sees it.
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect("were not retained by the relay and cannot be read; entering the group again")?;
    bob.stderr.expect(ENTERED)?;
    let again = format!("member {bob_tag} entered the group again (epoch 3)");
    alice.stderr.expect(&again)?;
    carol.stderr.expect(&again)?;
    alice.line("after the return")?;
    bob.stdout.expect("after the return")?;
    assert!(said(bob.stdout.all(), "gone ").is_empty(), "{:?}", bob.stdout.all());
    let codes = safety_lines(&mut [&mut alice, &mut bob, &mut carol], 3)?;
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
    Ok(())
}

#[test]
fn after_the_owner_rotates_the_password_members_talk_on_and_only_the_new_one_enters() -> TestResult {
    const NEW: &str = "otter lantern quarry velvet thimble";
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..4).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let (mut alice, mut bob) = two_members(&relay, &homes, "lodge")?;
    let invite = relay.invite("lodge");

    // Only the owner rotates; bob's attempt changes nothing.
    let bobs = homes[1].password_file("new.pass", NEW)?;
    bob.line(&format!("/rotate-password {}", bobs.display()))?;
    bob.stderr.expect("only the room's owner can rotate its password; nothing was done")?;

    let file = homes[0].password_file("new.pass", NEW)?;
    alice.line(&format!("/rotate-password {}", file.display()))?;
    alice.stderr.expect("the room's password is now the one in")?;
    alice.stderr.expect("tell the members who may enter later the new password out of band")?;
    bob.stderr.expect("rotated the room's password (generation 1)")?;

    // Bob, already inside, keeps sending and receiving.
    bob.line("bob after the rotation")?;
    alice.stdout.expect("bob after the rotation")?;
    alice.line("alice after the rotation")?;
    bob.stdout.expect("alice after the rotation")?;

    // A newcomer with the old password is refused by the relay.
    let old = homes[2].password_file("old.pass", PASSWORD)?;
    let (status, _, err) = homes[2].run(&[
        &invite,
        "--plain",
        "--protocol",
        "2",
        "--nick",
        "eve",
        "--password-file",
        old.to_str().ok_or("path")?,
    ])?;
    assert!(!status.success());
    assert!(err.contains("the relay refused the password of room"), "{err}");
    assert!(err.contains("Check the password with the other members"), "{err}");

    // A newcomer with the new one enters and reads what is sent after.
    let mut carol = homes[3].member(&invite, "carol", NEW, false, &["--protocol", "2"])?;
    carol.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 2)")?;
    bob.stderr.expect("entered the group (epoch 2)")?;
    alice.line("welcome carol")?;
    carol.stdout.expect("welcome carol")?;
    bob.line("hello from bob")?;
    carol.stdout.expect("hello from bob")?;
    alice.stdout.expect("hello from bob")?;
    assert!(
        !carol.stdout.all().iter().any(|l| l.contains("after the rotation")),
        "read before entering: {:?}",
        carol.stdout.all()
    );
    Ok(())
}

#[test]
fn a_newcomer_is_shown_the_last_messages_as_shared_by_a_member_only_where_the_room_says_so() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let relay = Relay::start(relay_dir.path())?;
    let homes: Vec<Home> = (0..4).map(|_| Home::new()).collect::<Result<_, _>>()?;

    // Alice creates the room sharing 3 messages and says 4 things; bob enters.
    let invite = relay.invite("hearth");
    let mut alice =
        homes[0].member(&invite, "alice", PASSWORD, true, &["--protocol", "2", "--history-share", "3"])?;
    alice.stderr.expect(ENTERED)?;
    for i in 1..=4 {
        alice.line(&format!("note {i}"))?;
    }
    // The relay answers /who after the messages sent before it on the connection: all four
    // are in the log before bob enters.
    alice.line("/who")?;
    alice.stderr.expect("members as the relay lists them")?;
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    let told =
        bob.stderr.all().iter().any(|l| l.contains(ENTERED) && l.contains("shows each newcomer the last 3"));
    assert!(told, "the room's setting is said on entry: {:?}", bob.stderr.all());
    bob.stderr.expect("shared 3 message(s) sent before you entered")?;
    bob.stdout.expect("note 4")?;
    let shared: Vec<String> = bob.stdout.all().iter().filter(|l| l.contains("[shared by")).cloned().collect();
    assert_eq!(shared.len(), 3, "{shared:?}");
    for (line, i) in shared.iter().zip(2..=4) {
        assert!(line.contains("[shared by alice ") && line.ends_with(&format!("<alice> note {i}")), "{line}");
    }
    alice.line("welcome bob")?;
    bob.stdout.expect("welcome bob")?;
    assert!(!bob.stdout.all().iter().any(|l| l.contains("note 1")), "{:?}", bob.stdout.all());

    // A room created without it shows a newcomer nothing from before.
    let invite = relay.invite("cellar");
    let mut alice = homes[2].member(&invite, "alice", PASSWORD, true, &["--protocol", "2"])?;
    alice.stderr.expect(ENTERED)?;
    alice.line("before carol")?;
    alice.line("/who")?;
    alice.stderr.expect("members as the relay lists them")?;
    // Carol asks for sharing too late: the room keeps its setting, and she is told.
    let mut carol =
        homes[3].member(&invite, "carol", PASSWORD, false, &["--protocol", "2", "--history-share", "5"])?;
    carol.stderr.expect(ENTERED)?;
    carol.stderr.expect("history-sharing setting (5) was not applied")?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    alice.line("welcome carol")?;
    carol.stdout.expect("welcome carol")?;
    assert!(!carol.stdout.all().iter().any(|l| l.contains("before carol") || l.contains("[shared by")));
    let shared = carol.stderr.all().iter().filter(|l| l.contains("shared")).count();
    assert_eq!(shared, 0, "{:?}", carol.stderr.all());
    Ok(())
}
