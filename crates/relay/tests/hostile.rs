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
                "envelope is {} bytes, more than the maximum of {MAX_ENVELOPE_LEN}; message not delivered",
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
    // A connection accepted after the flood completes its join: by then the accept loop, which
    // closes a connection over the cap at once, has dealt with every flood socket. Each one
    // then either completes a handshake (it is open) or reads the close, with no timer.
    let _barrier = member(&relay, &Person::new("barrier"), &pair.room, false).await?;
    let mut watching = tokio::task::JoinSet::new();
    for s in flood.drain(..) {
        let mut buf = [0u8; 1];
        if let Ok(n @ 1..) = s.try_read(&mut buf) {
            panic!("the relay sent {n} bytes before a handshake");
        }
        watching.spawn(async move { Conn::over(s).await.ok() });
    }
    let mut open_conns = Vec::new();
    let (mut open, mut closed) = (0, 0);
    while let Some(watched) = watching.join_next().await {
        match watched? {
            Some(conn) => {
                open += 1;
                open_conns.push(conn);
            }
            None => closed += 1,
        }
    }
    assert_eq!(open, 8, "at most 8 unauthenticated connections per address");
    assert_eq!(closed, 32);
    // Another address is not affected, and the flooder may still complete a real join
    // once a slot is free.
    let (_, _) = member(&relay, &Person::new("carol"), &pair.room, false).await?;
    drop(open_conns.pop());
    // The relay frees the slot once it reads the close, which no message announces: try until
    // a connection from the flooder is admitted. A refused one is closed at accept, a round
    // trip on this runtime (the relay's too) in which the relay gets to read the close; the
    // bound is in tries, not time.
    let mut tries = 0;
    let mut conn = loop {
        tries += 1;
        match Conn::connect_from(relay.addr, flooder).await {
            Ok(conn) => break conn,
            Err(e) => assert!(tries < 20, "the closed connection's slot was never freed: {e}"),
        }
    };
    assert!(conn.join(&Person::new("dave"), &pair.room, false, 0).await?.is_ok());
    pair.check().await
}

#[tokio::test]
async fn the_connection_cap_holds_and_recovers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.max_connections = 6;
        c.max_unauthenticated_per_ip = 100;
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await?;
    // Two connections used by the pair; four left.
    let mut pair = Pair::new(&relay).await?;
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(raw(&relay).await?);
    }
    pair.check().await?;
    // A connection beyond the cap is told so after its handshake, instead of waiting in the
    // backlog until its deadline.
    let mut carol = Conn::connect(relay.addr).await?;
    let refused = carol.join(&Person::new("carol"), &pair.room, false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::ServerFull, _))), "{refused:?}");
    // The stalled ones hit their deadline and free their places: carol gets in.
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries <= 100, "carol never got in");
        let mut carol = Conn::connect(relay.addr).await?;
        match carol.join(&Person::new("carol"), &pair.room, false, 0).await? {
            Ok(_) => break,
            Err((ErrorCode::ServerFull, _)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => return Err(format!("{other:?}").into()),
        }
    }
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

#[tokio::test]
async fn pongs_the_relay_did_not_ask_for_do_not_keep_a_connection_alive() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.ping_after = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(900);
    })
    .await?;
    let room = TestRoom::new("pong");
    let mut m = Conn::connect(relay.addr).await?;
    m.join(&Person::new("mallory"), &room, true, 0).await?.map_err(|e| format!("{e:?}"))?;
    // Mallory answers each of the relay's Pings with a Pong carrying a token the relay never
    // used: only the right token shows she reads what the relay sends.
    let started = Instant::now();
    m.send(&[ClientMessage::Pong { token: u64::MAX }]).await?;
    let end = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "mallory was never closed");
        match m.recv().await? {
            RelayMessage::Goodbye { code, .. } => break code,
            RelayMessage::Ping { token } => {
                m.send(&[ClientMessage::Pong { token: token.wrapping_add(1) }]).await?
            }
            _ => {}
        }
    };
    assert_eq!(end, ErrorCode::IdleTimeout);
    relay.stop().await
}

