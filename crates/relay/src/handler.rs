//! One connection: the Noise handshake, the join, then the member's requests.
//!
//! The reader half stays in this task; a writer task owns the sending half and the member's
//! outbox. Every limit is checked before the work it protects: a frame's length before its
//! body is read, each handshake message's exact length before any Diffie-Hellman, failed-join
//! lockouts before the join signature is verified.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatroom_crypto::{
    encode_frame, items, ClientMessage, DecodeError, EnvelopeHeader, ErrorCode, JoinRequest, Nick,
    NoiseError, PublicIdentity, RelayMessage, Responder, RoomName, StaticKeypair, Transport,
    TransportReceiver, FRAME_HEADER_LEN, HANDSHAKE1_LEN, HANDSHAKE1_V2_LEN, HANDSHAKE3_LEN,
    MAX_ENVELOPE_V2_LEN, MAX_FRAME_LEN,
};
use chatroom_net::{FrameError, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, info_span, Instrument};

use crate::abuse::{AbuseLimits, Lockout, SendScope};
use crate::config::Config;
use crate::limits::{address_key, AddressCount, AddressSlot, LogBudget, SendRate, TokenBucket};
use crate::outbox::{encode, write_loop, Offered, Outbox, PushError};
use crate::rooms::rules::too_many_attempts;
use crate::rooms::{
    member_items, ConnectionId, JoinArgs, JoinPolicy, Link, Moderation, Refusal, RoomService,
};
use crate::shutdown::Shutdown;

/// The smallest transport frame: an AEAD tag around at least one item header.
const MIN_TRANSPORT_FRAME: usize = 16 + chatroom_crypto::ITEM_HEADER_LEN;
/// Wire type of `Send`: a malformed `Send` long enough to hold a counter is answered with a
/// `SendError` naming that counter, not a goodbye.
const SEND_ITEM: u8 = 0x02;
/// How long the writer gets to flush a closing connection.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// After a goodbye, incoming bytes are read and dropped for this long (at most
/// `LINGER_BYTES`), so the goodbye is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 16;
/// `Send`s of one connection that may be stored at once: the handler keeps reading and
/// submitting a connection's envelopes while earlier ones commit, so one storage transaction
/// (and one fsync) carries many of them, and answers each once it is durable, in arrival
/// order. At the limit it stops reading the connection until the oldest is answered.
pub(crate) const MAX_SENDS_IN_FLIGHT: usize = 64;
/// How long a reply waits for room in the member's own queue before the member counts as a
/// slow consumer.
const REPLY_WAIT: Duration = Duration::from_secs(2);

/// Queues a reply; a member that does not read its replies is closed as a slow consumer.
async fn reply(outbox: &Outbox, item: Bytes) -> bool {
    // A reply nearly always finds room at once. Waiting for room is boxed, so that its state
    // (a timer among it) is not part of every connection's task for as long as it lives.
    let pushed = match outbox.offer(item) {
        Offered::Queued => Ok(()),
        Offered::Closed => Err(PushError::Closed),
        Offered::Full(item) => Box::pin(outbox.push_reply(item, REPLY_WAIT)).await,
    };
    match pushed {
        Ok(()) => true,
        Err(PushError::Full) => {
            outbox.close(
                ErrorCode::SlowConsumer,
                "you do not read the relay's answers; reconnect when you can",
            );
            false
        }
        Err(PushError::Closed) => false,
    }
}

/// The answer to one request, in the order the requests arrived: ready at once, or once the
/// envelope it answers is durable.
type Answer = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// Waits for the oldest pending answer; cancel-safe (an answer is removed only when ready).
async fn next_answer(pending: &mut VecDeque<Answer>) -> Option<Bytes> {
    let answer = pending.front_mut()?.await;
    pending.pop_front();
    Some(answer)
}

/// The oldest pending answer if it is ready now, without waiting.
async fn ready_answer(pending: &mut VecDeque<Answer>) -> Option<Bytes> {
    std::future::poll_fn(|cx| {
        let ready = match pending.front_mut().map(|answer| answer.as_mut().poll(cx)) {
            Some(std::task::Poll::Ready(answer)) => Some(answer),
            _ => None,
        };
        if ready.is_some() {
            pending.pop_front();
        }
        std::task::Poll::Ready(ready)
    })
    .await
}

/// Queues every pending answer, oldest first.
async fn answer_all(pending: &mut VecDeque<Answer>, outbox: &Outbox) -> bool {
    while let Some(answer) = next_answer(pending).await {
        if !reply(outbox, answer).await {
            return false;
        }
    }
    true
}

/// The answer to a `Send` that was not stored.
fn send_error(counter: u64, code: ErrorCode, detail: String) -> Bytes {
    encode(&RelayMessage::SendError { counter, code, detail })
}

/// A frame whose length is outside the transport range: the Noise session exists, so the
/// member is told why before the connection closes.
fn bad_frame(outbox: &Outbox, e: FrameError) -> Ended {
    if let FrameError::OutOfBounds { len, min, max } = e {
        let detail = format!("a transport frame of {len} bytes; they are {min} to {max} bytes");
        outbox.finish_with(ErrorCode::Malformed, &detail);
    }
    Ended::Frame(e)
}

