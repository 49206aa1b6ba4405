use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{ErrorCode, Identity, JoinRequest, JoinSecret, Nick, RoomName, SignedJoin};

use super::join::Lookup;
use super::*;
use crate::config::Synchronous;
use crate::outbox::Outbox;
use crate::rooms::rules::RuleLimits;
use crate::rooms::{JoinPolicy, Link};
use crate::store::Store;

fn signed(identity: &Identity, nick: &str, secret: &JoinSecret, create: bool) -> SignedJoin {
    let hh = [9; 32];
    JoinRequest::new(
        identity,
        &hh,
        RoomName::new("room").unwrap(),
        Nick::new(nick).unwrap(),
        secret.clone(),
        create,
        0,
    )
    .verify(&hh)
    .unwrap()
}

fn test_limits() -> RoomLimits {
    RoomLimits {
        history: HistoryLimit { count: 10, bytes: 1 << 20 },
        rules: RuleLimits { max_members: 1000, headroom_percent: 10, max_nicknames: 100 },
        max_rooms: 100,
    }
}

fn args(join: SignedJoin, serial: u64) -> JoinArgs {
    JoinArgs {
        join,
        history_after: 0,
        connection: ConnectionId::new(0, serial),
        link: Link::new(Arc::new(Outbox::held(1 << 20, Duration::from_secs(30)))),
        policy: JoinPolicy::default(),
    }
}

#[tokio::test]
async fn rooms_leave_memory_when_idle_and_come_back_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
    let hub = LocalRooms::new(store.handle(), test_limits(), 0);
    let keys = split_master(&[1; 32]);
    let wrong = split_master(&[2; 32]);
    let (alice, bob) = (Identity::generate(), Identity::generate());

    let closed = || Err(Refusal::new(ErrorCode::TooManyAttempts, "no more rooms"));
    let refused = hub.join(args(signed(&alice, "alice", &keys.join_secret, true), 1), &closed).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::TooManyAttempts, "the gate can refuse a creation");
    let refused = hub.join(args(signed(&alice, "alice", &keys.join_secret, false), 1), &closed).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::NoSuchRoom, "and nothing was created");

    let a = hub.join(args(signed(&alice, "alice", &keys.join_secret, true), 1), &|| Ok(())).await.unwrap();
    assert!(a.joined.created);
    assert_eq!(hub.map().len(), 1);
    hub.leave(&a.member).await;
    assert!(hub.map().is_empty(), "an empty room is dropped from memory");

    let refused = hub.join(args(signed(&bob, "bob", &wrong.join_secret, false), 2), &|| Ok(())).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::WrongPassword);
    assert!(hub.map().is_empty(), "a refused join does not keep the room loaded");

    // Reloaded from storage: owner and nickname binding survived.
    let b = hub.join(args(signed(&bob, "bob", &keys.join_secret, false), 3), &|| Ok(())).await.unwrap();
    let refused = hub.join(args(signed(&bob, "alice", &keys.join_secret, false), 4), &|| Ok(())).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::NickTaken);
    assert_eq!(hub.map().len(), 1, "a room with members stays loaded");
    assert_eq!(b.joined.owner, alice.public());
    assert_eq!(b.member.room.lock().rules.owner(), alice.public());
    hub.leave(&b.member).await;
    assert!(hub.map().is_empty());
    store.close().await;
}

#[tokio::test]
async fn loading_one_room_never_waits_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
    let hub = LocalRooms::new(store.handle(), test_limits(), 0);
    let keys = split_master(&[1; 32]);
    let alice = Identity::generate();
    let joined = signed(&alice, "alice", &keys.join_secret, true);
    let a = hub.join(args(joined, 1), &|| Ok(())).await.unwrap();
    hub.leave(&a.member).await;
    assert!(hub.map().is_empty(), "the room is on disk only");

    // Another room's load is under way (and stays so until `finish` fires).
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let other = RoomName::new("other").unwrap();
    let mut held = Box::pin(hub.loading(&other, async move {
        let _ = finished.await;
    }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(held.as_mut().poll(&mut cx).is_pending());
    let found =
        tokio::time::timeout(Duration::from_secs(5), hub.lookup(&RoomName::new("room").unwrap())).await;
    assert!(matches!(found, Ok(Ok(Lookup::Found(_)))), "the room loaded while the other one was loading");
    finish.send(()).unwrap();
    held.await;
    assert!(hub.loading.lock().unwrap().is_empty(), "no lock is kept once nobody uses it");
    store.close().await;
}

#[tokio::test]
async fn local_rooms_pass_the_conformance_suite() {
    crate::rooms::conformance::run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
        let rooms = LocalRooms::new(store.handle(), test_limits(), 0);
        (rooms, (store, dir))
    })
    .await;
}

/// An envelope of `identity` for the test room, under `counter`.
fn envelope(identity: &Identity, counter: u64) -> (chatroom_crypto::EnvelopeHeader, bytes::Bytes) {
    let content = chatroom_crypto::Content {
        timestamp_ms: 0,
        kind: chatroom_crypto::ContentKind::Text,
        nick: Nick::new("alice").unwrap(),
        body: format!("{counter}"),
    };
    let keys = split_master(&[1; 32]);
    let room = RoomName::new("room").unwrap();
    let sealed = chatroom_crypto::seal(&keys.message_key, identity, &room, counter, &content).unwrap();
    (chatroom_crypto::EnvelopeHeader::parse(&sealed).unwrap(), bytes::Bytes::from(sealed))
}

