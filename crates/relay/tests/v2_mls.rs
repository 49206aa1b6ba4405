//! Protocol version 2 through the real relay with real MLS members (`chatroom_session::v2`):
//! creation, entry from the stored GroupInfo, messages, and who cannot enter: a wrong
//! password (refused at the relay), and whoever holds the relay's database, or even the join
//! secret, without the password's MLS pre-shared key (refused by the members). Real relay,
//! real SQLite, real sockets on 127.0.0.1.

mod common;

use chatroom_crypto::{
    split_master_v2, ClientMessage, Content, ContentKind, ErrorCode, GroupInfoPart, Identity, Nick,
    RelayMessage, RoomName, RoomSecretsV2,
};
use chatroom_group::{open_group_info, RoomRef};
use chatroom_relay::DB_FILE;
use chatroom_session::v2::{V2Event, V2Room};
use common::*;

const PASSWORD: [u8; 32] = [7; 32];

/// A v2 member's relay connection: joined with the v2 join secret of `keys`.
/// The identity of seed `[seed; 32]`: the same key signs at the relay and in MLS.
async fn connect(
    relay: &TestRelay,
    (nick, seed): (&str, u8),
    keys: &RoomSecretsV2,
    create: bool,
) -> Res<(Conn, Joined)> {
    let mut room = TestRoom::new("mls");
    room.keys.join_secret = keys.join_secret.clone();
    let person = Person { identity: Identity::from_seed(&[seed; 32]), ..Person::new(nick) };
    let mut conn = Conn::connect_v2(relay.addr).await?;
    let joined = conn.join(&person, &room, create, 0).await?;
    Ok((conn, joined.map_err(|e| format!("join refused: {e:?}"))?))
}

async fn put(conn: &mut Conn, after_seq: u64, sealed: &[u8]) -> Res<()> {
    let part = GroupInfoPart { after_seq, part: 0, parts: 1, chunk: sealed.to_vec() };
    conn.send(&[ClientMessage::PutGroupInfo(part)]).await?;
    match conn
        .next_matching(|m| matches!(m, RelayMessage::GroupInfoStored { .. } | RelayMessage::Error { .. }))
        .await?
    {
        RelayMessage::GroupInfoStored { after_seq: stored } if stored == after_seq => Ok(()),
        other => Err(format!("upload refused: {other:?}").into()),
    }
}

async fn fetch(conn: &mut Conn) -> Res<(u64, Vec<u8>)> {
    conn.send(&[ClientMessage::GetGroupInfo]).await?;
    match conn.next_matching(|m| matches!(m, RelayMessage::GroupInfo(_) | RelayMessage::Error { .. })).await?
    {
        RelayMessage::GroupInfo(p) if p.parts == 1 => Ok((p.after_seq, p.chunk)),
        other => Err(format!("no group info: {other:?}").into()),
    }
}

fn text(body: &str) -> Content {
    Content {
        timestamp_ms: 1,
        kind: ContentKind::Text,
        nick: Nick::new("x").expect("a valid nickname"),
        body: body.into(),
    }
}

