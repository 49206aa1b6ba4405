//! The relay in-process on 127.0.0.1 with a real SQLite database in a temporary directory,
//! driven by real clients over TCP.

mod common;

use std::time::Duration;

use chatroom_crypto::{open, ClientMessage, ErrorCode, PresenceEvent, RelayMessage};
use common::*;

fn nicks(joined: &Joined) -> Vec<String> {
    joined.members.iter().map(|m| m.nick.as_str().to_owned()).collect()
}

#[tokio::test]
async fn members_join_and_every_envelope_reaches_every_other_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("general");
    let (mut alice, mut bob, mut carol) = (Person::new("alice"), Person::new("bob"), Person::new("carol"));

    let (mut a, joined) = member(&relay, &alice, &room, true).await?;
    assert!(joined.created);
    assert_eq!(joined.owner, alice.identity.public().0);
    assert_eq!((joined.latest_seq, joined.history_end), (0, 0));
    assert_eq!(nicks(&joined), ["alice"]);
    assert_eq!(a.relay_key, relay.key);

    let (mut b, joined) = member(&relay, &bob, &room, false).await?;
    assert!(!joined.created);
    assert_eq!(joined.owner, alice.identity.public().0, "the creator owns the room");
    assert_eq!(nicks(&joined), ["alice", "bob"]);
    match a.recv().await? {
        RelayMessage::Presence { event: PresenceEvent::Joined, nick, identity } => {
            assert_eq!(nick.as_str(), "bob");
            assert_eq!(identity, bob.identity.public());
        }
        other => panic!("expected bob's presence, got {other:?}"),
    }
    let (mut c, joined) = member(&relay, &carol, &room, false).await?;
    assert_eq!(nicks(&joined), ["alice", "bob", "carol"]);

    let (_, envelope) = alice.seal(&room, "hello from alice");
    assert_eq!(a.publish_ok(envelope.clone()).await?, 1);
    for conn in [&mut b, &mut c] {
        let (seq, got) = conn.delivery().await?;
        assert_eq!((seq, &got), (1, &envelope), "delivered byte for byte");
        let opened = open(&room.keys.message_key, &room.name, &got)?;
        assert_eq!(opened.content.body, "hello from alice");
    }
    let (counter, envelope) = carol.seal(&room, "and carol");
    match c.publish(envelope).await? {
        RelayMessage::Ack { counter: acked, seq } => assert_eq!((acked, seq), (counter, 2)),
        other => panic!("expected Ack, got {other:?}"),
    }
    assert_eq!(a.delivery().await?.0, 2);
    assert_eq!(b.delivery().await?.0, 2);
    let (_, envelope) = bob.seal(&room, "bob");
    assert_eq!(b.publish_ok(envelope).await?, 3);
    assert_eq!(a.delivery().await?.0, 3);
    assert_eq!(c.delivery().await?.0, 3);
    // Nobody gets its own envelope live: the Ack stands for it. The relay queues a live
    // delivery to every member before it acknowledges the envelope to its sender, and queues
    // the answer to a Ping behind whatever that connection already has queued: alice holds
    // the Ack of her envelope, so a delivery of it to her would come before her Pong.
    let before = a.until_pong(1).await?;
    assert_eq!(delivered(&before), Vec::<u64>::new());

    c.send(&[ClientMessage::Who]).await?;
    match c.next_matching(|m| matches!(m, RelayMessage::Members { .. })).await? {
        RelayMessage::Members { more, members } => {
            assert!(!more);
            assert_eq!(members.len(), 3);
        }
        _ => unreachable!(),
    }
    c.send(&[ClientMessage::Ping { token: 77 }]).await?;
    assert!(matches!(
        c.next_matching(|m| matches!(m, RelayMessage::Pong { .. })).await?,
        RelayMessage::Pong { token: 77 }
    ));

    drop(b);
    for conn in [&mut a, &mut c] {
        match conn.next_matching(|m| matches!(m, RelayMessage::Presence { .. })).await? {
            RelayMessage::Presence { event: PresenceEvent::Left, nick, .. } => {
                assert_eq!(nick.as_str(), "bob")
            }
            other => panic!("expected bob to leave, got {other:?}"),
        }
    }
    relay.stop().await
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_repeated_failures_are_throttled() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.ip_failures_slow = 2;
        c.ip_failures_lockout = 3;
        c.room_failures_slow = 100;
        c.room_failures_lockout = 5;
        c.failure_delay = Duration::from_millis(50);
    })
    .await?;
    let room = TestRoom::new("private");
    let owner = Person::new("owner");
    let (_a, _) = member(&relay, &owner, &room, true).await?;
    let mut wrong = TestRoom::new("private");
    let guesser = Person::new("guesser");

    for _ in 0..3 {
        let mut conn = Conn::connect(relay.addr).await?;
        let refused = conn.join(&guesser, &wrong, false, 0).await?.expect_err("wrong password");
        assert_eq!(refused.0, ErrorCode::WrongPassword, "{}", refused.1);
        conn.closed().await?;
    }
    // Locked out from 127.0.0.1 now, even with the right password.
    let mut conn = Conn::connect(relay.addr).await?;
    let refused = conn.join(&guesser, &room, false, 0).await?.expect_err("locked out");
    assert_eq!(refused.0, ErrorCode::TooManyAttempts);
    assert!(refused.1.contains("try again"), "{}", refused.1);

    // Another address may still join, until the room itself has seen too many failures.
    let other = [127, 0, 0, 2].into();
    let mut conn = Conn::connect_from(relay.addr, other).await?;
    assert!(conn.join(&Person::new("friend"), &room, false, 0).await?.is_ok());
    for ip in [[127, 0, 0, 3], [127, 0, 0, 4]] {
        let mut conn = Conn::connect_from(relay.addr, ip.into()).await?;
        assert_eq!(
            conn.join(&guesser, &wrong, false, 0).await?.expect_err("wrong").0,
            ErrorCode::WrongPassword
        );
    }
    let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 5].into()).await?;
    let refused = conn.join(&Person::new("late"), &room, false, 0).await?.expect_err("room locked");
    assert_eq!(refused.0, ErrorCode::TooManyAttempts);
    wrong = TestRoom::new("unrelated");
    let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 5].into()).await?;
    assert!(conn.join(&Person::new("late"), &wrong, true, 0).await?.is_ok(), "other rooms are unaffected");
    relay.stop().await
}

