//! `relay_session`: the whole relay (`chatroom_relay::Relay::run`) serving real connections.
//!
//! One relay runs per process, in-process on 127.0.0.1 (a temporary data directory, limits
//! on failures, creations and send rates raised so that a long campaign never trips them).
//! For each input the target opens four connections, does the real Noise handshake and join
//! on each: `alice` creates a fresh room, `bob` and `carol` join it, `dave` creates a second
//! fresh room over protocol version 2 (the `chatroom/2` handshake and join). Then it runs the input's operations, sends a `Ping` on every connection and
//! reads everything up to the `Pong`, the connection's close, or [`WAIT`].
//!
//! Input: up to [`MAX_OPS`] operations `op(u8) | fields`; `op % 4` picks the connection,
//! `(op / 4) % 5` the kind:
//! - 0 `SEND`: `counter(u16) body(bytes8)`: an envelope sealed by that member for its room
//!   (for `dave`, a version 2 envelope carrying the body as its MLS bytes);
//! - 1 `ENVELOPE`: `bytes16`: a `Send` of arbitrary envelope bytes;
//! - 2 `CONTROL`: `which(u8) token(u64) nick(bytes8)`: `Who`, `Ping`, `Pong`, `Kick`,
//!   `Ban`, `Unban`, a second `Join`, or version 2's `PutGroupInfo` (a part built from the
//!   token and the nick bytes), `GetGroupInfo`, `SetVerifier`;
//! - 3 `PLAINTEXT`: `bytes16`: arbitrary plaintext, encrypted and framed correctly;
//! - 4 `WIRE`: `bytes8`: arbitrary bytes on the socket, under the encryption.
//!
//! Invariants: nothing in the relay panics; every valid handshake and join is admitted; a
//! member never receives an envelope, a member list entry or a presence event of the other
//! room; `Deliver` sequence numbers strictly increase on each connection, and so do `Ack`
//! sequence numbers; everything a connection receives decrypts and decodes; only the version
//! 2 connection receives `GroupInfo` and `GroupInfoStored`, and a `GroupInfo` holds only bytes
//! uploaded in its room.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use chatroom_crypto::internal::split_master;
use chatroom_crypto::{
    seal_with, sign_v2, ClientMessage, Content, ContentKind, GroupInfoPart, Identity, Initiator, JoinRequest,
    Nick, PublicIdentity, RelayMessage, RoomKeys, RoomName, StaticKeypair, Transport,
};
use chatroom_relay::{Config, Relay, Synchronous};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::time::timeout;

use crate::{nick_or, FixedRng, Input};

/// Most operations read from one input.
pub const MAX_OPS: usize = 32;
/// Longest wait for one reply from the relay while draining a connection. Short under the
/// fuzzer, for speed; longer when `cargo test` replays the corpus on a loaded machine, where a
/// slow reply must not read as a missing one (the Pong barrier normally ends the wait at once).
#[cfg(fuzzing)]
pub const WAIT: Duration = Duration::from_millis(200);
/// See above.
#[cfg(not(fuzzing))]
pub const WAIT: Duration = Duration::from_millis(1500);
/// Longest time one input may take before it counts as a hang.
#[cfg(fuzzing)]
const SESSION_LIMIT: Duration = Duration::from_secs(8);
#[cfg(not(fuzzing))]
const SESSION_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for a step of a valid handshake or join.
pub const STEP: Duration = Duration::from_secs(3);
/// Op kind: a sealed envelope.
pub const SEND: u8 = 0;
/// Op kind: arbitrary envelope bytes.
pub const ENVELOPE: u8 = 1;
/// Op kind: a control message.
pub const CONTROL: u8 = 2;
/// Op kind: arbitrary plaintext.
pub const PLAINTEXT: u8 = 3;
/// Op kind: arbitrary wire bytes.
pub const WIRE: u8 = 4;
/// The members' nicknames, in connection order.
pub const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
const RUNTIME_THREAD: &str = "relay-fuzz";

static RELAY_PANICKED: AtomicBool = AtomicBool::new(false);
static NEXT_ROOM: AtomicU64 = AtomicU64::new(0);

