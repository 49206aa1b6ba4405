//! Scenario 4, a lying relay, on protocol 2 (MLS): the relay's operator rewrites its stored
//! log while it is down, then serves it: an old message replayed under a new sequence number,
//! a message with one byte altered, and a message relabelled with another member's key. The
//! real `chatroom --protocol 2` client warns of each entry by its number, shows none of them
//! as a message, and goes on reading the log: what is sent afterwards arrives.

use std::error::Error;
use std::path::Path;

use chatroom_crypto::ENVELOPE_V2_HEADER_LEN;
use chatroom_e2e::{random_hex, without_time, Client, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery staple";
const ENTERED: &str = "you entered the room's group";
const ROOM: &str = "lies2";
/// The clear kind byte of an application message (docs/PROTOCOL.md section 22.1).
const APPLICATION: u8 = 2;

fn member(home: &Home, invite: &str, nick: &str, create: bool) -> Res<Client> {
    home.member(invite, nick, PASSWORD, create, &["--protocol", "2"])
}

/// The stored log of the room: `(seq, envelope)` in order.
fn stored(db: &rusqlite::Connection) -> Res<Vec<(i64, Vec<u8>)>> {
    let mut stmt = db.prepare("SELECT seq, envelope FROM history WHERE room = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([ROOM], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Appends the three lies after the stored log, as a relay that rewrote its database would
/// serve them. Returns their sequence numbers.
fn forge_log(dir: &Path) -> Res<Vec<i64>> {
    let db = rusqlite::Connection::open(dir.join("relay.sqlite3"))?;
    let log = stored(&db)?;
    let apps: Vec<&Vec<u8>> =
        log.iter().map(|(_, e)| e).filter(|e| e.get(41) == Some(&APPLICATION)).collect();
    let (Some(first), Some(second)) = (apps.first(), apps.get(1)) else {
        return Err(format!("two application messages expected in {} entries", log.len()).into());
    };
    // Bob's key, from his entry commit (the first envelope not signed by alice).
    let alice = &first[1..33];
    let bob = log.iter().map(|(_, e)| &e[1..33]).find(|k| *k != alice).ok_or("no entry by bob")?;
    let replayed = first.to_vec();
    let mut altered = second.to_vec();
    altered[ENVELOPE_V2_HEADER_LEN + 8] ^= 0x01;
    let mut relabelled = second.to_vec();
    relabelled[1..33].copy_from_slice(bob);
    let last = log.last().map_or(0, |(seq, _)| *seq);
    let seqs: Vec<i64> = (1..=3).map(|k| last + k).collect();
    for (k, (seq, envelope)) in seqs.iter().zip([replayed, altered, relabelled]).enumerate() {
        // The columns the relay keys its bookkeeping on name a sender of their own, so the
        // relay's view of alice's and bob's counters is untouched.
        let sender = [0xA0 + k as u8; 32];
        db.execute(
            "INSERT INTO history (room, seq, sender, counter, envelope, stored) \
             VALUES (?1, ?2, ?3, 1, ?4, (SELECT max(stored) + 1 FROM history))",
            rusqlite::params![ROOM, seq, sender.to_vec(), envelope],
        )?;
    }
    db.execute("UPDATE rooms SET latest_seq = ?2 WHERE name = ?1", rusqlite::params![ROOM, last + 3])?;
    Ok(seqs)
}

#[test]
fn v2_a_replayed_altered_or_relabelled_entry_is_warned_of_and_never_shown() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let mut relay = Relay::start(relay_dir.path())?;
    let addr = relay.address();
    let invite = relay.invite(ROOM);
    let homes: Vec<Home> = (0..2).map(|_| Home::new()).collect::<Result<_, _>>()?;
    let mut alice = member(&homes[0], &invite, "alice", true)?;
    alice.stderr.expect(ENTERED)?;
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    bob.stderr.expect(ENTERED)?;
    alice.stderr.expect("entered the group (epoch 1)")?;
    let (m1, m2) = (format!("first {}", random_hex(6)), format!("second {}", random_hex(6)));
    alice.line(&m1)?;
    bob.stdout.expect(&m1)?;
    alice.line(&m2)?;
    bob.stdout.expect(&m2)?;
    bob.close_stdin();
    assert!(bob.wait()?.success(), "{:?}", bob.stderr.all());

    relay.kill();
    alice.stderr.expect("disconnected")?;
    let lies = forge_log(relay_dir.path())?;
    let relay = Relay::start_on(relay_dir.path(), &addr)?;

    // Bob comes back on his saved state and reads the log from where he left it.
    let mut bob = member(&homes[1], &invite, "bob", false)?;
    for seq in &lies {
        bob.stderr.expect(&format!("entry #{seq} of the room's log was refused"))?;
    }
    alice.stderr.expect("reconnected")?;
    let m3 = format!("third {}", random_hex(6));
    alice.line(&m3)?;
    bob.stdout.expect(&m3)?;
    let shown: Vec<&str> = bob.stdout.all().iter().map(|l| without_time(l)).collect();
    assert_eq!(shown.len(), 1, "only the message sent after the lies: {shown:?}");
    // Alice, live through the restart, read the same lies and showed none of them either; the
    // replay is of her own message, which her client skips as her own without a word.
    for seq in &lies[1..] {
        alice.stderr.expect(&format!("entry #{seq} of the room's log was refused"))?;
    }
    for client in [&mut bob, &mut alice] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    assert!(
        alice.stdout.all().is_empty(),
        "alice shows nothing of her own or forged: {:?}",
        alice.stdout.all()
    );
    drop(relay);
    Ok(())
}