#[tokio::test]
async fn a_nickname_bound_to_another_identity_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("nicks");
    let alice = Person::new("alice");
    let (a, _) = member(&relay, &alice, &room, true).await?;
    drop(a);
    for impostor in ["alice", "ALICE"] {
        let mut conn = Conn::connect(relay.addr).await?;
        let refused = conn.join(&Person::new(impostor), &room, false, 0).await?.expect_err("nick taken");
        assert_eq!(refused.0, ErrorCode::NickTaken, "{}", refused.1);
    }
    // Without the password nobody learns that the nickname is bound: the password is checked
    // first.
    let mut conn = Conn::connect(relay.addr).await?;
    let wrong_password = TestRoom::new("nicks");
    let refused =
        conn.join(&Person::new("alice"), &wrong_password, false, 0).await?.expect_err("wrong password");
    assert_eq!(refused.0, ErrorCode::WrongPassword, "{}", refused.1);
    // The owner of the nickname gets it back, in any case.
    let mut same = Person::new("Alice");
    same.identity = chatroom_crypto::Identity::from_seed(&alice.identity.seed());
    let mut conn = Conn::connect(relay.addr).await?;
    assert!(conn.join(&same, &room, false, 0).await?.is_ok());
    relay.stop().await
}

#[tokio::test]
async fn joining_a_missing_room_without_create_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let mut conn = Conn::connect(relay.addr).await?;
    let refused =
        conn.join(&Person::new("alice"), &TestRoom::new("nowhere"), false, 0).await?.expect_err("no room");
    assert_eq!(refused.0, ErrorCode::NoSuchRoom);
    conn.closed().await?;
    relay.stop().await
}