/// The `seq`s of the `Deliver`s queued to `outbox` since the last call.
fn delivered(outbox: &Outbox) -> Vec<u64> {
    outbox
        .drain()
        .iter()
        .flat_map(|item| chatroom_crypto::RelayMessage::decode_all(item).unwrap())
        .filter_map(|m| match m {
            chatroom_crypto::RelayMessage::Deliver { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

/// Holds the storage thread until the returned sender is dropped or sent to; returns once it
/// is held, so what is queued meanwhile goes into the next commit group.
async fn hold_storage(store: &Store) -> std::sync::mpsc::Sender<()> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = tokio::sync::oneshot::channel();
    let handle = store.handle();
    tokio::spawn(async move {
        let exec = handle.exec(move |_| {
            let _ = held.send(());
            let _ = released.recv();
        });
        exec.await
    });
    holding.await.unwrap();
    release
}

/// No `Send` is answered, and nothing delivered, before its commit group committed; a group
/// whose transaction fails refuses every `Send` it held, delivers none of them, and gives
/// their counters back, so the same envelopes are stored when sent again.
#[tokio::test]
async fn sends_are_answered_after_their_commit_and_a_failed_group_refuses_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
    let hub = LocalRooms::new(store.handle(), test_limits(), 0);
    let keys = split_master(&[1; 32]);
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = hub.join(args(signed(&alice, "alice", &keys.join_secret, true), 1), &|| Ok(())).await.unwrap();
    let a = crate::rooms::start(&Arc::new(Outbox::held(1 << 20, Duration::from_secs(30))), a);
    let bob_outbox = Arc::new(Outbox::held(1 << 20, Duration::from_secs(30)));
    let mut bob_args = args(signed(&bob, "bob", &keys.join_secret, false), 2);
    bob_args.link = Link::new(bob_outbox.clone());
    let b = crate::rooms::start(&bob_outbox, hub.join(bob_args, &|| Ok(())).await.unwrap());
    let _ = bob_outbox.drain();

    // The group fails: a trigger rolls the transaction back at the second envelope.
    store
        .handle()
        .exec(|conn| {
            conn.execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON history WHEN NEW.counter = 2 \
                 BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
            )
        })
        .await
        .unwrap()
        .unwrap();
    let release = hold_storage(&store).await;
    let send = |counter| {
        let (header, sealed) = envelope(&alice, counter);
        Box::pin(hub.publish(&a, header, sealed))
    };
    let mut sends: Vec<_> = (1..=3).map(send).collect();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for send in &mut sends {
        assert!(send.as_mut().poll(&mut cx).is_pending(), "no answer before the commit");
    }
    assert_eq!(delivered(&bob_outbox), Vec::<u64>::new(), "no delivery before the commit");
    release.send(()).unwrap();
    for send in sends {
        let refused = tokio::time::timeout(Duration::from_secs(30), send).await.unwrap();
        assert_eq!(refused.unwrap_err().code, ErrorCode::Internal, "every Send of the group is refused");
    }
    assert_eq!(delivered(&bob_outbox), Vec::<u64>::new(), "and none delivered");

    // Without the trigger the same counters are taken again: they were given back.
    store.handle().exec(|conn| conn.execute_batch("DROP TRIGGER fail")).await.unwrap().unwrap();
    let release = hold_storage(&store).await;
    let sends: Vec<_> = (1..=3).map(send).collect();
    drop(release);
    let mut seqs = Vec::new();
    for send in sends {
        seqs.push(tokio::time::timeout(Duration::from_secs(30), send).await.unwrap().unwrap());
    }
    assert_eq!(seqs, [4, 5, 6], "stored in call order, under seqs not used before");
    assert_eq!(delivered(&bob_outbox), [4, 5, 6]);
    hub.leave(&a).await;
    hub.leave(&b).await;
    store.close().await;
}

/// Deliveries run on the runtime's workers, a task per room: over many commit groups, on two
/// workers, every envelope reaches the other member once, in `seq` order, and each `Send` is
/// answered with its own `seq` only after the member was sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_on_the_workers_keep_seq_order_across_commit_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
    let hub = Arc::new(LocalRooms::new(store.handle(), test_limits(), 0));
    let keys = split_master(&[1; 32]);
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let a = hub.join(args(signed(&alice, "alice", &keys.join_secret, true), 1), &|| Ok(())).await.unwrap();
    let a = crate::rooms::start(&Arc::new(Outbox::held(1 << 20, Duration::from_secs(30))), a);
    let bob_outbox = Arc::new(Outbox::held(1 << 20, Duration::from_secs(30)));
    let mut bob_args = args(signed(&bob, "bob", &keys.join_secret, false), 2);
    bob_args.link = Link::new(bob_outbox.clone());
    let b = crate::rooms::start(&bob_outbox, hub.join(bob_args, &|| Ok(())).await.unwrap());
    let _ = bob_outbox.drain();

    let mut seen = Vec::new();
    let mut counter = 0;
    for _ in 0..20 {
        let sends: Vec<_> = (0..25)
            .map(|_| {
                counter += 1;
                let (header, sealed) = envelope(&alice, counter);
                tokio::spawn(hub.publish(&a, header, sealed))
            })
            .collect();
        for send in sends {
            let seq = tokio::time::timeout(Duration::from_secs(30), send).await.unwrap().unwrap().unwrap();
            seen.extend(delivered(&bob_outbox));
            assert!(seen.contains(&seq), "the Ack for {seq} came before its delivery");
        }
    }
    assert_eq!(seen, (1..=500).collect::<Vec<u64>>(), "each once, in seq order");
    hub.leave(&a).await;
    hub.leave(&b).await;
    store.close().await;
}