struct Harness {
    rt: Runtime,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(RUNTIME_THREAD) {
                RELAY_PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info)
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(RUNTIME_THREAD)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
        remove_stale_data_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DATA_DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let mut config = Config::new(dir.path());
        config.synchronous = Synchronous::Normal;
        config.max_unauthenticated_per_ip = 1 << 16;
        config.ip_failures_slow = u32::MAX;
        config.ip_failures_lockout = u32::MAX;
        config.room_failures_slow = u32::MAX;
        config.room_failures_lockout = u32::MAX;
        config.room_creations_per_ip = u32::MAX;
        config.rate_burst = u32::MAX;
        config.rate_per_sec = u32::MAX;
        // Every input connects from 127.0.0.1 to a room of its own: the relay's per-address,
        // per-room and relay-wide budgets would end a campaign, not find a bug.
        config.max_connections_per_ip = usize::MAX;
        config.max_connections_per_48 = usize::MAX;
        config.handshake_burst = u32::MAX;
        config.handshakes_per_sec = u32::MAX;
        config.ip_rate_burst = u32::MAX;
        config.ip_rate_per_sec = u32::MAX;
        config.room_rate_burst = u32::MAX;
        config.room_rate_per_sec = u32::MAX;
        config.who_burst = u32::MAX;
        config.who_per_sec = u32::MAX;
        config.max_rooms = usize::MAX;
        config.max_room_nicknames = usize::MAX;
        config.handshake_timeout = STEP;
        let relay = Relay::open(config).unwrap_or_else(|e| panic!("cannot open the relay: {e}"));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("no local address: {e}"));
        rt.spawn(relay.run(listener, std::future::pending::<()>()));
        Harness { rt, addr, _dir: dir }
    })
}

/// The relay's data directory is `$TMPDIR/chatroom-fuzz-relay-<pid>-<random>`.
const DATA_DIR_PREFIX: &str = "chatroom-fuzz-relay-";

/// libFuzzer ends its process with `exit`, so the harness's `TempDir` is never dropped and
/// each fuzzing process would leave its relay database behind (it grows over a long campaign).
/// Each new harness removes the directories of processes that no longer run.
fn remove_stale_data_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DATA_DIR_PREFIX)) else { continue };
        let Some(pid) = pid.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

