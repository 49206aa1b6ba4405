//! The session state machine against the shared fake relay (`chatroom-fake-relay`), scripted
//! frame by frame: real sockets on 127.0.0.1, the real Noise handshake and envelopes.

// Test helpers outside #[test] functions may panic on impossible setup failures.
#![allow(clippy::unwrap_used)]

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use chatroom_fake_relay::{FakeConn, FakeRelay};
use chatroom_session::crypto::{
    seal, ClientMessage, Content, ContentKind, ErrorCode, Identity, KdfParams, Nick, RelayMessage, RoomName,
    StaticKeypair, Zeroizing,
};
use chatroom_session::error::SessionError;
use chatroom_session::session::{
    Event, Limits, Rejected, RoomKeyCache, Session, SessionConfig, SessionEnd, SessionHandle,
};
use chatroom_session::transport::HostPort;
use chatroom_session::trust::{KnownRelays, RelayPin};
use tokio::sync::mpsc;
use tokio::time::timeout;

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const LIMIT: Duration = Duration::from_secs(15);

fn host_port(relay: &FakeRelay) -> HostPort {
    let a = relay.addr();
    HostPort { host: a.ip().to_string(), port: a.port() }
}

async fn fake_relay() -> Result<FakeRelay, Box<dyn Error + Send + Sync>> {
    FakeRelay::bind(StaticKeypair::generate()).await
}

struct Client {
    handle: SessionHandle,
    events: mpsc::UnboundedReceiver<Event>,
    keys: Arc<RoomKeyCache>,
}

fn config(relay: &FakeRelay, pin: RelayPin) -> SessionConfig {
    SessionConfig {
        relay: host_port(relay).into(),
        proxy: None,
        room: RoomName::new("general").unwrap(),
        nick: Nick::new("alice").unwrap(),
        create: false,
        relay_pin: pin,
        data_dir: None,
        limits: Limits {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            send_rate: None,
            ..Limits::default()
        },
    }
}

async fn start(cfg: SessionConfig) -> Result<Client, SessionError> {
    let (tx, events) = mpsc::unbounded_channel();
    let keys = Arc::new(RoomKeyCache::new(
        Zeroizing::new(b"correct horse battery staple".to_vec()),
        cfg.room.clone(),
        KdfParams::DEFAULT,
    )?);
    let handle = Session::start(
        cfg,
        keys.clone(),
        Arc::new(Identity::generate()),
        Arc::new(move |e: Event| {
            let _ = tx.send(e);
        }),
    )
    .await?;
    Ok(Client { handle, events, keys })
}

async fn next_matching<T>(
    events: &mut mpsc::UnboundedReceiver<Event>,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Result<T, Box<dyn Error + Send + Sync>> {
    loop {
        let e = timeout(LIMIT, events.recv()).await?.ok_or("session ended")?;
        if let Some(t) = f(&e) {
            return Ok(t);
        }
    }
}

fn sends(messages: Vec<ClientMessage>) -> Vec<Vec<u8>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            ClientMessage::Send { envelope } => Some(envelope),
            _ => None,
        })
        .collect()
}

async fn read_sends(conn: &mut FakeConn, n: usize) -> Result<Vec<Vec<u8>>, Box<dyn Error + Send + Sync>> {
    let mut got = Vec::new();
    while got.len() < n {
        got.extend(sends(timeout(LIMIT, conn.recv()).await??));
    }
    Ok(got)
}

#[tokio::test]
async fn a_relay_with_another_key_is_refused_before_joining() -> TestResult {
    let relay = fake_relay().await?;
    let dir = tempfile::tempdir()?;
    let known = KnownRelays::new(dir.path().join("known_relays"));
    let pin = RelayPin {
        expected: Some([7; 32]),
        expected_source: "the invite".into(),
        known: Some(known.clone()),
    };
    let cfg = config(&relay, pin);
    let server = tokio::spawn(async move {
        let mut conn = relay.accept().await.err().map(|e| e.to_string());
        if conn.is_none() {
            conn = Some("handshake completed".into());
        }
        conn
    });
    let err = timeout(LIMIT, start(cfg)).await?.err().ok_or("start should fail")?;
    match &err {
        SessionError::RelayKeyMismatch { expected, pin_source, .. } => {
            assert_eq!(expected, &hex::encode([7u8; 32]));
            assert_eq!(pin_source, "the invite");
        }
        other => panic!("expected a key mismatch, got {other}"),
    }
    assert!(err.to_string().contains("RELAY KEY MISMATCH"), "{err}");
    let server_saw = server.await?.unwrap_or_default();
    assert_ne!(server_saw, "handshake completed", "the client must not finish the handshake");
    assert!(known.list()?.is_empty(), "a refused key is never recorded");
    Ok(())
}

