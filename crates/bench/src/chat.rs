//! The chatroom target: members are real protocol sessions built from the client library's
//! connection core (`handshake`, `join`, `ConnReader`, `ConnWriter`), many on one runtime.
//!
//! Protocol version 2 runs the same workloads: each sender seals its messages as MLS
//! application messages of a group of its own (the relay's work does not depend on whose
//! group it is) inside signed v2 envelopes, so the relay carries what a v2 room carries.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatroom_crypto::{
    derive_room_keys, derive_room_secrets_v2, open, seal, sign_v2, verify_v2, ClientMessage, Content,
    ContentKind, EnvelopeHeader, Identity, JoinRequest, JoinSecret, KdfParams, MessageKey, Nick,
    PresenceEvent, RelayMessage, RoomName, RoomPsk,
};
use chatroom_group::{content_kind, Kind, RoomRef};
use chatroom_session::session::{handshake, handshake_v2, join, ConnReader, ConnWriter};
use chatroom_session::trust::RelayPin;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::report::{Outcome, ServerWatch};
use crate::workload::{
    connect_loops, due, gather_sends, gather_tallies, idle, verify_payload, wait_for_deliveries, Mode, Sends,
    Shared, Tally, Workload,
};

/// Messages sealed and written together by a sender running as fast as possible.
const SEND_BATCH: usize = 8;
/// Time allowed for one member's connect, handshake, join and history.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A chatroom relay to drive: one process, or the nodes of a relay cluster.
#[derive(Debug, Clone)]
pub struct ChatTarget {
    /// `HOST:PORT` of each relay node; member `i` connects to `addrs[i % addrs.len()]`.
    pub addrs: Vec<String>,
    /// The relay processes' pids, for CPU and memory readings (summed).
    pub pids: Vec<u32>,
    /// Pids of processes the relay relies on (the nats-server nodes of a cluster): their CPU
    /// time is reported apart from the relay's.
    pub backend_pids: Vec<u32>,
    /// The relay's expected key; `None` accepts the key the first address presents, and then
    /// pins every other connection to that one (all nodes of a cluster share one key).
    pub fingerprint: Option<[u8; 32]>,
    /// The protocol version members speak: 1 or 2.
    pub protocol: u8,
    /// Senders seal every message before the timed phase and only write during it, so the
    /// generator's sealing (an MLS message costs several times a v1 envelope) does not thin the
    /// stream the relay sees. Latency is still taken from the write.
    pub preseal: bool,
}

impl ChatTarget {
    /// One relay process at `addr`.
    pub fn single(addr: &str, pid: Option<u32>) -> Self {
        Self {
            addrs: vec![addr.to_owned()],
            pids: pid.into_iter().collect(),
            backend_pids: Vec::new(),
            fingerprint: None,
            protocol: 1,
            preseal: false,
        }
    }

    /// The address member `i` connects to: members are spread round robin over the nodes.
    pub fn addr_of(&self, i: usize) -> Result<&str, BenchError> {
        let n = self.addrs.len();
        if n == 0 {
            return Err(BenchError::Workload("no relay address given".into()));
        }
        Ok(&self.addrs[i % n])
    }
}

/// One room's keys as the members hold them.
struct Room {
    name: RoomName,
    sealing: Sealing,
    join_secret: JoinSecret,
}

/// How a room's messages are sealed.
enum Sealing {
    /// Version 1: under the password's message key.
    V1(MessageKey),
    /// Version 2: MLS, each sender in a group of its own keyed by the password's PSK.
    V2 { psk: RoomPsk, relay_key: [u8; 32] },
}

/// What a sender sealed, for receivers to compare with.
struct Sent {
    envelope: Vec<u8>,
    /// When it was written (ns since the origin).
    t_ns: u64,
    /// The time its payload carries: `t_ns`, or 0 when sealed ahead of the run.
    sealed_t_ns: u64,
    /// The sender's room (index into `Check::rooms`).
    room: usize,
}