/// The next frame within `min..=max`, counted in the metrics. Cancel-safe, as the reader is.
async fn next_frame(
    reader: &mut FrameReader<OwnedReadHalf>,
    min: usize,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let frame = reader.next_frame_within(min, max).await?;
    if let Some(frame) = &frame {
        crate::metrics::received(FRAME_HEADER_LEN + frame.len());
    }
    Ok(frame.map(Bytes::from))
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared<H> {
    pub(crate) hub: H,
    pub(crate) config: Config,
    pub(crate) static_key: StaticKeypair,
    /// Failed-join lockouts, room creations and send rates: what relays sharing rooms share.
    pub(crate) limits: Box<dyn AbuseLimits>,
    pub(crate) unauthenticated: AddressCount,
    /// Connections per address (IPv6 per /64) and per IPv6 /48, joined or not.
    pub(crate) connections: AddressCount,
    pub(crate) connections_wide: AddressCount,
    /// New connections per address, checked before any key agreement.
    pub(crate) handshake_rate: SendRate<IpAddr>,
    /// Places under `max_connections`; what is left decides whether strangers still get in.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// GroupInfo uploads in progress on all connections together, in bytes (version 2).
    pub(crate) uploads: crate::group_info::UploadBudget,
    /// Lines about refused joins: at most a few a minute, with a count of those left out.
    pub(crate) refusal_log: LogBudget,
    /// Lines about connections timed out or disconnected by the relay, likewise.
    pub(crate) ended_log: LogBudget,
    /// Lines about rate limits hit, within a budget like refusals.
    pub(crate) rate_log: LogBudget,
}

/// Why a connection ended; logged, never returned to the listener.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("handshake or join deadline passed")]
    Deadline,
    #[error("relay shutting down")]
    Shutdown,
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0:?}")]
    Refused(ErrorCode),
    #[error("closed by the relay: {0:?}")]
    Closed(Option<ErrorCode>),
    #[error("disconnected: {0:?}")]
    Disconnected(ErrorCode),
}

/// A member that passed the join, as the connection's loop needs it.
struct Joined<M> {
    member: M,
    identity: PublicIdentity,
    room: RoomName,
    nick: Nick,
    /// The protocol version of the connection (1 or 2): which envelopes it sends.
    version: u8,
}

enum Flow {
    Continue,
    Stop,
}

/// One item of a transport message, decoded.
enum Decoded {
    Request(ClientMessage),
    /// A malformed `Send`, already answered with a `SendError`.
    Answered,
    /// Malformed beyond answering: the connection ends.
    Stop,
}

/// A joined connection's request state, kept between its transport messages.
struct Session {
    /// Answers owed, oldest first; grows to at most MAX_SENDS_IN_FLIGHT once the member
    /// sends, an idle one holds none.
    pending: VecDeque<Answer>,
    /// `Who` allowance: a member list can be 65 KB, so asking for it has its own rate.
    who: TokenBucket,
    /// The token of the relay's unanswered `Ping`.
    ping: Option<u64>,
    /// The room joined: sends are also limited per room.
    room: RoomName,
    /// The connection's protocol version (1 or 2).
    version: u8,
    /// Whether the last transport message showed the peer alive: a request, or the `Pong`
    /// that answers the relay's own `Ping`. An unsolicited `Pong` does not.
    alive: bool,
    /// A GroupInfo upload in progress (version 2), at most `max_group_info_bytes`.
    upload: crate::group_info::Upload,
}

impl Session {
    fn new<M>(config: &Config, joined: &Joined<M>) -> Self {
        Self {
            pending: VecDeque::new(),
            who: TokenBucket::new(config.who_burst, config.who_per_sec),
            ping: None,
            alive: false,
            room: joined.room.clone(),
            version: joined.version,
            upload: crate::group_info::Upload::default(),
        }
    }
}

/// Per-connection handler.
#[derive(Debug)]
pub(crate) struct Handler<H> {
    pub(crate) shared: Arc<Shared<H>>,
    pub(crate) peer: SocketAddr,
    pub(crate) id: ConnectionId,
    pub(crate) shutdown: Shutdown,
    /// Accepted over the connection cap: the join is answered `ServerFull`.
    pub(crate) full: bool,
    /// Dropped when the handler ends; the server waits for all of them at shutdown.
    pub(crate) _done: mpsc::Sender<()>,
    /// The connection's place under the relay's connection limit, given back when it ends.
    pub(crate) _permit: OwnedSemaphorePermit,
    /// The connection's place under the per-address caps.
    pub(crate) _slots: (AddressSlot, Option<AddressSlot>),
    /// Counts the connection open in the metrics until the handler ends.
    pub(crate) _open: crate::metrics::OpenConnection,
    /// The connection's place among its address's unauthenticated connections, given back
    /// when its join is decided. A field rather than an argument: an argument of an `async fn`
    /// stays in every future it is passed down through, for the connection's whole life.
    pub(crate) unauthenticated: Option<AddressSlot>,
}

