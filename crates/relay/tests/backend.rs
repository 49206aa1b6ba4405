//! The seams a new backend plugs into, exercised through real connections: a room backend
//! (`Relay::map_rooms`, here one that wraps `LocalRooms` and counts what passes through it) and
//! the shared abuse limits (`Relay::with_limits`, here the per-process ones, counted).

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, Member, Nick, PresenceEvent, PublicIdentity, RelayMessage, RoomName};
use chatroom_relay::abuse::{AbuseLimits, LocalLimits, Lockout, SendScope};
use chatroom_relay::admin::{BanInfo, RoomInfo};
use chatroom_relay::rooms::{
    Admission, Census, CreateGate, JoinArgs, LocalRooms, Moderation, Refusal, RoomAdmin, RoomService,
};
use chatroom_relay::{Config, StoreError};
use common::{member, Person, TestRelay, TestResult, TestRoom};

#[derive(Debug, Default)]
struct Seen {
    joins: AtomicUsize,
    publishes: AtomicUsize,
    leaves: AtomicUsize,
    sends_checked: AtomicUsize,
}

/// A backend of its own: `LocalRooms` underneath, every call counted.
struct Observed {
    inner: LocalRooms,
    seen: Arc<Seen>,
}

impl RoomService for Observed {
    type Membership = <LocalRooms as RoomService>::Membership;

    fn join(
        &self,
        args: JoinArgs,
        may_create: CreateGate<'_>,
    ) -> impl Future<Output = Result<Admission<Self::Membership>, Refusal>> + Send {
        self.seen.joins.fetch_add(1, Ordering::SeqCst);
        self.inner.join(args, may_create)
    }

    fn publish(
        &self,
        member: &Self::Membership,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send + 'static {
        self.seen.publishes.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(member, header, envelope)
    }

    fn members(&self, member: &Self::Membership) -> impl Future<Output = Vec<Member>> + Send {
        self.inner.members(member)
    }

    fn moderate(
        &self,
        member: &Self::Membership,
        action: Moderation,
        nick: Nick,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        self.inner.moderate(member, action, nick)
    }

    fn leave(&self, member: &Self::Membership) -> impl Future<Output = ()> + Send {
        self.seen.leaves.fetch_add(1, Ordering::SeqCst);
        self.inner.leave(member)
    }

    fn expire(&self, idle: Duration) -> impl Future<Output = usize> + Send {
        self.inner.expire(idle)
    }

    fn census(&self) -> Census {
        self.inner.census()
    }
}

impl RoomAdmin for Observed {
    fn online(&self) -> HashMap<String, u64> {
        self.inner.online()
    }

    fn list_rooms(&self) -> impl Future<Output = Result<Vec<RoomInfo>, StoreError>> + Send {
        self.inner.list_rooms()
    }

    fn room_info(&self, name: &str) -> impl Future<Output = Result<Option<RoomInfo>, StoreError>> + Send {
        self.inner.room_info(name)
    }

    fn list_bans(&self, name: &str) -> impl Future<Output = Result<Option<Vec<BanInfo>>, StoreError>> + Send {
        self.inner.list_bans(name)
    }

    fn delete_room(&self, name: &RoomName) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.delete_room(name)
    }

    fn set_owner(
        &self,
        name: &RoomName,
        owner: [u8; 32],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.set_owner(name, owner)
    }
}

/// The per-process limits, every send check counted.
#[derive(Debug)]
struct CountedLimits {
    inner: LocalLimits,
    seen: Arc<Seen>,
}

impl AbuseLimits for CountedLimits {
    fn join_lockouts(&self, ip: IpAddr, room: &RoomName) -> (Lockout, Lockout) {
        self.inner.join_lockouts(ip, room)
    }

    fn join_failed(&self, ip: IpAddr, wrong_password_in: Option<&RoomName>) {
        self.inner.join_failed(ip, wrong_password_in)
    }

    fn take_creation(&self, ip: IpAddr) -> bool {
        self.inner.take_creation(ip)
    }

    fn take_send(&self, identity: &PublicIdentity, ip: IpAddr, room: &RoomName) -> Option<SendScope> {
        self.seen.sends_checked.fetch_add(1, Ordering::SeqCst);
        self.inner.take_send(identity, ip, room)
    }
}

#[tokio::test]
async fn a_plugged_in_backend_and_limits_serve_real_connections() -> TestResult {
    let dir = tempfile::tempdir()?;
    let seen = Arc::new(Seen::default());
    let limits = CountedLimits { inner: LocalLimits::new(&Config::new(dir.path())), seen: seen.clone() };
    let observed = seen.clone();
    let relay = TestRelay::start_with(
        dir.path(),
        |_| {},
        move |relay| relay.with_limits(limits).map_rooms(|inner| Observed { inner, seen: observed }),
    )
    .await?;
    let room = TestRoom::new("plugged");
    let (mut alice, mut bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    let (_, envelope) = alice.seal(&room, "through the plugged-in backend");
    let seq = a.publish_ok(envelope.clone()).await?;
    assert_eq!(b.delivery().await?, (seq, envelope));
    let (_, envelope) = bob.seal(&room, "and back");
    b.publish_ok(envelope).await?;
    assert_eq!(seen.joins.load(Ordering::SeqCst), 2);
    assert_eq!(seen.publishes.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.sends_checked.load(Ordering::SeqCst),
        2,
        "every send is checked by the plugged-in limits"
    );
    drop(b);
    // Told to alice after the backend's `leave` ran.
    a.next_matching(|m| matches!(m, RelayMessage::Presence { event: PresenceEvent::Left, .. })).await?;
    assert_eq!(seen.leaves.load(Ordering::SeqCst), 1, "the backend is told when a member leaves");
    relay.stop().await
}