#[tokio::test]
async fn who_has_its_own_rate_and_a_flood_of_it_only_slows_the_asker() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.who_burst = 3;
        c.who_per_sec = 5;
        // No pings or idle timeouts while the clock is paused.
        c.ping_after = Duration::from_secs(3600);
        c.idle_timeout = Duration::from_secs(7200);
    })
    .await?;
    let mut pair = Pair::new(&relay).await?;
    let mut m = Conn::connect_from(relay.addr, IpAddr::from([127, 0, 0, 2])).await?;
    m.join(&Person::new("mallory"), &pair.room, false, 0).await?.map_err(|e| format!("{e:?}"))?;
    // Ten `Who`s in one message: three are answered at once, the other seven one every
    // 200 ms, so the last answer cannot come before 7 x 200 ms = 1.4 s. On a paused clock
    // (the relay runs on this runtime), that is the relay's own time, whatever the load.
    tokio::time::pause();
    let started = Instant::now();
    m.send(&vec![ClientMessage::Who; 10]).await?;
    for _ in 0..10 {
        let answer = m.next_matching(|m| matches!(m, RelayMessage::Members { .. })).await?;
        assert!(matches!(answer, RelayMessage::Members { more: false, .. }));
    }
    let took = started.elapsed();
    tokio::time::resume();
    assert!(took >= Duration::from_millis(1400), "answered faster than the rate: {took:?}");
    // Meanwhile the others were served as usual.
    pair.check().await?;
    // The asker's connection is still fine once it keeps to the rate.
    m.send(&[ClientMessage::Ping { token: 7 }]).await?;
    assert_eq!(
        m.next_matching(|m| matches!(m, RelayMessage::Pong { .. })).await?,
        RelayMessage::Pong { token: 7 }
    );
    relay.stop().await
}

#[tokio::test]
async fn a_room_has_a_member_cap_with_room_kept_for_members_bound_in_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Ten members; the last 20 % (two places) only for identities bound in the room.
    let relay = TestRelay::start(dir.path(), |c| {
        c.max_room_members = 10;
        c.headroom_percent = 20;
    })
    .await?;
    let mut pair = Pair::new(&relay).await?;
    // Dave binds his nickname, then leaves.
    let dave = Person::new("dave");
    drop(member(&relay, &dave, &pair.room, false).await?);
    pair.check().await?;
    // Strangers fill the room up to 8 members (alice and bob among them).
    let people: Vec<Person> = (0..6).map(|i| Person::new(&format!("x{i}"))).collect();
    let mut strangers = Vec::new();
    for person in &people {
        strangers.push(member(&relay, person, &pair.room, false).await?);
    }
    let mut late = Conn::connect(relay.addr).await?;
    let refused = late.join(&Person::new("late"), &pair.room, false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::RoomFull, _))), "{refused:?}");
    // Dave still gets in: his identity holds a nickname here.
    let (_dave, _) = member(&relay, &dave, &pair.room, false).await?;
    // So does a member reconnecting: its new connection replaces the old one.
    let (_x0, _) = member(&relay, &people[0], &pair.room, false).await?;
    pair.check().await?;
    relay.stop().await
}

