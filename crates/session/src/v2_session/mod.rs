//! Protocol version 2's network driver: `V2Room` (the sans-IO MLS room core) between a relay
//! connection and a front end. It connects with the `chatroom/2` prologue, joins with the v2
//! join secret, creates the room's group or enters it by external commit from the sealed
//! GroupInfo, processes the room's log in `seq` order from the saved cursor, publishes the
//! GroupInfo after each epoch change, and turns the owner's kick or ban into an MLS removal
//! (docs/PROTOCOL.md sections 23 to 26). The connection, the pinning, the outbox and
//! the events are the v1 session's.

mod driver;
mod held;
mod keys;
mod log;

use std::sync::Arc;
use std::time::Duration;

use chatroom_crypto::{
    derive_room_secrets_v2, ContentKind, Identity, KdfParams, Nick, RoomName, SafetyCode, Zeroizing,
    MAX_BODY_LEN,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::SessionError;
use crate::session::{Callbacks, Event, SendError, SessionConfig, SessionEnd};
use driver::Request;
pub use keys::V2Keys;

/// Messages a member sends before it renews its keys with an update commit.
pub const DEFAULT_HEAL_MESSAGES: u32 = 100;
/// Time after which a member renews its keys with an update commit (one day).
pub const DEFAULT_HEAL_AFTER: Duration = Duration::from_secs(86_400);

/// Limits of the v2 driver, with the protocol's defaults (docs/PROTOCOL.md part II).
#[derive(Debug, Clone)]
pub struct V2Limits {
    /// Entry attempts (each lost to another commit of its epoch) before giving up (section 23: 5).
    pub entry_attempts: u32,
    /// A member that sees the stored GroupInfo older than the epoch it is in waits a random
    /// delay up to this long, then puts it itself if it is still stale (section 23: 10 s).
    pub group_info_grace: Duration,
    /// Most bytes of log entries held while entering (those after the stored GroupInfo,
    /// needed once the entry is decided); beyond it the entry fails.
    pub max_entry_buffer: usize,
    /// Most bytes of deliveries held while one of this client's envelopes is unanswered (a
    /// relay answers a commit group's senders after its deliveries); beyond it the connection
    /// is dropped and the next one reads them again (docs/PROTOCOL.md section 31: 16 MiB).
    pub max_held: usize,
    /// Largest sealed GroupInfo assembled from the relay's parts (docs/PROTOCOL.md section 29: 8 MiB).
    pub max_group_info: usize,
    /// Healing: an update commit after this many of this member's messages since its last
    /// winning commit (docs/PROTOCOL.md section 27: 100); lowered to the room's setting, never raised.
    pub heal_messages: u32,
    /// ... or after this long (section 27: 24 h, plus up to 10 % at random); likewise capped.
    pub heal_after: Duration,
    /// History for newcomers: after a newcomer's entry, a member waits a random delay up to
    /// this long before it shares, unless another member's share is read first (docs/PROTOCOL.md
    /// section 28: 5 s).
    pub share_delay: Duration,
    /// The room setting `history_share` given to a room this client creates (0 = off, at most
    /// 100 kept and shared); ignored when entering an existing room.
    pub create_history_share: u16,
}

impl Default for V2Limits {
    fn default() -> Self {
        Self {
            entry_attempts: 5,
            group_info_grace: Duration::from_secs(10),
            max_entry_buffer: 16 << 20,
            max_held: 16 << 20,
            max_group_info: chatroom_group::MAX_SEALED_GROUP_INFO,
            heal_messages: DEFAULT_HEAL_MESSAGES,
            heal_after: DEFAULT_HEAL_AFTER,
            share_delay: Duration::from_secs(5),
            create_history_share: 0,
        }
    }
}

/// What `/safety` shows in a v2 room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Safety {
    /// Equal for everyone with the same password, relay and parameters.
    pub room_code: SafetyCode,
    /// The group's current epoch.
    pub epoch: u64,
    /// Derived from MLS's epoch authenticator: equal for members sharing one group state.
    pub epoch_code: SafetyCode,
}

/// Why a password rotation was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// Only the room's owner rotates its password.
    #[error("only the room's owner can rotate its password")]
    NotOwner,
    /// The new password cannot be used (empty, or the key derivation failed).
    #[error("the new password cannot be used: {0}")]
    Password(String),
    /// Not now: not a member yet, not connected, or a rotation still in progress.
    #[error("{0}")]
    Refused(String),
    /// The session has ended.
    #[error("the session has ended")]
    Closed,
}

/// Starts v2 sessions.
#[derive(Debug)]
pub struct V2Session;

