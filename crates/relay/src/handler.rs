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
    TransportReceiver, HANDSHAKE1_LEN, HANDSHAKE3_LEN, MAX_FRAME_LEN,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, info, info_span, Instrument};

use crate::config::Config;
use crate::frames::{FrameError, FrameReader};
use crate::hub::{member_items, Moderation, Refusal, RoomService};
use crate::limits::{address_key, FailureTracker, SendRate, Unauthenticated, UnauthenticatedSlot, Verdict};
use crate::outbox::{encode, write_loop, Offered, Outbox, PushError};
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
    if let FrameError::BadLength { len, min, max } = e {
        let detail = format!("a transport frame of {len} bytes; they are {min} to {max} bytes");
        outbox.finish_with(ErrorCode::Malformed, &detail);
    }
    Ended::Frame(e)
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared<H> {
    pub(crate) hub: H,
    pub(crate) config: Config,
    pub(crate) static_key: StaticKeypair,
    pub(crate) ip_failures: FailureTracker<IpAddr>,
    pub(crate) room_failures: FailureTracker<String>,
    pub(crate) unauthenticated: Unauthenticated,
    /// Rooms created per address within the failure window.
    pub(crate) room_creations: FailureTracker<IpAddr>,
    /// Envelopes per identity (over all its connections).
    pub(crate) send_rate: SendRate<PublicIdentity>,
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
}

enum Flow {
    Continue,
    Stop,
}

/// Per-connection handler.
#[derive(Debug)]
pub(crate) struct Handler<H> {
    pub(crate) shared: Arc<Shared<H>>,
    pub(crate) peer: SocketAddr,
    pub(crate) id: u64,
    pub(crate) shutdown: Shutdown,
    /// Dropped when the handler ends; the server waits for all of them at shutdown.
    pub(crate) _done: mpsc::Sender<()>,
    /// The connection's place under the relay's connection limit, given back when it ends.
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl<H: RoomService> Handler<H> {
    /// Serves one connection; errors are logged here, never returned.
    pub(crate) fn run(self, stream: TcpStream, slot: UnauthenticatedSlot) -> impl Future<Output = ()> + Send {
        // Instrumented by hand: `#[instrument]` on the async fn made the connection's task
        // 216 bytes larger (1 992 instead of 1 776) for its whole life.
        let span = info_span!("conn", id = self.id, peer = %self.peer);
        self.logged(stream, slot).instrument(span)
    }

    async fn logged(mut self, stream: TcpStream, slot: UnauthenticatedSlot) {
        debug!("accepted");
        match self.serve(stream, slot).await {
            Ok(()) | Err(Ended::PeerClosed) => debug!("connection closed"),
            Err(e @ (Ended::Refused(_) | Ended::Deadline | Ended::Disconnected(_))) => {
                info!("connection ended: {e}")
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
            frame = timeout_at(deadline, reader.next_frame(min, max)) => match frame {
                Err(_) => Err(Ended::Deadline),
                Ok(Ok(Some(frame))) => Ok(frame.freeze()),
                Ok(Ok(None)) => Err(Ended::PeerClosed),
                Ok(Err(e)) => Err(e.into()),
            },
        }
    }

    async fn serve(&mut self, stream: TcpStream, slot: UnauthenticatedSlot) -> Result<(), Ended> {
        let _ = stream.set_nodelay(true);
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = FrameReader::new(read_half);
        let deadline = Instant::now() + self.shared.config.handshake_timeout;
        // Boxed, like the join below: the state of the phases before the member's loop lives on
        // the heap only while they run, so an idle member's task stays small.
        let transport = Box::pin(self.handshake(deadline, &mut reader, &mut write_half)).await?;
        let handshake_hash = *transport.handshake_hash();
        let (sender, mut receiver) = transport.split();

        let outbox = Arc::new(Outbox::new(self.shared.config.outbound_queue));
        let mut writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { write_loop(&outbox, sender, write_half).await }
        });
        let result = self
            .session(&mut reader, &mut receiver, &outbox, &mut writer, deadline, handshake_hash, slot)
            .await;
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
        // -> e (exactly 32 bytes, checked from the frame header before reading the body)
        let msg1 = self.read_before(deadline, reader, HANDSHAKE1_LEN, HANDSHAKE1_LEN).await?;
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
        handshake_hash: [u8; 32],
        slot: UnauthenticatedSlot,
    ) -> Result<(), Ended> {
        // Boxed: see `serve`.
        let join = Box::pin(self.join(reader, receiver, outbox, deadline, handshake_hash, slot));
        let Joined { member, identity, room, nick } = join.await?;
        info!(room = %room, nick = %nick, identity = %identity.short_fingerprint(), "joined");
        let result = match self.member_loop(reader, receiver, outbox, writer, &member, identity).await {
            Err(Ended::Closed(None)) => match outbox.close_reason() {
                Some(code) => Err(Ended::Disconnected(code)),
                None => Err(Ended::Closed(None)),
            },
            other => other,
        };
        self.shared.hub.leave(&member);
        info!(room = %room, nick = %nick, "left");
        result
    }