#[tokio::test]
async fn history_after_a_reconnect_has_no_gap_and_no_duplicate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.rate_burst = 100).await?;
    let room = TestRoom::new("history");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    let mut sent = Vec::new();
    for i in 0..5 {
        let (_, envelope) = alice.seal(&room, &format!("m{i}"));
        a.publish_ok(envelope.clone()).await?;
        sent.push(envelope);
    }
    let mut last_seen = 0;
    for _ in 0..5 {
        last_seen = b.delivery().await?.0;
    }
    assert_eq!(last_seen, 5);
    drop(b);
    for i in 5..10 {
        let (_, envelope) = alice.seal(&room, &format!("m{i}"));
        a.publish_ok(envelope.clone()).await?;
        sent.push(envelope);
    }
    let mut b = Conn::connect(relay.addr).await?;
    let joined = b.join(&bob, &room, false, last_seen).await?.expect("rejoin");
    assert_eq!(joined.history.iter().map(|h| h.0).collect::<Vec<_>>(), (6..=10).collect::<Vec<_>>());
    assert_eq!(joined.history.iter().map(|h| h.1.clone()).collect::<Vec<_>>(), sent[5..].to_vec());
    assert_eq!((joined.latest_seq, joined.oldest_seq, joined.history_end), (10, 1, 10));
    let (_, envelope) = alice.seal(&room, "live");
    a.publish_ok(envelope).await?;
    assert_eq!(b.delivery().await?.0, 11, "live traffic follows history directly");

    // A full replay includes the member's own envelopes too.
    let mut again = Conn::connect(relay.addr).await?;
    let joined = again.join(&alice, &room, false, 0).await?.expect("alice again");
    assert_eq!(joined.history.len(), 11);
    relay.stop().await
}

#[tokio::test]
async fn a_join_during_a_stream_of_messages_sees_each_seq_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.rate_burst = 1000).await?;
    let room = TestRoom::new("busy");
    let mut alice = Person::new("alice");
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let total = 60u64;
    let mut envelopes: Vec<Vec<u8>> = (0..total).map(|i| alice.seal(&room, &format!("{i}")).1).collect();
    // Bob joins once the first 30 are stored (his history), while the next 20 are on their
    // way (each in history or live, never both), and before the last 10 (live).
    let last = envelopes.split_off(50);
    let middle = envelopes.split_off(30);
    let (stored, bob_may_join) = tokio::sync::oneshot::channel::<()>();
    let (bob_joined, bob_is_in) = tokio::sync::oneshot::channel::<()>();
    let sending = async {
        let mut acked = Vec::new();
        for envelope in envelopes {
            a.send(&[ClientMessage::Send { envelope }]).await?;
        }
        while acked.len() < 30 {
            if let RelayMessage::Ack { seq, .. } = a.answer().await? {
                acked.push(seq);
            }
        }
        let _ = stored.send(());
        for envelope in middle {
            a.send(&[ClientMessage::Send { envelope }]).await?;
        }
        bob_is_in.await?;
        for envelope in last {
            a.send(&[ClientMessage::Send { envelope }]).await?;
        }
        while acked.len() < total as usize {
            if let RelayMessage::Ack { seq, .. } = a.answer().await? {
                acked.push(seq);
            }
        }
        Res::Ok(acked)
    };
    let joining = async {
        bob_may_join.await?;
        let bob = Person::new("bob");
        let mut b = Conn::connect(relay.addr).await?;
        let joined = b.join(&bob, &room, false, 0).await?.expect("join");
        let _ = bob_joined.send(());
        let mut seen: Vec<u64> = joined.history.iter().map(|h| h.0).collect();
        assert!(seen.len() >= 30, "the first 30 were stored before bob joined: {seen:?}");
        assert_eq!(joined.history_end, seen.last().copied().unwrap_or(0));
        let from_history = seen.len();
        while seen.len() < total as usize {
            seen.push(b.delivery().await?.0);
        }
        assert!(from_history <= 50, "the last 10 were sent after bob joined: {from_history} in history");
        Res::Ok(seen)
    };
    let (acked, seen) = tokio::join!(sending, joining);
    assert_eq!(seen?, (1..=total).collect::<Vec<_>>(), "every seq once, in order");
    assert_eq!(acked?, (1..=total).collect::<Vec<_>>(), "answers come in order");
    relay.stop().await
}

