//! The session task: one loop that owns the connection, the room view and the outbox, and
//! reacts to requests from the front end, messages from the relay, and timers (keep-alive,
//! dead-connection detection, pacing, reconnect backoff, close deadline).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatroom_crypto::{
    seal, ClientMessage, Content, ContentKind, ErrorCode, Identity, JoinRequest, Nick, RelayMessage, RoomKeys,
};
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::connection::{handshake, join, ConnWriter, Handshaken, JoinedInfo};
use super::event::{Callbacks, ConnState, Event, SessionEnd};
use super::keys::RoomKeyCache;
use super::outbox::{AckMatch, Outbox, Outgoing};
use super::room::RoomView;
use super::SessionConfig;
use crate::error::SessionError;
use crate::state::{room_state_path, RoomState};
use crate::transport::{self, Rotation};
use crate::trust::RelayCheck;
use chatroom_net::TokenBucket;

/// What a front end asks of the session.
#[derive(Debug)]
pub(crate) enum Request {
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
    Close {
        flush: Duration,
    },
    /// Answered `true` once the relay has answered everything sent before it (a Ping and its
    /// Pong), `false` if not connected or the connection was lost first.
    Sync(oneshot::Sender<bool>),
}

/// Everything one connection attempt needs.
pub(crate) struct Attempt {
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) keys: Arc<RoomKeyCache>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) callbacks: Arc<dyn Callbacks>,
    /// `None` on the first join: load the room state once the relay key is known.
    pub(crate) history_after: Option<u64>,
    pub(crate) create: bool,
    pub(crate) attempt: u32,
    /// The index in `config.relay` of the address to connect to.
    pub(crate) addr: usize,
}

/// A joined connection.
pub(crate) struct Established {
    pub(crate) conn: Handshaken,
    pub(crate) info: JoinedInfo,
    pub(crate) leftover: Vec<RelayMessage>,
    pub(crate) room_keys: Arc<RoomKeys>,
    pub(crate) state: Option<RoomState>,
    /// History was asked for after this sequence number (below the last seen, on start, for
    /// recent context).
    pub(crate) history_after: u64,
    /// The index in `config.relay` of the address this connection reached.
    pub(crate) addr: usize,
}

/// Connects, handshakes (checking the relay pin), derives the room key if needed, and joins.
pub(crate) async fn establish(a: Attempt) -> Result<Established, SessionError> {
    let cfg = &a.config;
    let relay = cfg.relay.get(a.addr);
    let addr = relay.to_string();
    a.callbacks.event(Event::State(ConnState::Connecting { attempt: a.attempt, addr: addr.clone() }));
    let stream = transport::connect(relay, cfg.proxy.as_ref(), cfg.limits.connect_timeout).await?;
    a.callbacks.event(Event::State(ConnState::Joining));
    let limit = cfg.limits.handshake_timeout;
    let timed_out =
        |what: &'static str| SessionError::Timeout { what, addr: addr.clone(), secs: limit.as_secs() };
    let mut conn = tokio::time::timeout(limit, handshake(stream, &addr, &cfg.relay_pin))
        .await
        .map_err(|_| timed_out("in the handshake with"))??;
    if conn.check == RelayCheck::FirstUse {
        a.callbacks
            .event(Event::RelayFirstUse { addr: addr.clone(), fingerprint: hex::encode(conn.relay_key) });
    }
    let (state, history_after) = match a.history_after {
        Some(after) => (None, after),
        None => {
            let state = match &cfg.data_dir {
                Some(dir) => RoomState::load(&room_state_path(dir, &conn.relay_key, &cfg.room))?,
                None => RoomState::default(),
            };
            let after = state.last_seq.saturating_sub(cfg.limits.context_on_start);
            (Some(state), after)
        }
    };
    let room_keys = a.keys.get(&conn.relay_key, &*a.callbacks).await?;
    let request = JoinRequest::new(
        &a.identity,
        &conn.handshake_hash,
        cfg.room.clone(),
        cfg.nick.clone(),
        room_keys.join_secret.clone(),
        a.create,
        history_after,
    );
    let (info, leftover) = tokio::time::timeout(limit, join(&mut conn, request))
        .await
        .map_err(|_| timed_out("joining the room on"))??;
    Ok(Established { conn, info, leftover, room_keys, state, history_after, addr: a.addr })
}