#[tokio::test]
async fn a_refused_join_is_returned_from_start_typed_without_advice() -> TestResult {
    let relay = fake_relay().await?;
    let cfg = config(&relay, RelayPin::default());
    let server = tokio::spawn(async move {
        let mut conn = relay.accept().await.map_err(|e| e.to_string())?;
        conn.recv().await.map_err(|e| e.to_string())?;
        conn.send(&[RelayMessage::Goodbye {
            code: ErrorCode::WrongPassword,
            detail: "wrong password".into(),
        }])
        .await
        .map_err(|e| e.to_string())
    });
    let err = timeout(LIMIT, start(cfg)).await?.err().ok_or("start should fail")?;
    assert_eq!(err.refusal(), Some(ErrorCode::WrongPassword));
    assert!(!err.is_retryable());
    // What happened only: what to do is the front end's to say (the binary's advice.rs).
    assert_eq!(err.to_string(), "the relay refused the room password");
    server.await??;
    Ok(())
}

#[tokio::test]
async fn acks_match_in_order_and_a_reconnect_resends_the_same_bytes_once() -> TestResult {
    let relay = fake_relay().await?;
    let owner = Identity::generate();
    let cfg = config(&relay, RelayPin::default());
    let (client, admitted) = tokio::join!(start(cfg), relay.admit(&owner));
    let (mut client, (mut conn, _)) = (client?, admitted?);
    let one = client.handle.send(ContentKind::Text, "one").await?;
    let two = client.handle.send(ContentKind::Text, "two").await?;
    let first = read_sends(&mut conn, 2).await?;
    let counter = |env: &[u8]| chatroom_session::crypto::EnvelopeHeader::parse(env).map(|h| h.counter);
    assert!(counter(&first[0])? < counter(&first[1])?);
    conn.send(&[RelayMessage::Ack { counter: counter(&first[0])?, seq: 1 }]).await?;
    assert_eq!(
        next_matching(&mut client.events, |e| matches!(e, Event::Sent { .. }).then(|| format!("{e:?}")))
            .await?,
        format!("{:?}", Event::Sent { id: one, seq: 1 })
    );
    drop(conn);

    // The second envelope was never acknowledged: after the reconnect it arrives again, byte
    // for byte, and nothing else is resent.
    let (mut conn, join) = relay.admit(&owner).await?;
    assert_eq!(join.history_after, 1, "the acknowledged seq moved the cursor");
    let resent = read_sends(&mut conn, 1).await?;
    assert_eq!(resent, vec![first[1].clone()]);
    conn.send(&[RelayMessage::Ack { counter: counter(&first[1])?, seq: 2 }]).await?;
    let sent = next_matching(&mut client.events, |e| match e {
        Event::Sent { id, seq } => Some((*id, *seq)),
        _ => None,
    })
    .await?;
    assert_eq!(sent, (two, 2));
    match timeout(LIMIT, client.handle.close(Duration::from_secs(5))).await? {
        SessionEnd::Closed { unacknowledged: 0 } => {}
        other => panic!("{other:?}"),
    }
    assert!(timeout(Duration::from_millis(300), conn.recv()).await.map(|r| r.is_err()).unwrap_or(true));
    Ok(())
}