impl<H: RoomService> Handler<H> {
    /// Serves one connection; errors are logged here, never returned.
    ///
    /// The future is what an idle member's task holds, so it is kept small. Instrumented by
    /// hand: `#[instrument]` on an async fn made it 216 bytes larger. An `async` block rather
    /// than an `async fn`: an async fn keeps its arguments twice (as arguments and as locals,
    /// rust-lang/rust#62958), here the 192-byte handler. The stream is split before, so
    /// no copy of it is held either.
    pub(crate) fn run(mut self, stream: TcpStream) -> impl Future<Output = ()> + Send {
        let span = info_span!("conn", id = %self.id, peer = %self.peer);
        let (read_half, write_half) = stream.into_split();
        async move {
            debug!("accepted");
            let result = self.serve(read_half, write_half).await;
            self.ended(result);
        }
        .instrument(span)
    }

    /// Counts and logs how the connection ended.
    fn ended(&self, result: Result<(), Ended>) {
        record(&result);
        match result {
            Ok(()) | Err(Ended::PeerClosed) => debug!("connection closed"),
            // A refusal was logged (within its budget) where it was made.
            Err(e @ (Ended::Deadline | Ended::Disconnected(_))) => {
                if let Some(unlogged) = self.shared.ended_log.take() {
                    info!(unlogged, "connection ended: {e}")
                }
            }
            Err(e) => debug!("connection ended: {e}"),
        }
    }

    async fn read_before(
        &mut self,
        deadline: Instant,
        reader: &mut FrameReader<OwnedReadHalf>,
        min: usize,
        max: usize,
    ) -> Result<Bytes, Ended> {
        tokio::select! {
            biased;
            _ = self.shutdown.recv() => Err(Ended::Shutdown),
            frame = timeout_at(deadline, next_frame(reader, min, max)) => match frame {
                Err(_) => Err(Ended::Deadline),
                Ok(Ok(Some(frame))) => Ok(frame),
                Ok(Ok(None)) => Err(Ended::PeerClosed),
                Ok(Err(e)) => Err(e.into()),
            },
        }
    }

    async fn serve(&mut self, read_half: OwnedReadHalf, mut write_half: OwnedWriteHalf) -> Result<(), Ended> {
        let mut reader = FrameReader::new(read_half, HANDSHAKE1_V2_LEN);
        let deadline = Instant::now() + self.shared.config.handshake_timeout;
        // In a block: a local that was borrowed keeps its place in the future until its scope
        // ends, and the transport (104 bytes) is gone once split.
        let (sender, mut receiver, handshake) = {
            // Boxed, like the join below: the state of the phases before the member's loop lives
            // on the heap only while they run, so an idle member's task stays small.
            let transport = Box::pin(self.handshake(deadline, &mut reader, &mut write_half)).await?;
            let handshake = (*transport.handshake_hash(), transport.protocol_version());
            let (sender, receiver) = transport.split();
            (sender, receiver, handshake)
        };

        let config = &self.shared.config;
        // Held until the join starts it: see `rooms::Admission`.
        let outbox = Arc::new(Outbox::held(config.outbound_queue_bytes, config.write_stall));
        // Spawned as it is, like the handler (see `Listener::run`).
        let mut writer =
            tokio::spawn(write_loop(outbox.clone(), sender, crate::metrics::CountWrites(write_half)));
        let result =
            self.session(&mut reader, &mut receiver, &outbox, &mut writer, deadline, handshake).await;
        outbox.finish();
        if !writer.is_finished() && timeout(WRITER_GRACE, &mut writer).await.is_err() {
            writer.abort();
        }
        let linger = match result {
            Err(Ended::PeerClosed | Ended::Frame(FrameError::Truncated | FrameError::Io(_))) => None,
            // Shutting down: everyone is told at once; do not hold the exit up for long.
            Err(Ended::Shutdown) => Some(LINGER / 4),
            _ => Some(LINGER),
        };
        if let Some(linger) = linger {
            let _ = timeout(linger, reader.discard(LINGER_BYTES)).await;
        }
        result
    }

    /// The Noise XX handshake, up to the transport.
    async fn handshake(
        &mut self,
        deadline: Instant,
        reader: &mut FrameReader<OwnedReadHalf>,
        write_half: &mut OwnedWriteHalf,
    ) -> Result<Transport, Ended> {
        // -> e (exactly 32 bytes, or 33 with version 2's version byte, checked from the frame
        // header before reading the body)
        let msg1 = self.read_before(deadline, reader, HANDSHAKE1_LEN, HANDSHAKE1_V2_LEN).await?;
        let (responder, msg2) = Responder::new(&self.shared.static_key)?.read_hello(&msg1)?;
        // <- e, ee, s, es
        let mut frame = Vec::with_capacity(msg2.len() + 2);
        encode_frame(&msg2, &mut frame).map_err(|_| Ended::Noise(NoiseError::Handshake))?;
        timeout_at(deadline, write_half.write_all(&frame)).await.map_err(|_| Ended::Deadline)??;
        // -> s, se (exactly 64 bytes)
        let msg3 = self.read_before(deadline, reader, HANDSHAKE3_LEN, HANDSHAKE3_LEN).await?;
        Ok(responder.read_finish(&msg3)?)
    }

