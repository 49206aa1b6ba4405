//! A small protocol driver for relay tests: a relay in-process on 127.0.0.1 port 0, and
//! clients that do the real Noise handshake, join, seal envelopes and read items, or send
//! whatever hostile bytes a test wants.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    seal, ClientMessage, Content, ContentKind, ErrorCode, Identity, Initiator, JoinRequest, Member, Nick,
    PresenceEvent, RelayMessage, RoomKeys, RoomName, StaticKeypair, TransportReceiver, TransportSender,
};
use chatroom_relay::rooms::RoomAdmin;
use chatroom_relay::{Config, Relay, RelayError, Synchronous};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type TestResult = Result<(), Box<dyn Error>>;
pub type Res<T> = Result<T, Box<dyn Error>>;

/// A child process (a relay, a nats-server) killed and reaped when dropped, so a test that
/// fails half-way leaves no process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Longest wait for any single expected event.
pub const STEP: Duration = Duration::from_secs(5);

/// The configuration tests start from: defaults, commits without fsync (a process crash is
/// what the in-process tests simulate; `process.rs` runs the real default), and no limit on
/// the rate of new connections (these tests open many from 127.0.0.1 in quick succession;
/// `hostile_load.rs` tests the rate on the real default) or on sends per address and room
/// (`hostile.rs` tests those).
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.synchronous = Synchronous::Normal;
    config.handshake_burst = 100_000;
    config.handshakes_per_sec = 100_000;
    // Likewise the send rates per address and per room: most tests send from one address.
    config.ip_rate_burst = 100_000;
    config.ip_rate_per_sec = 100_000;
    config.room_rate_burst = 100_000;
    config.room_rate_per_sec = 100_000;
    config.shutdown_grace = Duration::from_secs(2);
    config
}

/// A relay running in this process.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub key: [u8; 32],
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RelayError>>>,
}

impl TestRelay {
    pub async fn start(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Res<Self> {
        Self::start_with(dir, tweak, |relay| relay).await
    }

    /// `start`, with the opened relay made into another by `plug` (another room backend, other
    /// abuse limits).
    pub async fn start_with<R: RoomAdmin>(
        dir: &Path,
        tweak: impl FnOnce(&mut Config),
        plug: impl FnOnce(Relay) -> Relay<R>,
    ) -> Res<Self> {
        let mut config = test_config(dir);
        tweak(&mut config);
        let relay = plug(Relay::open(config)?);
        let key = *relay.public_key();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, key, dir: dir.to_owned(), stop: Some(stop), task: Some(task) })
    }

    /// A handle on a relay running elsewhere (another process): only its address is used.
    pub fn external(addr: SocketAddr) -> Self {
        Self { addr, key: [0; 32], dir: PathBuf::new(), stop: None, task: None }
    }

    /// Shuts the relay down and waits until it has closed its database.
    pub async fn stop(mut self) -> Res<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await???;
        }
        Ok(())
    }
}

/// A room with its (test-derived) keys: the master key is random, not from Argon2.
pub struct TestRoom {
    pub name: RoomName,
    pub keys: RoomKeys,
}

impl TestRoom {
    pub fn new(name: &str) -> Self {
        // A random master key, standing in for the Argon2id output.
        let master = *Identity::generate().seed();
        Self { name: RoomName::new(name).expect("room name"), keys: split_master(&master) }
    }
}

/// A member: identity, nickname and the last counter it used.
pub struct Person {
    pub identity: Identity,
    pub nick: Nick,
    pub counter: u64,
}

impl Person {
    pub fn new(nick: &str) -> Self {
        Self { identity: Identity::generate(), nick: Nick::new(nick).expect("nick"), counter: 1_000 }
    }

    /// Seals `text` for `room` with the next counter.
    pub fn seal(&mut self, room: &TestRoom, text: &str) -> (u64, Vec<u8>) {
        self.counter += 1;
        let content = Content {
            timestamp_ms: 0,
            kind: ContentKind::Text,
            nick: self.nick.clone(),
            body: text.to_owned(),
        };
        let envelope =
            seal(&room.keys.message_key, &self.identity, &room.name, self.counter, &content).expect("seal");
        (self.counter, envelope)
    }
}

/// What a successful join returned.
#[derive(Debug)]
pub struct Joined {
    pub created: bool,
    pub owner: [u8; 32],
    pub latest_seq: u64,
    pub oldest_seq: u64,
    pub members: Vec<Member>,
    pub history: Vec<(u64, Vec<u8>)>,
    pub history_end: u64,
    /// `GroupInfoStored` right after `Joined` (version 2 only).
    pub group_info_seq: Option<u64>,
}

