//! Protocol version 2 at the relay (docs/PROTOCOL.md part II): the `chatroom/2` handshake
//! beside version 1 on the same port, joins bound to the handshake's version, and v2
//! envelopes (opaque MLS) checked by their header, stored, numbered and delivered byte for
//! byte, and the room's sealed GroupInfo slot. Real relay, real SQLite, real sockets on
//! 127.0.0.1.

mod common;

use chatroom_crypto::{
    join_verifier_v2, open, sign_v2, verify_v2, ClientMessage, ErrorCode, RelayMessage, MAX_ENVELOPE_LEN,
    MAX_MLS_LEN, MIN_ENVELOPE_V2_LEN,
};
use common::*;

fn refusal(answer: RelayMessage) -> Res<(u64, ErrorCode, String)> {
    match answer {
        RelayMessage::SendError { counter, code, detail } => Ok((counter, code, detail)),
        other => Err(format!("expected a SendError, got {other:?}").into()),
    }
}

async fn v2_member(relay: &TestRelay, person: &Person, room: &TestRoom, create: bool) -> Res<(Conn, Joined)> {
    let mut conn = Conn::connect_v2(relay.addr).await?;
    match conn.join(person, room, create, 0).await? {
        Ok(joined) => Ok((conn, joined)),
        Err((code, detail)) => Err(format!("v2 join refused: {code:?} {detail}").into()),
    }
}

/// Version 2 members exchange MLS envelopes larger than any v1 envelope, while a version 1
/// room on the same relay works as before; a reconnecting v2 member gets the history.
#[tokio::test]
async fn v2_envelopes_are_stored_numbered_and_delivered_beside_v1() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let (mls_room, v1_room) = (TestRoom::new("mls"), TestRoom::new("classic"));
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, joined) = v2_member(&relay, &alice, &mls_room, true).await?;
    assert!(joined.created);
    let (mut b, _) = v2_member(&relay, &bob, &mls_room, false).await?;

    // The largest MLS message: far beyond v1's envelope limit.
    let mls = vec![0x5a; MAX_MLS_LEN];
    let envelope = sign_v2(&alice.identity, &mls_room.name, 1, 2, &mls)?;
    assert!(envelope.len() > MAX_ENVELOPE_LEN);
    assert_eq!(a.publish_ok(envelope.clone()).await?, 1);
    let (seq, got) = b.delivery().await?;
    assert_eq!((seq, &got), (1, &envelope), "delivered byte for byte");
    let verified = verify_v2(&mls_room.name, &got)?;
    assert_eq!((verified.sender, verified.kind, verified.mls), (alice.identity.public(), 2, mls));

    let commit = sign_v2(&bob.identity, &mls_room.name, 1, 1, b"a commit")?;
    assert_eq!(b.publish_ok(commit.clone()).await?, 2);
    assert_eq!(a.delivery().await?, (2, commit.clone()));

    // Version 1 on the same port, unchanged.
    let mut carol = Person::new("carol");
    let (mut c, _) = member(&relay, &carol, &v1_room, true).await?;
    let (_, sealed) = carol.seal(&v1_room, "still v1");
    assert_eq!(c.publish_ok(sealed).await?, 1);

    // Bob reconnects: the room's log comes back in order.
    drop(b);
    let mut b = Conn::connect_v2(relay.addr).await?;
    let joined = b.join(&bob, &mls_room, false, 0).await?.map_err(|e| format!("{e:?}"))?;
    assert_eq!(joined.history, vec![(1, envelope), (2, commit)]);
    relay.stop().await
}

/// The relay checks a v2 envelope's header as it checks v1's: version, sender, counter.
#[tokio::test]
async fn v2_envelopes_are_checked_like_v1_ones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("mls");
    let (mut alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = v2_member(&relay, &alice, &room, true).await?;

    // A v1 envelope on a v2 connection.
    let (counter, v1) = alice.seal(&room, "wrong version");
    let (refused, code, detail) = refusal(a.publish(v1).await?)?;
    assert_eq!((refused, code), (counter, ErrorCode::Malformed), "{detail}");
    // Another sender's envelope.
    let forged = sign_v2(&bob.identity, &room.name, 5, 2, b"mls")?;
    let (refused, code, _) = refusal(a.publish(forged).await?)?;
    assert_eq!((refused, code), (5, ErrorCode::BadEnvelope));
    // The shortest envelope is accepted; a counter below the sender's highest is refused.
    let short = sign_v2(&alice.identity, &room.name, 7, 3, b"p")?;
    assert_eq!(short.len(), MIN_ENVELOPE_V2_LEN);
    assert_eq!(a.publish_ok(short.clone()).await?, 1);
    let older = sign_v2(&alice.identity, &room.name, 6, 2, b"older")?;
    let (refused, code, _) = refusal(a.publish(older).await?)?;
    assert_eq!((refused, code), (6, ErrorCode::BadEnvelope), "a counter below the highest");

    // A v2 member never gets anything it cannot parse as v2.
    let (mut b, joined) = v2_member(&relay, &bob, &room, false).await?;
    assert_eq!(joined.history, vec![(1, short)]);
    assert_eq!(b.until_pong(1).await?, Vec::new(), "nothing after the history");
    relay.stop().await
}