#[tokio::test]
async fn every_kind_of_failed_join_counts_against_the_address() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.ip_failures_slow = 100;
        c.ip_failures_lockout = 4;
    })
    .await?;
    let mut pair = Pair::new(&relay).await?;
    let prober: IpAddr = [127, 0, 0, 2].into();
    // Missing rooms and taken nicknames: four refusals of kinds other than a wrong password.
    let missing = TestRoom::new("nowhere");
    let cases: [(&TestRoom, Person, ErrorCode); 4] = [
        (&missing, Person::new("p1"), ErrorCode::NoSuchRoom),
        (&pair.room, Person::new("alice"), ErrorCode::NickTaken),
        (&missing, Person::new("p3"), ErrorCode::NoSuchRoom),
        (&pair.room, Person::new("bob"), ErrorCode::NickTaken),
    ];
    for (room, person, code) in cases {
        let mut conn = Conn::connect_from(relay.addr, prober).await?;
        let refused = conn.join(&person, room, false, 0).await?;
        assert!(matches!(&refused, Err((c, _)) if *c == code), "{refused:?}");
    }
    // The address is now locked out, even for a join that would succeed.
    let mut conn = Conn::connect_from(relay.addr, prober).await?;
    let refused = conn.join(&Person::new("carol"), &pair.room, false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::TooManyAttempts, _))), "{refused:?}");
    // Other addresses are not.
    let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 3].into()).await?;
    assert!(conn.join(&Person::new("carol"), &pair.room, false, 0).await?.is_ok());
    pair.check().await?;
    relay.stop().await
}

#[tokio::test]
async fn a_room_locked_by_wrong_passwords_still_admits_its_bound_members() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.room_failures_slow = 100;
        c.room_failures_lockout = 6;
        c.ip_failures_slow = 100;
        c.ip_failures_lockout = 100;
    })
    .await?;
    let mut pair = Pair::new(&relay).await?;
    let bob = Person::new("bob2");
    drop(member(&relay, &bob, &pair.room, false).await?);
    // Six wrong passwords from three addresses lock the room.
    let wrong = TestRoom { name: pair.room.name.clone(), keys: TestRoom::new("x").keys };
    for i in 0..6u8 {
        let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 10 + i % 3].into()).await?;
        let refused = conn.join(&Person::new(&format!("guess{i}")), &wrong, false, 0).await?;
        assert!(matches!(refused, Err((ErrorCode::WrongPassword, _))), "{refused:?}");
    }
    // A newcomer with the right password is refused while the lockout lasts, without its
    // password being checked...
    let mut conn = Conn::connect(relay.addr).await?;
    let refused = conn.join(&Person::new("newcomer"), &pair.room, false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::TooManyAttempts, _))), "{refused:?}");
    let mut conn = Conn::connect(relay.addr).await?;
    let refused = conn.join(&Person::new("guess9"), &wrong, false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::TooManyAttempts, _))), "{refused:?}");
    // ...but an identity bound in the room gets in.
    let (mut b, _) = member(&relay, &bob, &pair.room, false).await?;
    pair.check().await?;
    assert_eq!(b.delivery().await?.0, pair.seq);
    relay.stop().await
}