#[tokio::test]
async fn duplicates_are_dropped_replays_rejected_and_errors_matched_to_sends() -> TestResult {
    let relay = fake_relay().await?;
    let owner = Identity::generate();
    let relay_key = *relay.public_key();
    let cfg = config(&relay, RelayPin::default());
    let (client, admitted) = tokio::join!(start(cfg), relay.admit(&owner));
    let (mut client, (mut conn, _)) = (client?, admitted?);
    let keys = client.keys.cached(&relay_key).ok_or("keys derived")?;
    let room = RoomName::new("general")?;
    let bob = Identity::generate();
    let content = |body: &str| Content {
        timestamp_ms: 1,
        kind: ContentKind::Text,
        nick: Nick::new("bob").unwrap(),
        body: body.into(),
    };
    let e1 = seal(&keys.message_key, &bob, &room, 100, &content("first"))?;
    let e2 = seal(&keys.message_key, &bob, &room, 101, &content("second"))?;
    let deliver =
        |seq, envelope: &Vec<u8>| RelayMessage::Deliver { seq, history: false, envelope: envelope.clone() };
    conn.send(&[deliver(1, &e1), deliver(1, &e1), deliver(2, &e1), deliver(3, &e2)]).await?;
    conn.send(&[RelayMessage::Ping { token: 77 }]).await?;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = timeout(LIMIT, client.events.recv()).await?.ok_or("ended")?;
        match e {
            Event::Message(m) => seen.push(format!("message {} {}", m.seq, m.body)),
            Event::Rejected(Rejected::Replayed { seq, counter, highest, .. }) => {
                seen.push(format!("replay {seq} {counter} {highest}"))
            }
            Event::Rejected(other) => seen.push(format!("{other:?}")),
            _ => {}
        }
    }
    assert_eq!(seen, ["message 1 first", "replay 2 100 100", "message 3 second"]);
    let pong = timeout(LIMIT, conn.recv()).await??;
    assert_eq!(pong, vec![ClientMessage::Pong { token: 77 }]);

    let id = client.handle.send(ContentKind::Text, "too fast").await?;
    let sent = read_sends(&mut conn, 1).await?;
    let counter = chatroom_session::crypto::EnvelopeHeader::parse(&sent[0])?.counter;
    conn.send(&[
        RelayMessage::Error { code: ErrorCode::NotOwner, detail: "only the owner may kick".into() },
        RelayMessage::SendError { counter, code: ErrorCode::RateLimited, detail: "rate limit".into() },
    ])
    .await?;
    let failed = next_matching(&mut client.events, |e| match e {
        Event::SendFailed { id, code, .. } => Some((*id, *code)),
        Event::CommandFailed { code, .. } => Some((u64::MAX, *code)),
        _ => None,
    })
    .await?;
    assert_eq!(failed, (u64::MAX, ErrorCode::NotOwner), "an Error answers a command, never a send");
    let failed = next_matching(&mut client.events, |e| match e {
        Event::SendFailed { id, code, .. } => Some((*id, *code)),
        _ => None,
    })
    .await?;
    assert_eq!(failed, (id, ErrorCode::RateLimited));
    Ok(())
}

