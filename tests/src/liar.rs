//! A lying relay for proving that real clients notice a relay that misbehaves: the fake
//! relay of `chatroom-fake-relay` run as a room ([`chatroom_fake_relay::room`]), on a runtime
//! of its own so that tests driving client processes can stay synchronous.
//!
//! It speaks protocol v1 well enough for real `chatroom` clients to join, send and receive:
//! Noise XX as responder, `Join` (signature checked, password not checked: a lying relay
//! admits anyone), `Joined`, `Members`, history, `HistoryEnd`, `Ack`, `Deliver`, `Presence`,
//! `Ping`/`Pong`. Each delivery to other members is then falsified as its [`Lie`] says.

use std::net::SocketAddr;
use std::thread;

use chatroom_crypto::StaticKeypair;
use chatroom_fake_relay::room;
pub use chatroom_fake_relay::room::{Lie, FAKE_MEMBERS};
use chatroom_fake_relay::FakeRelay;

use crate::BoxError;

/// A running lying relay on 127.0.0.1.
pub struct LyingRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The fingerprint of the static key it answers the handshake with.
    pub fingerprint: String,
}

impl std::fmt::Debug for LyingRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LyingRelay").field("addr", &self.addr).finish()
    }
}

impl LyingRelay {
    /// Starts a lying relay with static key `key` on a free port of 127.0.0.1. Its thread
    /// and runtime live as long as the test process.
    pub fn start(key: StaticKeypair, lie: Lie) -> Result<Self, BoxError> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let relay = runtime.block_on(FakeRelay::bind(key))?;
        let (addr, fingerprint) = (relay.addr(), relay.fingerprint());
        thread::spawn(move || runtime.block_on(room::serve(relay, lie)));
        Ok(Self { addr, fingerprint })
    }

    /// An invite URL for `room` at this relay.
    pub fn invite(&self, room: &str) -> String {
        format!("chatroom://{}@{}/{room}", self.fingerprint, self.addr)
    }
}
