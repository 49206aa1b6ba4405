//! One configurable fake relay for tests, built from the project's own protocol pieces
//! (`chatroom-crypto`'s Noise responder, message codec and envelope header) on real sockets
//! of 127.0.0.1.
//!
//! Two ways to drive it, over the same [`FakeRelay`] and [`FakeConn`]:
//! - scripted: the test accepts each connection ([`FakeRelay::accept`], or
//!   [`FakeRelay::admit`] for a join answered with an empty room) and decides every frame the
//!   relay answers: acks, gaps, duplicates, refusals, silence, a dropped connection
//!   (`crates/session/tests/session.rs`);
//! - as a room: [`room::serve`] admits any number of real clients and relays their envelopes,
//!   falsifying what it delivers as its [`room::Lie`] says (`chatroom-e2e`'s `LyingRelay`).
//!
//! Test support only: it trusts its own scripts, and every read from a peer has a time limit.

// A test-support crate: its panics are test failures on impossible setups.
#![allow(clippy::unwrap_used)]

mod conn;
pub mod room;

pub use conn::{FakeConn, FakeRelay};

/// The error every fake relay call returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
