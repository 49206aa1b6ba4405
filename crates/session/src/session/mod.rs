//! The protocol core every front end shares: connect, handshake with the relay pin checked,
//! derive the room key off the runtime, join, send with Acks matched in order, receive with
//! verification and replay checks, keep the connection alive, and reconnect with backoff,
//! resending queued messages exactly once. Front ends call `Session::start`, get events
//! through `Callbacks`, and talk to the session through its `SessionHandle`.

mod connection;
mod driver;
mod event;
mod keys;
mod outbox;
mod room;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatroom_crypto::{ContentKind, Identity, Nick, RoomName, MAX_BODY_LEN};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use chatroom_net::TokenBucket;
pub use connection::{
    handshake, handshake_v2, join, ConnReader, ConnWriter, Handshaken, JoinedInfo, WRITE_TIMEOUT,
};
pub use event::{
    Callbacks, ChatMessage, ConnState, Event, GroupEvent, KdfProgress, MemberInfo, Rejected, SessionEnd,
    Whois,
};
pub(crate) use keys::{derive_with_progress, held_password};
pub use keys::{RoomKeyCache, PROGRESS_INTERVAL};
pub use outbox::{AckMatch, Outbox, Outgoing};
pub use room::{RoomView, COUNTER_RESERVE, MAX_MEMBERS};

use crate::error::SessionError;
use crate::transport::{Proxy, RelayAddrs};
use crate::trust::RelayPin;
use driver::Request;

/// Timeouts and limits of a session, with the protocol's defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Opening the TCP connection (and the SOCKS exchange).
    pub connect_timeout: Duration,
    /// Each of the handshake and the join.
    pub handshake_timeout: Duration,
    /// Send a Ping after this long without sending anything.
    pub ping_after: Duration,
    /// Treat the connection as dead after this long without receiving anything.
    pub dead_after: Duration,
    /// First reconnect delay (before jitter).
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Client-side pacing below the relay's rate limit: (burst, messages per second). The
    /// default stays a little under the relay's default (burst 20, 5 per second), so that
    /// scheduling differences between the two ends never push a message over it.
    pub send_rate: Option<(u32, f64)>,
    /// Most messages queued (sent but unacknowledged, or waiting); beyond it `send` fails.
    pub max_queued: usize,
    /// On start, how many already seen messages before the unseen ones to fetch again as
    /// recent context (`Event::Context`), so a conversation never starts mid-reply. 0: none.
    pub context_on_start: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            ping_after: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            send_rate: Some((18, 4.5)),
            max_queued: 10_000,
            context_on_start: 0,
        }
    }
}

/// Where and who to be.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The relay's addresses (one, or the nodes of a relay cluster, which share one key).
    pub relay: RelayAddrs,
    /// A SOCKS5 proxy, if any.
    pub proxy: Option<Proxy>,
    /// The room.
    pub room: RoomName,
    /// Our nickname.
    pub nick: Nick,
    /// Create the room if it does not exist (first join only).
    pub create: bool,
    /// How the relay's key is trusted.
    pub relay_pin: RelayPin,
    /// Directory for per-room state (`rooms/...`); `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    /// Timeouts and limits.
    pub limits: Limits,
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// Longer than one envelope holds.
    #[error("message is {0} bytes, more than the maximum of {MAX_BODY_LEN}; nothing was sent")]
    TooLong(usize),
    /// The session has ended.
    #[error("the session has ended; nothing was sent")]
    Closed,
    /// Too many messages wait for the relay.
    #[error("{0} messages already wait for the relay; nothing was sent, try again when reconnected")]
    QueueFull(usize),
}

/// Starts sessions.
#[derive(Debug)]
pub struct Session;

