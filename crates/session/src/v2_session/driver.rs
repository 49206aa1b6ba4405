//! The v2 session task: one loop that owns the connection, the room core and the outbox, and
//! reacts to requests, relay items and timers (keep-alive, dead connection, reconnect backoff,
//! the GroupInfo fallback, the close deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatroom_crypto::{
    ClientMessage, ContentKind, ErrorCode, Identity, JoinRequest, JoinSecret, Member, Nick, RelayMessage,
    RoomSecretsV2,
};
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::keys::V2Keys;
use super::log::{Action, Core};
use super::{RotateError, V2Limits, V2Safety};
use crate::error::SessionError;
use crate::listed::ListedMembers;
use crate::session::{
    handshake_v2, join, AckMatch, Callbacks, ConnState, ConnWriter, Event, GroupEvent, Handshaken,
    JoinedInfo, MemberInfo, Outbox, Outgoing, SessionConfig, SessionEnd, TokenBucket,
};
use crate::state::v2_room_state_path;
use crate::transport::{self, Rotation};
use crate::trust::RelayCheck;

/// What a front end asks of the session.
#[derive(Debug)]
pub(super) enum Request {
    Send {
        id: u64,
        kind: ContentKind,
        body: String,
    },
    Who,
    Whois(Nick),
    Kick(Nick),
    Ban(Nick),
    Unban(Nick),
    Safety(oneshot::Sender<Option<V2Safety>>),
    Sync(oneshot::Sender<bool>),
    Close {
        flush: Duration,
    },
    /// The owner's password rotation, with the new password's outputs.
    Rotate {
        secrets: Box<RoomSecretsV2>,
        reply: oneshot::Sender<Result<u32, RotateError>>,
    },
}

/// Where a connection starts reading the log.
pub(super) enum Resume {
    /// The session's first connection: load the room's state, read after its cursor.
    First(V2Limits),
    /// A reconnection: read after this `seq`.
    After(u64),
}

/// A joined connection.
pub(super) struct Established {
    conn: Handshaken,
    info: JoinedInfo,
    leftover: Vec<RelayMessage>,
    /// The room core, built on the first connection.
    core: Option<Core>,
    /// The index in `config.relay` of the address this connection reached.
    addr: usize,
}

impl Established {
    /// The relay's static key, checked against the pins.
    pub(super) fn relay_key(&self) -> &[u8; 32] {
        &self.conn.relay_key
    }
}

/// Connects and handshakes under `chatroom/2`, checking the relay pin.
async fn handshaken(
    cfg: &SessionConfig,
    callbacks: &dyn Callbacks,
    (attempt, addr_index): (u32, usize),
) -> Result<Handshaken, SessionError> {
    let relay = cfg.relay.get(addr_index);
    let addr = relay.to_string();
    callbacks.event(Event::State(ConnState::Connecting { attempt, addr: addr.clone() }));
    let stream = transport::connect(relay, cfg.proxy.as_ref(), cfg.limits.connect_timeout).await?;
    callbacks.event(Event::State(ConnState::Joining));
    let limit = cfg.limits.handshake_timeout;
    let conn =
        tokio::time::timeout(limit, handshake_v2(stream, &addr, &cfg.relay_pin)).await.map_err(|_| {
            SessionError::Timeout { what: "in the handshake with", addr: addr.clone(), secs: limit.as_secs() }
        })??;
    if conn.check == RelayCheck::FirstUse {
        callbacks.event(Event::RelayFirstUse { addr, fingerprint: hex::encode(conn.relay_key) });
    }
    Ok(conn)
}

/// Joins the room on a handshaken connection with `join_secret`.
async fn join_with(
    cfg: &SessionConfig,
    identity: &Identity,
    conn: &mut Handshaken,
    join_secret: JoinSecret,
    (create, after, addr_index): (bool, u64, usize),
) -> Result<(JoinedInfo, Vec<RelayMessage>), SessionError> {
    let request = JoinRequest::new(
        identity,
        &conn.handshake_hash,
        cfg.room.clone(),
        cfg.nick.clone(),
        join_secret,
        create,
        after,
    )
    .for_version_2();
    let limit = cfg.limits.handshake_timeout;
    tokio::time::timeout(limit, join(conn, request)).await.map_err(|_| SessionError::Timeout {
        what: "joining the room on",
        addr: cfg.relay.get(addr_index).to_string(),
        secs: limit.as_secs(),
    })?
}