/// A join must be of the handshake's version; a wrong v2 password is refused like a v1 one.
#[tokio::test]
async fn joins_of_another_version_or_password_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let room = TestRoom::new("mls");
    let alice = Person::new("alice");
    let (_a, _) = v2_member(&relay, &alice, &room, true).await?;

    // A v1 join over a v2 handshake, and a v2 join over a v1 handshake.
    let mut mixed = Conn::connect_v2(relay.addr).await?;
    mixed.version = 1;
    let (code, detail) = mixed.join(&Person::new("bob"), &room, false, 0).await?.err().ok_or("admitted")?;
    assert_eq!(code, ErrorCode::UnsupportedVersion, "{detail}");
    assert!(detail.contains("handshake was for version 2"), "{detail}");
    let mut mixed = Conn::connect(relay.addr).await?;
    mixed.version = 2;
    let (code, _) = mixed.join(&Person::new("bob"), &room, false, 0).await?.err().ok_or("admitted")?;
    assert_eq!(code, ErrorCode::UnsupportedVersion);

    // The v2 verifier admits only the v2 join secret: another password, or the same join
    // secret over version 1, is a wrong password.
    let mut wrong = Conn::connect_v2(relay.addr).await?;
    let (code, _) =
        wrong.join(&Person::new("eve"), &TestRoom::new("mls"), false, 0).await?.err().ok_or("admitted")?;
    assert_eq!(code, ErrorCode::WrongPassword);
    let mut v1 = Conn::connect(relay.addr).await?;
    let (code, _) = v1.join(&Person::new("eve"), &room, false, 0).await?.err().ok_or("admitted")?;
    assert_eq!(code, ErrorCode::WrongPassword, "v1's verifier label differs");

    // The relay never opened anything: a v1 envelope check on v2 bytes fails.
    let env = sign_v2(&alice.identity, &room.name, 1, 2, b"mls")?;
    assert!(open(&room.keys.message_key, &room.name, &env).is_err());
    relay.stop().await
}

