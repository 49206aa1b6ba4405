//! Rooms shared by many relay nodes through a NATS JetStream cluster (docs/adr/0002).
//!
//! `setup` connects, checks the server's version, and creates or checks the stream every room's
//! log lives in and the key-value buckets of room state, presence and join lockouts, reading
//! each configuration back: an older server ignores what it does not know instead of refusing
//! it, so nothing is trusted that was not read back. `log` appends to a room's log with one
//! gap-free room sequence across nodes, and answers a resend with the original. `fanout` gives
//! a node a room's stored messages in room order from the stream's RePublish, backfilling gaps.
//! `state` keeps room records (created by exactly one node) and bans in the key-value buckets,
//! `lockouts` the join-failure counts every node adds to.

pub mod fanout;
pub mod lockouts;
pub mod log;
pub mod setup;
pub mod state;
