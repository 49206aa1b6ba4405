//! Rooms: the seam between connections and room state.
//!
//! Connection handling (`handler.rs`) owns sockets, Noise, framing, the join precheck and the
//! abuse limits; it reaches rooms only through `RoomService`. `LocalRooms` implements it for
//! one relay process over SQLite; a clustered relay (rooms shared through a distributed log)
//! is another implementation, plugged in with `Relay::with_rooms`, not a change to the
//! connection code. The protocol's room rules are written once, as the pure state machine
//! `rules::RoomRules`, which every backend drives; `conformance` (feature `conformance`) is
//! the test suite every backend must pass.
//!
//! # What a backend guarantees
//!
//! - **Join.** Only a `VerifiedJoin` joins, and `SignedJoin::admit` (the password check) is the
//!   only way to one; a room's creation is atomic (two founders: one creates, the other joins
//!   the created room with its password). The admission's history ends exactly where the
//!   live deliveries pushed to the member's `Link` begin: no gap, no duplicate.
//! - **Publish.** Envelopes of one room get strictly increasing `seq`s in storage order, and
//!   are delivered to every other member in that order, only once stored; calls made one
//!   after another are stored in call order. A counter not above the sender's highest is an
//!   idempotent resend (answered with the stored `seq`, or once the pending copy is stored)
//!   or refused; a failed write gives the counter back.
//! - **Moderation, leave, expiry** as documented on each method.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{EnvelopeHeader, ErrorCode, Member, Nick, RoomName, SignedJoin};
use tracing::error;

mod bindings;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod ids;
#[cfg(feature = "cluster")]
pub mod jetstream;
mod local;
pub mod rules;
mod wire;

pub use ids::ConnectionId;
pub(crate) use ids::ConnectionIds;
pub use local::{HistoryLimit, LocalMember, LocalRooms, RoomLimits};
pub use wire::{deliver_batch, Admission, History, Item, JoinedInfo, Link, NoHistory, Pulled};
pub(crate) use wire::{member_items, start};

use crate::admin::{BanInfo, RoomInfo};
use crate::store::StoreError;

/// A refused request: the code and a detail that tells the member what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: String,
}

impl Refusal {
    /// A refusal with `code`, saying `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into() }
    }

    pub(crate) fn internal(e: &StoreError) -> Self {
        error!(error = %e, "storage failed");
        Self::new(ErrorCode::Internal, "the relay could not store this; try again later")
    }
}

/// What the owner asks the relay to do to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    Kick,
    Ban,
    Unban,
}

/// What the connection handling has decided about a join before the room is consulted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinPolicy {
    /// The relay is near its connection cap: only identities bound in the room get in.
    pub crowded: bool,
    /// The room is locked after too many failed joins: only identities bound in it get in,
    /// and nobody else's password is even checked.
    pub room_locked: bool,
}

/// Consulted just before a join creates a room; an `Err` refuses the creation (the per-address
/// limit on new rooms lives with the connection handling, not in the room service).
pub type CreateGate<'a> = &'a (dyn Fn() -> Result<(), Refusal> + Send + Sync);

/// A join as the connection layer hands it to the rooms.
#[derive(Debug)]
pub struct JoinArgs {
    /// The join, its signature verified; its password is the room's to check.
    pub join: SignedJoin,
    /// Replay retained envelopes with a `seq` above this.
    pub history_after: u64,
    pub connection: ConnectionId,
    /// Where the member's items go.
    pub link: Link,
    pub policy: JoinPolicy,
}