#[tokio::test]
async fn a_send_the_relay_failed_to_store_is_reported_and_later_acks_still_match() -> TestResult {
    let relay = fake_relay().await?;
    let owner = Identity::generate();
    let cfg = config(&relay, RelayPin::default());
    let (client, admitted) = tokio::join!(start(cfg), relay.admit(&owner));
    let (mut client, (mut conn, _)) = (client?, admitted?);
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(client.handle.send(ContentKind::Text, text).await?);
    }
    let sent = read_sends(&mut conn, 3).await?;
    let counter = |env: &[u8]| chatroom_session::crypto::EnvelopeHeader::parse(env).map(|h| h.counter);
    conn.send(&[
        RelayMessage::Ack { counter: counter(&sent[0])?, seq: 1 },
        // An answer for a counter nothing in flight has is ignored and consumes nothing.
        RelayMessage::Ack { counter: 7, seq: 2 },
        RelayMessage::SendError {
            counter: counter(&sent[1])?,
            code: ErrorCode::Internal,
            detail: "the relay could not store this; try again later".into(),
        },
        RelayMessage::Ack { counter: counter(&sent[2])?, seq: 3 },
    ])
    .await?;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match timeout(LIMIT, client.events.recv()).await?.ok_or("ended")? {
            Event::Sent { id, seq } => seen.push(format!("sent {id} {seq}")),
            Event::SendFailed { id, code, .. } => seen.push(format!("failed {id} {code:?}")),
            Event::Warning(w) => seen.push(format!("warning {}", w.contains("counter 7"))),
            _ => {}
        }
    }
    let expected = [
        format!("sent {} 1", ids[0]),
        "warning true".to_owned(),
        format!("failed {} Internal", ids[1]),
        format!("sent {} 3", ids[2]),
    ];
    assert_eq!(seen, expected);
    match timeout(LIMIT, client.handle.close(Duration::from_secs(5))).await? {
        SessionEnd::Closed { unacknowledged: 0 } => {}
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_idle_connection_is_pinged_and_a_silent_one_replaced() -> TestResult {
    let relay = fake_relay().await?;
    let owner = Identity::generate();
    let mut cfg = config(&relay, RelayPin::default());
    cfg.limits.ping_after = Duration::from_millis(100);
    cfg.limits.dead_after = Duration::from_millis(600);
    let (client, admitted) = tokio::join!(start(cfg), relay.admit(&owner));
    let (mut client, (mut conn, _)) = (client?, admitted?);
    // Nothing to say: the client pings; the relay stays silent and the client gives up on
    // the connection and joins again on a new one.
    let ping = timeout(LIMIT, conn.recv()).await??;
    assert!(matches!(ping.as_slice(), [ClientMessage::Ping { .. }]), "{ping:?}");
    let reason = next_matching(&mut client.events, |e| match e {
        Event::State(chatroom_session::session::ConnState::Reconnecting { reason, .. }) => {
            Some(reason.clone())
        }
        _ => None,
    })
    .await?;
    assert!(reason.contains("no traffic from the relay"), "{reason}");
    let (_conn2, join) = timeout(LIMIT, relay.admit(&owner)).await??;
    assert_eq!(join.nick.as_str(), "alice");
    next_matching(&mut client.events, |e| matches!(e, Event::Joined { rejoin: true, .. }).then_some(()))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_first_join_lost_while_deriving_the_key_is_tried_once_more() -> TestResult {
    let relay = fake_relay().await?;
    let owner = Identity::generate();
    let cfg = config(&relay, RelayPin::default());
    let server = async {
        // The relay gives up on the first connection (as after its join deadline) ...
        let mut first = relay.accept().await?;
        first.recv().await?;
        first
            .send(&[RelayMessage::Goodbye { code: ErrorCode::HandshakeTimeout, detail: "too slow".into() }])
            .await?;
        drop(first);
        // ... and admits the second, which no longer needs to derive anything.
        relay.admit(&owner).await
    };
    let (client, admitted) = tokio::join!(start(cfg), server);
    let (mut client, _) = (client?, admitted?);
    let derivations = std::iter::from_fn(|| client.events.try_recv().ok())
        .filter(|e| matches!(e, Event::KeyDerivation(chatroom_session::session::KdfProgress::Started(_))))
        .count();
    assert_eq!(derivations, 1);
    Ok(())
}

#[tokio::test]
async fn a_relay_given_several_addresses_skips_a_dead_one_and_moves_on_when_its_node_goes() -> TestResult {
    // Two nodes of one relay (one key) and an address where nothing listens.
    let key = StaticKeypair::generate();
    let node1 = FakeRelay::bind(StaticKeypair::from_private(key.private())).await?;
    let node2 = FakeRelay::bind(StaticKeypair::from_private(key.private())).await?;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let list = format!("{dead},{},{}", node1.addr(), node2.addr());
    let dir = tempfile::tempdir()?;
    let known = KnownRelays::new(dir.path().join("known_relays"));
    let pin = RelayPin {
        expected: Some(*key.public()),
        expected_source: "the invite".into(),
        known: Some(known.clone()),
    };
    let cfg = SessionConfig { relay: list.parse()?, ..config(&node1, pin) };
    let owner = Identity::generate();
    let (client, admitted) = tokio::join!(start(cfg), node1.admit(&owner));
    let (mut client, (conn1, _)) = (client?, admitted?);
    let mut tried = Vec::new();
    let mut warned = Vec::new();
    while let Ok(Some(e)) = timeout(Duration::from_millis(1), client.events.recv()).await {
        match e {
            Event::State(chatroom_session::session::ConnState::Connecting { addr, .. }) => tried.push(addr),
            Event::Warning(w) => warned.push(w),
            _ => {}
        }
    }
    assert_eq!(tried, [dead.to_string(), node1.addr().to_string()], "the dead address first, then the next");
    assert!(
        warned.iter().any(|w| w.contains(&format!("trying the next address, {}", node1.addr()))),
        "{warned:?}"
    );

    // Node 1 goes away: the session moves on to node 2 by itself.
    drop(conn1);
    drop(node1);
    let (_conn2, join) = timeout(LIMIT, node2.admit(&owner)).await??;
    assert_eq!(join.room.as_str(), "general");
    let reached = next_matching(&mut client.events, |e| match e {
        Event::Joined { rejoin: true, addr, .. } => Some(addr.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(reached, node2.addr().to_string());
    // Each address reached is pinned to the invite's key; the dead one is not.
    let pinned: Vec<String> = known.list()?.into_iter().map(|(addr, _)| addr).collect();
    assert!(pinned.contains(&node2.addr().to_string()) && !pinned.contains(&dead.to_string()), "{pinned:?}");
    Ok(())
}
