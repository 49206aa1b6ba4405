//! Hostile input against a relay in-process: each attack is handled (closed, refused or
//! answered) without affecting a well-behaved pair of members in the same room.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use chatroom_crypto::{ClientMessage, ErrorCode, RelayMessage, MAX_ENVELOPE_LEN};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Alice and bob in one room; `check` proves a message still goes through.
struct Pair {
    alice: Person,
    room: TestRoom,
    a: Conn,
    b: Conn,
    seq: u64,
}

impl Pair {
    async fn new(relay: &TestRelay) -> Res<Self> {
        let room = TestRoom::new("steady");
        let alice = Person::new("alice");
        let (a, _) = member(relay, &alice, &room, true).await?;
        let (b, _) = member(relay, &Person::new("bob"), &room, false).await?;
        Ok(Self { alice, room, a, b, seq: 0 })
    }

    async fn check(&mut self) -> TestResult {
        let (_, envelope) = self.alice.seal(&self.room, "still fine");
        self.seq += 1;
        assert_eq!(self.a.publish_ok(envelope.clone()).await?, self.seq);
        assert_eq!(self.b.delivery().await?, (self.seq, envelope));
        Ok(())
    }
}

async fn raw(relay: &TestRelay) -> Res<TcpStream> {
    Ok(TcpStream::connect(relay.addr).await?)
}

#[tokio::test]
async fn bad_bytes_before_the_handshake_are_closed_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A long deadline: every close below comes from a check, not from the clock.
    let relay = TestRelay::start(dir.path(), |c| c.handshake_timeout = Duration::from_secs(60)).await?;
    let mut pair = Pair::new(&relay).await?;

    let cases: [(&str, Vec<u8>); 4] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n".to_vec()),
        ("oversized length prefix", vec![0xff, 0xff, 1, 2, 3]),
        ("wrong handshake length", frame(&[7; 31])),
        ("empty frame", vec![0, 0]),
    ];
    for (name, bytes) in cases {
        let started = Instant::now();
        let mut s = raw(&relay).await?;
        s.write_all(&bytes).await?;
        let answer = until_closed(&mut s).await?;
        assert!(answer.is_empty(), "{name}: nothing is sent before a handshake");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: closed by the check, not a timeout");
        pair.check().await?;
    }
    // A valid-length message 1 of garbage gets message 2 (X25519 takes any 32 bytes); a
    // garbage message 3 then fails authentication and closes the connection.
    let mut s = raw(&relay).await?;
    s.write_all(&frame(&[0x55; 32])).await?;
    let mut rd = s;
    let msg2 = tokio::time::timeout(STEP, read_frame(&mut rd)).await??;
    assert_eq!(msg2.len(), 96);
    rd.write_all(&frame(&[0x66; 64])).await?;
    assert!(until_closed(&mut rd).await?.is_empty());
    pair.check().await
}

#[tokio::test]
async fn stalled_handshakes_and_joins_are_closed_at_the_deadline() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.handshake_timeout = Duration::from_millis(300)).await?;
    let mut pair = Pair::new(&relay).await?;

    // Nothing at all.
    let mut silent = raw(&relay).await?;
    // Half a frame header, then nothing.
    let mut half = raw(&relay).await?;
    half.write_all(&[0]).await?;
    // A complete handshake but no join: the Noise session exists, so a goodbye is sent.
    let mut no_join = Conn::connect(relay.addr).await?;
    pair.check().await?;
    assert!(until_closed(&mut silent).await?.is_empty());
    assert!(until_closed(&mut half).await?.is_empty());
    let (code, detail) = no_join.goodbye().await?;
    assert_eq!(code, ErrorCode::HandshakeTimeout);
    assert!(detail.contains("0.3 s"), "{detail}");
    pair.check().await
}