/// Everything receivers need to check a delivery.
struct Check {
    shared: Arc<Shared>,
    rooms: Vec<Room>,
    senders: HashMap<[u8; 32], usize>,
    sent: Vec<Vec<OnceLock<Sent>>>,
    counter_base: u64,
    bytes: usize,
    messages: usize,
    protocol: u8,
    preseal: bool,
}

struct Joined {
    reader: ConnReader,
    writer: ConnWriter,
    /// `Presence(joined)` of later members that arrived with the join's own items.
    join_notices: u64,
}

fn is_join_notice(item: &RelayMessage) -> bool {
    matches!(item, RelayMessage::Presence { event: PresenceEvent::Joined, .. })
}

fn pin(target: &ChatTarget) -> RelayPin {
    RelayPin { expected: target.fingerprint, expected_source: "--fingerprint".into(), known: None }
}

async fn connect(
    target: &ChatTarget,
    addr: &str,
) -> Result<chatroom_session::session::Handshaken, BenchError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(BenchError::io(format!("cannot connect to the relay at {addr} (is it running?)")))?;
    stream.set_nodelay(true).map_err(BenchError::io("cannot set TCP_NODELAY"))?;
    let handshaken = match target.protocol {
        2 => handshake_v2(stream, addr, &pin(target)).await,
        _ => handshake(stream, addr, &pin(target)).await,
    };
    handshaken.map_err(BenchError::session(format!("handshake with {addr} failed")))
}

/// Connects, joins, and reads up to `HistoryEnd`.
async fn join_member(
    target: &ChatTarget,
    addr: &str,
    identity: &Identity,
    room: &Room,
    nick: &str,
    create: bool,
) -> Result<Joined, BenchError> {
    let work = async {
        let mut conn = connect(target, addr).await?;
        let nick = Nick::new(nick)
            .map_err(|source| BenchError::Encode { what: format!("nickname {nick}"), source })?;
        let request = JoinRequest::new(
            identity,
            &conn.handshake_hash,
            room.name.clone(),
            nick,
            room.join_secret.clone(),
            create,
            0,
        );
        let request = if target.protocol == 2 { request.for_version_2() } else { request };
        let (_, mut items) = join(&mut conn, request).await.map_err(BenchError::session("join refused"))?;
        let mut join_notices = 0;
        loop {
            join_notices += items.iter().filter(|m| is_join_notice(m)).count() as u64;
            if items.iter().any(|m| matches!(m, RelayMessage::HistoryEnd { .. })) {
                break;
            }
            if let Some(RelayMessage::Goodbye { code, detail }) =
                items.iter().find(|m| matches!(m, RelayMessage::Goodbye { .. }))
            {
                return Err(BenchError::Server(format!(
                    "relay said goodbye during the join: {code:?}: {detail}"
                )));
            }
            items = conn.reader.recv().await.map_err(BenchError::session("lost during the join"))?;
        }
        Ok(Joined { reader: conn.reader, writer: conn.writer, join_notices })
    };
    tokio::time::timeout(JOIN_TIMEOUT, work).await.map_err(|_| {
        BenchError::Server(format!("join did not complete within {} s", JOIN_TIMEOUT.as_secs()))
    })?
}

/// Handshakes once to learn the relay key, then derives each room's keys off the runtime.
/// Returns the target pinned to that key, so every node must present the same one.
async fn room_keys(target: &ChatTarget, names: Vec<RoomName>) -> Result<(ChatTarget, Vec<Room>), BenchError> {
    let relay_key = connect(target, target.addr_of(0)?).await?.relay_key;
    let pinned = ChatTarget { fingerprint: Some(relay_key), ..target.clone() };
    let mut rooms = Vec::with_capacity(names.len());
    for name in names {
        let (n, protocol) = (name.clone(), target.protocol);
        let room = tokio::task::spawn_blocking(move || derive(protocol, &relay_key, n))
            .await
            .map_err(BenchError::task("key derivation"))??;
        rooms.push(room);
    }
    Ok((pinned, rooms))
}

