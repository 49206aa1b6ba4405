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
