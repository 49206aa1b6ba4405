//! `chatroom-bench`: a load generator for the chatroom relay that drives plaintext chat
//! servers (a newline broadcast server such as `ncat --broker`, and an IRC server such as
//! ngIRCd) with the very same workload, so the baselines are measured by the same generator in
//! the same run.
//!
//! A run connects N members to R rooms, waits until every member has joined, then has S of
//! them send M messages of B bytes, as fast as possible or at a fixed rate. Every message
//! carries its sender, its sequence number and its send time inside the payload (inside the
//! end-to-end encrypted envelope for chatroom). A delivery counts only when a whole, intact
//! message arrives: plaintext lines are rebuilt from their fields and compared byte for byte;
//! chatroom envelopes are compared byte for byte with what the sender sealed, and the first
//! delivery of each envelope is also opened (AEAD and signature) and its body checked.
//!
//! The chatroom side uses the client library's protocol core (`chatroom_session::session`'s
//! `handshake`, `join`, `ConnReader` and `ConnWriter`), so relay, client and load generator
//! share one protocol implementation.
//!
//! Two floors of the paced workload, with nothing of the relay in the way: `fanout` serves
//! the plaintext broadcast protocol with TCP_NODELAY and nothing else, and `commits` times
//! SQLite commits like the relay's on this disk.
//!
//! `mls_costs` measures what protocol version 2's MLS layer costs a client, beside version 1.
#![forbid(unsafe_code)]

pub mod chat;
pub mod commits;
pub mod error;
pub mod fanout;
pub mod mls_costs;
pub mod plain;
pub mod procfs;
pub mod report;
pub mod workload;

pub use report::{Outcome, Report};
pub use workload::{Mode, Workload};