#[tokio::test]
async fn a_resent_envelope_gets_the_same_seq_and_is_delivered_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("resend");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    let (first_counter, first) = alice.seal(&room, "once");
    let (_, second) = alice.seal(&room, "twice");
    assert_eq!(a.publish_ok(first.clone()).await?, 1);
    assert_eq!(a.publish_ok(second).await?, 2);
    assert_eq!(a.publish_ok(first.clone()).await?, 1, "same counter: same seq");
    // After a reconnect too.
    drop(a);
    let (mut a, _) = member(&relay, &alice, &room, false).await?;
    assert_eq!(a.publish_ok(first).await?, 1);
    // The relay knows an envelope by its counter alone: other content under a stored counter
    // is acknowledged with the stored seq and dropped (docs/PROTOCOL.md section 11).
    let next = alice.counter;
    alice.counter = first_counter - 1;
    let (_, other) = alice.seal(&room, "other content, same counter");
    alice.counter = next;
    assert_eq!(a.publish_ok(other).await?, 1);
    assert_eq!(b.delivery().await?.0, 1);
    assert_eq!(b.delivery().await?.0, 2);
    // Alice holds the Acks of all three resends, and a delivery to bob is queued before the
    // Ack to its sender; bob's Pong is queued after anything already queued for him, so a
    // second delivery would come before it.
    let before = b.until_pong(1).await?;
    assert_eq!(delivered(&before), Vec::<u64>::new(), "no second delivery");

    // An older counter that was never stored is refused.
    alice.counter = 5;
    let (stale_counter, stale) = alice.seal(&room, "stale");
    match a.publish(stale).await? {
        RelayMessage::SendError { counter, code: ErrorCode::BadEnvelope, detail } => {
            assert_eq!(counter, stale_counter, "the refusal names the envelope's counter");
            assert!(detail.contains("counter"), "{detail}")
        }
        other => panic!("expected BadEnvelope, got {other:?}"),
    }
    relay.stop().await
}

#[tokio::test]
async fn an_envelope_naming_another_sender_is_refused_and_the_connection_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("forgery");
    let (mut alice, mut mallory) = (Person::new("alice"), Person::new("mallory"));
    let (_a, _) = member(&relay, &alice, &room, true).await?;
    let (mut m, _) = member(&relay, &mallory, &room, false).await?;
    let (forged_counter, forged) = alice.seal(&room, "not really alice");
    match m.publish(forged).await? {
        RelayMessage::SendError { counter, code: ErrorCode::BadEnvelope, .. } => {
            assert_eq!(counter, forged_counter)
        }
        other => panic!("expected BadEnvelope, got {other:?}"),
    }
    let (_, own) = mallory.seal(&room, "mine");
    assert_eq!(m.publish_ok(own).await?, 1);
    relay.stop().await
}