type Connecting = Pin<Box<dyn Future<Output = Result<Established, SessionError>> + Send>>;
type Incoming = Result<Vec<RelayMessage>, SessionError>;

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

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The session task's state.
pub(crate) struct Driver {
    config: Arc<SessionConfig>,
    keys: Arc<RoomKeyCache>,
    identity: Arc<Identity>,
    callbacks: Arc<dyn Callbacks>,
    requests: mpsc::Receiver<Request>,
    requests_open: bool,
    relay_key: [u8; 32],
    room_keys: Arc<RoomKeys>,
    state_path: Option<PathBuf>,
    view: RoomView,
    outbox: Outbox,
    bucket: Option<TokenBucket>,
    /// The close deadline and how far each acknowledgement pushes it out.
    closing: Option<Instant>,
    flush: Duration,
    ping_token: u64,
    /// `Sync` requests waiting for the Pong of their Ping token.
    syncs: Vec<(u64, oneshot::Sender<bool>)>,
    save_failed: bool,
    /// Which relay address the next attempt uses.
    rotation: Rotation,
}

impl Driver {
    pub(crate) fn new(
        config: Arc<SessionConfig>,
        keys: Arc<RoomKeyCache>,
        identity: Arc<Identity>,
        callbacks: Arc<dyn Callbacks>,
        requests: mpsc::Receiver<Request>,
        first: &Established,
    ) -> Result<Self, SessionError> {
        let relay_key = first.conn.relay_key;
        let state_path = config.data_dir.as_ref().map(|d| room_state_path(d, &relay_key, &config.room));
        let state = first.state.clone().unwrap_or_default();
        let mut view = RoomView::new(identity.public(), &config.nick, config.room.clone(), state);
        view.set_kdf(keys.params());
        view.set_context_after(first.history_after);
        let bucket = config
            .limits
            .send_rate
            .map(|(burst, rate)| TokenBucket::new(burst, rate.max(0.001), Instant::now()));
        Ok(Self {
            keys,
            identity,
            callbacks,
            requests,
            requests_open: true,
            relay_key,
            room_keys: first.room_keys.clone(),
            state_path,
            view,
            outbox: Outbox::default(),
            bucket,
            closing: None,
            flush: Duration::ZERO,
            ping_token: 0,
            syncs: Vec::new(),
            save_failed: false,
            rotation: Rotation::starting_at(config.relay.len(), first.addr),
            config,
        })
    }

    fn emit(&self, event: Event) {
        self.callbacks.event(event);
    }