/// Room state, history and fan-out, as the connection handler sees them.
pub trait RoomService: Send + Sync + 'static {
    /// A joined member's handle; dropping it without `leave` is a bug.
    type Membership: Send + Sync + fmt::Debug + 'static;

    /// Runs the join checks (`rules::RoomRules::join`, or the room's creation when it does
    /// not exist and the join asks for it, after `may_create` agreed) and registers the
    /// member: from then on it receives live items through its `Link`, behind what the
    /// returned `Admission` says to send first.
    fn join(
        &self,
        args: JoinArgs,
        may_create: CreateGate<'_>,
    ) -> impl Future<Output = Result<Admission<Self::Membership>, Refusal>> + Send;

    /// Stores an envelope whose sender is the member, then delivers it to every other member.
    /// The envelope is checked and queued for storage before this returns, so calls made one
    /// after the other are stored (and delivered) in call order; the returned future resolves
    /// to its sequence number once it is durable (an idempotent resend returns the stored
    /// one). The future borrows nothing, so a connection can hold several at once.
    fn publish(
        &self,
        member: &Self::Membership,
        header: EnvelopeHeader,
        envelope: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send + 'static;

    /// Stores the room's sealed MLS GroupInfo (protocol version 2), opaque, if `after_seq` is
    /// at least the stored one's and at most the room's latest stored `seq`; refused with
    /// `StaleGroupInfo` otherwise. Returns the stored `after_seq`. A backend without the
    /// slot refuses every upload.
    fn put_group_info(
        &self,
        member: &Self::Membership,
        after_seq: u64,
        sealed: Bytes,
    ) -> impl Future<Output = Result<u64, Refusal>> + Send {
        let _ = (member, after_seq, sealed);
        std::future::ready(Err(no_group_info_slot()))
    }

    /// The room's stored GroupInfo and its `after_seq`; `NoGroupInfo` if none is stored.
    fn group_info(
        &self,
        member: &Self::Membership,
    ) -> impl Future<Output = Result<(u64, Bytes), Refusal>> + Send {
        let _ = member;
        std::future::ready(Err(no_group_info_slot()))
    }

    /// Replaces the room's join verifier (owner only, `NotOwner` otherwise), durably, before
    /// the next join is checked against it.
    fn set_verifier(
        &self,
        member: &Self::Membership,
        verifier: [u8; 32],
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        let _ = (member, verifier);
        std::future::ready(Err(no_group_info_slot()))
    }

    /// The connected members of the member's room, sorted by nickname.
    fn members(&self, member: &Self::Membership) -> impl Future<Output = Vec<Member>> + Send;

    /// Kick, ban or unban `nick` (room owner only). A kicked or banned member's connection is
    /// closed; every member is told.
    fn moderate(
        &self,
        member: &Self::Membership,
        action: Moderation,
        nick: Nick,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// The member's connection ended: the others are told it left, unless a newer connection
    /// of the same identity replaced it.
    fn leave(&self, member: &Self::Membership) -> impl Future<Output = ()> + Send;

    /// Deletes rooms nobody joined or sent to for `idle` (never one with members); returns
    /// how many.
    fn expire(&self, idle: Duration) -> impl Future<Output = usize> + Send;

    /// Joined members, rooms held in memory, and bytes queued to members, for the metrics.
    fn census(&self) -> Census;
}

/// What `RoomService::census` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub members: usize,
    pub rooms: usize,
    pub queued_bytes: usize,
}

fn no_group_info_slot() -> Refusal {
    Refusal::new(
        ErrorCode::UnexpectedMessage,
        "this relay's room storage does not support protocol version 2's room operations; use a relay with local rooms",
    )
}

/// What the operator does to rooms through the admin socket (`chatroom-relay rooms ...`).
pub trait RoomAdmin: RoomService {
    /// Connected members per room.
    fn online(&self) -> HashMap<String, u64>;

    /// Every room the backend stores, by name, with its counts and who is online.
    fn list_rooms(&self) -> impl Future<Output = Result<Vec<RoomInfo>, StoreError>> + Send;

    /// One room with its nicknames; `None` if there is no such room.
    fn room_info(&self, name: &str) -> impl Future<Output = Result<Option<RoomInfo>, StoreError>> + Send;

    /// The banned identities of a room; `None` if there is no such room.
    fn list_bans(&self, name: &str) -> impl Future<Output = Result<Option<Vec<BanInfo>>, StoreError>> + Send;

    /// Why `backup` (a copy of the node's SQLite database) does not back up this backend's
    /// rooms, and what to back up instead; `None` where the database holds them.
    fn backup_refusal(&self) -> Option<String> {
        None
    }

    /// Deletes a room and everything stored about it, disconnecting its members; false if
    /// there is no such room.
    fn delete_room(&self, name: &RoomName) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Makes `owner` the owner of a room, at once for its connected members; false if there
    /// is no such room.
    fn set_owner(
        &self,
        name: &RoomName,
        owner: [u8; 32],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