#[tokio::test]
async fn sending_too_fast_is_answered_with_rate_limited_and_the_connection_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.rate_burst = 3;
        c.rate_per_sec = 1;
    })
    .await?;
    let room = TestRoom::new("flood");
    let mut alice = Person::new("alice");
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let sealed: Vec<(u64, Vec<u8>)> = (0..5).map(|i| alice.seal(&room, &format!("{i}"))).collect();
    let batch: Vec<ClientMessage> =
        sealed.iter().map(|(_, envelope)| ClientMessage::Send { envelope: envelope.clone() }).collect();
    a.send(&batch).await?;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(a.answer().await?);
    }
    assert!(answers[..3].iter().all(|m| matches!(m, RelayMessage::Ack { .. })), "{answers:?}");
    for (answer, (sent, _)) in answers[3..].iter().zip(&sealed[3..]) {
        match answer {
            RelayMessage::SendError { counter, code: ErrorCode::RateLimited, detail } => {
                assert_eq!(counter, sent);
                assert!(detail.contains("1/s") && detail.contains("burst 3"), "{detail}")
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }
    // Reconnecting does not buy a fresh burst: the allowance belongs to the identity.
    drop(a);
    let (mut a, _) = member(&relay, &alice, &room, false).await?;
    let (_, envelope) = alice.seal(&room, "again");
    assert!(matches!(
        a.publish(envelope).await?,
        RelayMessage::SendError { code: ErrorCode::RateLimited, .. }
    ));
    // The allowance refills by the clock: advance tokio's (the relay runs on this runtime)
    // by more than the 1 s one token takes, rather than wait for it.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(1100)).await;
    tokio::time::resume();
    let (_, envelope) = alice.seal(&room, "later");
    assert_eq!(a.publish_ok(envelope).await?, 4, "the connection survives and refills");
    relay.stop().await
}

#[tokio::test]
async fn the_owner_kicks_and_bans_others_may_not_and_a_ban_survives_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("moderated");
    let (alice, bob, carol) = (Person::new("alice"), Person::new("bob"), Person::new("carol"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    let (mut c, _) = member(&relay, &carol, &room, false).await?;
    let bob_nick = bob.nick.clone();

    c.send(&[ClientMessage::Kick { nick: bob_nick.clone() }]).await?;
    assert_eq!(c.error().await?.0, ErrorCode::NotOwner);
    c.send(&[ClientMessage::Ban { nick: bob_nick.clone() }]).await?;
    assert_eq!(c.error().await?.0, ErrorCode::NotOwner);
    a.send(&[ClientMessage::Kick { nick: chatroom_crypto::Nick::new("nobody")? }]).await?;
    assert_eq!(a.error().await?.0, ErrorCode::NoSuchMember);
    a.send(&[ClientMessage::Ban { nick: alice.nick.clone() }]).await?;
    assert_eq!(a.error().await?.0, ErrorCode::OwnerProtected, "the owner cannot ban itself");

    a.send(&[ClientMessage::Kick { nick: bob_nick.clone() }]).await?;
    assert_eq!(b.goodbye().await?.0, ErrorCode::Kicked);
    b.closed().await?;
    for conn in [&mut a, &mut c] {
        // Joined presences from earlier joins come first.
        loop {
            let (event, nick) = conn.presence().await?;
            if event != PresenceEvent::Joined {
                assert_eq!((event, nick.as_str()), (PresenceEvent::Kicked, "bob"));
                break;
            }
        }
    }
    // A kick is not a ban.
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    a.send(&[ClientMessage::Ban { nick: bob_nick.clone() }]).await?;
    assert_eq!(b.goodbye().await?.0, ErrorCode::Banned);
    loop {
        let (event, nick) = c.presence().await?;
        if event == PresenceEvent::Banned {
            assert_eq!(nick, "bob");
            break;
        }
    }
    let mut again = Conn::connect(relay.addr).await?;
    assert_eq!(again.join(&bob, &room, false, 0).await?.expect_err("banned").0, ErrorCode::Banned);
    let mut renamed = Person::new("robert");
    renamed.identity = chatroom_crypto::Identity::from_seed(&bob.identity.seed());
    let mut again = Conn::connect(relay.addr).await?;
    assert_eq!(
        again.join(&renamed, &room, false, 0).await?.expect_err("banned").0,
        ErrorCode::Banned,
        "a ban is on the identity, not the nickname"
    );
    drop((a, c));
    relay.stop().await?;

    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let mut again = Conn::connect(relay.addr).await?;
    assert_eq!(again.join(&bob, &room, false, 0).await?.expect_err("still banned").0, ErrorCode::Banned);
    let (mut a, _) = member(&relay, &alice, &room, false).await?;
    a.send(&[ClientMessage::Unban { nick: bob_nick.clone() }]).await?;
    assert_eq!(a.presence().await?, (PresenceEvent::Unbanned, "bob".to_owned()));
    let (_b, _) = member(&relay, &bob, &room, false).await?;
    a.send(&[ClientMessage::Unban { nick: bob_nick }]).await?;
    assert_eq!(a.error().await?.0, ErrorCode::NoSuchMember, "not banned any more");
    relay.stop().await
}

#[tokio::test]
async fn a_second_connection_of_the_same_identity_replaces_the_first_and_is_announced() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("replace");
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b1, _) = member(&relay, &bob, &room, false).await?;
    assert_eq!(a.presence().await?, (PresenceEvent::Joined, "bob".to_owned()));
    // The same nickname in another case is the same member: it replaces the first connection,
    // and the others learn the spelling it now uses.
    let mut shouting = Person::new("BOB");
    shouting.identity = chatroom_crypto::Identity::from_seed(&bob.identity.seed());
    let (_b2, joined) = member(&relay, &shouting, &room, false).await?;
    let listed: Vec<&str> = joined.members.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(listed, ["alice", "BOB"]);
    let (code, detail) = b1.goodbye().await?;
    assert_eq!(code, ErrorCode::AlreadyConnected);
    assert!(detail.contains("replaced"), "{detail}");
    assert_eq!(a.presence().await?, (PresenceEvent::Joined, "BOB".to_owned()), "no Left, one Joined");
    a.send(&[ClientMessage::Ping { token: 3 }]).await?;
    assert!(matches!(a.recv().await?, RelayMessage::Pong { token: 3 }), "nothing else in between");

    // Another nickname for the same identity is refused, and the member stays connected.
    let mut renamed = Person::new("robert");
    renamed.identity = chatroom_crypto::Identity::from_seed(&bob.identity.seed());
    let mut again = Conn::connect(relay.addr).await?;
    let (code, detail) = again.join(&renamed, &room, false, 0).await?.expect_err("one nickname per identity");
    assert_eq!(code, ErrorCode::NickBound);
    assert!(detail.contains("known in this room as bob"), "{detail}");
    a.send(&[ClientMessage::Who]).await?;
    match a.next_matching(|m| matches!(m, RelayMessage::Members { .. })).await? {
        RelayMessage::Members { members, .. } => {
            let listed: Vec<&str> = members.iter().map(|m| m.nick.as_str()).collect();
            assert_eq!(listed, ["alice", "BOB"], "the refused join changed nothing");
        }
        _ => unreachable!(),
    }
    relay.stop().await
}