/// Connects, handshakes under `chatroom/2` (checking the relay pin), derives the secrets if
/// needed, and joins with the v2 join secret, asking history after `history_after`. On the
/// first connection a saved state's secrets join first (after a rotation they are the current
/// ones, whatever password was given); if the relay refuses them and the password's differ, the
/// password is newer (a rotation this member missed while offline) and joins instead: the log
/// then brings the rotation.
pub(super) async fn establish(
    cfg: &SessionConfig,
    keys: &V2Keys,
    identity: &Identity,
    callbacks: &dyn Callbacks,
    resume: Resume,
    create: bool,
    (attempt, addr_index): (u32, usize),
) -> Result<Established, SessionError> {
    let mut conn = handshaken(cfg, callbacks, (attempt, addr_index)).await?;
    let secrets = keys.get(&conn.relay_key, callbacks).await?;
    // The first connection loads the room's state (its cursor is what history follows).
    let (after, core) = match resume {
        Resume::After(after) => (after, None),
        Resume::First(limits) => {
            let path = state_path(cfg, &conn.relay_key);
            let (core, warning) = Core::new(
                identity,
                cfg.room.clone(),
                cfg.nick.clone(),
                conn.relay_key,
                secrets.clone(),
                limits,
                path,
            );
            if let Some(w) = warning {
                callbacks.event(Event::Warning(w));
            }
            (core.history_after(), Some(core))
        }
    };
    let saved = core.as_ref().map(|c| c.secrets().clone()).filter(|s| *s != secrets);
    let how = (create, after, addr_index);
    let first = saved.as_ref().unwrap_or(&secrets).join_secret.clone();
    match join_with(cfg, identity, &mut conn, first, how).await {
        Ok((info, leftover)) => {
            if let Some(saved) = saved {
                keys.replace(&conn.relay_key, saved);
            }
            Ok(Established { conn, info, leftover, core, addr: addr_index })
        }
        Err(e) if saved.is_some() && e.refusal() == Some(ErrorCode::WrongPassword) => {
            let relay_key = conn.relay_key;
            let mut conn = handshaken(cfg, callbacks, (attempt, addr_index)).await?;
            if conn.relay_key != relay_key {
                return Err(SessionError::Protocol("the relay's key changed between two connections".into()));
            }
            let (info, leftover) =
                join_with(cfg, identity, &mut conn, secrets.join_secret.clone(), how).await?;
            callbacks.event(Event::Warning(
                "the room's password changed while this client was away; it joined with the password given and \
                 reads the change from the room's log"
                    .into(),
            ));
            Ok(Established { conn, info, leftover, core, addr: addr_index })
        }
        Err(e) => Err(e),
    }
}

/// The v2 state file of a room: next to the v1 one, with `.v2` appended.
pub(super) fn state_path(cfg: &SessionConfig, relay_key: &[u8; 32]) -> Option<std::path::PathBuf> {
    Some(v2_room_state_path(cfg.data_dir.as_ref()?, relay_key, &cfg.room))
}

type Incoming = Result<Vec<RelayMessage>, SessionError>;
type Connecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Established, SessionError>> + Send>>;

struct Up {
    writer: ConnWriter,
    incoming: mpsc::Receiver<Incoming>,
    reader: JoinHandle<()>,
    last_rx: Instant,
    last_tx: Instant,
}