/// The room's GroupInfo slot: members upload it in parts, anyone admitted fetches it, the
/// relay keeps the newest by `after_seq` (never one ahead of the log) and keeps it across a
/// restart, within its size limit.
#[tokio::test]
async fn the_group_info_slot_keeps_the_newest_object_within_its_limits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let limit = |c: &mut chatroom_relay::Config| c.max_group_info_bytes = 150_000;
    let relay = TestRelay::start(dir.path(), limit).await?;
    let room = TestRoom::new("mls");
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, joined) = v2_member(&relay, &alice, &room, true).await?;
    assert_eq!(joined.group_info_seq, Some(0), "a v2 join is told none is stored");
    assert_eq!(fetch(&mut a).await?, Err(ErrorCode::NoGroupInfo));

    // Three parts, stored whole.
    let first: Vec<u8> = (0..130_000u32).map(|i| i as u8).collect();
    assert_eq!(upload(&mut a, 0, &first).await?, RelayMessage::GroupInfoStored { after_seq: 0 });
    let (mut b, joined) = v2_member(&relay, &bob, &room, false).await?;
    assert_eq!(joined.group_info_seq, Some(0));
    assert_eq!(fetch(&mut b).await?, Ok((0, first.clone())));

    // Ahead of the log, or older than the stored one: stale.
    match upload(&mut a, 1, b"ahead").await? {
        RelayMessage::Error { code: ErrorCode::StaleGroupInfo, .. } => {}
        other => panic!("expected StaleGroupInfo, got {other:?}"),
    }
    let commit = sign_v2(&alice.identity, &room.name, 1, 1, b"a commit")?;
    assert_eq!(a.publish_ok(commit).await?, 1);
    assert_eq!(upload(&mut a, 1, b"epoch 1").await?, RelayMessage::GroupInfoStored { after_seq: 1 });
    // The other members are told; the uploader only by its answer.
    let notice = b.next_matching(|m| matches!(m, RelayMessage::GroupInfoStored { .. })).await?;
    assert_eq!(notice, RelayMessage::GroupInfoStored { after_seq: 1 });
    let (_c, joined) = v2_member(&relay, &Person::new("carol"), &room, false).await?;
    assert_eq!(joined.group_info_seq, Some(1), "a later join is told the new one");
    assert!(matches!(
        upload(&mut a, 0, b"epoch 0").await?,
        RelayMessage::Error { code: ErrorCode::StaleGroupInfo, .. }
    ));
    assert_eq!(fetch(&mut b).await?, Ok((1, b"epoch 1".to_vec())));
    // No other notice: not the refused upload, not its own to the uploader.
    let notices =
        |m: Vec<RelayMessage>| m.iter().filter(|m| matches!(m, RelayMessage::GroupInfoStored { .. })).count();
    assert_eq!(notices(a.until_pong(2).await?), 0);
    assert_eq!(notices(b.until_pong(3).await?), 0);

    // Over the limit, or a part out of order: refused, and the stored object stays.
    match upload(&mut a, 1, &[1; 150_001]).await? {
        RelayMessage::Error { code: ErrorCode::GroupInfoTooLarge, detail } => {
            assert!(detail.contains("150000"), "{detail}")
        }
        other => panic!("expected GroupInfoTooLarge, got {other:?}"),
    }
    let mut items = put(1, &[2; 70_000]);
    items.reverse();
    a.send(&items[..1]).await?;
    assert!(matches!(a.error().await?, (ErrorCode::GroupInfoTooLarge, _)));
    assert_eq!(fetch(&mut b).await?, Ok((1, b"epoch 1".to_vec())));

    // Kept across a restart.
    drop((a, b));
    relay.stop().await?;
    let relay = TestRelay::start(dir.path(), limit).await?;
    let (mut b, joined) = v2_member(&relay, &bob, &room, false).await?;
    assert_eq!(joined.group_info_seq, Some(1), "loaded from storage");
    assert_eq!(fetch(&mut b).await?, Ok((1, b"epoch 1".to_vec())));
    let (_a, joined) = v2_member(&relay, &alice, &room, false).await?;
    assert_eq!(joined.group_info_seq, Some(1), "from the room in memory");

    // A version 1 connection cannot use the slot.
    let (mut c, joined) = member(&relay, &Person::new("carol"), &TestRoom::new("classic"), true).await?;
    assert_eq!(joined.group_info_seq, None, "a v1 join is not told");
    c.send(&[ClientMessage::GetGroupInfo]).await?;
    assert_eq!(c.goodbye().await?.0, ErrorCode::UnexpectedMessage);
    relay.stop().await
}

/// The owner's password rotation at the relay: `SetVerifier` replaces the join verifier for
/// every later join (kept across a restart); members already in stay; nobody else may.
#[tokio::test]
async fn the_owner_replaces_the_join_verifier() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let (old, new) = (TestRoom::new("mls"), TestRoom::new("mls"));
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = v2_member(&relay, &alice, &old, true).await?;
    let (mut b, _) = v2_member(&relay, &bob, &old, false).await?;

    let verifier = join_verifier_v2(&new.keys.join_secret).0;
    b.send(&[ClientMessage::SetVerifier { verifier }]).await?;
    assert_eq!(b.error().await?.0, ErrorCode::NotOwner);
    a.send(&[ClientMessage::SetVerifier { verifier }]).await?;
    let answers = a.until_pong(1).await?;
    assert!(!answers.iter().any(|m| matches!(m, RelayMessage::Error { .. })), "{answers:?}");

    let mut late = Conn::connect_v2(relay.addr).await?;
    let (code, _) =
        late.join(&Person::new("carol"), &old, false, 0).await?.err().ok_or("old password admitted")?;
    assert_eq!(code, ErrorCode::WrongPassword);
    let (_c, _) = v2_member(&relay, &Person::new("carol"), &new, false).await?;
    let commit = sign_v2(&bob.identity, &old.name, 1, 1, b"bob is still in")?;
    assert_eq!(b.publish_ok(commit).await?, 1);

    drop((a, b));
    relay.stop().await?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let (_d, _) = v2_member(&relay, &Person::new("dave"), &new, false).await?;
    relay.stop().await
}
