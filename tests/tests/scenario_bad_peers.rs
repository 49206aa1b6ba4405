//! Scenario 7, bad peers next to good ones: while two members chat, other connections send
//! garbage, oversized frame lengths, half handshakes and nothing at all, and many connections
//! open at once (bounded: 3 rounds of 32 hostile connections, then a burst of 150 against a
//! limit of 64 unauthenticated connections per address). The relay
//! closes every hostile connection (at once, or at its handshake deadline), the members'
//! messages keep flowing, and the relay's resident memory grows by less than `RSS_BOUND_KIB`.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use chatroom_crypto::{Initiator, StaticKeypair};
use chatroom_e2e::{random_hex, rss_kib, Home, Relay};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;
type BoxError = Box<dyn Error + Send + Sync>;

const PASSWORD: &str = "correct horse battery staple";
/// The relay's handshake deadline in this test.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a hostile connection may stay open: the deadline plus scheduling slack.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);
const ROUNDS: usize = 3;
const PER_KIND: usize = 8;
const BURST: usize = 150;
/// The relay's limit of connections per address that have not joined, in this test.
const UNAUTH_LIMIT: usize = 64;
/// Allowed growth of the relay's resident memory over the whole attack.
const RSS_BOUND_KIB: u64 = 16 * 1024;

#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Random bytes instead of a handshake.
    Garbage,
    /// A frame header announcing 65535 bytes, then a little data.
    Oversized,
    /// A correct first handshake message, then silence.
    HalfHandshake,
    /// Connect and send nothing.
    Stall,
}

/// Runs one hostile connection and returns once the relay has closed it.
fn attack(relay: SocketAddr, kind: Attack) -> Result<(), BoxError> {
    let start = Instant::now();
    let mut s = TcpStream::connect(relay)?;
    s.set_read_timeout(Some(CLOSED_WITHIN))?;
    // Writes may fail once the relay has closed: that is the point.
    match kind {
        Attack::Garbage => {
            let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let _ = s.write_all(&junk);
        }
        Attack::Oversized => {
            let _ = s.write_all(&[0xff, 0xff]);
            let _ = s.write_all(&[0x41; 1000]);
        }
        Attack::HalfHandshake => {
            let (_state, msg1) = Initiator::start(&StaticKeypair::generate()).map_err(|e| format!("{e}"))?;
            let mut frame = (msg1.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(&msg1);
            s.write_all(&frame)?;
        }
        Attack::Stall => {}
    }
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {} // a handshake reply or a goodbye: keep reading until the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(())
            }
            Err(e) => {
                return Err(
                    format!("{kind:?}: not closed by the relay after {:?}: {e}", start.elapsed()).into()
                )
            }
        }
    }
}

#[test]
fn hostile_connections_are_closed_members_keep_chatting_and_memory_stays_bounded() -> TestResult {
    let relay_dir = tempfile::tempdir()?;
    let timeout = format!("{}s", HANDSHAKE_TIMEOUT.as_secs());
    // Room for every hostile connection of a round, so each reaches the relay's parsers
    // instead of being refused by the per-address limit; the burst below exceeds it. Every
    // connection comes from 127.0.0.1: the limits on all connections and on new connections
    // per address are lifted (`hostile_load.rs` in the relay crate tests those).
    let unauth = UNAUTH_LIMIT.to_string();
    let relay = Relay::start_with(
        relay_dir.path(),
        "127.0.0.1:0",
        &[
            "--handshake-timeout",
            &timeout,
            "--max-unauthenticated-per-ip",
            &unauth,
            "--max-connections-per-ip",
            "4096",
            "--handshake-burst",
            "100000",
        ],
    )?;
    let invite = relay.invite("calm");
    let (alice_home, bob_home) = (Home::protocol_1()?, Home::protocol_1()?);
    let mut alice = alice_home.member(&invite, "alice", PASSWORD, true, &[])?;
    alice.stderr.expect("now live")?;
    let mut bob = bob_home.member(&invite, "bob", PASSWORD, false, &[])?;
    bob.stderr.expect("now live")?;
    alice.line("warm-up")?;
    bob.stdout.expect("<alice> warm-up")?;
    let rss_before = rss_kib(relay.pid())?;
    let addr = relay.addr;

    for round in 0..ROUNDS {
        let mut attackers = Vec::new();
        for kind in [Attack::Garbage, Attack::Oversized, Attack::HalfHandshake, Attack::Stall] {
            for _ in 0..PER_KIND {
                attackers.push(thread::spawn(move || attack(addr, kind)));
            }
        }
        // Members keep talking while the hostile connections are open.
        for i in 0..5 {
            let text = format!("round {round} message {i} {}", random_hex(4));
            alice.line(&text)?;
            bob.stdout.expect(&format!("<alice> {text}"))?;
            bob.line(&format!("ack {text}"))?;
            alice.stdout.expect(&format!("<bob> ack {text}"))?;
        }
        for a in attackers {
            a.join().map_err(|_| "attacker thread panicked")??;
        }
    }

    // Many connections at once; beyond the per-address limit of connections that have not
    // joined, the relay closes them immediately, the rest at the handshake deadline.
    let mut burst = Vec::new();
    for _ in 0..BURST {
        burst.push(TcpStream::connect(addr)?);
    }
    alice.line("during the burst")?;
    bob.stdout.expect("<alice> during the burst")?;
    let mut closed = 0;
    for mut s in burst {
        s.set_read_timeout(Some(CLOSED_WITHIN))?;
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            other => return Err(format!("a burst connection was not closed: {other:?}").into()),
        }
    }
    assert_eq!(closed, BURST);

    alice.line("after the attack")?;
    bob.stdout.expect("<alice> after the attack")?;
    let rss_after = rss_kib(relay.pid())?;
    eprintln!("relay RSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after <= rss_before + RSS_BOUND_KIB,
        "relay memory grew from {rss_before} KiB to {rss_after} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        !alice.stderr.all().iter().chain(bob.stderr.all()).any(|l| l.contains("disconnected")),
        "the members were never disconnected"
    );
    for client in [&mut alice, &mut bob] {
        client.close_stdin();
        assert!(client.wait()?.success(), "{:?}", client.stderr.all());
    }
    Ok(())
}