impl Drop for Up {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

enum Link {
    Up(Up),
    Waiting { until: Instant, attempt: u32 },
    Connecting { fut: Connecting, attempt: u32 },
}

enum Wake {
    Request(Option<Request>),
    Incoming(Option<Incoming>),
    Connected(Result<Box<Established>, SessionError>),
    Timer,
}

async fn link_event(link: &mut Link) -> Wake {
    match link {
        Link::Up(up) => Wake::Incoming(up.incoming.recv().await),
        Link::Connecting { fut, .. } => Wake::Connected(fut.as_mut().await.map(Box::new)),
        Link::Waiting { .. } => std::future::pending().await,
    }
}

/// The session task's state.
pub(super) struct Driver {
    config: Arc<SessionConfig>,
    keys: Arc<V2Keys>,
    identity: Arc<Identity>,
    callbacks: Arc<dyn Callbacks>,
    requests: mpsc::Receiver<Request>,
    requests_open: bool,
    relay_key: [u8; 32],
    core: Core,
    outbox: Outbox,
    closing: Option<Instant>,
    flush: Duration,
    ping_token: u64,
    /// `Sync` requests: the token of their Ping, and whether its Pong came.
    syncs: Vec<(u64, oneshot::Sender<bool>, bool)>,
    /// When to publish the GroupInfo if it is still stale.
    info_due: Option<Instant>,
    /// The relay's member list as last told (its claim, for `/whois`; never pinned).
    listed: ListedMembers,
    owner: Option<chatroom_crypto::PublicIdentity>,
    /// Which relay address the next attempt uses.
    rotation: Rotation,
    /// The longest random wait before publishing a stale GroupInfo.
    grace: Duration,
    /// The longest random wait before sharing history with a newcomer, and when this
    /// member's share is due.
    share_delay: Duration,
    share_due: Option<Instant>,
    /// Pacing under the relay's rate limit (`Limits::send_rate`), carried across reconnects.
    bucket: Option<TokenBucket>,
    /// The answer to a password rotation, given once its three items are sent.
    rotating: Option<oneshot::Sender<Result<u32, RotateError>>>,
}

impl Driver {
    pub(super) fn new(
        config: Arc<SessionConfig>,
        (grace, share_delay): (Duration, Duration),
        keys: Arc<V2Keys>,
        identity: Arc<Identity>,
        callbacks: Arc<dyn Callbacks>,
        requests: mpsc::Receiver<Request>,
        first: &mut Established,
    ) -> Result<Self, SessionError> {
        let relay_key = first.conn.relay_key;
        let core = first
            .core
            .take()
            .ok_or(SessionError::Protocol("no room state on the first connection".into()))?;
        let bucket = config
            .limits
            .send_rate
            .map(|(burst, rate)| TokenBucket::new(burst, rate.max(0.001), Instant::now()));
        Ok(Self {
            bucket,
            grace,
            share_delay,
            share_due: None,
            keys,
            identity,
            callbacks,
            requests,
            requests_open: true,
            relay_key,
            core,
            outbox: Outbox::default(),
            closing: None,
            flush: Duration::ZERO,
            ping_token: 0,
            syncs: Vec::new(),
            info_due: None,
            listed: ListedMembers::default(),
            owner: None,
            rotation: Rotation::starting_at(config.relay.len(), first.addr),
            rotating: None,
            config,
        })
    }

    fn emit(&self, event: Event) {
        self.callbacks.event(event);
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let limits = &self.config.limits;
        let base = limits.backoff_initial.saturating_mul(1u32 << attempt.min(16)).min(limits.backoff_max);
        let half = base / 2;
        half + half.mul_f64(f64::from(OsRng.next_u32()) / f64::from(u32::MAX))
    }

    fn after_loss(&mut self, err: SessionError, attempt: u32) -> Result<Link, SessionEnd> {
        if !err.is_retryable() {
            return Err(SessionEnd::Failed(err));
        }
        self.outbox.disconnected();
        self.syncs.clear();
        // The backoff is paid once per round of the relay's addresses.
        let delay = self.rotation.failed(attempt).map_or(Duration::ZERO, |round| self.backoff(round));
        self.emit(Event::State(ConnState::Reconnecting { delay, reason: err.to_string() }));
        Ok(Link::Waiting { until: Instant::now() + delay, attempt })
    }

    fn attempt(&self, attempt: u32) -> Connecting {
        let (config, keys, identity, callbacks) =
            (self.config.clone(), self.keys.clone(), self.identity.clone(), self.callbacks.clone());
        let after = self.core.history_after();
        let addr = self.rotation.current();
        Box::pin(async move {
            establish(&config, &keys, &identity, &*callbacks, Resume::After(after), false, (attempt, addr))
                .await
        })
    }