    #[allow(clippy::too_many_arguments)]
    async fn session(
        &mut self,
        reader: &mut FrameReader<OwnedReadHalf>,
        receiver: &mut TransportReceiver,
        outbox: &Arc<Outbox>,
        writer: &mut JoinHandle<()>,
        deadline: Instant,
        handshake: ([u8; 32], u8),
    ) -> Result<(), Ended> {
        // Boxed: see `serve`.
        let join = Box::pin(self.join(reader, receiver, outbox, deadline, handshake));
        let joined = join.await?;
        let Joined { member, identity, room, nick, .. } = &joined;
        info!(room = %room, nick = %nick, identity = %identity.short_fingerprint(), "joined");
        crate::metrics::joined();
        let result = match self.member_loop(reader, receiver, outbox, writer, &joined).await {
            Err(Ended::Closed(None)) => match outbox.close_reason() {
                Some(code) => Err(Ended::Disconnected(code)),
                None => Err(Ended::Closed(None)),
            },
            other => other,
        };
        if let Err(Ended::Disconnected(ErrorCode::SlowConsumer)) = result {
            crate::metrics::slow_consumer();
        }
        self.shared.hub.leave(member).await;
        info!(room = %room, nick = %nick, reason = %left_reason(&result), "left");
        result
    }

    /// Reads and checks the join request and joins the room.
    async fn join(
        &mut self,
        reader: &mut FrameReader<OwnedReadHalf>,
        receiver: &mut TransportReceiver,
        outbox: &Arc<Outbox>,
        deadline: Instant,
        (handshake_hash, version): ([u8; 32], u8),
    ) -> Result<Joined<H::Membership>, Ended> {
        // Given back when this returns, whatever the join's outcome.
        let slot = self.unauthenticated.take();
        let shared = self.shared.clone();
        let config = &shared.config;
        let first = match self.read_before(deadline, reader, MIN_TRANSPORT_FRAME, MAX_FRAME_LEN).await {
            Ok(frame) => frame,
            Err(Ended::Deadline) => {
                let secs = config.handshake_timeout.as_secs_f64();
                outbox.finish_with(
                    ErrorCode::HandshakeTimeout,
                    &format!("handshake and join must complete within {secs} s"),
                );
                return Err(Ended::Deadline);
            }
            Err(Ended::Shutdown) => {
                outbox.finish_with(ErrorCode::ShuttingDown, "the relay is shutting down; reconnect later");
                return Err(Ended::Shutdown);
            }
            Err(Ended::Frame(e)) => return Err(bad_frame(outbox, e)),
            Err(e) => return Err(e),
        };
        let ip = address_key(self.peer.ip());
        // The frame and its plaintext are freed here, not kept for the member's lifetime.
        let request = match self.join_request(&receiver.open(&first)?, version) {
            Ok(request) => request,
            Err(refusal) => return Err(self.refuse_join(outbox, ip, None, refusal)),
        };
        drop(first);
        if self.full {
            let max = config.max_connections;
            return Err(refuse(
                outbox,
                Refusal::new(
                    ErrorCode::ServerFull,
                    format!("the relay has its maximum of {max} connections; try again later"),
                ),
            ));
        }

        let room_locked = self.lockouts(outbox, ip, &request.room).await?;
        let identity = request.identity;
        let nick = request.nick.clone();
        let room = request.room.clone();
        let history_after = request.history_after;
        let signed = match request.verify(&handshake_hash) {
            Ok(signed) => signed,
            Err(_) => {
                let refusal = Refusal::new(
                    ErrorCode::BadSignature,
                    "the join signature does not verify for this connection",
                );
                return Err(self.refuse_join(outbox, ip, Some(&room), refusal));
            }
        };
        // The last `headroom_percent` of the connection cap is kept for members already bound
        // in the room they join; a new room's creator never is.
        let reserved = config.max_connections * config.headroom_percent / 100;
        let policy = JoinPolicy { crowded: self.shared.slots.available_permits() < reserved, room_locked };
        let may_create = || self.may_create(ip, policy);
        let link = Link::new(outbox.clone());
        let args = JoinArgs { join: signed, history_after, connection: self.id, link, policy };
        let member = match self.shared.hub.join(args, &may_create).await {
            Ok(admission) => crate::rooms::start(outbox, admission),
            Err(refusal) => return Err(self.refuse_join(outbox, ip, Some(&room), refusal)),
        };
        drop(slot);
        Ok(Joined { member, identity, room, nick, version })
    }