impl V2Session {
    /// Connects, derives the room's v2 secrets, joins, and starts the session task, which
    /// creates or enters the group. Errors of this first join are returned (a wrong password
    /// is `Refused { WrongPassword }`); later failures are reconnected or end the session.
    pub async fn start(
        config: SessionConfig,
        limits: V2Limits,
        password: Zeroizing<Vec<u8>>,
        params: KdfParams,
        identity: Arc<Identity>,
        callbacks: Arc<dyn Callbacks>,
    ) -> Result<V2Handle, SessionError> {
        let keys = Arc::new(V2Keys::new(password, config.room.clone(), params)?);
        let config = Arc::new(config);
        let grace = (limits.group_info_grace, limits.share_delay);
        let mut addr = 0;
        let mut first = loop {
            let resume = driver::Resume::First(limits.clone());
            match driver::establish(&config, &keys, &identity, &*callbacks, resume, config.create, (0, addr))
                .await
            {
                Ok(first) => break first,
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
        let relay_fingerprint = hex::encode(first.relay_key());
        let relay_key = *first.relay_key();
        let room = config.room.clone();
        let (tx, rx) = mpsc::channel(256);
        let driver = driver::Driver::new(config, grace, keys, identity, callbacks, rx, &mut first)?;
        let task = tokio::spawn(driver.run(first));
        Ok(V2Handle {
            requests: tx,
            task: Some(task),
            next_id: 1,
            relay_fingerprint,
            relay_key,
            room,
            params,
        })
    }
}

/// Talks to a running v2 session.
#[derive(Debug)]
pub struct V2Handle {
    requests: mpsc::Sender<Request>,
    task: Option<JoinHandle<SessionEnd>>,
    next_id: u64,
    relay_fingerprint: String,
    /// What a new password's derivation needs (docs/PROTOCOL.md section 20).
    relay_key: [u8; 32],
    room: RoomName,
    params: KdfParams,
}

impl V2Handle {
    /// Queues a message (sent once this client is a member); returns its id, reported again
    /// in `Event::Sent` or `Event::SendFailed`.
    pub async fn send(&mut self, kind: ContentKind, body: &str) -> Result<u64, SendError> {
        if body.len() > MAX_BODY_LEN {
            return Err(SendError::TooLong(body.len()));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.request(Request::Send { id, kind, body: body.to_owned() }).await?;
        Ok(id)
    }

    async fn request(&self, r: Request) -> Result<(), SendError> {
        self.requests.send(r).await.map_err(|_| SendError::Closed)
    }

    /// Asks the relay for the member list (`Event::Members`, the relay's claim).
    pub async fn who(&self) -> Result<(), SendError> {
        self.request(Request::Who).await
    }

    /// What is pinned for `nick` (`Event::Whois`): the key its MLS-authenticated messages
    /// were pinned to, as in v1.
    pub async fn whois(&self, nick: Nick) -> Result<(), SendError> {
        self.request(Request::Whois(nick)).await
    }

    /// The relay's fingerprint (64 hex digits), as pinned.
    pub fn relay_fingerprint(&self) -> &str {
        &self.relay_fingerprint
    }

    /// Owner only: disconnects a member at the relay and removes it from the group.
    pub async fn kick(&self, nick: Nick) -> Result<(), SendError> {
        self.request(Request::Kick(nick)).await
    }

    /// Owner only: bans a member at the relay and removes it from the group.
    pub async fn ban(&self, nick: Nick) -> Result<(), SendError> {
        self.request(Request::Ban(nick)).await
    }

    /// Owner only: lifts a ban.
    pub async fn unban(&self, nick: Nick) -> Result<(), SendError> {
        self.request(Request::Unban(nick)).await
    }

    /// Owner only: rotates the room's password (docs/PROTOCOL.md section 26). Derives the new password's
    /// outputs (Argon2id, off the runtime), sends them to the members inside the group, then,
    /// once the relay stored that message, the new join verifier and the GroupInfo sealed
    /// under the new key. Returns the new password generation once all three are sent.
    /// Members inside keep talking; entering (and the relay's join) then needs the new password.
    pub async fn rotate_password(&self, password: Zeroizing<Vec<u8>>) -> Result<u32, RotateError> {
        if password.is_empty() {
            return Err(RotateError::Password("it is empty".into()));
        }
        let (relay_key, room, params) = (self.relay_key, self.room.clone(), self.params);
        let secrets =
            tokio::task::spawn_blocking(move || derive_room_secrets_v2(&password, &relay_key, &room, params))
                .await
                .map_err(|e| RotateError::Password(format!("the key derivation stopped: {e}")))?
                .map_err(|e| RotateError::Password(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.request(Request::Rotate { secrets: Box::new(secrets), reply: tx })
            .await
            .map_err(|_| RotateError::Closed)?;
        rx.await.map_err(|_| RotateError::Closed)?
    }

    /// The room code, the epoch and its code; `None` until this client is a member.
    pub async fn safety(&self) -> Option<V2Safety> {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Safety(tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Waits until the relay answered everything sent before and this client processed the
    /// log up to there (a Ping and its Pong). `false` if not connected.
    pub async fn sync(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.request(Request::Sync(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Waits until the session ends on its own (a fatal refusal, a removal). Cancel-safe.
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

    /// Closes the session once the relay acknowledged every queued envelope, or after
    /// `flush` without an acknowledgement.
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