struct Conn {
    stream: TcpStream,
    transport: Transport,
    hash: [u8; 32],
    room: usize,
    alive: bool,
    received: Vec<RelayMessage>,
    /// The protocol version of its handshake and join.
    version: u8,
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(payload.len()).unwrap_or(u16::MAX).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

impl Conn {
    async fn open(addr: SocketAddr, room: usize, version: u8) -> Self {
        let mut stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to the relay timed out"))
            .unwrap_or_else(|e| panic!("cannot connect to the relay: {e}"));
        let _ = stream.set_nodelay(true);
        let keys = StaticKeypair::generate();
        let started = if version == 2 { Initiator::start_v2(&keys) } else { Initiator::start(&keys) };
        let (init, msg1) = started.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(&framed(&msg1)).await.unwrap_or_else(|e| panic!("{e}"));
        let msg2 = timeout(STEP, read_frame(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("the relay did not answer a valid handshake"))
            .unwrap_or_else(|e| panic!("the relay closed a valid handshake: {e}"));
        let (transport, msg3) = init
            .read_reply(&msg2)
            .and_then(|r| r.finish())
            .unwrap_or_else(|e| panic!("the relay's handshake reply is invalid: {e}"));
        stream.write_all(&framed(&msg3)).await.unwrap_or_else(|e| panic!("{e}"));
        let hash = *transport.handshake_hash();
        Self { stream, transport, hash, room, alive: true, received: Vec::new(), version }
    }

    async fn send_plaintext(&mut self, plaintext: &[u8]) {
        let mut out = Vec::new();
        if self.transport.seal_frame(plaintext, &mut out).is_ok() {
            self.send_wire(&out).await;
        }
    }

    async fn send_wire(&mut self, bytes: &[u8]) {
        if self.alive && self.stream.write_all(bytes).await.is_err() {
            self.alive = false;
        }
    }

    async fn send(&mut self, messages: &[ClientMessage]) {
        let mut plaintext = Vec::new();
        messages.iter().for_each(|m| m.encode(&mut plaintext));
        self.send_plaintext(&plaintext).await;
    }

    /// Reads until `stop` matches a message, the connection closes, or a read waits `wait`.
    async fn read_until(&mut self, wait: Duration, stop: impl Fn(&RelayMessage) -> bool) -> bool {
        loop {
            let Ok(read) = timeout(wait, read_frame(&mut self.stream)).await else {
                return false;
            };
            let Ok(frame) = read else {
                self.alive = false;
                return false;
            };
            let plaintext =
                self.transport.open(&frame).unwrap_or_else(|e| panic!("a relay frame did not decrypt: {e}"));
            let messages = RelayMessage::decode_all(&plaintext)
                .unwrap_or_else(|e| panic!("a relay message did not decode: {e:?}"));
            let done = messages.iter().any(&stop);
            self.received.extend(messages);
            if done {
                return true;
            }
        }
    }
}

struct Person {
    identity: Identity,
    nick: Nick,
}

fn join_request(
    conn: &Conn,
    person: &Person,
    room: &RoomName,
    keys: &RoomKeys,
    create: bool,
) -> ClientMessage {
    let request = JoinRequest::new(
        &person.identity,
        &conn.hash,
        room.clone(),
        person.nick.clone(),
        keys.join_secret.clone(),
        create,
        0,
    );
    ClientMessage::Join(if conn.version == 2 { request.for_version_2() } else { request })
}

/// What the members received after the joins, over all connections.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// `Deliver` items.
    pub delivered: usize,
    /// `Ack` items.
    pub acked: usize,
    /// `Error` items.
    pub errors: usize,
    /// `Presence` items.
    pub presence: usize,
    /// `GroupInfo` and `GroupInfoStored` items.
    pub group_info: usize,
}

/// Runs the input (see the module documentation).
pub fn check(data: &[u8]) {
    tally(data);
}

/// Runs the input and counts what the members received.
pub fn tally(data: &[u8]) -> Tally {
    let h = harness();
    let finished = h.rt.block_on(async { timeout(SESSION_LIMIT, session(h.addr, data)).await });
    assert!(!RELAY_PANICKED.load(Ordering::SeqCst), "a relay task panicked (see the panic message above)");
    finished
        .unwrap_or_else(|_| panic!("the session did not finish within {SESSION_LIMIT:?}: the relay hangs"))
}

/// Member `i` joins room `ROOM_OF[i]`: three members in one room, one in the other.
const ROOM_OF: [usize; 4] = [0, 0, 0, 1];
/// The protocol version of each member's connection: the second room is a version 2 room.
const VERSION_OF: [u8; 4] = [1, 1, 1, 2];

/// Everything one session holds: rooms, members, their connections, and what was sent.
struct World {
    rooms: [RoomName; 2],
    keys: [RoomKeys; 2],
    people: Vec<Person>,
    /// The identities joined in each room.
    members: [HashSet<PublicIdentity>; 2],
    conns: Vec<Conn>,
    /// Envelopes sent on connections of each room.
    sent: [HashSet<Vec<u8>>; 2],
    /// GroupInfo chunks uploaded on connections of each room.
    uploaded: [HashSet<Vec<u8>>; 2],
    counters: [u64; 4],
}

async fn session(addr: SocketAddr, data: &[u8]) -> Tally {
    let mut world = World::join(addr).await;
    let mut input = Input::new(data);
    for _ in 0..MAX_OPS {
        if input.rest_len() == 0 {
            break;
        }
        world.step(&mut input).await;
    }
    world.drain().await;
    world.tally()
}

impl World {
    /// Two fresh rooms on the relay, every member joined (and checked to be admitted).
    async fn join(addr: SocketAddr) -> World {
        let n = NEXT_ROOM.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let rooms = [format!("fz{pid}-{n}"), format!("fy{pid}-{n}")]
            .map(|r| RoomName::new(&r).unwrap_or_else(|e| panic!("{r} is not a valid room name: {e:?}")));
        let keys = [split_master(&[7; 32]), split_master(&[8; 32])];
        let people: Vec<Person> = NAMES
            .iter()
            .zip(21u8..)
            .map(|(name, seed)| Person {
                identity: Identity::from_seed(&[seed; 32]),
                nick: nick_or(name.as_bytes(), "x"),
            })
            .collect();
        let members: [HashSet<PublicIdentity>; 2] = [0, 1]
            .map(|r| (0..4).filter(|&i| ROOM_OF[i] == r).map(|i| people[i].identity.public()).collect());
        let mut conns = Vec::new();
        for (i, person) in people.iter().enumerate() {
            let room = ROOM_OF[i];
            let mut conn = Conn::open(addr, room, VERSION_OF[i]).await;
            let create = i == 0 || i == 3;
            let join = join_request(&conn, person, &rooms[room], &keys[room], create);
            conn.send(&[join]).await;
            let joined = conn.read_until(STEP, |m| matches!(m, RelayMessage::HistoryEnd { .. })).await;
            assert!(joined, "a valid join of {} was not admitted: {:?}", person.nick, conn.received);
            conn.received.clear();
            conns.push(conn);
        }
        let (sent, uploaded) = Default::default();
        World { rooms, keys, people, members, conns, sent, uploaded, counters: [0; 4] }
    }