#[tokio::test]
async fn bad_messages_after_the_handshake_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.max_envelope_len = 1000).await?;
    let mut pair = Pair::new(&relay).await?;

    // A transport message that does not decrypt: closed without a word.
    let mut conn = Conn::connect(relay.addr).await?;
    conn.send_raw(&frame(&[9; 40])).await?;
    conn.closed().await?;

    // Anything but a join first.
    let mut conn = Conn::connect(relay.addr).await?;
    conn.send(&[ClientMessage::Who]).await?;
    assert_eq!(conn.goodbye().await?.0, ErrorCode::UnexpectedMessage);

    // A join with a bad signature (signed for another session).
    let mut conn = Conn::connect(relay.addr).await?;
    let other = Conn::connect(relay.addr).await?;
    conn.handshake_hash = other.handshake_hash;
    let refused = conn.join(&Person::new("eve"), &pair.room, false, 0).await?.expect_err("bad signature");
    assert_eq!(refused.0, ErrorCode::BadSignature);
    drop(other);

    // Malformed items after a join close with a goodbye.
    let (mut eve, _) = member(&relay, &Person::new("eve0"), &pair.room, false).await?;
    eve.send_plaintext(&[0x7f, 0, 0]).await?;
    assert_eq!(eve.goodbye().await?.0, ErrorCode::Malformed);
    let (mut eve, _) = member(&relay, &Person::new("eve1"), &pair.room, false).await?;
    eve.send_plaintext(&[0x04, 0, 9]).await?;
    assert_eq!(eve.goodbye().await?.0, ErrorCode::Malformed, "an item longer than the message");
    // A second join is unexpected.
    let eve_person = Person::new("eve2");
    let (mut eve, _) = member(&relay, &eve_person, &pair.room, false).await?;
    eve.join_request(&eve_person, &pair.room, false, 0).await?;
    assert_eq!(eve.goodbye().await?.0, ErrorCode::UnexpectedMessage);
    pair.check().await?;

    // Bad envelopes are answered with errors, in order, and the connection stays.
    let mut mallory = Person::new("mallory");
    let (mut m, _) = member(&relay, &mallory, &pair.room, false).await?;
    m.send(&[
        ClientMessage::Send { envelope: vec![1; MAX_ENVELOPE_LEN + 1] },
        ClientMessage::Send { envelope: vec![9; 200] },
    ])
    .await?;
    let ones = u64::from_be_bytes([1; 8]);
    assert_eq!(
        m.send_error().await?,
        (
            ones,
            ErrorCode::EnvelopeTooLarge,
            format!(
                "envelope refused: envelope is {} bytes, more than the maximum of {MAX_ENVELOPE_LEN}",
                MAX_ENVELOPE_LEN + 1
            )
        )
    );
    let (counter, code, _) = m.send_error().await?;
    assert_eq!(
        (counter, code),
        (u64::from_be_bytes([9; 8]), ErrorCode::Malformed),
        "unknown envelope version"
    );
    let (sealed_counter, envelope) = mallory.seal(&pair.room, &"y".repeat(1500));
    let (counter, code, detail) = match m.publish(envelope).await? {
        RelayMessage::SendError { counter, code, detail } => (counter, code, detail),
        other => panic!("expected EnvelopeTooLarge, got {other:?}"),
    };
    assert_eq!((counter, code), (sealed_counter, ErrorCode::EnvelopeTooLarge));
    assert!(detail.contains("limit of 1000 bytes"), "{detail}");
    let (_, envelope) = mallory.seal(&pair.room, "short");
    m.publish_ok(envelope).await?;
    pair.seq += 1;
    assert_eq!(pair.b.delivery().await?.0, pair.seq);
    pair.check().await
}

#[tokio::test]
async fn frames_too_short_for_a_transport_message_and_sends_without_a_counter_get_a_goodbye() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let mut pair = Pair::new(&relay).await?;
    // Before the join: a frame too short to hold a tag and an item header, and an empty one.
    for short in [frame(&[7; 18]), vec![0, 0]] {
        let mut conn = Conn::connect(relay.addr).await?;
        conn.send_raw(&short).await?;
        let (code, detail) = conn.goodbye().await?;
        assert_eq!(code, ErrorCode::Malformed, "{detail}");
        assert!(detail.contains("transport frame"), "{detail}");
    }
    // After the join.
    let (mut eve, _) = member(&relay, &Person::new("eve"), &pair.room, false).await?;
    eve.send_raw(&frame(&[7; 10])).await?;
    assert_eq!(eve.goodbye().await?.0, ErrorCode::Malformed);
    // A Send too short to hold a counter cannot be answered by counter: the connection closes.
    let (mut eve, _) = member(&relay, &Person::new("eve2"), &pair.room, false).await?;
    eve.send(&[ClientMessage::Send { envelope: vec![1; 40] }]).await?;
    let (code, detail) = eve.goodbye().await?;
    assert_eq!(code, ErrorCode::Malformed);
    assert!(detail.contains("shorter than an envelope header"), "{detail}");
    // A Send of 41 bytes has a counter: it is refused by counter and the connection stays.
    let (mut eve, _) = member(&relay, &Person::new("eve3"), &pair.room, false).await?;
    eve.send(&[ClientMessage::Send { envelope: vec![2; 41] }]).await?;
    let (counter, code, _) = eve.send_error().await?;
    assert_eq!((counter, code), (u64::from_be_bytes([2; 8]), ErrorCode::Malformed));
    eve.send(&[ClientMessage::Ping { token: 5 }]).await?;
    assert!(matches!(eve.recv().await?, RelayMessage::Pong { token: 5 }));
    pair.check().await
}