/// One client connection after the Noise handshake.
pub struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    tx: TransportSender,
    rx: TransportReceiver,
    pub handshake_hash: [u8; 32],
    pub relay_key: [u8; 32],
    held: VecDeque<RelayMessage>,
    /// The protocol version of the handshake, which the join announces too.
    pub version: u8,
}

pub async fn tcp_from(addr: SocketAddr, source: IpAddr) -> Res<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(tokio::time::timeout(STEP, socket.connect(addr)).await??)
}

pub async fn read_frame(rd: &mut (impl AsyncReadExt + Unpin)) -> Res<Vec<u8>> {
    let mut header = [0u8; 2];
    rd.read_exact(&mut header).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Res<Self> {
        Self::connect_from(addr, [127, 0, 0, 1].into()).await
    }

    pub async fn connect_from(addr: SocketAddr, source: IpAddr) -> Res<Self> {
        Self::handshake(tcp_from(addr, source).await?).await
    }

    /// Connects with a tiny receive buffer: a reader that stops reading is noticed quickly.
    pub async fn connect_small_buffer(addr: SocketAddr) -> Res<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        Self::handshake(tokio::time::timeout(STEP, socket.connect(addr)).await??).await
    }

    /// `connect_small_buffer` from `source`.
    pub async fn connect_small_from(addr: SocketAddr, source: IpAddr) -> Res<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        socket.bind(SocketAddr::new(source, 0))?;
        Self::handshake(tokio::time::timeout(STEP, socket.connect(addr)).await??).await
    }

    /// Runs the handshake over a connection opened earlier.
    pub async fn over(stream: TcpStream) -> Res<Self> {
        Self::handshake(stream).await
    }

    /// A protocol version 2 connection (prologue `chatroom/2`).
    pub async fn connect_v2(addr: SocketAddr) -> Res<Self> {
        Self::handshake_version(tcp_from(addr, [127, 0, 0, 1].into()).await?, 2).await
    }

    async fn handshake(stream: TcpStream) -> Res<Self> {
        Self::handshake_version(stream, 1).await
    }

    async fn handshake_version(stream: TcpStream, version: u8) -> Res<Self> {
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let keys = StaticKeypair::generate();
        let (init, msg1) = if version == 2 { Initiator::start_v2(&keys)? } else { Initiator::start(&keys)? };
        wr.write_all(&frame(&msg1)).await?;
        let msg2 = tokio::time::timeout(STEP, read_frame(&mut rd)).await??;
        let ready = init.read_reply(&msg2)?;
        let relay_key = *ready.relay_key();
        let (transport, msg3) = ready.finish()?;
        wr.write_all(&frame(&msg3)).await?;
        let handshake_hash = *transport.handshake_hash();
        let (tx, rx) = transport.split();
        Ok(Self { rd, wr, tx, rx, handshake_hash, relay_key, held: VecDeque::new(), version })
    }

    /// Sends one transport message holding `plaintext`.
    pub async fn send_plaintext(&mut self, plaintext: &[u8]) -> Res<()> {
        let mut out = Vec::new();
        self.tx.seal_frame(plaintext, &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Sends messages as items of one transport message.
    pub async fn send(&mut self, messages: &[ClientMessage]) -> Res<()> {
        let mut plaintext = Vec::new();
        for m in messages {
            m.encode(&mut plaintext);
        }
        self.send_plaintext(&plaintext).await
    }

    /// Writes raw bytes on the socket, under the encryption.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Res<()> {
        self.wr.write_all(bytes).await?;
        Ok(())
    }

    pub async fn join_request(
        &mut self,
        person: &Person,
        room: &TestRoom,
        create: bool,
        history_after: u64,
    ) -> Res<()> {
        let request = JoinRequest::new(
            &person.identity,
            &self.handshake_hash,
            room.name.clone(),
            person.nick.clone(),
            room.keys.join_secret.clone(),
            create,
            history_after,
        );
        let request = if self.version == 2 { request.for_version_2() } else { request };
        self.send(&[ClientMessage::Join(request)]).await
    }

    /// Joins and reads everything up to `HistoryEnd`; a refusal comes back as its goodbye.
    pub async fn join(
        &mut self,
        person: &Person,
        room: &TestRoom,
        create: bool,
        history_after: u64,
    ) -> Res<Result<Joined, (ErrorCode, String)>> {
        self.join_request(person, room, create, history_after).await?;
        let (created, owner, latest_seq, oldest_seq) = match self.recv().await? {
            RelayMessage::Joined { created, owner, latest_seq, oldest_seq } => {
                (created, owner.0, latest_seq, oldest_seq)
            }
            RelayMessage::Goodbye { code, detail } => return Ok(Err((code, detail))),
            other => return Err(format!("expected Joined, got {other:?}").into()),
        };
        let mut joined = Joined {
            created,
            owner,
            latest_seq,
            oldest_seq,
            members: Vec::new(),
            history: Vec::new(),
            history_end: 0,
            group_info_seq: None,
        };
        loop {
            match self.recv().await? {
                RelayMessage::Members { members, .. } => joined.members.extend(members),
                RelayMessage::GroupInfoStored { after_seq } if joined.members.is_empty() => {
                    joined.group_info_seq = Some(after_seq)
                }
                RelayMessage::Deliver { seq, history: true, envelope } => {
                    joined.history.push((seq, envelope))
                }
                RelayMessage::HistoryEnd { latest_seq } => {
                    joined.history_end = latest_seq;
                    return Ok(Ok(joined));
                }
                other => return Err(format!("unexpected during join: {other:?}").into()),
            }
        }
    }

    async fn read_messages(&mut self) -> Res<Vec<RelayMessage>> {
        self.read_messages_within(STEP).await
    }

    async fn read_messages_within(&mut self, wait: Duration) -> Res<Vec<RelayMessage>> {
        let frame = tokio::time::timeout(wait, read_frame(&mut self.rd)).await??;
        let plaintext = self.rx.open(&frame)?;
        Ok(RelayMessage::decode_all(&plaintext)?)
    }

    /// The next message (held ones first), waiting at most `STEP`.
    pub async fn recv(&mut self) -> Res<RelayMessage> {
        loop {
            if let Some(m) = self.held.pop_front() {
                return Ok(m);
            }
            let messages = self.read_messages().await?;
            self.held.extend(messages);
        }
    }

    /// The first message matching `pred`; others are kept, in order, for `recv`.
    pub async fn next_matching(&mut self, pred: impl Fn(&RelayMessage) -> bool) -> Res<RelayMessage> {
        if let Some(i) = self.held.iter().position(&pred) {
            return Ok(self.held.remove(i).expect("index"));
        }
        loop {
            let messages = self.read_messages().await?;
            let mut found = None;
            for m in messages {
                if found.is_none() && pred(&m) {
                    found = Some(m);
                } else {
                    self.held.push_back(m);
                }
            }
            if let Some(m) = found {
                return Ok(m);
            }
        }
    }

    /// Sends an envelope and returns the relay's answer (`Ack` or `SendError`).
    pub async fn publish(&mut self, envelope: Vec<u8>) -> Res<RelayMessage> {
        self.send(&[ClientMessage::Send { envelope }]).await?;
        self.answer().await
    }

    /// The next answer to a `Send`: `Ack` or `SendError`.
    pub async fn answer(&mut self) -> Res<RelayMessage> {
        self.next_matching(|m| matches!(m, RelayMessage::Ack { .. } | RelayMessage::SendError { .. })).await
    }

    /// The next answer to a `Send`, waiting at most `wait` for each message: for a send the
    /// relay may hold longer than `STEP` (while the cluster elects a leader).
    pub async fn answer_within(&mut self, wait: Duration) -> Res<RelayMessage> {
        let is_answer =
            |m: &RelayMessage| matches!(m, RelayMessage::Ack { .. } | RelayMessage::SendError { .. });
        loop {
            if let Some(i) = self.held.iter().position(is_answer) {
                return Ok(self.held.remove(i).expect("index"));
            }
            let messages = self.read_messages_within(wait).await?;
            self.held.extend(messages);
        }
    }

    /// The next `SendError`: (counter, code, detail).
    pub async fn send_error(&mut self) -> Res<(u64, ErrorCode, String)> {
        match self.next_matching(|m| matches!(m, RelayMessage::SendError { .. })).await? {
            RelayMessage::SendError { counter, code, detail } => Ok((counter, code, detail)),
            _ => unreachable!(),
        }
    }

    /// Sends an envelope and expects an `Ack`; returns its seq.
    pub async fn publish_ok(&mut self, envelope: Vec<u8>) -> Res<u64> {
        match self.publish(envelope).await? {
            RelayMessage::Ack { seq, .. } => Ok(seq),
            other => Err(format!("expected Ack, got {other:?}").into()),
        }
    }

    /// The next live delivery: (seq, envelope).
    pub async fn delivery(&mut self) -> Res<(u64, Vec<u8>)> {
        match self.next_matching(|m| matches!(m, RelayMessage::Deliver { .. })).await? {
            RelayMessage::Deliver { seq, envelope, .. } => Ok((seq, envelope)),
            _ => unreachable!(),
        }
    }

    /// Reads until a goodbye; returns its code. Other messages are dropped.
    pub async fn goodbye(&mut self) -> Res<(ErrorCode, String)> {
        loop {
            if let RelayMessage::Goodbye { code, detail } = self.recv().await? {
                return Ok((code, detail));
            }
        }
    }

    /// Reads (and drops) until the relay closes the connection.
    pub async fn closed(&mut self) -> Res<()> {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(STEP, self.rd.read(&mut buf)).await? {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    }

    /// Sends a `Ping` and returns every message that arrived before its `Pong`, held ones
    /// first; messages after the `Pong` stay held. A negative check ends on this barrier
    /// rather than on a wait: the relay queues the `Pong` behind everything already queued to
    /// this connection, so whatever it sent before it is in the returned list.
    pub async fn until_pong(&mut self, token: u64) -> Res<Vec<RelayMessage>> {
        self.send(&[ClientMessage::Ping { token }]).await?;
        let mut before = Vec::new();
        loop {
            while let Some(m) = self.held.pop_front() {
                if matches!(m, RelayMessage::Pong { token: t } if t == token) {
                    return Ok(before);
                }
                before.push(m);
            }
            let messages = self.read_messages().await?;
            self.held.extend(messages);
        }
    }

    /// Every message arriving within `wait`, held ones first.
    pub async fn messages_within(&mut self, wait: Duration) -> Res<Vec<RelayMessage>> {
        let until = tokio::time::Instant::now() + wait;
        let mut all: Vec<RelayMessage> = self.held.drain(..).collect();
        loop {
            match tokio::time::timeout_at(until, self.read_messages()).await {
                Err(_) => return Ok(all),
                Ok(messages) => all.extend(messages?),
            }
        }
    }

    /// The next presence notice: (event, nickname).
    pub async fn presence(&mut self) -> Res<(PresenceEvent, String)> {
        match self.next_matching(|m| matches!(m, RelayMessage::Presence { .. })).await? {
            RelayMessage::Presence { event, nick, .. } => Ok((event, nick.as_str().to_owned())),
            _ => unreachable!(),
        }
    }

    /// The next `Error`: (code, detail).
    pub async fn error(&mut self) -> Res<(ErrorCode, String)> {
        match self.next_matching(|m| matches!(m, RelayMessage::Error { .. })).await? {
            RelayMessage::Error { code, detail } => Ok((code, detail)),
            _ => unreachable!(),
        }
    }
}

/// Sequence numbers of the live and history deliveries among `messages`.
pub fn delivered(messages: &[RelayMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            RelayMessage::Deliver { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Connects, joins and returns the connection with the join result.
pub async fn member(
    relay: &TestRelay,
    person: &Person,
    room: &TestRoom,
    create: bool,
) -> Res<(Conn, Joined)> {
    let mut conn = Conn::connect(relay.addr).await?;
    match conn.join(person, room, create, 0).await? {
        Ok(joined) => Ok((conn, joined)),
        Err((code, detail)) => Err(format!("join refused: {code:?} {detail}").into()),
    }
}

/// Reads from a raw socket until the relay closes it; returns the bytes received.
pub async fn until_closed(stream: &mut TcpStream) -> Res<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(STEP, stream.read(&mut buf)).await? {
            Ok(0) | Err(_) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// The `PutGroupInfo` items of an upload of `object` after `after_seq`.
pub fn put(after_seq: u64, object: &[u8]) -> Vec<ClientMessage> {
    let chunks: Vec<&[u8]> = object.chunks(chatroom_crypto::MAX_GROUP_INFO_CHUNK).collect();
    let parts = chunks.len() as u8;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            ClientMessage::PutGroupInfo(chatroom_crypto::GroupInfoPart {
                after_seq,
                part: i as u8,
                parts,
                chunk: chunk.to_vec(),
            })
        })
        .collect()
}

/// Uploads `object` after `after_seq`, one part per transport message; returns the relay's answer.
pub async fn upload(conn: &mut Conn, after_seq: u64, object: &[u8]) -> Res<RelayMessage> {
    for item in put(after_seq, object) {
        conn.send(&[item]).await?;
    }
    conn.next_matching(|m| matches!(m, RelayMessage::GroupInfoStored { .. } | RelayMessage::Error { .. }))
        .await
}

/// The room's GroupInfo (`GetGroupInfo`), or the code it was refused with.
pub async fn fetch(conn: &mut Conn) -> Res<Result<(u64, Vec<u8>), ErrorCode>> {
    conn.send(&[ClientMessage::GetGroupInfo]).await?;
    let mut object = Vec::new();
    loop {
        match conn
            .next_matching(|m| matches!(m, RelayMessage::GroupInfo(_) | RelayMessage::Error { .. }))
            .await?
        {
            RelayMessage::GroupInfo(p) => {
                object.extend_from_slice(&p.chunk);
                if p.part + 1 == p.parts {
                    return Ok(Ok((p.after_seq, object)));
                }
            }
            RelayMessage::Error { code, .. } => return Ok(Err(code)),
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
}

/// What the two-node cluster tests run their relay nodes with: three replicas, rooms of 100.
pub const CLUSTER_CONFIG: chatroom_relay::rooms::jetstream::ClusterConfig =
    chatroom_relay::rooms::jetstream::ClusterConfig {
        replicas: 3,
        limits: chatroom_relay::rooms::RoomLimits {
            history: chatroom_relay::rooms::HistoryLimit { count: 100, bytes: 1 << 20 },
            rules: chatroom_relay::rooms::rules::RuleLimits {
                max_members: 100,
                headroom_percent: 10,
                max_nicknames: 100,
            },
            max_rooms: 100,
        },
    };

/// A relay in `dir` whose rooms are on the cluster through the NATS server at `url`
/// (`CLUSTER_CONFIG` as `cluster` changes it), its configuration changed by `tweak`.
pub async fn cluster_node(
    dir: &Path,
    url: &str,
    cluster: impl FnOnce(&mut chatroom_relay::rooms::jetstream::ClusterConfig),
    tweak: impl FnOnce(&mut Config),
) -> Res<TestRelay> {
    let mut config = CLUSTER_CONFIG;
    cluster(&mut config);
    let client = chatroom_relay::rooms::jetstream::setup::connect(url).await?;
    let rooms = chatroom_relay::rooms::jetstream::JetStreamRooms::open(client, config).await?;
    TestRelay::start_with(dir, tweak, move |relay| relay.with_rooms(rooms)).await
}

/// Alice and bob each send `per_sender` envelopes at once in `room`, through the connections
/// given; returns what alice's connection received, in order, once she has every answer and
/// every one of bob's envelopes.
pub async fn interleaved(
    (alice, alice_conn): (&mut Person, &mut Conn),
    (bob, bob_conn): (&mut Person, &mut Conn),
    room: &TestRoom,
    per_sender: usize,
) -> Res<Vec<RelayMessage>> {
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..per_sender {
        mine.push(ClientMessage::Send { envelope: alice.seal(room, &format!("alice {i}")).1 });
        theirs.push(ClientMessage::Send { envelope: bob.seal(room, &format!("bob {i}")).1 });
    }
    // Interleaved in small bursts, so the two streams meet in the relay.
    for (a, b) in mine.chunks(4).zip(theirs.chunks(4)) {
        alice_conn.send(a).await?;
        bob_conn.send(b).await?;
    }
    let (mut acks, mut deliveries, mut seen) = (0, 0, Vec::new());
    while acks < per_sender || deliveries < per_sender {
        let m = alice_conn.recv().await?;
        match &m {
            RelayMessage::Ack { .. } => acks += 1,
            RelayMessage::Deliver { .. } => deliveries += 1,
            RelayMessage::SendError { .. } => return Err(format!("a send was refused: {m:?}").into()),
            _ => {}
        }
        seen.push(m);
    }
    Ok(seen)
}

/// The relay's promise on one connection (docs/PROTOCOL.md section 31, own envelopes):
/// an `Ack` for `seq` M comes after every `Deliver` with a lower `seq`. Returns the first
/// violation, if any, as (the Ack's seq, the late delivery's seq).
pub fn ack_after_lower_deliveries(seen: &[RelayMessage]) -> Option<(u64, u64)> {
    let mut highest_ack = 0;
    for m in seen {
        match m {
            RelayMessage::Ack { seq, .. } => highest_ack = highest_ack.max(*seq),
            RelayMessage::Deliver { seq, .. } if *seq < highest_ack => return Some((highest_ack, *seq)),
            _ => {}
        }
    }
    None
}