    /// The failed-join lockouts, checked before the signature is verified: refuses a locked
    /// address, slows a slowed address or room, and returns whether the room is locked (the
    /// room decides that: identities bound in it still get in).
    async fn lockouts(&mut self, outbox: &Outbox, ip: IpAddr, room: &RoomName) -> Result<bool, Ended> {
        let shared = self.shared.clone();
        let config = &shared.config;
        shared.limits.refresh_lockouts(ip, room).await;
        let (ip_verdict, room_verdict) = shared.limits.join_lockouts(ip, room);
        if ip_verdict == Lockout::Locked {
            let minutes = config.failure_window.as_secs().div_ceil(60);
            let refusal = Refusal::new(
                ErrorCode::TooManyAttempts,
                format!("too many failed joins from your address; try again in {minutes} minutes"),
            );
            return Err(self.refuse_join(outbox, ip, Some(room), refusal));
        }
        if ip_verdict == Lockout::Slow || room_verdict == Lockout::Slow {
            debug!("slowing a join after failed attempts");
            tokio::select! {
                _ = self.shutdown.recv() => {
                    outbox.finish_with(ErrorCode::ShuttingDown, "the relay is shutting down; reconnect later");
                    return Err(Ended::Shutdown);
                }
                _ = tokio::time::sleep(config.failure_delay) => {}
            }
        }
        Ok(room_verdict == Lockout::Locked)
    }

    /// Asked just before a join creates a room: not in a locked room's name, not when the
    /// relay is crowded, and within the address's allowance of new rooms (counted like
    /// failed joins).
    fn may_create(&self, ip: IpAddr, policy: JoinPolicy) -> Result<(), Refusal> {
        let config = &self.shared.config;
        if policy.room_locked {
            return Err(Refusal::new(ErrorCode::TooManyAttempts, too_many_attempts()));
        }
        if policy.crowded {
            return Err(Refusal::new(ErrorCode::ServerFull, "the relay is full; try again later"));
        }
        if !self.shared.limits.take_creation(ip) {
            info!("room creation refused: too many new rooms from this address");
            let minutes = config.failure_window.as_secs().div_ceil(60);
            return Err(Refusal::new(
                ErrorCode::TooManyAttempts,
                format!("too many rooms created from your address; try again in {minutes} minutes"),
            ));
        }
        Ok(())
    }

    /// Refuses a join: counts it against the address (and a wrong password against the room
    /// too), logs it within the log budget, and queues the goodbye.
    fn refuse_join(&self, outbox: &Outbox, ip: IpAddr, room: Option<&RoomName>, refusal: Refusal) -> Ended {
        let shared = &self.shared;
        // Every refusal a client could have avoided counts: probing for rooms, nicknames or
        // bans costs the prober like guessing a password does. Limits the relay imposes
        // (full, a lockout already running) and its own failures do not.
        let counts = !matches!(
            refusal.code,
            ErrorCode::RoomFull
                | ErrorCode::ServerFull
                | ErrorCode::TooManyAttempts
                | ErrorCode::Internal
                | ErrorCode::ShuttingDown
        );
        if counts {
            let wrong_password_in = room.filter(|_| refusal.code == ErrorCode::WrongPassword);
            shared.limits.join_failed(ip, wrong_password_in);
        }
        if let Some(unlogged) = shared.refusal_log.take() {
            let room = room.map_or("", RoomName::as_str);
            info!(room, code = ?refusal.code, unlogged, "join refused");
        }
        refuse(outbox, refusal)
    }