    /// Reads and checks the join request and joins the room.
    async fn join(
        &mut self,
        reader: &mut FrameReader<OwnedReadHalf>,
        receiver: &mut TransportReceiver,
        outbox: &Arc<Outbox>,
        deadline: Instant,
        handshake_hash: [u8; 32],
        slot: UnauthenticatedSlot,
    ) -> Result<Joined<H::Membership>, Ended> {
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
        // The frame and its plaintext are freed here, not kept for the member's lifetime.
        let request = match self.join_request(&receiver.open(&first)?) {
            Ok(request) => request,
            Err(refusal) => return Err(refuse(outbox, refusal)),
        };
        drop(first);

        // Cheap lockout checks before the signature is verified.
        let ip = address_key(self.peer.ip());
        let room_key = request.room.as_str().to_owned();
        let verdicts = [self.shared.ip_failures.check(&ip), self.shared.room_failures.check(&room_key)];
        if verdicts.contains(&Verdict::Locked) {
            let minutes = config.failure_window.as_secs().div_ceil(60);
            info!(room = %request.room, "join refused: too many failed attempts");
            return Err(refuse(
                outbox,
                Refusal::new(
                    ErrorCode::TooManyAttempts,
                    format!("too many failed joins from your address or for this room; try again in {minutes} minutes"),
                ),
            ));
        }
        if verdicts.contains(&Verdict::Slow) {
            debug!("slowing a join after failed attempts");
            tokio::select! {
                _ = self.shutdown.recv() => {
                    outbox.finish_with(ErrorCode::ShuttingDown, "the relay is shutting down; reconnect later");
                    return Err(Ended::Shutdown);
                }
                _ = tokio::time::sleep(config.failure_delay) => {}
            }
        }

        let identity = request.identity;
        let nick = request.nick.clone();
        let room = request.room.clone();
        let history_after = request.history_after;
        let signed = match request.verify(&handshake_hash) {
            Ok(signed) => signed,
            Err(_) => {
                self.shared.ip_failures.record_failure(&ip);
                return Err(refuse(
                    outbox,
                    Refusal::new(
                        ErrorCode::BadSignature,
                        "the join signature does not verify for this connection",
                    ),
                ));
            }
        };
        // New rooms are limited per address, like failed joins.
        let creations = &self.shared.room_creations;
        let may_create = || {
            if creations.check(&ip) == Verdict::Locked {
                info!("room creation refused: too many new rooms from this address");
                let minutes = config.failure_window.as_secs().div_ceil(60);
                return Err(Refusal::new(
                    ErrorCode::TooManyAttempts,
                    format!("too many rooms created from your address; try again in {minutes} minutes"),
                ));
            }
            creations.record_failure(&ip);
            Ok(())
        };
        let member =
            match self.shared.hub.join(signed, history_after, self.id, outbox.clone(), &may_create).await {
                Ok(member) => member,
                Err(refusal) => {
                    if refusal.code == ErrorCode::WrongPassword {
                        self.shared.ip_failures.record_failure(&ip);
                        self.shared.room_failures.record_failure(&room_key);
                    }
                    info!(room = %room, code = ?refusal.code, "join refused");
                    return Err(refuse(outbox, refusal));
                }
            };
        drop(slot);
        Ok(Joined { member, identity, room, nick })
    }