    fn next_wake(&mut self, link: &Link) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(3600);
        match link {
            Link::Up(up) => {
                wake = wake.min(up.last_tx + self.config.limits.ping_after);
                wake = wake.min(up.last_rx + self.config.limits.dead_after);
                if self.outbox.next_unsent().is_some() {
                    if let Some(bucket) = &mut self.bucket {
                        let now = Instant::now();
                        wake = wake.min(now + bucket.until_next(now));
                    }
                }
            }
            Link::Waiting { until, .. } => wake = wake.min(*until),
            Link::Connecting { .. } => {}
        }
        for at in [self.closing, self.info_due, self.share_due].into_iter().flatten() {
            wake = wake.min(at);
        }
        wake
    }

    fn save(&mut self) {
        if let Some(warning) = self.core.save() {
            self.emit(Event::Warning(warning));
        }
    }

    pub(super) async fn run(mut self, first: Established) -> SessionEnd {
        let mut link = match self.connected(first, false).await {
            Ok(up) => Link::Up(up),
            Err(e) => match self.after_loss(e, 0) {
                Ok(l) => l,
                Err(end) => return end,
            },
        };
        loop {
            if let Some(deadline) = self.closing {
                // Messages typed before the entry won wait in the core, not yet in the outbox.
                let pending = self.outbox.len() + self.core.unsent();
                if pending == 0 || Instant::now() >= deadline {
                    if let Link::Up(up) = &mut link {
                        up.writer.shutdown().await;
                    }
                    self.save();
                    return SessionEnd::Closed { unacknowledged: pending };
                }
            }
            let wake_at = self.next_wake(&link);
            let connecting_attempt = match &link {
                Link::Connecting { attempt, .. } => *attempt,
                _ => 0,
            };
            let wake = tokio::select! {
                r = self.requests.recv(), if self.requests_open => Wake::Request(r),
                w = link_event(&mut link) => w,
                _ = tokio::time::sleep_until(wake_at.into()) => Wake::Timer,
            };
            let mut failure: Option<(SessionError, u32)> = None;
            match wake {
                Wake::Request(None) => {
                    self.requests_open = false;
                    self.closing.get_or_insert_with(Instant::now);
                }
                Wake::Request(Some(request)) => {
                    if let Err(e) = self.on_request(request, &mut link).await {
                        failure = Some((e, 0));
                    }
                }
                Wake::Incoming(Some(Ok(messages))) => {
                    if let Link::Up(up) = &mut link {
                        up.last_rx = Instant::now();
                        if let Err(e) = self.on_messages(messages, up).await {
                            failure = Some((e, 0));
                        }
                    }
                }
                Wake::Incoming(Some(Err(e))) => failure = Some((e, 0)),
                Wake::Incoming(None) => failure = Some((SessionError::Lost("reader stopped".into()), 0)),
                Wake::Connected(Ok(est)) => match self.connected(*est, true).await {
                    Ok(up) => link = Link::Up(up),
                    Err(e) => failure = Some((e, connecting_attempt.saturating_add(1))),
                },
                Wake::Connected(Err(e)) => failure = Some((e, connecting_attempt.saturating_add(1))),
                Wake::Timer => {}
            }
            if failure.is_none() {
                failure = self.on_timers(&mut link).await.err().map(|e| (e, 0));
            }
            if let Some((err, attempt)) = failure {
                self.save();
                link = match self.after_loss(err, attempt) {
                    Ok(l) => l,
                    Err(end) => return end,
                };
            }
            if let Link::Waiting { until, attempt } = link {
                if Instant::now() >= until {
                    link = Link::Connecting { fut: self.attempt(attempt), attempt };
                }
            }
        }
    }

    async fn on_timers(&mut self, link: &mut Link) -> Result<(), SessionError> {
        let Link::Up(up) = link else { return Ok(()) };
        let now = Instant::now();
        let limits = &self.config.limits;
        if now.saturating_duration_since(up.last_rx) >= limits.dead_after {
            return Err(SessionError::Lost(format!(
                "no traffic from the relay for {} s",
                limits.dead_after.as_secs()
            )));
        }
        if now.saturating_duration_since(up.last_tx) >= limits.ping_after {
            self.ping_token = self.ping_token.wrapping_add(1);
            up.writer.send(&[ClientMessage::Ping { token: self.ping_token }]).await?;
            up.last_tx = now;
        }
        if self.info_due.is_some_and(|due| now >= due) {
            self.info_due = None;
            self.core.refresh_group_info();
        }
        if self.share_due.is_some_and(|due| now >= due) {
            self.share_due = None;
            self.core.share_history();
        }
        // The time trigger of healing, checked at every wake (the keep-alive bounds the gap).
        self.core.maybe_heal(super::log::now_secs());
        self.pump(up).await
    }