    /// One operation of the input, on the connection of the member it names.
    async fn step(&mut self, input: &mut Input<'_>) {
        let op = input.u8();
        let i = usize::from(op % 4);
        let room = ROOM_OF[i];
        let (people, rooms, keys, conns, sent, counters) =
            (&self.people, &self.rooms, &self.keys, &mut self.conns, &mut self.sent, &mut self.counters);
        let uploaded = &mut self.uploaded;
        match (op / 4) % 5 {
            SEND => {
                counters[i] = counters[i].max(u64::from(input.u16())) + 1;
                let content = Content {
                    timestamp_ms: 0,
                    kind: ContentKind::Text,
                    nick: people[i].nick.clone(),
                    body: String::from_utf8_lossy(input.bytes8()).into_owned(),
                };
                let mut rng = FixedRng::new([op; 32]);
                let key = &keys[room].message_key;
                let sealed = if VERSION_OF[i] == 2 {
                    let mls = content.body.as_bytes();
                    let kind = 1 + (mls.len() % 3) as u8;
                    sign_v2(
                        &people[i].identity,
                        &rooms[room],
                        counters[i],
                        kind,
                        if mls.is_empty() { b"m" } else { mls },
                    )
                } else {
                    seal_with(key, &people[i].identity, &rooms[room], counters[i], &content, &mut rng)
                };
                let Ok(envelope) = sealed else {
                    return;
                };
                sent[room].insert(envelope.clone());
                conns[i].send(&[ClientMessage::Send { envelope }]).await;
            }
            ENVELOPE => {
                let envelope = input.bytes16().to_vec();
                sent[room].insert(envelope.clone());
                conns[i].send(&[ClientMessage::Send { envelope }]).await;
            }
            CONTROL => {
                let which = input.u8() % 10;
                let token = input.u64();
                let raw = input.bytes8();
                let nick = nick_or(raw, NAMES[usize::from(which % 4)]);
                let msg = match which {
                    0 => ClientMessage::Who,
                    1 => ClientMessage::Ping { token },
                    2 => ClientMessage::Pong { token },
                    3 => ClientMessage::Kick { nick },
                    4 => ClientMessage::Ban { nick },
                    5 => ClientMessage::Unban { nick },
                    6 => join_request(&conns[i], &people[i], &rooms[room], &keys[room], false),
                    7 => {
                        let parts = 1 + (token >> 8) as u8 % 2;
                        let chunk = if raw.is_empty() { vec![token as u8] } else { raw.to_vec() };
                        uploaded[room].insert(chunk.clone());
                        let part = GroupInfoPart {
                            after_seq: token % 4,
                            part: (token >> 16) as u8 % parts,
                            parts,
                            chunk,
                        };
                        ClientMessage::PutGroupInfo(part)
                    }
                    8 => ClientMessage::GetGroupInfo,
                    _ => ClientMessage::SetVerifier { verifier: [token as u8; 32] },
                };
                conns[i].send(&[msg]).await;
            }
            PLAINTEXT => {
                let plaintext = input.bytes16();
                if let Ok(messages) = ClientMessage::decode_all(plaintext) {
                    for m in messages {
                        if let ClientMessage::Send { envelope } = m {
                            sent[room].insert(envelope);
                        }
                    }
                }
                conns[i].send_plaintext(plaintext).await;
            }
            _ => {
                let bytes = input.bytes8().to_vec();
                conns[i].send_wire(&bytes).await;
            }
        }
    }