    /// The first transport message must be exactly one `Join`.
    fn join_request(&self, plaintext: &[u8]) -> Result<JoinRequest, Refusal> {
        match ClientMessage::decode_all(plaintext) {
            Ok(mut messages) if messages.len() == 1 => match messages.pop() {
                Some(ClientMessage::Join(request)) => Ok(request),
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
                format!("protocol version {v} is not supported; this relay speaks version 1"),
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
        member: &H::Membership,
        identity: PublicIdentity,
    ) -> Result<(), Ended> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut last_heard = Instant::now();
        let mut pinged = false;
        let mut token = 0u64;
        // Grows to at most MAX_SENDS_IN_FLIGHT once the member sends; an idle one holds none.
        let mut pending: VecDeque<Answer> = VecDeque::new();
        loop {
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
                    pinged = true;
                    token = token.wrapping_add(1);
                    if !outbox.push_or_close(encode(&RelayMessage::Ping { token })) {
                        return Err(Ended::Closed(None));
                    }
                }
                Some(answer) = next_answer(&mut pending) => {
                    if !reply(outbox, answer).await {
                        return Err(Ended::Closed(None));
                    }
                }
                frame = reader.next_frame(MIN_TRANSPORT_FRAME, MAX_FRAME_LEN),
                    if pending.len() < MAX_SENDS_IN_FLIGHT => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => {
                            // A half-closed connection still gets the answers it is owed.
                            answer_all(&mut pending, outbox).await;
                            return Err(Ended::PeerClosed);
                        }
                        Err(e) => return Err(bad_frame(outbox, e)),
                    };
                    last_heard = Instant::now();
                    pinged = false;
                    let plaintext = receiver.open(&frame)?;
                    // Boxed like the join: an idle member's task does not carry the state of
                    // every request it might make.
                    let process = Box::pin(self.process(&plaintext, outbox, member, identity, &mut pending));
                    if let Flow::Stop = process.await {
                        return Err(Ended::Closed(None));
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
        pending: &mut VecDeque<Answer>,
    ) -> Flow {
        if plaintext.is_empty() {
            outbox.finish_with(ErrorCode::Malformed, "empty message");
            return Flow::Stop;
        }
        for item in items(plaintext) {
            let (ty, body) = match item {
                Ok(item) => item,
                Err(e) => {
                    outbox.finish_with(ErrorCode::Malformed, &format!("malformed message: {e}"));
                    return Flow::Stop;
                }
            };
            // Every answer to a `Send` names its counter; a body too short to hold one cannot
            // be answered that way.
            let counter = EnvelopeHeader::peek_counter(body);
            if ty == SEND_ITEM && counter.is_none() {
                let detail = format!("a Send of {} bytes is shorter than an envelope header", body.len());
                outbox.finish_with(ErrorCode::Malformed, &detail);
                return Flow::Stop;
            }
            let message = match ClientMessage::decode(ty, body) {
                Ok(message) => message,
                Err(e) if ty == SEND_ITEM => {
                    let code = if matches!(e, DecodeError::TooLong { .. }) {
                        ErrorCode::EnvelopeTooLarge
                    } else {
                        ErrorCode::Malformed
                    };
                    let error =
                        send_error(counter.unwrap_or_default(), code, format!("envelope refused: {e}"));
                    pending.push_back(Box::pin(std::future::ready(error)));
                    if !self.make_room(pending, outbox).await {
                        return Flow::Stop;
                    }
                    continue;
                }
                Err(e) => {
                    outbox.finish_with(ErrorCode::Malformed, &format!("malformed message: {e}"));
                    return Flow::Stop;
                }
            };
            if let ClientMessage::Send { envelope } = message {
                pending.push_back(self.send(member, identity, envelope));
                if !self.make_room(pending, outbox).await {
                    return Flow::Stop;
                }
                continue;
            }
            if !answer_all(pending, outbox).await {
                return Flow::Stop;
            }
            let replies = match message {
                ClientMessage::Send { .. } => Vec::new(),
                ClientMessage::Who => member_items(self.shared.hub.members(member)),
                ClientMessage::Kick { nick } => self.moderate(member, Moderation::Kick, nick).await,
                ClientMessage::Ban { nick } => self.moderate(member, Moderation::Ban, nick).await,
                ClientMessage::Unban { nick } => self.moderate(member, Moderation::Unban, nick).await,
                ClientMessage::Ping { token } => vec![encode(&RelayMessage::Pong { token })],
                ClientMessage::Pong { .. } => Vec::new(),
                ClientMessage::Join(_) => {
                    outbox
                        .finish_with(ErrorCode::UnexpectedMessage, "already joined: a connection joins once");
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
        }
        Flow::Continue
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

    /// Checks and submits one envelope, answered by one `Ack` or `SendError` naming its counter,
    /// only once the envelope is durable.
    fn send(&self, member: &H::Membership, identity: PublicIdentity, envelope: Vec<u8>) -> Answer {
        match self.check_and_publish(member, identity, envelope) {
            Ok(publish) => publish,
            Err(error) => Box::pin(std::future::ready(encode(&error))),
        }
    }

    fn check_and_publish(
        &self,
        member: &H::Membership,
        identity: PublicIdentity,
        envelope: Vec<u8>,
    ) -> Result<Answer, RelayMessage> {
        let config = &self.shared.config;
        // A decoded `Send` holds a whole envelope header, so there is a counter to name.
        let counter = EnvelopeHeader::peek_counter(&envelope).unwrap_or_default();
        let error = |code, detail: String| Err(RelayMessage::SendError { counter, code, detail });
        let header = match EnvelopeHeader::parse(&envelope) {
            Ok(header) => header,
            Err(e @ DecodeError::TooLong { .. }) => {
                return error(ErrorCode::EnvelopeTooLarge, format!("{e}; message not delivered"))
            }
            Err(e) => {
                return error(ErrorCode::Malformed, format!("malformed envelope: {e}; message not delivered"))
            }
        };
        if envelope.len() > config.max_envelope_len {
            return error(
                ErrorCode::EnvelopeTooLarge,
                format!(
                    "envelope of {} bytes exceeds this relay's limit of {} bytes; message not delivered",
                    envelope.len(),
                    config.max_envelope_len
                ),
            );
        }
        if header.sender != identity {
            return error(
                ErrorCode::BadEnvelope,
                "the envelope names another sender than your identity; message not delivered".into(),
            );
        }
        if !self.shared.send_rate.try_take(&identity) {
            info!("rate limit hit");
            return error(
                ErrorCode::RateLimited,
                format!(
                    "rate limit {}/s with burst {} exceeded; message not delivered",
                    config.rate_per_sec, config.rate_burst
                ),
            );
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

/// Queues a refusal as the connection's last item.
fn refuse(outbox: &Outbox, refusal: Refusal) -> Ended {
    outbox.finish_with(refusal.code, &refusal.detail);
    Ended::Refused(refusal.code)
}