    /// Sends what the core asked for (relay items, then the outbox) and reports its events.
    async fn pump(&mut self, up: &mut Up) -> Result<(), SessionError> {
        let mut items = Vec::new();
        for action in std::mem::take(&mut self.core.out) {
            match action {
                Action::Emit(Event::Group(GroupEvent::PasswordRotated { generation, by, own: true })) => {
                    if let Some(reply) = self.rotating.take() {
                        let _ = reply.send(Ok(generation));
                    }
                    self.emit(Event::Group(GroupEvent::PasswordRotated { generation, by, own: true }));
                }
                Action::Emit(event) => self.emit(event),
                Action::Relay(m) => items.push(m),
                Action::Envelope { id, counter, envelope } => {
                    self.outbox.push(Outgoing { id, counter, envelope })
                }
            }
        }
        let now = Instant::now();
        while let Some(next) = self.outbox.next_unsent() {
            if let Some(bucket) = &mut self.bucket {
                if !bucket.try_take(now) {
                    break;
                }
            }
            items.push(ClientMessage::Send { envelope: next.envelope.clone() });
            self.outbox.mark_sent();
        }
        if !items.is_empty() {
            up.writer.send(&items).await?;
            up.last_tx = Instant::now();
        }
        if let Some(secrets) = self.core.take_changed_secrets() {
            self.keys.replace(&self.relay_key, secrets);
        }
        if self.core.group_info_stale() && self.info_due.is_none() {
            let grace = self.grace;
            let jitter = grace.mul_f64(f64::from(OsRng.next_u32()) / f64::from(u32::MAX));
            self.info_due = Some(Instant::now() + jitter);
        }
        // History for a newcomer: each member waits at random; a share read first cancels.
        if !self.core.share_wanted() {
            self.share_due = None;
        } else if self.share_due.is_none() {
            let jitter = self.share_delay.mul_f64(f64::from(OsRng.next_u32()) / f64::from(u32::MAX));
            self.share_due = Some(Instant::now() + jitter);
        }
        self.save();
        Ok(())
    }

    async fn connected(&mut self, est: Established, rejoin: bool) -> Result<Up, SessionError> {
        if est.conn.relay_key != self.relay_key {
            return Err(SessionError::RelayKeyMismatch {
                addr: self.config.relay.get(est.addr).to_string(),
                expected: hex::encode(self.relay_key),
                actual: hex::encode(est.conn.relay_key),
                pin_source: "this session".into(),
            });
        }
        let Established { conn, info, leftover, addr: est_addr, .. } = est;
        let Handshaken { mut reader, writer, .. } = conn;
        let (tx, incoming) = mpsc::channel::<Incoming>(8);
        let reader = tokio::spawn(async move {
            loop {
                let next = reader.recv().await;
                let stop = next.is_err();
                if tx.send(next).await.is_err() || stop {
                    break;
                }
            }
        });
        let now = Instant::now();
        let mut up = Up { writer, incoming, reader, last_rx: now, last_tx: now };
        self.owner = Some(info.owner);
        self.listed.restart();
        let room_code = self.keys.get(&self.relay_key, &*self.callbacks).await?.room_code().to_string();
        self.emit(Event::Joined {
            created: info.created,
            owner: info.owner,
            owner_is_me: info.owner == self.identity.public(),
            safety_code: room_code,
            relay_fingerprint: hex::encode(self.relay_key),
            rejoin,
            addr: self.config.relay.get(est_addr).to_string(),
        });
        self.emit(Event::State(ConnState::CatchingUp));
        self.outbox.disconnected();
        self.core.on_joined(info.created, info.oldest_seq)?;
        self.on_messages(leftover, &mut up).await?;
        Ok(up)
    }