/// A room's keys from the bench's password, for protocol `protocol`.
fn derive(protocol: u8, relay_key: &[u8; 32], name: RoomName) -> Result<Room, BenchError> {
    const PASSWORD: &[u8] = b"chatroom-bench room password";
    Ok(if protocol == 2 {
        let keys = derive_room_secrets_v2(PASSWORD, relay_key, &name, KdfParams::DEFAULT)?;
        let sealing = Sealing::V2 { psk: keys.room_psk.clone(), relay_key: *relay_key };
        Room { name, sealing, join_secret: keys.join_secret.clone() }
    } else {
        let keys = derive_room_keys(PASSWORD, relay_key, &name, KdfParams::DEFAULT)?;
        Room { name, sealing: Sealing::V1(keys.message_key.clone()), join_secret: keys.join_secret.clone() }
    })
}

fn room_names(w: &Workload) -> Result<Vec<RoomName>, BenchError> {
    let mut tag = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
    let tag = hex::encode(tag);
    (0..w.rooms)
        .map(|r| {
            RoomName::new(&format!("bench-{}-{r}-{tag}", w.name.to_ascii_lowercase())).map_err(|source| {
                BenchError::Encode { what: format!("the room name of workload {:?}", w.name), source }
            })
        })
        .collect()
}

/// Receives until told to stop; checks and counts every delivery.
async fn receive(
    mut reader: ConnReader,
    check: Arc<Check>,
    room: usize,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::new(check.senders.len(), check.messages);
    loop {
        let items = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = reader.recv() => match r {
                Ok(items) => items,
                Err(e) => {
                    if !*stop.borrow() {
                        tally.errors.push(format!("connection ended: {e}"));
                    }
                    break;
                }
            },
        };
        let now = check.shared.now_ns();
        for item in items {
            match item {
                RelayMessage::Deliver { envelope, history: false, .. } => {
                    deliver(&check, room, &envelope, now, &mut tally)
                }
                RelayMessage::Presence { event: PresenceEvent::Joined, .. } => {
                    check.shared.join_notices.fetch_add(1, Ordering::Relaxed);
                }
                RelayMessage::Ack { .. } => {
                    tally.acked += 1;
                    check.shared.acked.fetch_add(1, Ordering::Relaxed);
                }
                RelayMessage::Error { code, detail } if tally.errors.len() < 5 => {
                    tally.errors.push(format!("relay error {code:?}: {detail}"));
                }
                RelayMessage::SendError { code, detail, .. } if tally.errors.len() < 5 => {
                    tally.errors.push(format!("relay refused a send {code:?}: {detail}"));
                }
                RelayMessage::Goodbye { code, detail } => {
                    tally.errors.push(format!("relay goodbye {code:?}: {detail}"))
                }
                _ => {}
            }
        }
    }
    tally
}

fn deliver(check: &Check, room: usize, envelope: &[u8], now: u64, tally: &mut Tally) {
    let parsed = if check.protocol == 2 {
        EnvelopeHeader::parse_v2(envelope)
    } else {
        EnvelopeHeader::parse(envelope)
    };
    let Ok(header) = parsed else {
        tally.corrupted += 1;
        return;
    };
    let found = check.senders.get(&header.sender.0).and_then(|&s| {
        let n = usize::try_from(header.counter.checked_sub(check.counter_base)?).ok()?;
        Some((s, n, check.sent.get(s)?.get(n)?.get()?))
    });
    let Some((s, n, sent)) = found else {
        tally.corrupted += 1;
        return;
    };
    // Byte-identical to what a sender of this receiver's room sealed.
    if sent.envelope != envelope || sent.room != room {
        tally.corrupted += 1;
        return;
    }
    tally.intact(&check.shared, s, n, sent.t_ns, now);
}