    fn save(&mut self) {
        if !self.view.take_dirty() {
            return;
        }
        if let Some(path) = &self.state_path {
            if let Err(e) = self.view.state().save(path) {
                if !self.save_failed {
                    self.emit(Event::Warning(format!("cannot save the room state: {e}")));
                }
                self.save_failed = true;
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let limits = &self.config.limits;
        let base = limits.backoff_initial.saturating_mul(1u32 << attempt.min(16)).min(limits.backoff_max);
        // Full jitter over the upper half: [base/2, base].
        let half = base / 2;
        let jitter = half.mul_f64(f64::from(OsRng.next_u32()) / f64::from(u32::MAX));
        half + jitter
    }

    fn after_loss(&mut self, err: SessionError, attempt: u32) -> Result<Link, SessionEnd> {
        if !err.is_retryable() {
            return Err(SessionEnd::Failed(err));
        }
        self.outbox.disconnected();
        // Pongs owed on the lost connection never come.
        self.syncs.clear();
        // The backoff is paid once per round of the relay's addresses.
        let delay = self.rotation.failed(attempt).map_or(Duration::ZERO, |round| self.backoff(round));
        self.emit(Event::State(ConnState::Reconnecting { delay, reason: err.to_string() }));
        Ok(Link::Waiting { until: Instant::now() + delay, attempt })
    }

    fn attempt(&self, attempt: u32) -> Connecting {
        Box::pin(establish(Attempt {
            config: self.config.clone(),
            keys: self.keys.clone(),
            identity: self.identity.clone(),
            callbacks: self.callbacks.clone(),
            history_after: Some(self.view.last_seq()),
            create: false,
            attempt,
            addr: self.rotation.current(),
        }))
    }

    fn next_wake(&mut self, link: &Link) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        match link {
            Link::Up(up) => {
                wake = wake.min(up.last_tx + self.config.limits.ping_after);
                wake = wake.min(up.last_rx + self.config.limits.dead_after);
                if self.outbox.next_unsent().is_some() {
                    if let Some(bucket) = &mut self.bucket {
                        wake = wake.min(now + bucket.until_next(now));
                    }
                }
            }
            Link::Waiting { until, .. } => wake = wake.min(*until),
            Link::Connecting { .. } => {}
        }
        if let Some(deadline) = self.closing {
            wake = wake.min(deadline);
        }
        wake
    }

    pub(crate) async fn run(mut self, first: Established) -> SessionEnd {
        let mut link = match self.connected(first, false).await {
            Ok(up) => Link::Up(up),
            Err(e) => match self.after_loss(e, 0) {
                Ok(l) => l,
                Err(end) => return end,
            },
        };
        loop {
            if let Some(deadline) = self.closing {
                if self.outbox.is_empty() {
                    if let Link::Up(up) = &mut link {
                        up.writer.shutdown().await;
                    }
                    self.save();
                    return SessionEnd::Closed { unacknowledged: 0 };
                }
                if Instant::now() >= deadline {
                    self.save();
                    return SessionEnd::Closed { unacknowledged: self.outbox.len() };
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
                    if self.closing.is_none() {
                        self.closing = Some(Instant::now());
                    }
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
        self.flush(up).await
    }

    async fn flush(&mut self, up: &mut Up) -> Result<(), SessionError> {
        let now = Instant::now();
        let mut batch = Vec::new();
        while let Some(next) = self.outbox.next_unsent() {
            if let Some(bucket) = &mut self.bucket {
                if !bucket.try_take(now) {
                    break;
                }
            }
            batch.push(ClientMessage::Send { envelope: next.envelope.clone() });
            self.outbox.mark_sent();
        }
        if !batch.is_empty() {
            up.writer.send(&batch).await?;
            up.last_tx = now;
        }
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
        self.emit(Event::Joined {
            created: info.created,
            owner: info.owner,
            owner_is_me: info.owner == self.identity.public(),
            safety_code: self.room_keys.safety_code().to_string(),
            relay_fingerprint: hex::encode(self.relay_key),
            rejoin,
            addr: self.config.relay.get(est_addr).to_string(),
        });
        for event in self.view.on_joined(&info) {
            self.emit(event);
        }
        self.emit(Event::State(ConnState::CatchingUp));
        // The pacing bucket carries on across reconnects: the relay's limit belongs to the
        // identity, so a new connection brings no fresh burst.
        self.outbox.disconnected();
        self.on_messages(leftover, &mut up).await?;
        self.flush(&mut up).await?;
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
            Request::Sync(done) => {
                let Some(up) = up else {
                    let _ = done.send(false);
                    return Ok(());
                };
                self.ping_token = self.ping_token.wrapping_add(1);
                self.syncs.push((self.ping_token, done));
                up.writer.send(&[ClientMessage::Ping { token: self.ping_token }]).await?;
                up.last_tx = Instant::now();
                return Ok(());
            }
            Request::Send { id, kind, body } => {
                if self.outbox.len() >= self.config.limits.max_queued {
                    self.emit(Event::SendFailed {
                        id,
                        code: ErrorCode::Other(0),
                        detail: format!(
                            "{} messages already wait for the relay; not sent",
                            self.outbox.len()
                        ),
                    });
                    return Ok(());
                }
                let now = now_micros();
                let counter = self.view.next_counter(now);
                self.save();
                let content =
                    Content { timestamp_ms: now / 1000, kind, nick: self.config.nick.clone(), body };
                match seal(&self.room_keys.message_key, &self.identity, &self.config.room, counter, &content)
                {
                    Ok(envelope) => self.outbox.push(Outgoing { id, counter, envelope }),
                    Err(e) => {
                        self.view.on_own_refused(counter);
                        self.emit(Event::SendFailed {
                            id,
                            code: ErrorCode::EnvelopeTooLarge,
                            detail: e.to_string(),
                        });
                        return Ok(());
                    }
                }
                return match up {
                    Some(up) => self.flush(up).await,
                    None => Ok(()),
                };
            }
            Request::Whois(nick) => {
                self.emit(Event::Whois(self.view.whois(&nick)));
                return Ok(());
            }
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

    /// One delivery: its event, preceded by a warning when its nickname looks like another.
    fn on_deliver(&mut self, seq: u64, history: bool, envelope: &[u8]) {
        let Some(event) = self.view.on_deliver(&self.room_keys.message_key, seq, history, envelope) else {
            return;
        };
        if let Event::Message(m) = &event {
            if let Some(like) = self.view.look_alike(&m.nick) {
                self.emit(Event::LookAlike { nick: m.nick.clone(), sender: m.sender, like });
            }
        }
        self.emit(event);
    }

    async fn on_messages(&mut self, messages: Vec<RelayMessage>, up: &mut Up) -> Result<(), SessionError> {
        let mut result = Ok(());
        for message in messages {
            match message {
                RelayMessage::Deliver { seq, history, envelope } => self.on_deliver(seq, history, &envelope),
                RelayMessage::Ack { counter, seq } => match self.outbox.answer(counter) {
                    AckMatch::Matched(sent) => {
                        self.view.on_own_ack(sent.counter, seq);
                        // Closing waits as long as acknowledgements keep coming.
                        if self.closing.is_some() {
                            self.closing = Some(Instant::now() + self.flush);
                        }
                        self.emit(Event::Sent { id: sent.id, seq });
                    }
                    AckMatch::Unexpected => self.emit(Event::Warning(format!(
                        "the relay acknowledged counter {counter}, which no message in flight has; ignored"
                    ))),
                },
                RelayMessage::SendError { counter, code, detail } => match self.outbox.answer(counter) {
                    AckMatch::Matched(failed) => {
                        self.view.on_own_refused(failed.counter);
                        if code == ErrorCode::RateLimited {
                            if let Some(bucket) = &mut self.bucket {
                                bucket.drain(Instant::now());
                            }
                        }
                        // A refusal is an answer too: closing goes on waiting for the rest.
                        if self.closing.is_some() {
                            self.closing = Some(Instant::now() + self.flush);
                        }
                        self.emit(Event::SendFailed { id: failed.id, code, detail });
                    }
                    AckMatch::Unexpected => self.emit(Event::Warning(format!(
                        "the relay refused counter {counter}, which no message in flight has; ignored"
                    ))),
                },
                RelayMessage::Members { more, members } => {
                    for event in self.view.on_members(more, members) {
                        self.emit(event);
                    }
                }
                RelayMessage::Presence { event, nick, identity } => {
                    for event in self.view.on_presence(event, nick, identity) {
                        self.emit(event);
                    }
                }
                RelayMessage::HistoryEnd { .. } => {
                    self.view.end_context();
                    self.emit(Event::HistoryEnd);
                    self.emit(Event::State(ConnState::Live));
                }
                RelayMessage::Error { code, detail } => self.emit(Event::CommandFailed { code, detail }),
                RelayMessage::Ping { token } => {
                    up.writer.send(&[ClientMessage::Pong { token }]).await?;
                    up.last_tx = Instant::now();
                }
                RelayMessage::Pong { token } => {
                    if let Some(i) = self.syncs.iter().position(|(t, _)| *t == token) {
                        let _ = self.syncs.swap_remove(i).1.send(true);
                    }
                }
                RelayMessage::Goodbye { code, detail } => {
                    result = Err(SessionError::Refused { code, detail });
                    break;
                }
                RelayMessage::Joined { .. } => {
                    result = Err(SessionError::Protocol("a second Joined on one connection".into()));
                    break;
                }
                _ => {}
            }
        }
        self.save();
        result
    }
}