    async fn on_request(&mut self, request: Request, link: &mut Link) -> Result<(), SessionError> {
        let up = match link {
            Link::Up(up) => Some(up),
            _ => None,
        };
        let control = match request {
            Request::Close { flush } => {
                self.flush = flush;
                self.closing = Some(Instant::now() + flush);
                return Ok(());
            }
            Request::Safety(reply) => {
                let _ = reply.send(self.core.safety());
                return Ok(());
            }
            Request::Whois(nick) => {
                let mut who = self.core.whois(nick);
                who.listed = self.listed.key_of(&who.nick);
                self.emit(Event::Whois(who));
                return Ok(());
            }
            Request::Sync(done) => {
                let Some(up) = up else {
                    let _ = done.send(false);
                    return Ok(());
                };
                self.ping_token = self.ping_token.wrapping_add(1);
                self.syncs.push((self.ping_token, done, false));
                up.writer.send(&[ClientMessage::Ping { token: self.ping_token }]).await?;
                up.last_tx = Instant::now();
                return Ok(());
            }
            Request::Send { id, kind, body } => return self.on_send(up, id, kind, body).await,
            Request::Rotate { secrets, reply } => return self.on_rotate(up, *secrets, reply).await,
            Request::Who => ClientMessage::Who,
            Request::Kick(nick) => ClientMessage::Kick { nick },
            Request::Ban(nick) => ClientMessage::Ban { nick },
            Request::Unban(nick) => ClientMessage::Unban { nick },
        };
        match up {
            Some(up) => {
                up.writer.send(&[control]).await?;
                up.last_tx = Instant::now();
            }
            None => self.emit(Event::Warning("not connected to the relay; the command was not sent".into())),
        }
        Ok(())
    }

    /// A chat message to seal and send, unless too many already wait for the relay.
    async fn on_send(
        &mut self,
        up: Option<&mut Up>,
        id: u64,
        kind: ContentKind,
        body: String,
    ) -> Result<(), SessionError> {
        // Messages typed before the entry won count too: they wait in the core.
        let queued = self.outbox.len() + self.core.unsent();
        if queued >= self.config.limits.max_queued {
            self.emit(Event::SendFailed {
                id,
                code: chatroom_crypto::ErrorCode::Other(0),
                detail: format!("{queued} messages already wait for the relay; not sent"),
            });
            return Ok(());
        }
        self.core.send(id, kind, body);
        match up {
            Some(up) => self.pump(up).await,
            None => Ok(()),
        }
    }

    /// The owner's password rotation: refused offline or to anyone else; answered on `reply`
    /// once the relay took the new verifier and GroupInfo.
    async fn on_rotate(
        &mut self,
        up: Option<&mut Up>,
        secrets: RoomSecretsV2,
        reply: oneshot::Sender<Result<u32, RotateError>>,
    ) -> Result<(), SessionError> {
        let Some(up) = up else {
            let _ = reply.send(Err(RotateError::Refused(
                "not connected to the relay; try again once the session is back".into(),
            )));
            return Ok(());
        };
        if self.owner != Some(self.identity.public()) {
            let _ = reply.send(Err(RotateError::NotOwner));
            return Ok(());
        }
        match self.core.rotate(secrets) {
            Ok(_) => self.rotating = Some(reply),
            Err(e) => {
                let _ = reply.send(Err(e));
                return Ok(());
            }
        }
        self.pump(up).await
    }

    /// A part of the relay's member list; the whole list once `more` is false.
    fn on_members(&mut self, more: bool, members: Vec<Member>) {
        let Some(list) = self.listed.on_part(more, members) else { return };
        // The relay's claim: compared with the pins, never pinned.
        for m in list {
            self.core.check_claim(&m.nick, &m.identity);
        }
        let members = self.members(self.listed.list());
        self.emit(Event::Members(members));
    }

    fn on_presence(
        &mut self,
        event: chatroom_crypto::PresenceEvent,
        nick: Nick,
        identity: chatroom_crypto::PublicIdentity,
    ) {
        use chatroom_crypto::PresenceEvent;
        if matches!(event, PresenceEvent::Kicked | PresenceEvent::Banned) {
            self.core.on_moderated(identity);
        }
        // The relay's claim: compared with the pins, never pinned.
        self.core.check_claim(&nick, &identity);
        self.listed.on_presence(event, &nick, identity);
        self.emit(Event::Presence { event, nick, identity });
    }