/// Sends `count` envelopes as `person` in one transport message; returns how many were
/// acknowledged and the detail of the first refusal.
async fn send_burst(
    conn: &mut Conn,
    person: &mut Person,
    room: &TestRoom,
    count: usize,
) -> Res<(usize, String)> {
    let batch: Vec<ClientMessage> =
        (0..count).map(|_| ClientMessage::Send { envelope: person.seal(room, "burst").1 }).collect();
    conn.send(&batch).await?;
    let (mut acked, mut refused) = (0, String::new());
    for _ in 0..count {
        match conn.answer().await? {
            RelayMessage::Ack { .. } => acked += 1,
            RelayMessage::SendError { code: ErrorCode::RateLimited, detail, .. } if refused.is_empty() => {
                refused = detail
            }
            RelayMessage::SendError { code: ErrorCode::RateLimited, .. } => {}
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    Ok((acked, refused))
}

#[tokio::test]
async fn fresh_identities_do_not_multiply_the_send_rate_of_an_address_or_a_room() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.rate_burst = 20;
        c.rate_per_sec = 1;
        c.ip_rate_burst = 30;
        c.ip_rate_per_sec = 1;
        c.room_rate_burst = 45;
        c.room_rate_per_sec = 1;
    })
    .await?;
    let room = TestRoom::new("busy");
    let (_owner, _) = member(&relay, &Person::new("owner"), &room, true).await?;
    // Three identities on one address: each may send 20, the address 30 in all.
    let mut acked = 0;
    let mut detail = String::new();
    for i in 0..3 {
        let mut person = Person::new(&format!("sybil{i}"));
        let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 2].into()).await?;
        conn.join(&person, &room, false, 0).await?.map_err(|e| format!("{e:?}"))?;
        let (n, refused) = send_burst(&mut conn, &mut person, &room, 20).await?;
        acked += n;
        if detail.is_empty() {
            detail = refused;
        }
    }
    // The burst, plus at most a token or two refilled while the test ran.
    assert!((30..=32).contains(&acked), "one address stored {acked} envelopes");
    assert!(detail.contains("per address"), "{detail}");
    // Another address gets what is left of the room's burst of 45, not its own 20.
    let mut dave = Person::new("dave");
    let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 3].into()).await?;
    conn.join(&dave, &room, false, 0).await?.map_err(|e| format!("{e:?}"))?;
    let (n, refused) = send_burst(&mut conn, &mut dave, &room, 20).await?;
    assert!(acked + n <= 48, "the room stored {} envelopes", acked + n);
    assert!(n < 20 && refused.contains("per room"), "{n}: {refused}");
    relay.stop().await
}

#[tokio::test]
async fn a_rooms_history_is_bounded_in_bytes_in_memory_and_on_disk() -> TestResult {
    let dir = tempfile::tempdir()?;
    // 40 000 bytes hold 9 full-size envelopes of 4305 bytes.
    let limits = |c: &mut chatroom_relay::Config| {
        c.history_bytes = 40_000;
        c.rate_burst = 1000;
    };
    let relay = TestRelay::start(dir.path(), limits).await?;
    let room = TestRoom::new("bytes");
    let mut alice = Person::new("alice");
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let body = "b".repeat(chatroom_crypto::MAX_BODY_LEN);
    for seq in 1..=20 {
        let (_, envelope) = alice.seal(&room, &body);
        assert_eq!(envelope.len(), MAX_ENVELOPE_LEN);
        assert_eq!(a.publish_ok(envelope).await?, seq);
    }
    let (_, joined) = member(&relay, &Person::new("bob"), &room, false).await?;
    assert_eq!(joined.history.iter().map(|h| h.0).collect::<Vec<_>>(), (12..=20).collect::<Vec<_>>());
    drop(a);
    relay.stop().await?;

    // On disk: what memory let go is deleted in bulk, once 64 envelopes are due (RELAY.md),
    // so all 20 are still there...
    let db = rusqlite::Connection::open(dir.path().join(chatroom_relay::DB_FILE))?;
    let rows: i64 = db.query_row("SELECT count(*) FROM history", [], |r| r.get(0))?;
    assert_eq!(rows, 20, "{rows} envelopes on disk");
    drop(db);
    // ...and loaded again, the room keeps to the same budget: nobody sees the 11 due to go.
    let relay = TestRelay::start(dir.path(), limits).await?;
    let (_, joined) = member(&relay, &Person::new("carol"), &room, false).await?;
    assert_eq!(joined.history.iter().map(|h| h.0).collect::<Vec<_>>(), (12..=20).collect::<Vec<_>>());
    relay.stop().await
}

