//! The chatroom relay: authenticates members with the Noise handshake and a join proof,
//! stores and numbers the end-to-end encrypted envelopes it cannot read, and delivers them to
//! every member of the room.
//!
//! `run` (or `Relay::open` then `Relay::run`) serves a `TcpListener` until a shutdown future
//! completes. `docs/RELAY.md` is the operator's guide.
#![forbid(unsafe_code)]

pub mod abuse;
pub mod admin;
mod admin_socket;
mod config;
mod group_info;
mod handler;
mod limits;
mod metrics;
mod outbox;
pub mod rooms;
mod server;
mod shutdown;
mod store;

pub use config::{key_path, Config, Synchronous, DB_FILE, KEY_FILE};
pub use server::{check_key_not_lost, fingerprint, room_limits, run, Relay, RelayError};
pub use store::{StoreError, APPLICATION_ID, SCHEMA_VERSION};