    fn members(&self, list: &[Member]) -> Vec<MemberInfo> {
        let me = self.identity.public();
        list.iter()
            .map(|m| MemberInfo {
                nick: m.nick.clone(),
                identity: m.identity,
                owner: Some(m.identity) == self.owner,
                me: m.identity == me,
            })
            .collect()
    }

    async fn on_messages(&mut self, messages: Vec<RelayMessage>, up: &mut Up) -> Result<(), SessionError> {
        let mut result = Ok(());
        for message in messages {
            let step = self.on_message(message, up).await;
            if let Err(e) = step {
                result = Err(e);
                break;
            }
        }
        self.finish_syncs();
        let pumped = self.pump(up).await;
        result.and(pumped)
    }

    /// Answers the syncs whose Pong came, once no delivery before it is still held.
    fn finish_syncs(&mut self) {
        if self.core.holding() {
            return;
        }
        for (_, done, _) in self.syncs.extract_if(.., |s| s.2) {
            let _ = done.send(true);
        }
    }

    async fn on_message(&mut self, message: RelayMessage, up: &mut Up) -> Result<(), SessionError> {
        match message {
            RelayMessage::Deliver { seq, history, envelope } => {
                let unanswered = self.outbox.in_flight() > 0;
                self.core.on_arrival((seq, history, envelope), unanswered)?
            }
            RelayMessage::Ack { counter, seq } => match self.outbox.answer(counter) {
                AckMatch::Matched(sent) => {
                    if sent.id != 0 {
                        self.emit(Event::Sent { id: sent.id, seq });
                    }
                    self.core.on_ack(seq, sent.envelope);
                    self.core.on_answer(Some(seq), self.outbox.in_flight() > 0)?;
                    // Everything below `seq` has arrived; the own envelope is processed before
                    // the next delivery, or at this Ping's Pong if none comes first.
                    self.ping_token = self.ping_token.wrapping_add(1);
                    up.writer.send(&[ClientMessage::Ping { token: self.ping_token }]).await?;
                    up.last_tx = Instant::now();
                }
                AckMatch::Unexpected => {}
            },
            RelayMessage::SendError { counter, code, detail } => {
                if code == chatroom_crypto::ErrorCode::RateLimited {
                    if let Some(bucket) = &mut self.bucket {
                        bucket.drain(Instant::now());
                    }
                }
                if let AckMatch::Matched(failed) = self.outbox.answer(counter) {
                    if failed.id != 0 {
                        self.emit(Event::SendFailed { id: failed.id, code, detail });
                    } else {
                        self.emit(Event::Warning(format!("the relay refused a group change: {detail}")));
                        self.core.on_own_refused(counter)?;
                    }
                    self.core.on_answer(None, self.outbox.in_flight() > 0)?;
                }
            }
            RelayMessage::GroupInfoStored { after_seq } => self.core.on_group_info_stored(after_seq),
            RelayMessage::GroupInfo(part) => self.core.on_group_info(part)?,
            RelayMessage::Members { more, members } => self.on_members(more, members),
            RelayMessage::Presence { event, nick, identity } => self.on_presence(event, nick, identity),
            RelayMessage::HistoryEnd { .. } => {
                self.emit(Event::HistoryEnd);
                self.emit(Event::State(ConnState::Live));
            }
            RelayMessage::Error { code, detail } => self.core.on_error(code, detail),
            RelayMessage::Ping { token } => {
                up.writer.send(&[ClientMessage::Pong { token }]).await?;
                up.last_tx = Instant::now();
            }
            RelayMessage::Pong { token } => {
                // Whatever is held is above every own envelope already answered.
                self.core.settle_own(u64::MAX)?;
                if let Some(sync) = self.syncs.iter_mut().find(|s| s.0 == token) {
                    sync.2 = true;
                }
            }
            RelayMessage::Goodbye { code, detail } => return Err(SessionError::Refused { code, detail }),
            RelayMessage::Joined { .. } => {
                return Err(SessionError::Protocol("a second Joined on one connection".into()))
            }
            _ => {}
        }
        Ok(())
    }
}