    /// The first transport message must be exactly one `Join`, of the handshake's version.
    fn join_request(&self, plaintext: &[u8], version: u8) -> Result<JoinRequest, Refusal> {
        match ClientMessage::decode_all(plaintext) {
            Ok(mut messages) if messages.len() == 1 => match messages.pop() {
                Some(ClientMessage::Join(request)) if request.version == version => Ok(request),
                Some(ClientMessage::Join(request)) => Err(Refusal::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "the join is for protocol version {} but the handshake was for version {version}; \
                         use a client that speaks one version",
                        request.version
                    ),
                )),
                _ => Err(Refusal::new(
                    ErrorCode::UnexpectedMessage,
                    "the first message must be a join request",
                )),
            },
            Ok(_) => Err(Refusal::new(
                ErrorCode::UnexpectedMessage,
                "the first message must hold exactly one join request",
            )),
            Err(DecodeError::UnsupportedVersion(v)) => Err(Refusal::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported; this relay speaks versions 1 and 2"),
            )),
            Err(e) => Err(Refusal::new(ErrorCode::Malformed, format!("malformed join request: {e}"))),
        }
    }

    async fn member_loop(
        &mut self,
        reader: &mut FrameReader<OwnedReadHalf>,
        receiver: &mut TransportReceiver,
        outbox: &Arc<Outbox>,
        writer: &mut JoinHandle<()>,
        joined: &Joined<H::Membership>,
    ) -> Result<(), Ended> {
        let (member, identity) = (&joined.member, joined.identity);
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut last_heard = Instant::now();
        let mut token = 0u64;
        let mut session = Session::new(config, joined);
        loop {
            let pinged = session.ping.is_some();
            let wake = last_heard + if pinged { config.idle_timeout } else { config.ping_after };
            tokio::select! {
                biased;
                _ = self.shutdown.recv() => {
                    outbox.close(ErrorCode::ShuttingDown, "the relay is shutting down; reconnect later");
                    return Err(Ended::Shutdown);
                }
                _ = &mut *writer => return Err(Ended::Closed(None)),
                _ = sleep_until(wake) => {
                    if pinged {
                        let secs = config.idle_timeout.as_secs_f64();
                        outbox.close(ErrorCode::IdleTimeout, &format!("no traffic for {secs} s"));
                        return Err(Ended::Closed(None));
                    }
                    token = token.wrapping_add(1);
                    session.ping = Some(token);
                    if !outbox.push_or_close(encode(&RelayMessage::Ping { token })) {
                        return Err(Ended::Closed(None));
                    }
                }
                Some(answer) = next_answer(&mut session.pending) => {
                    // The rest of its commit group is ready with it: queued now, rather than
                    // one turn of this loop each.
                    let mut answer = Some(answer);
                    while let Some(item) = answer {
                        if !reply(outbox, item).await {
                            return Err(Ended::Closed(None));
                        }
                        answer = ready_answer(&mut session.pending).await;
                    }
                }
                frame = next_frame(reader, MIN_TRANSPORT_FRAME, MAX_FRAME_LEN),
                    if session.pending.len() < MAX_SENDS_IN_FLIGHT => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => {
                            // A half-closed connection still gets the answers it is owed.
                            answer_all(&mut session.pending, outbox).await;
                            return Err(Ended::PeerClosed);
                        }
                        Err(e) => return Err(bad_frame(outbox, e)),
                    };
                    let plaintext = receiver.open(&frame)?;
                    // Boxed like the join: an idle member's task does not carry the state of
                    // every request it might make.
                    session.alive = false;
                    let process = Box::pin(self.process(&plaintext, outbox, member, identity, &mut session));
                    if let Flow::Stop = process.await {
                        return Err(Ended::Closed(None));
                    }
                    if session.alive {
                        last_heard = Instant::now();
                        session.ping = None;
                    }
                }
            }
        }
    }

    /// Handles every item of one transport message, in order. `Send`s are submitted at once
    /// and answered through `pending`, at most `MAX_SENDS_IN_FLIGHT` at a time; any other
    /// request first waits until every earlier one is answered.
    async fn process(
        &self,
        plaintext: &[u8],
        outbox: &Arc<Outbox>,
        member: &H::Membership,
        identity: PublicIdentity,
        session: &mut Session,
    ) -> Flow {
        if plaintext.is_empty() {
            outbox.finish_with(ErrorCode::Malformed, "empty message");
            return Flow::Stop;
        }
        for item in items(plaintext) {
            let message = match self.decode(item, outbox, &mut session.pending).await {
                Decoded::Request(message) => message,
                Decoded::Answered => continue,
                Decoded::Stop => return Flow::Stop,
            };
            if let Flow::Stop = self.request(message, outbox, member, identity, session).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Decodes one item. A malformed `Send` that names a counter is answered with a
    /// `SendError` in its turn; anything else malformed ends the connection.
    async fn decode(
        &self,
        item: Result<(u8, &[u8]), DecodeError>,
        outbox: &Outbox,
        pending: &mut VecDeque<Answer>,
    ) -> Decoded {
        let (ty, body) = match item {
            Ok(item) => item,
            Err(e) => {
                outbox.finish_with(ErrorCode::Malformed, &format!("malformed message: {e}"));
                return Decoded::Stop;
            }
        };
        // Every answer to a `Send` names its counter; a body too short to hold one cannot
        // be answered that way.
        let counter = EnvelopeHeader::peek_counter(body);
        if ty == SEND_ITEM && counter.is_none() {
            let detail = format!("a Send of {} bytes is shorter than an envelope header", body.len());
            outbox.finish_with(ErrorCode::Malformed, &detail);
            return Decoded::Stop;
        }
        match ClientMessage::decode(ty, body) {
            Ok(message) => Decoded::Request(message),
            Err(e) if ty == SEND_ITEM => {
                let code = if matches!(e, DecodeError::TooLong { .. }) {
                    ErrorCode::EnvelopeTooLarge
                } else {
                    ErrorCode::Malformed
                };
                let error = send_error(counter.unwrap_or_default(), code, format!("envelope refused: {e}"));
                pending.push_back(Box::pin(std::future::ready(error)));
                if self.make_room(pending, outbox).await {
                    Decoded::Answered
                } else {
                    Decoded::Stop
                }
            }
            Err(e) => {
                outbox.finish_with(ErrorCode::Malformed, &format!("malformed message: {e}"));
                Decoded::Stop
            }
        }
    }

    /// Carries out one decoded request.
    async fn request(
        &self,
        message: ClientMessage,
        outbox: &Arc<Outbox>,
        member: &H::Membership,
        identity: PublicIdentity,
        session: &mut Session,
    ) -> Flow {
        // Anything but an unsolicited `Pong` shows the peer is there.
        session.alive |= match &message {
            ClientMessage::Pong { token } => session.ping == Some(*token),
            _ => true,
        };
        let pending = &mut session.pending;
        if let ClientMessage::Send { envelope } = message {
            pending.push_back(self.send(member, identity, (&session.room, session.version), envelope));
            return if self.make_room(pending, outbox).await { Flow::Continue } else { Flow::Stop };
        }
        if !answer_all(pending, outbox).await {
            return Flow::Stop;
        }
        let replies = match message {
            ClientMessage::Send { .. } => Vec::new(),
            ClientMessage::Who => self.who(member, &mut session.who).await,
            ClientMessage::Kick { nick } => self.moderate(member, Moderation::Kick, nick).await,
            ClientMessage::Ban { nick } => self.moderate(member, Moderation::Ban, nick).await,
            ClientMessage::Unban { nick } => self.moderate(member, Moderation::Unban, nick).await,
            ClientMessage::PutGroupInfo(part) if session.version == 2 => {
                self.put_group_info(member, &mut session.upload, part).await
            }
            ClientMessage::GetGroupInfo if session.version == 2 => {
                match self.shared.hub.group_info(member).await {
                    Ok((after_seq, sealed)) => crate::group_info::items(after_seq, &sealed),
                    Err(refusal) => {
                        vec![encode(&RelayMessage::Error { code: refusal.code, detail: refusal.detail })]
                    }
                }
            }
            ClientMessage::SetVerifier { verifier } if session.version == 2 => {
                match self.shared.hub.set_verifier(member, verifier).await {
                    Ok(()) => Vec::new(),
                    Err(refusal) => {
                        vec![encode(&RelayMessage::Error { code: refusal.code, detail: refusal.detail })]
                    }
                }
            }
            ClientMessage::Ping { token } => vec![encode(&RelayMessage::Pong { token })],
            ClientMessage::Pong { .. } => Vec::new(),
            ClientMessage::Join(_) => {
                outbox.finish_with(ErrorCode::UnexpectedMessage, "already joined: a connection joins once");
                return Flow::Stop;
            }
            _ => {
                outbox.finish_with(ErrorCode::UnexpectedMessage, "message not understood");
                return Flow::Stop;
            }
        };
        for item in replies {
            if !reply(outbox, item).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// The member list, once `allowance` has a token: over its rate a `Who` waits for its
    /// turn, and the connection is not read meanwhile, so asking faster only slows the asker.
    async fn who(&self, member: &H::Membership, allowance: &mut TokenBucket) -> Vec<Bytes> {
        let wait = allowance.until_next();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        allowance.try_take();
        member_items(self.shared.hub.members(member).await)
    }

    /// Answers the oldest pending requests until fewer than `MAX_SENDS_IN_FLIGHT` remain.
    async fn make_room(&self, pending: &mut VecDeque<Answer>, outbox: &Outbox) -> bool {
        while pending.len() >= MAX_SENDS_IN_FLIGHT {
            if let Some(answer) = next_answer(pending).await {
                if !reply(outbox, answer).await {
                    return false;
                }
            }
        }
        true
    }

    async fn moderate(
        &self,
        member: &H::Membership,
        action: Moderation,
        nick: chatroom_crypto::Nick,
    ) -> Vec<Bytes> {
        match self.shared.hub.moderate(member, action, nick).await {
            Ok(()) => Vec::new(),
            Err(refusal) => vec![encode(&RelayMessage::Error { code: refusal.code, detail: refusal.detail })],
        }
    }

    /// Adds a part to the connection's GroupInfo upload and stores the object once complete.
    async fn put_group_info(
        &self,
        member: &H::Membership,
        upload: &mut crate::group_info::Upload,
        part: chatroom_crypto::GroupInfoPart,
    ) -> Vec<Bytes> {
        let shared = &self.shared;
        let stored = match upload.push(part, shared.config.max_group_info_bytes, &shared.uploads) {
            Ok(None) => return Vec::new(),
            Ok(Some(crate::group_info::Complete { after_seq, sealed, held: _held })) => {
                shared.hub.put_group_info(member, after_seq, Bytes::from(sealed)).await
            }
            Err(refusal) => Err(refusal),
        };
        let answer = match stored {
            Ok(after_seq) => RelayMessage::GroupInfoStored { after_seq },
            Err(refusal) => RelayMessage::Error { code: refusal.code, detail: refusal.detail },
        };
        vec![encode(&answer)]
    }

    /// Checks and submits one envelope, answered by one `Ack` or `SendError` naming its counter,
    /// only once the envelope is durable.
    fn send(
        &self,
        member: &H::Membership,
        identity: PublicIdentity,
        room: (&RoomName, u8),
        envelope: Vec<u8>,
    ) -> Answer {
        match self.check_and_publish(member, identity, room, envelope) {
            Ok(publish) => publish,
            Err(error) => Box::pin(std::future::ready(encode(&error))),
        }
    }

    /// Takes a token for one envelope from the member's identity, its address and its room, in
    /// that order; names the first limit that had none. Identities cost nothing to make, so
    /// the address and room limits bound what many of them together can store.
    fn over_rate(&self, identity: PublicIdentity, room: &RoomName) -> Option<String> {
        let shared = &self.shared;
        let config = &shared.config;
        let scope = shared.limits.take_send(&identity, self.peer.ip(), room)?;
        let (per_sec, burst) = match scope {
            SendScope::Member => (config.rate_per_sec, config.rate_burst),
            SendScope::Address => (config.ip_rate_per_sec, config.ip_rate_burst),
            SendScope::Room => (config.room_rate_per_sec, config.room_rate_burst),
        };
        let scope = scope.as_str();
        if let Some(unlogged) = shared.rate_log.take() {
            info!(scope, unlogged, "rate limit hit");
        }
        Some(format!("rate limit {per_sec}/s with burst {burst} per {scope} exceeded; message not delivered"))
    }

    fn check_and_publish(
        &self,
        member: &H::Membership,
        identity: PublicIdentity,
        (room, version): (&RoomName, u8),
        envelope: Vec<u8>,
    ) -> Result<Answer, RelayMessage> {
        let config = &self.shared.config;
        // A decoded `Send` holds a whole envelope header, so there is a counter to name.
        let counter = EnvelopeHeader::peek_counter(&envelope).unwrap_or_default();
        let error = |code, detail: String| Err(RelayMessage::SendError { counter, code, detail });
        // A v2 envelope is opaque MLS behind its header (docs/PROTOCOL.md section 22.1); its
        // own length bounds replace `max_envelope_len`, which is about v1's text messages.
        let (parsed, limit) = match version {
            2 => (EnvelopeHeader::parse_v2(&envelope), MAX_ENVELOPE_V2_LEN),
            _ => (EnvelopeHeader::parse(&envelope), config.max_envelope_len),
        };
        let header = match parsed {
            Ok(header) => header,
            Err(e @ DecodeError::TooLong { .. }) => {
                return error(ErrorCode::EnvelopeTooLarge, format!("{e}; message not delivered"))
            }
            Err(e) => {
                return error(ErrorCode::Malformed, format!("malformed envelope: {e}; message not delivered"))
            }
        };
        if envelope.len() > limit {
            return error(
                ErrorCode::EnvelopeTooLarge,
                format!(
                    "envelope of {} bytes exceeds this relay's limit of {limit} bytes; message not delivered",
                    envelope.len(),
                ),
            );
        }
        if header.sender != identity {
            return error(
                ErrorCode::BadEnvelope,
                "the envelope names another sender than your identity; message not delivered".into(),
            );
        }
        if let Some(detail) = self.over_rate(identity, room) {
            return error(ErrorCode::RateLimited, detail);
        }
        let counter = header.counter;
        let publish = self.shared.hub.publish(member, header, Bytes::from(envelope));
        Ok(Box::pin(async move {
            let answer = match publish.await {
                Ok(seq) => RelayMessage::Ack { counter, seq },
                Err(refusal) => {
                    RelayMessage::SendError { counter, code: refusal.code, detail: refusal.detail }
                }
            };
            encode(&answer)
        }))
    }
}

/// Why a connection ended, as one snake_case word for the metrics.
fn end_reason(result: &Result<(), Ended>) -> String {
    match result {
        Ok(()) | Err(Ended::PeerClosed) => "peer_closed".into(),
        Err(Ended::Deadline) => "handshake_timeout".into(),
        Err(Ended::Shutdown) => "shutdown".into(),
        Err(Ended::Frame(_)) => "bad_frame".into(),
        Err(Ended::Noise(_)) => "bad_handshake".into(),
        Err(Ended::Io(_)) => "write_error".into(),
        Err(Ended::Refused(_)) => "refused".into(),
        Err(Ended::Closed(_)) => "closed".into(),
        Err(Ended::Disconnected(code)) => snake(&format!("{code:?}")),
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn record(result: &Result<(), Ended>) {
    crate::metrics::closed(&end_reason(result));
}

/// Why a member left, in words for the log.
fn left_reason(result: &Result<(), Ended>) -> String {
    match result {
        Ok(()) => "said goodbye".into(),
        Err(Ended::PeerClosed) => "closed the connection".into(),
        Err(Ended::Disconnected(ErrorCode::SlowConsumer)) => "slow consumer: fell too far behind".into(),
        Err(Ended::Disconnected(ErrorCode::IdleTimeout)) => "idle timeout: silent too long".into(),
        Err(Ended::Disconnected(code)) => format!("disconnected by the relay: {code:?}"),
        Err(e) => e.to_string(),
    }
}

/// Queues a refusal as the connection's last item.
fn refuse(outbox: &Outbox, refusal: Refusal) -> Ended {
    crate::metrics::refused(refusal.code);
    outbox.finish_with(refusal.code, &refusal.detail);
    Ended::Refused(refusal.code)
}