#[tokio::test]
async fn a_failed_store_is_answered_with_the_envelopes_counter_and_later_sends_still_match() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A real SQLite failure: a trigger refuses to store long envelopes. The relay holds its
    // database exclusively, so the trigger goes in between two runs.
    TestRelay::start(dir.path(), |_| {}).await?.stop().await?;
    let db = rusqlite::Connection::open(dir.path().join(chatroom_relay::DB_FILE))?;
    db.execute_batch(
        "CREATE TRIGGER refuse_long BEFORE INSERT ON history WHEN length(NEW.envelope) > 1000 \
         BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END;",
    )?;
    drop(db);
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("failing");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    let sealed =
        [alice.seal(&room, "first"), alice.seal(&room, &"x".repeat(1200)), alice.seal(&room, "third")];
    let batch: Vec<ClientMessage> =
        sealed.iter().map(|(_, envelope)| ClientMessage::Send { envelope: envelope.clone() }).collect();
    a.send(&batch).await?;
    let answers = [a.answer().await?, a.answer().await?, a.answer().await?];
    assert_eq!(answers[0], RelayMessage::Ack { counter: sealed[0].0, seq: 1 });
    match &answers[1] {
        RelayMessage::SendError { counter, code: ErrorCode::Internal, detail } => {
            assert_eq!(*counter, sealed[1].0, "the failure names the envelope it answers");
            assert!(detail.contains("try again later"), "{detail}");
        }
        other => panic!("expected SendError(Internal), got {other:?}"),
    }
    let RelayMessage::Ack { counter, seq: third } = answers[2] else { panic!("{:?}", answers[2]) };
    assert_eq!(counter, sealed[2].0);
    assert_eq!(b.delivery().await?.0, 1);
    assert_eq!(b.delivery().await?.0, third, "the failed envelope is delivered to nobody");
    relay.stop().await
}