/// Opens every envelope the senders sealed (AEAD, signature, the exact body), once each, after
/// the timed phase: a delivery already counts only when byte-identical to one of these, so
/// this proves that what the relay carried were real, openable envelopes without putting one
/// Ed25519 verification per message on the generator's share of the cores during the run.
/// A v2 envelope's signature is checked and its MLS message must be an application message
/// (only its sender's group could decrypt it).
fn open_sealed(check: &Check) -> Vec<String> {
    let mut errors = Vec::new();
    for (s, slots) in check.sent.iter().enumerate() {
        for (n, sent) in slots.iter().enumerate().filter_map(|(n, slot)| Some((n, slot.get()?))) {
            let ok = check.rooms.get(sent.room).is_some_and(|keys| match &keys.sealing {
                Sealing::V1(key) => {
                    let opened = open(key, &keys.name, &sent.envelope).ok();
                    opened.and_then(|o| {
                        verify_payload(&o.content.body, check.bytes, check.sent.len(), check.messages)
                    }) == Some((s, n, sent.sealed_t_ns))
                }
                Sealing::V2 { .. } => verify_v2(&keys.name, &sent.envelope)
                    .is_ok_and(|m| content_kind(&m.mls) == Some(Kind::Application)),
            });
            if !ok && errors.len() < 5 {
                errors.push(format!(
                    "sender {s} message {n}: the sealed envelope does not open to its payload"
                ));
            }
        }
    }
    errors
}

/// Sends this sender's messages; returns when the last was written (ns since the origin).
/// Who a sender is.
struct Sender {
    identity: Arc<Identity>,
    index: usize,
    room: usize,
    nick: Nick,
    /// Its messages, sealed ahead of the run (`ChatTarget::preseal`).
    presealed: Option<Vec<Vec<u8>>>,
}

impl Sender {
    /// Message `k`, its payload carrying `t_ns`.
    fn seal(
        &self,
        sealer: &mut Sealer<'_>,
        check: &Check,
        k: usize,
        t_ns: u64,
    ) -> Result<Vec<u8>, BenchError> {
        let keys = check.rooms.get(self.room).ok_or(BenchError::Internal("no such room"))?;
        let content = Content {
            timestamp_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            kind: ContentKind::Text,
            nick: self.nick.clone(),
            body: crate::workload::payload(self.index, k, t_ns, check.bytes),
        };
        sealer.seal(&self.identity, &keys.name, check.counter_base + k as u64, &content)
    }

    /// Seals every message now, with 0 as the time in their payloads.
    fn preseal(&mut self, check: &Check) -> Result<(), BenchError> {
        let keys = check.rooms.get(self.room).ok_or(BenchError::Internal("no such room"))?;
        let mut sealer = Sealer::new(keys, &self.identity)?;
        let sealed =
            (0..check.messages).map(|k| self.seal(&mut sealer, check, k, 0)).collect::<Result<_, _>>()?;
        self.presealed = Some(sealed);
        Ok(())
    }
}

async fn send(
    mut writer: ConnWriter,
    check: Arc<Check>,
    sender: Sender,
    rate: Option<f64>,
    start: tokio::time::Instant,
) -> Result<(ConnWriter, u64, u64), BenchError> {
    let (s, room) = (sender.index, sender.room);
    let Some(keys) = check.rooms.get(room) else { return Err(BenchError::Internal("no such room")) };
    let Some(slots) = check.sent.get(s) else { return Err(BenchError::Internal("no such sender")) };
    let mut presealed = sender.presealed.as_ref().map(|all| all.iter());
    let mut sealer = if presealed.is_none() { Some(Sealer::new(keys, &sender.identity)?) } else { None };
    let mut n = 0;
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(SEND_BATCH);
    while n < check.messages {
        if let Some(at) = due(rate, n) {
            tokio::time::sleep_until(start + at).await;
        }
        let take = if rate.is_some() { 1 } else { SEND_BATCH.min(check.messages - n) };
        batch.clear();
        for k in n..n + take {
            let t_ns = check.shared.now_ns();
            let (envelope, sealed_t_ns) = match (presealed.as_mut(), sealer.as_mut()) {
                (Some(all), _) => {
                    (all.next().ok_or(BenchError::Internal("too few sealed messages"))?.clone(), 0)
                }
                (None, Some(sealer)) => (sender.seal(sealer, &check, k, t_ns)?, t_ns),
                (None, None) => return Err(BenchError::Internal("a sender with no way to seal")),
            };
            let slot = slots.get(k).ok_or(BenchError::Internal("message index out of range"))?;
            let _ = slot.set(Sent { envelope: envelope.clone(), t_ns, sealed_t_ns, room });
            batch.push(ClientMessage::Send { envelope });
        }
        writer.send(&batch).await.map_err(|e| BenchError::member(s)(BenchError::session("send")(e)))?;
        written += take as u64;
        n += take;
    }
    Ok((writer, written, check.shared.now_ns()))
}