impl Session {
    /// Connects, joins (deriving the room key if needed), and starts the session task.
    /// Errors of this first join are returned (e.g. `Refused { NoSuchRoom }` so the front end
    /// can offer to create the room); later failures are reconnected or reported as events.
    pub async fn start(
        config: SessionConfig,
        keys: Arc<RoomKeyCache>,
        identity: Arc<Identity>,
        callbacks: Arc<dyn Callbacks>,
    ) -> Result<SessionHandle, SessionError> {
        let config = Arc::new(config);
        let attempt = |n: u32, addr: usize| {
            driver::establish(driver::Attempt {
                config: config.clone(),
                keys: keys.clone(),
                identity: identity.clone(),
                callbacks: callbacks.clone(),
                history_after: None,
                create: config.create,
                attempt: n,
                addr,
            })
        };
        let mut addr = 0;
        let first = loop {
            let derived_before = keys.has_any();
            match attempt(0, addr).await {
                Ok(first) => break first,
                // Deriving the key between handshake and join (first contact with a relay)
                // can outlast the relay's join deadline with costly parameters; the key is
                // cached now, so one more attempt joins at once.
                Err(e) if e.is_retryable() && !derived_before && keys.has_any() => {
                    break attempt(1, addr).await?
                }
                // A node of a relay cluster that cannot be reached: the next address serves
                // the same rooms.
                Err(e) if e.is_retryable() && addr + 1 < config.relay.len() => {
                    addr += 1;
                    callbacks.event(Event::Warning(format!(
                        "{e}; trying the next address, {}",
                        config.relay.get(addr)
                    )));
                }
                Err(e) => return Err(e),
            }
        };
        let safety_code = first.room_keys.safety_code().to_string();
        let relay_fingerprint = hex::encode(first.conn.relay_key);
        let (tx, rx) = mpsc::channel(256);
        let driver = driver::Driver::new(config, keys, identity, callbacks, rx, &first)?;
        let task = tokio::spawn(driver.run(first));
        Ok(SessionHandle { requests: tx, task: Some(task), next_id: 1, safety_code, relay_fingerprint })
    }
}

/// Talks to a running session.
#[derive(Debug)]
pub struct SessionHandle {
    requests: mpsc::Sender<Request>,
    task: Option<JoinHandle<SessionEnd>>,
    next_id: u64,
    safety_code: String,
    relay_fingerprint: String,
}

impl SessionHandle {
    /// Queues a message; returns its id (reported again in `Event::Sent` or `SendFailed`).
    pub async fn send(&mut self, kind: ContentKind, body: &str) -> Result<u64, SendError> {
        if body.len() > MAX_BODY_LEN {
            return Err(SendError::TooLong(body.len()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.requests
            .send(Request::Send { id, kind, body: body.to_owned() })
            .await
            .map_err(|_| SendError::Closed)?;
        Ok(id)
    }

    /// Asks for the member list (answered with `Event::Members`).
    pub async fn who(&self) -> Result<(), SendError> {
        self.requests.send(Request::Who).await.map_err(|_| SendError::Closed)
    }

    /// Asks what is known of `nick` (answered with `Event::Whois`).
    pub async fn whois(&self, nick: Nick) -> Result<(), SendError> {
        self.requests.send(Request::Whois(nick)).await.map_err(|_| SendError::Closed)
    }

    /// Waits until the relay has answered everything sent before (a Ping and its Pong), so
    /// a refusal of a command sent just before has been reported. `false` if the session is
    /// not connected or the connection was lost meanwhile.
    pub async fn sync(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.requests.send(Request::Sync(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Owner only: disconnects a member.
    pub async fn kick(&self, nick: Nick) -> Result<(), SendError> {
        self.requests.send(Request::Kick(nick)).await.map_err(|_| SendError::Closed)
    }

    /// Owner only: bans a member.
    pub async fn ban(&self, nick: Nick) -> Result<(), SendError> {
        self.requests.send(Request::Ban(nick)).await.map_err(|_| SendError::Closed)
    }

    /// Owner only: lifts a ban.
    pub async fn unban(&self, nick: Nick) -> Result<(), SendError> {
        self.requests.send(Request::Unban(nick)).await.map_err(|_| SendError::Closed)
    }

    /// The room safety code.
    pub fn safety_code(&self) -> &str {
        &self.safety_code
    }

    /// The relay's fingerprint.
    pub fn relay_fingerprint(&self) -> &str {
        &self.relay_fingerprint
    }

    /// Waits until the session ends on its own (a fatal refusal). Cancel-safe.
    pub async fn ended(&mut self) -> SessionEnd {
        match self.task.as_mut() {
            Some(task) => {
                let end = task.await.unwrap_or_else(|e| {
                    SessionEnd::Failed(SessionError::Lost(format!("session task failed: {e}")))
                });
                self.task = None;
                end
            }
            None => std::future::pending().await,
        }
    }

    /// Closes the session after the relay acknowledged every queued message, or once `flush`
    /// passes without an acknowledgement (reconnecting meanwhile if needed): a long queue
    /// paced under the relay's rate limit is waited for as long as it makes progress.
    pub async fn close(mut self, flush: Duration) -> SessionEnd {
        let _ = self.requests.send(Request::Close { flush }).await;
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                SessionEnd::Failed(SessionError::Lost(format!("session task failed: {e}")))
            }),
            None => SessionEnd::Closed { unacknowledged: 0 },
        }
    }
}