#[tokio::test]
async fn a_member_that_never_reads_is_disconnected_while_the_others_keep_receiving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.outbound_queue_bytes = 65_536;
        c.rate_burst = 10_000;
    })
    .await?;
    let room = TestRoom::new("slow");
    let (mut alice, bob, carol) = (Person::new("alice"), Person::new("bob"), Person::new("carol"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    // Carol joins, then never reads again.
    let mut c = Conn::connect_small_buffer(relay.addr).await?;
    c.join(&carol, &room, false, 0).await?.expect("carol joins");
    assert_eq!(a.presence().await?, (PresenceEvent::Joined, "bob".to_owned()));
    assert_eq!(a.presence().await?, (PresenceEvent::Joined, "carol".to_owned()));

    // Carol's socket buffers (the relay's send buffer may grow to several MiB) fill first;
    // then her queue of 32 items; then she is disconnected.
    let body = "x".repeat(4000);
    let mut sent = 0u64;
    let mut carol_left = false;
    while !carol_left {
        assert!(sent < 4000, "carol was never disconnected");
        let batch: Vec<ClientMessage> =
            (0..10).map(|_| ClientMessage::Send { envelope: alice.seal(&room, &body).1 }).collect();
        a.send(&batch).await?;
        for _ in 0..10 {
            sent += 1;
            loop {
                match a.recv().await? {
                    RelayMessage::Ack { seq, .. } => {
                        assert_eq!(seq, sent);
                        break;
                    }
                    RelayMessage::Presence { event: PresenceEvent::Left, nick, .. } => {
                        assert_eq!(nick.as_str(), "carol");
                        carol_left = true;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        for i in sent - 9..=sent {
            assert_eq!(b.delivery().await?.0, i, "bob keeps receiving everything");
        }
    }
    assert_eq!(b.presence().await?, (PresenceEvent::Joined, "carol".to_owned()));
    assert_eq!(b.presence().await?, (PresenceEvent::Left, "carol".to_owned()));
    let (_, envelope) = alice.seal(&room, "after carol");
    assert_eq!(a.publish_ok(envelope).await?, sent + 1);
    assert_eq!(b.delivery().await?.0, sent + 1);
    let total = sent + 1;
    // Carol finds her connection closed, reconnects and catches up from history.
    c.closed().await?;
    let mut c = Conn::connect(relay.addr).await?;
    let joined = c.join(&carol, &room, false, 0).await?.expect("rejoin");
    assert_eq!(joined.history.len() as u64, total);
    assert_eq!(joined.history.last().map(|h| h.0), Some(total));
    relay.stop().await
}

#[tokio::test]
async fn an_idle_member_is_pinged_then_closed_and_one_that_answers_stays() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.ping_after = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await?;
    let room = TestRoom::new("idle");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    // Alice answers pings; bob stays silent.
    let answering = async {
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        let mut pings = 0;
        while tokio::time::Instant::now() < until {
            if let Ok(m) = tokio::time::timeout_at(until, a.recv()).await {
                if let RelayMessage::Ping { token } = m? {
                    pings += 1;
                    a.send(&[ClientMessage::Pong { token }]).await?;
                }
            }
        }
        Res::Ok(pings)
    };
    let silent = async {
        let mut pinged = false;
        loop {
            match b.recv().await? {
                RelayMessage::Ping { .. } => pinged = true,
                RelayMessage::Goodbye { code, .. } => return Res::Ok((pinged, code)),
                _ => {}
            }
        }
    };
    let (pings, bob_end) = tokio::join!(answering, silent);
    assert!(pings? >= 2, "alice was pinged while idle");
    assert_eq!(bob_end?, (true, ErrorCode::IdleTimeout), "bob was pinged, then closed");
    let (_, envelope) = alice.seal(&room, "still here");
    assert_eq!(a.publish_ok(envelope).await?, 1);
    relay.stop().await
}

#[tokio::test]
async fn shutdown_says_goodbye_to_every_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("closing");
    let (mut a, _) = member(&relay, &Person::new("alice"), &room, true).await?;
    let (mut b, _) = member(&relay, &Person::new("bob"), &room, false).await?;
    let stopping = relay.stop();
    let (stopped, a_end, b_end) = tokio::join!(stopping, a.goodbye(), b.goodbye());
    stopped?;
    assert_eq!(a_end?.0, ErrorCode::ShuttingDown);
    assert_eq!(b_end?.0, ErrorCode::ShuttingDown);
    Ok(())
}

#[tokio::test]
async fn new_rooms_are_limited_per_address() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.room_creations_per_ip = 2).await?;
    let alice = Person::new("alice");
    let rooms = [TestRoom::new("one"), TestRoom::new("two"), TestRoom::new("three")];
    let (_one, _) = member(&relay, &alice, &rooms[0], true).await?;
    let (_two, _) = member(&relay, &alice, &rooms[1], true).await?;
    let mut conn = Conn::connect(relay.addr).await?;
    let (code, detail) = conn.join(&alice, &rooms[2], true, 0).await?.expect_err("third room");
    assert_eq!(code, ErrorCode::TooManyAttempts);
    assert!(detail.contains("rooms created"), "{detail}");
    // Joining an existing room with the create flag set is a plain join.
    let (_again, joined) = member(&relay, &Person::new("bob"), &rooms[0], true).await?;
    assert!(!joined.created);
    // Another address may still create rooms.
    let mut conn = Conn::connect_from(relay.addr, [127, 0, 0, 2].into()).await?;
    assert!(conn.join(&alice, &rooms[2], true, 0).await?.expect("created elsewhere").created);
    relay.stop().await
}

#[tokio::test]
async fn pipelined_sends_beyond_the_in_flight_limit_are_answered_in_order() -> TestResult {
    // More sends than the relay keeps in flight per connection (64), in a few transport
    // messages, with a malformed one and a stale resend among them and a ping at the end.
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| c.rate_burst = 1000).await?;
    let room = TestRoom::new("pipelined");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    a.next_matching(|m| matches!(m, RelayMessage::Presence { .. })).await?;
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent.push(alice.seal(&room, "pipelined"));
    }
    let mut expected = Vec::new();
    for chunk in sent.chunks(50) {
        let mut messages: Vec<ClientMessage> = Vec::new();
        for (counter, envelope) in chunk {
            messages.push(ClientMessage::Send { envelope: envelope.clone() });
            expected.push(Some(*counter));
        }
        // A malformed envelope gets an error naming its counter in its place; the first
        // envelope resent is answered with its stored sequence number.
        messages.push(ClientMessage::Send { envelope: vec![1; 100] });
        expected.push(None);
        a.send(&messages).await?;
    }
    a.send(&[ClientMessage::Send { envelope: sent[0].1.clone() }, ClientMessage::Ping { token: 7 }]).await?;

    let mut next_seq = 1;
    for want in &expected {
        match (a.answer().await?, want) {
            (RelayMessage::Ack { counter, seq }, Some(want)) => {
                assert_eq!((counter, seq), (*want, next_seq), "acks in arrival order");
                next_seq += 1;
            }
            (RelayMessage::SendError { counter, code, .. }, None) => {
                assert_eq!((counter, code), (u64::from_be_bytes([1; 8]), ErrorCode::Malformed))
            }
            (other, _) => panic!("expected the answer for {want:?}, got {other:?}"),
        }
    }
    match a.answer().await? {
        RelayMessage::Ack { counter, seq } => assert_eq!((counter, seq), (sent[0].0, 1), "idempotent resend"),
        other => panic!("expected the resend's ack, got {other:?}"),
    }
    assert!(matches!(a.recv().await?, RelayMessage::Pong { token: 7 }), "the pong follows every ack");
    for want in 1..=200 {
        let (seq, envelope) = b.delivery().await?;
        assert_eq!(seq, want, "deliveries in seq order");
        assert_eq!(envelope, sent[want as usize - 1].1);
    }
    relay.stop().await
}