#[tokio::test]
async fn members_enter_and_talk_and_neither_a_wrong_password_nor_the_relay_gets_in() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |_| {}).await?;
    let name = RoomName::new("mls")?;
    let keys = || split_master_v2(&PASSWORD);

    // Alice creates the room and its group, and stores the GroupInfo.
    let (mut a, joined) = connect(&relay, ("alice", 1), &keys(), true).await?;
    assert_eq!(joined.group_info_seq, Some(0));
    let (mut alice, sealed) =
        V2Room::create(Identity::from_seed(&[1; 32]), name.clone(), &relay.key, keys())?;
    put(&mut a, 0, &sealed).await?;

    // Bob enters from it; his commit is seq 1, which alice merges.
    let (mut b, joined) = connect(&relay, ("bob", 2), &keys(), false).await?;
    assert_eq!(joined.group_info_seq, Some(0));
    let stored = fetch(&mut b).await?;
    let (mut bob, entry) = V2Room::enter(
        Identity::from_seed(&[2; 32]),
        name.clone(),
        &relay.key,
        keys(),
        (stored.0, &stored.1),
    )?;
    assert_eq!(b.publish_ok(entry.clone()).await?, 1);
    assert_eq!(bob.on_deliver(1, &entry)?, V2Event::Entered);
    let (seq, delivered) = a.delivery().await?;
    assert!(matches!(alice.on_deliver(seq, &delivered)?, V2Event::Commit(c) if c.entry && c.epoch == 1));
    put(&mut a, 1, &alice.sealed_group_info()?).await?;
    assert_eq!(alice.safety()?, bob.safety()?, "one group state: the same epoch code");

    // A message each way.
    let hello = alice.send(&text("hello bob"))?;
    assert_eq!(a.publish_ok(hello).await?, 2);
    let (seq, env) = b.delivery().await?;
    assert!(
        matches!(bob.on_deliver(seq, &env)?, V2Event::Message { content, .. } if content.body == "hello bob")
    );

    // A wrong password is refused by the relay, before anything else.
    let mut eve = Conn::connect_v2(relay.addr).await?;
    let mut wrong = TestRoom::new("mls");
    wrong.keys.join_secret = split_master_v2(&[8; 32]).join_secret.clone();
    let (code, _) =
        eve.join(&Person::new("eve"), &wrong, false, 0).await?.err().ok_or("a wrong password got in")?;
    assert_eq!(code, ErrorCode::WrongPassword);

    // The relay's database: the sealed GroupInfo and every envelope, none of it readable.
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE))?;
    let sealed: Vec<u8> =
        db.query_row("SELECT sealed FROM group_info WHERE room = 'mls'", [], |r| r.get(0))?;
    let other_key = split_master_v2(&[8; 32]).group_info_key.clone();
    let refd = RoomRef { room: name.clone(), relay_key: relay.key, psk_generation: 0 };
    assert!(open_group_info(&other_key, &refd, &sealed).is_err(), "opened without the password");
    assert!(open_group_info(&keys().group_info_key, &refd, &sealed).is_ok(), "the members' key opens it");
    let mut stmt = db.prepare("SELECT envelope FROM history WHERE room = 'mls'")?;
    let envelopes: Vec<Vec<u8>> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    assert_eq!(envelopes.len(), 2);
    assert!(
        envelopes.iter().all(|e| !e.windows(9).any(|w| w == b"hello bob")),
        "plaintext on the relay's disk"
    );

    // Whoever holds the join secret and even the GroupInfo key, but not the password's MLS
    // pre-shared key, builds an entry the members refuse: nothing changes for them.
    let mut forged = split_master_v2(&[8; 32]);
    forged.join_secret = keys().join_secret.clone();
    forged.group_info_key = keys().group_info_key.clone();
    let (mut m, _) = connect(&relay, ("mallory", 6), &forged, false).await?;
    let stored = fetch(&mut m).await?;
    let (mut mallory, entry) = V2Room::enter(
        Identity::from_seed(&[6; 32]),
        name.clone(),
        &relay.key,
        forged,
        (stored.0, &stored.1),
    )?;
    let seq = m.publish_ok(entry.clone()).await?;
    let before = alice.safety()?;
    for (member, conn) in [(&mut alice, &mut a), (&mut bob, &mut b)] {
        let (s, env) = conn.delivery().await?;
        assert_eq!((s, &env), (seq, &entry));
        assert!(member.on_deliver(s, &env).is_err(), "a member accepted an entry without the PSK");
    }
    assert_eq!(alice.safety()?, before, "the refused entry changed nothing");
    let after = alice.send(&text("after mallory"))?;
    let seq = a.publish_ok(after).await?;
    let (s, env) = m.delivery().await?;
    assert_eq!(s, seq);
    assert!(!matches!(mallory.on_deliver(s, &env), Ok(V2Event::Message { .. })), "mallory read a message");
    let (s, env) = b.delivery().await?;
    assert!(
        matches!(bob.on_deliver(s, &env)?, V2Event::Message { content, .. } if content.body == "after mallory")
    );
    relay.stop().await
}