    /// A ping on every connection, answered after everything sent before it, twice.
    async fn drain(&mut self) {
        const TOKEN: u64 = 0x5eed_f00d;
        for _ in 0..2 {
            for conn in &mut self.conns {
                conn.send(&[ClientMessage::Ping { token: TOKEN }]).await;
            }
            for conn in &mut self.conns {
                if conn.alive {
                    conn.read_until(WAIT, |m| matches!(m, RelayMessage::Pong { token: TOKEN })).await;
                }
            }
        }
    }

    /// Counts what every member received, checking that nothing crossed rooms and that
    /// `Deliver` and `Ack` sequence numbers rise.
    fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for (i, conn) in self.conns.iter().enumerate() {
            self.check_received(i, conn, &mut tally);
        }
        tally
    }

    fn check_received(&self, i: usize, conn: &Conn, tally: &mut Tally) {
        let (sent, members) = (&self.sent, &self.members);
        let (room, other) = (conn.room, 1 - conn.room);
        let mut last_deliver = 0u64;
        let mut last_ack = 0u64;
        for m in &conn.received {
            match m {
                RelayMessage::Deliver { seq, envelope, .. } => {
                    tally.delivered += 1;
                    assert!(*seq > last_deliver, "{}: Deliver seq {seq} after {last_deliver}", NAMES[i]);
                    last_deliver = *seq;
                    assert!(
                        sent[room].contains(envelope) || !sent[other].contains(envelope),
                        "{} received an envelope sent only in the other room",
                        NAMES[i]
                    );
                    assert!(
                        sent[room].contains(envelope),
                        "{} received an envelope nobody in its room sent",
                        NAMES[i]
                    );
                }
                RelayMessage::Ack { seq, .. } => {
                    tally.acked += 1;
                    assert!(*seq > last_ack, "{}: Ack seq {seq} after {last_ack}", NAMES[i]);
                    last_ack = *seq;
                }
                RelayMessage::Members { members: list, .. } => {
                    for m in list {
                        assert!(
                            members[room].contains(&m.identity),
                            "{} listed a member of another room",
                            NAMES[i]
                        );
                    }
                }
                RelayMessage::Presence { identity, .. } => {
                    tally.presence += 1;
                    assert!(members[room].contains(identity), "{} saw presence from another room", NAMES[i]);
                }
                RelayMessage::Error { .. } | RelayMessage::SendError { .. } => tally.errors += 1,
                RelayMessage::GroupInfo(part) => {
                    assert_eq!(conn.version, 2, "{} got a GroupInfo on a version 1 connection", NAMES[i]);
                    // Objects here fit one item: an uploaded chunk, or two joined (parts 0 and 1).
                    let whole = self.uploaded[room].iter().any(|c| part.chunk.starts_with(c));
                    assert!(whole, "{} got GroupInfo bytes nobody in its room uploaded", NAMES[i]);
                    tally.group_info += 1;
                }
                RelayMessage::GroupInfoStored { .. } => {
                    assert_eq!(conn.version, 2, "{} got GroupInfoStored on a version 1 connection", NAMES[i]);
                    tally.group_info += 1;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dirs_of_ended_processes_are_removed_and_live_ones_kept() {
        // Above Linux's largest pid_max (2^22), so no process has it.
        let gone = std::env::temp_dir().join(format!("{DATA_DIR_PREFIX}4294967-test"));
        let live = std::env::temp_dir().join(format!("{DATA_DIR_PREFIX}{}-test", std::process::id()));
        for dir in [&gone, &live] {
            std::fs::create_dir_all(dir.join("relay")).unwrap();
        }
        remove_stale_data_dirs();
        assert!(!gone.exists(), "{} should be removed", gone.display());
        assert!(live.exists(), "{} belongs to a running process", live.display());
        std::fs::remove_dir_all(&live).unwrap();
    }
}