/// A sender's way of sealing: the room's v1 key, or its own MLS group.
enum Sealer<'a> {
    V1(&'a MessageKey),
    V2(Box<chatroom_group::Room>),
}

impl<'a> Sealer<'a> {
    fn new(room: &'a Room, identity: &Identity) -> Result<Self, BenchError> {
        Ok(match &room.sealing {
            Sealing::V1(key) => Self::V1(key),
            Sealing::V2 { psk, relay_key } => {
                let group = RoomRef { room: room.name.clone(), relay_key: *relay_key, psk_generation: 0 };
                let group = chatroom_group::Room::create(identity, group, psk)
                    .map_err(|e| BenchError::Server(format!("cannot create the sender's MLS group: {e}")))?;
                Self::V2(Box::new(group))
            }
        })
    }

    fn seal(
        &mut self,
        identity: &Identity,
        room: &RoomName,
        counter: u64,
        content: &Content,
    ) -> Result<Vec<u8>, BenchError> {
        let encode = |source| BenchError::Encode { what: "an envelope".into(), source };
        match self {
            Self::V1(key) => seal(key, identity, room, counter, content).map_err(encode),
            Self::V2(group) => {
                let plaintext = content.to_padded_bytes().map_err(encode)?;
                let mls = group
                    .seal_message(&plaintext)
                    .map_err(|e| BenchError::Server(format!("cannot seal an MLS message: {e}")))?;
                sign_v2(identity, room, counter, Kind::Application as u8, &mls).map_err(encode)
            }
        }
    }
}

/// Runs one workload against a chatroom relay.
pub async fn run(target: &ChatTarget, w: &Workload) -> Result<Outcome, BenchError> {
    w.validate()?;
    match w.mode {
        Mode::Connect => return connect_rate(target, w).await,
        Mode::Deliver | Mode::Idle => {}
    }
    let (target, check, identities) = prepare(target, w).await?;
    let target = &target;
    let mut watch_server = ServerWatch::start(&target.pids);
    let mut watch_backend = ServerWatch::start(&target.backend_pids);
    let (stop_tx, stop_rx) = watch::channel(false);
    let join_start = Instant::now();
    let (mut writers, receivers) = join_all(target, w, &check, &identities, &stop_rx).await?;
    let join_secs = join_start.elapsed().as_secs_f64();
    let mut outcome = match w.mode {
        Mode::Idle => {
            idle(&check.shared, w, w.expected_join_notices()).await?;
            let mut o = Outcome { target: "chatroom".into(), workload: w.name.clone(), ..Outcome::default() };
            if let (Some(before), Some(after)) = (watch_server.before(), watch_server.now()) {
                o.kib_per_member =
                    Some(after.rss_kib.saturating_sub(before.rss_kib) as f64 / w.members as f64);
                o.peak_rss_kib = Some(after.peak_rss_kib);
            }
            let _ = stop_tx.send(true);
            let mut receivers = receivers;
            while receivers.join_next().await.is_some() {}
            o
        }
        Mode::Deliver | Mode::Connect => {
            let run = Delivery { check: &check, identities: &identities, stop: &stop_tx };
            run.measure(w, &mut writers, receivers, [&mut watch_server, &mut watch_backend]).await?
        }
    };
    outcome.joined = w.members;
    outcome.join_secs = join_secs;
    drop(writers);
    Ok(outcome)
}