#[tokio::test]
async fn idle_rooms_expire_but_rooms_with_members_do_not_and_the_relay_holds_a_bounded_number() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.room_expiry = Duration::from_secs(1);
        c.max_rooms = 2;
    })
    .await?;
    let (idle, busy) = (TestRoom::new("idle"), TestRoom::new("busy"));
    drop(member(&relay, &Person::new("alice"), &idle, true).await?);
    let (_stays, _) = member(&relay, &Person::new("bob"), &busy, true).await?;
    // Two rooms stored: a third is refused.
    let mut conn = Conn::connect(relay.addr).await?;
    let refused = conn.join(&Person::new("carol"), &TestRoom::new("third"), true, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::ServerFull, _))), "{refused:?}");

    // Probe with a wrong password (which does not count as use) from a fresh address each
    // time, until the idle room is gone: at most 20 probes, 500 ms apart.
    let wrong = |room: &TestRoom| TestRoom { name: room.name.clone(), keys: TestRoom::new("x").keys };
    let mut gone = false;
    for i in 0..20u8 {
        let mut conn = Conn::connect_from(relay.addr, [127, 0, 2, i + 1].into()).await?;
        match conn.join(&Person::new("probe"), &wrong(&idle), false, 0).await? {
            Err((ErrorCode::NoSuchRoom, _)) => {
                gone = true;
                break;
            }
            Err((ErrorCode::WrongPassword, _)) => tokio::time::sleep(Duration::from_millis(500)).await,
            other => return Err(format!("{other:?}").into()),
        }
    }
    assert!(gone, "the idle room never expired");
    // The room with a member is still there, and a room may be created in the freed place.
    let mut conn = Conn::connect_from(relay.addr, [127, 0, 3, 1].into()).await?;
    let refused = conn.join(&Person::new("probe"), &wrong(&busy), false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::WrongPassword, _))), "{refused:?}");
    let (_, joined) = member(&relay, &Person::new("dave"), &idle, true).await?;
    assert!(joined.created, "the expired room's name is free again");
    relay.stop().await
}

#[tokio::test]
async fn a_room_binds_a_bounded_number_of_nicknames() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.max_room_nicknames = 3).await?;
    let mut pair = Pair::new(&relay).await?;
    let carol = Person::new("carol");
    drop(member(&relay, &carol, &pair.room, false).await?);
    // alice, bob and carol hold the three nicknames: a fourth identity is refused...
    let mut conn = Conn::connect(relay.addr).await?;
    let refused = conn.join(&Person::new("dave"), &pair.room, false, 0).await?;
    assert!(matches!(refused, Err((ErrorCode::RoomFull, _))), "{refused:?}");
    // ...and carol, whose nickname is bound, gets back in.
    let (_carol, _) = member(&relay, &carol, &pair.room, false).await?;
    pair.check().await?;
    relay.stop().await
}

#[tokio::test]
async fn the_relays_history_on_disk_is_bounded_in_bytes_over_all_rooms() -> TestResult {
    let dir = tempfile::tempdir()?;
    // 50 000 bytes over all rooms: 11 full-size envelopes of 4305 bytes.
    let relay = TestRelay::start(dir.path(), |c| {
        c.max_stored_bytes = 50_000;
        c.rate_burst = 1000;
    })
    .await?;
    let body = "q".repeat(chatroom_crypto::MAX_BODY_LEN);
    for name in ["first", "second"] {
        let room = TestRoom::new(name);
        let mut alice = Person::new("alice");
        let (mut a, _) = member(&relay, &alice, &room, true).await?;
        for _ in 0..10 {
            a.publish_ok(alice.seal(&room, &body).1).await?;
        }
    }
    relay.stop().await?;
    // The oldest envelopes went, whatever their room: the second room's ten are all there.
    let db = rusqlite::Connection::open(dir.path().join(chatroom_relay::DB_FILE))?;
    let total: i64 =
        db.query_row("SELECT coalesce(sum(length(envelope)), 0) FROM history", [], |r| r.get(0))?;
    assert!(total <= 50_000, "{total} bytes of history on disk");
    let per_room = |room: &str| -> rusqlite::Result<i64> {
        db.query_row("SELECT count(*) FROM history WHERE room = ?1", [room], |r| r.get(0))
    };
    assert_eq!(per_room("second")?, 10);
    assert!(per_room("first")? <= 1, "the first room's oldest went first");
    Ok(())
}