#[tokio::test]
async fn a_flood_of_connections_from_one_address_is_capped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.max_unauthenticated_per_ip = 8;
        c.handshake_timeout = Duration::from_secs(30);
    })
    .await?;
    let mut pair = Pair::new(&relay).await?;
    let flooder: IpAddr = [127, 0, 0, 2].into();
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tcp_from(relay.addr, flooder).await?);
    }
    pair.check().await?;
    // Watch every socket at once: the ones over the cap are closed at accept, the others
    // stay open (the handshake deadline is far away).
    let mut watching = tokio::task::JoinSet::new();
    for mut s in flood.drain(..) {
        watching.spawn(async move {
            let mut buf = [0u8; 1];
            let read =
                tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read(&mut s, &mut buf));
            let open = match read.await {
                Ok(Ok(0) | Err(_)) => false,
                Ok(Ok(_)) => panic!("the relay sent bytes before a handshake"),
                Err(_) => true,
            };
            (open, s)
        });
    }
    let (mut open, mut closed) = (0, 0);
    while let Some(watched) = watching.join_next().await {
        let (is_open, s) = watched?;
        if is_open {
            open += 1;
            flood.push(s);
        } else {
            closed += 1;
        }
    }
    assert_eq!(open, 8, "at most 8 unauthenticated connections per address");
    assert_eq!(closed, 32);
    // Another address is not affected, and the flooder may still complete a real join
    // once a slot is free.
    let (_, _) = member(&relay, &Person::new("carol"), &pair.room, false).await?;
    drop(flood.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = Conn::connect_from(relay.addr, flooder).await?;
    assert!(conn.join(&Person::new("dave"), &pair.room, false, 0).await?.is_ok());
    pair.check().await
}

#[tokio::test]
async fn the_connection_cap_holds_and_recovers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.max_connections = 6;
        c.max_unauthenticated_per_ip = 100;
        c.handshake_timeout = Duration::from_millis(500);
    })
    .await?;
    // Two connections used by the pair; four left.
    let mut pair = Pair::new(&relay).await?;
    let mut flood = Vec::new();
    for _ in 0..12 {
        flood.push(raw(&relay).await?);
    }
    pair.check().await?;
    // Connections beyond the cap wait in the backlog and are served as the stalled ones hit
    // their deadline: a newcomer gets in within a few deadlines.
    let (_, _) = member(&relay, &Person::new("carol"), &pair.room, false).await?;
    pair.check().await
}

/// Panics anywhere in this test binary (a relay task that panics is otherwise only a line on
/// standard error, as tokio catches it).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[tokio::test]
async fn random_items_after_a_join_never_panic_the_relay() -> TestResult {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        previous(info);
    }));
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.max_unauthenticated_per_ip = 64).await?;
    let mut pair = Pair::new(&relay).await?;
    // A fixed xorshift stream: reproducible cases.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..60 {
        let person = Person::new(&format!("fuzz{case}"));
        let (mut conn, _) = member(&relay, &person, &pair.room, false).await?;
        let mut plaintext = Vec::new();
        for _ in 0..(next() % 4 + 1) {
            // Mostly well-framed items of client types with random bodies, sometimes anything.
            let ty = if next() % 5 == 0 { next() as u8 } else { (next() % 9 + 1) as u8 };
            let len = (next() % 120) as usize;
            let declared = if next() % 7 == 0 { next() as u16 } else { len as u16 };
            plaintext.push(ty);
            plaintext.extend_from_slice(&declared.to_be_bytes());
            plaintext.extend((0..len).map(|_| next() as u8));
        }
        conn.send_plaintext(&plaintext).await?;
        // Whatever the relay makes of it, it answers or closes within a step.
        let _ = conn.messages_within(Duration::from_millis(20)).await;
    }
    pair.check().await?;
    relay.stop().await?;
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0, "a relay task panicked");
    Ok(())
}