/// The rooms' keys, the members' identities and what receivers check deliveries against.
async fn prepare(
    target: &ChatTarget,
    w: &Workload,
) -> Result<(ChatTarget, Arc<Check>, Vec<Arc<Identity>>), BenchError> {
    let (target, rooms) = room_keys(target, room_names(w)?).await?;
    let identities: Vec<Arc<Identity>> = (0..w.members).map(|_| Arc::new(Identity::generate())).collect();
    let senders: HashMap<[u8; 32], usize> =
        identities.iter().take(w.senders).enumerate().map(|(s, id)| (id.public().0, s)).collect();
    let counter_base =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
    let check = Arc::new(Check {
        shared: Arc::new(Shared::new()),
        rooms,
        senders,
        sent: (0..w.senders).map(|_| (0..w.messages).map(|_| OnceLock::new()).collect()).collect(),
        counter_base,
        bytes: w.bytes,
        messages: w.messages,
        protocol: target.protocol,
        preseal: target.preseal,
    });
    Ok((target, check, identities))
}

/// Joins every member: the first member of each room creates it, then the rest join
/// concurrently; each member's receiver starts as soon as it has joined, so presence traffic
/// is drained. Returns the members' writers and the receiver tasks.
async fn join_all(
    target: &ChatTarget,
    w: &Workload,
    check: &Arc<Check>,
    identities: &[Arc<Identity>],
    stop_rx: &watch::Receiver<bool>,
) -> Result<(Vec<Option<ConnWriter>>, JoinSet<Tally>), BenchError> {
    let permits = Arc::new(Semaphore::new(w.concurrency));
    let mut joins = JoinSet::new();
    let mut writers: Vec<Option<ConnWriter>> = (0..w.members).map(|_| None).collect();
    let mut receivers = JoinSet::new();
    let order: Vec<usize> = (0..w.members).collect();
    for (phase, members) in [&order[..w.rooms], &order[w.rooms..]].into_iter().enumerate() {
        for &i in members {
            let (target, check, identity, permits) =
                (target.clone(), check.clone(), identities[i].clone(), permits.clone());
            let room = w.room_of(i);
            joins.spawn(async move {
                let _permit =
                    permits.acquire_owned().await.map_err(|_| BenchError::Internal("join permits closed"))?;
                let keys = check.rooms.get(room).ok_or(BenchError::Internal("no such room"))?;
                join_member(&target, target.addr_of(i)?, &identity, keys, &format!("m{i}"), phase == 0)
                    .await
                    .map(|j| (i, j))
                    .map_err(BenchError::member(i))
            });
        }
        while let Some(joined) = joins.join_next().await {
            let (i, j) = joined.map_err(BenchError::task("join"))??;
            writers[i] = Some(j.writer);
            check.shared.join_notices.fetch_add(j.join_notices, Ordering::Relaxed);
            receivers.spawn(receive(j.reader, check.clone(), w.room_of(i), stop_rx.clone()));
        }
    }
    Ok((writers, receivers))
}

/// Deliver mode's measurement, once every member has joined.
struct Delivery<'a> {
    check: &'a Arc<Check>,
    identities: &'a [Arc<Identity>],
    stop: &'a watch::Sender<bool>,
}

