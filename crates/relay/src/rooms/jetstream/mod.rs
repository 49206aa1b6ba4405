//! Rooms shared by many relay nodes through a NATS JetStream cluster (docs/adr/0002,
//! docs/CLUSTER.md).
//!
//! `setup` connects, checks the server's version, and creates or checks the stream every room's
//! log lives in and the key-value buckets of room state, presence and join lockouts, reading
//! each configuration back: an older server ignores what it does not know instead of refusing
//! it, so nothing is trusted that was not read back. `log` appends to a room's log with one
//! gap-free room sequence across nodes, and answers a resend with the original. `fanout` gives
//! a node a room's stored messages in room order from the stream's RePublish, backfilling gaps.
//! `state` keeps room records (created by exactly one node) and bans in the key-value buckets,
//! `lockouts` the join-failure counts every node adds to, and `abuse` the `AbuseLimits` that
//! check joins against them.
//!
//! `JetStreamRooms` (`rooms`) is the `RoomService` built on them: `room` (a room as one node
//! holds it), `membership` (load, join, create, leave), `history` (the retained history read at
//! load), `nicks` (bindings), `presence` (presence keys and the control subject), `moderate`
//! (kick, ban, unban), `group_slot` (protocol version 2's GroupInfo slot and password
//! rotation), `operator` (expiry and the admin socket's changes), `inventory` (its
//! reads), `listing`.

pub mod abuse;
pub mod fanout;
mod group_slot;
mod history;
mod inventory;
mod listing;
pub mod lockouts;
pub mod log;
mod membership;
mod moderate;
mod nicks;
mod operator;
mod presence;
mod room;
mod rooms;
pub mod setup;
pub mod state;

pub use inventory::MAX_LISTED_ROOMS;
pub use presence::{PRESENCE_REFRESH, PRESENCE_TTL};
pub use rooms::{ClusterConfig, ClusterMember, JetStreamRooms, MAX_INFLIGHT_PER_ROOM};