impl Delivery<'_> {
    /// The senders and their connections, their messages sealed if the run seals ahead.
    fn senders(
        &self,
        w: &Workload,
        writers: &mut [Option<ConnWriter>],
    ) -> Result<Vec<(ConnWriter, Sender)>, BenchError> {
        let mut senders = Vec::with_capacity(w.senders);
        for (s, writer) in writers.iter_mut().take(w.senders).enumerate() {
            let writer = writer.take().ok_or(BenchError::Internal("a sender has no connection"))?;
            let nick = Nick::new(&format!("m{s}"))
                .map_err(|source| BenchError::Encode { what: format!("nickname m{s}"), source })?;
            let identity = self.identities[s].clone();
            let mut sender = Sender { identity, index: s, room: w.room_of(s), nick, presealed: None };
            if self.check.preseal {
                sender.preseal(self.check)?;
            }
            senders.push((writer, sender));
        }
        Ok(senders)
    }

    /// Sends from every sender, waits for the deliveries and acks (bounded by the workload's
    /// timeout and settle time), and tallies what arrived.
    async fn measure(
        &self,
        w: &Workload,
        writers: &mut [Option<ConnWriter>],
        receivers: JoinSet<Tally>,
        [watch_server, watch_backend]: [&mut ServerWatch; 2],
    ) -> Result<Outcome, BenchError> {
        let shared = &self.check.shared;
        let senders = self.senders(w, writers)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        watch_server.restart();
        watch_backend.restart();
        let shared_start = shared.now_ns();
        let start = tokio::time::Instant::now();
        let deadline = Instant::now() + w.timeout;
        let mut sends = JoinSet::new();
        for (writer, sender) in senders {
            sends.spawn(send(writer, self.check.clone(), sender, w.rate, start));
        }
        let Sends { sent, last_write, errors, kept } = gather_sends(sends, shared_start).await;
        wait_for_deliveries(shared, w.expected_deliveries(), w.settle, deadline).await;
        // Acks may trail the last delivery: wait for them the same way.
        let acks_deadline = Instant::now() + w.settle;
        while shared.acked.load(Ordering::Relaxed) < sent && Instant::now() < acks_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        let mut tally = gather_tallies(receivers).await?;
        tally.errors.extend(errors);
        tally.errors.extend(open_sealed(self.check));
        // Times relative to the start of sending.
        tally.last_ns = tally.last_ns.saturating_sub(shared_start);
        let send_secs = last_write.saturating_sub(shared_start) as f64 / 1e9;
        let mut o = Outcome::from_tally("chatroom", w, tally, sent, send_secs);
        let units = o.delivered;
        watch_server.finish(&mut o, units);
        watch_backend.finish_backend(&mut o, units);
        drop(kept);
        Ok(o)
    }
}

/// X25519 operations per second on one core of this machine.
pub fn x25519_rate(for_time: Duration) -> f64 {
    let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    let mut point = x25519_dalek::PublicKey::from(&secret);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_time {
        for _ in 0..64 {
            point = x25519_dalek::PublicKey::from(secret.diffie_hellman(&point).to_bytes());
        }
        n += 64;
    }
    std::hint::black_box(point);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Handshake + join + leave, `concurrency` at a time, for `duration`: joins per second.
async fn connect_rate(target: &ChatTarget, w: &Workload) -> Result<Outcome, BenchError> {
    let x25519 = tokio::task::spawn_blocking(|| x25519_rate(Duration::from_millis(500)))
        .await
        .map_err(BenchError::task("X25519 rate"))?;
    let (target, rooms) = room_keys(target, room_names(w)?).await?;
    let rooms = Arc::new(rooms);
    let owner = Identity::generate();
    let room0 = rooms.first().ok_or(BenchError::Internal("no room"))?;
    // The owner creates the room and stays, so every later join is to an existing room.
    let holder = join_member(&target, target.addr_of(0)?, &owner, room0, "owner", true).await?;
    let watch_server = ServerWatch::start(&target.pids);
    let watch_backend = ServerWatch::start(&target.backend_pids);
    let rate = connect_loops(w, move |k, j| {
        let (target, rooms) = (target.clone(), rooms.clone());
        async move {
            let room = rooms.first().ok_or(BenchError::Internal("no room"))?;
            // Each loop keeps to one node; loops are spread round robin like members.
            let addr = target.addr_of(k)?;
            let mut joined =
                join_member(&target, addr, &Identity::generate(), room, &format!("c{k}x{j}"), false).await?;
            joined.writer.shutdown().await;
            Ok(())
        }
    })
    .await;
    let mut o = Outcome {
        target: "chatroom".into(),
        workload: w.name.clone(),
        joined: rate.done as usize,
        join_secs: rate.secs,
        joins_per_sec: Some(rate.done as f64 / rate.secs),
        x25519_per_sec: Some(x25519),
        errors: rate.errors,
        ..Outcome::default()
    };
    watch_server.finish(&mut o, rate.done);
    watch_backend.finish_backend(&mut o, rate.done);
    drop(holder);
    Ok(o)
}
