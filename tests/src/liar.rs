//! A lying relay, built from the project's own protocol pieces (`chatroom-crypto`'s Noise
//! responder, message codec and envelope header), for proving that clients notice a relay
//! that misbehaves.
//!
//! It speaks protocol v1 well enough for real `chatroom` clients to join, send and receive:
//! Noise XX as responder, `Join` (signature checked, password not checked: a lying relay
//! admits anyone), `Joined`, `Members`, history, `HistoryEnd`, `Ack`, `Deliver`, `Presence`,
//! `Ping`/`Pong`. Each delivery to other members is then falsified as its [`Lie`] says.
//! Threads and blocking sockets, one reader thread per connection; every read has a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatroom_crypto::{
    derive_room_keys, encode_deliver, encode_frame, seal, ClientMessage, Content, ContentKind,
    EnvelopeHeader, Identity, KdfParams, Member, Nick, PresenceEvent, PublicIdentity, RelayMessage,
    Responder, RoomName, StaticKeypair, TransportSender, HANDSHAKE1_LEN, HANDSHAKE3_LEN, HEADER_LEN,
};

use crate::BoxError;

/// How a lying relay falsifies what it delivers.
#[derive(Debug, Clone)]
pub enum Lie {
    /// Delivers each envelope once, as sent: the control case.
    Honest,
    /// Delivers each envelope, then the same envelope again under the next sequence number.
    Replay,
    /// Delivers each envelope with its sender field replaced by another identity key.
    Relabel,
    /// Delivers each envelope with one byte of its ciphertext flipped.
    Tamper,
    /// Delivers each envelope, then announces the sender's nickname with another identity key.
    SwapIdentity,
    /// Knows the room password (an operator who is also a member) but not the members'
    /// identity keys: after each envelope, seals a message of its own under a fresh identity
    /// whose content claims the sender's nickname, with body `forged`.
    Impersonate {
        /// The room password.
        password: String,
        /// The forged body.
        forged: String,
    },
    /// Before each envelope, delivers 300 bytes of garbage under sequence number 2^64 - 2;
    /// then the envelope under its own sequence number, and a forgery as `Impersonate` does.
    Poison {
        /// The room password.
        password: String,
        /// The forged body.
        forged: String,
    },
    /// Answers every join with a member list of `FAKE_MEMBERS` made-up members (the first
    /// named `alice`, all with keys nobody holds) instead of the real one; deliveries as
    /// `Impersonate`.
    FakeMembers {
        /// The room password.
        password: String,
        /// The forged body.
        forged: String,
    },
}

/// Members in the list a `Lie::FakeMembers` relay announces.
pub const FAKE_MEMBERS: usize = 100_000;

/// `FAKE_MEMBERS` made-up members in `Members` items of at most 1000 each.
fn fake_members() -> Vec<RelayMessage> {
    let all: Vec<Member> = (0..FAKE_MEMBERS)
        .map(|i| {
            let nick = if i == 0 { "alice".to_owned() } else { format!("m{i}") };
            let mut key = [0x5a; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Member { nick: Nick::new(&nick).expect("valid nickname"), identity: PublicIdentity(key) }
        })
        .collect();
    let chunks: Vec<&[Member]> = all.chunks(1000).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| RelayMessage::Members { more: i < last, members: c.to_vec() })
        .collect()
}

type Writer = Arc<Mutex<(TcpStream, TransportSender)>>;

struct Conn {
    id: u64,
    nick: Nick,
    identity: PublicIdentity,
    writer: Writer,
}

#[derive(Default)]
struct State {
    next_id: u64,
    seq: u64,
    owner: Option<PublicIdentity>,
    history: Vec<(u64, Vec<u8>)>,
    members: Vec<Conn>,
    counters: Vec<(PublicIdentity, u64)>,
}

struct Shared {
    key: StaticKeypair,
    lie: Lie,
    state: Mutex<State>,
    forger: Identity,
}

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LyingRelay {
    /// Starts a lying relay with static key `key` on a free port of 127.0.0.1. Its threads
    /// live as long as the test process.
    pub fn start(key: StaticKeypair, lie: Lie) -> Result<Self, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let fingerprint = hex(key.public());
        let shared =
            Arc::new(Shared { key, lie, state: Mutex::new(State::default()), forger: Identity::generate() });
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let shared = shared.clone();
                thread::spawn(move || {
                    let _ = serve(&shared, conn);
                });
            }
        });
        Ok(Self { addr, fingerprint })
    }

    /// An invite URL for `room` at this relay.
    pub fn invite(&self, room: &str) -> String {
        format!("chatroom://{}@{}/{room}", self.fingerprint, self.addr)
    }
}

fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, BoxError> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
    stream.read_exact(&mut body)?;
    Ok(body)
}

fn send(writer: &Writer, items: &[RelayMessage]) -> Result<(), BoxError> {
    let mut plain = Vec::new();
    for item in items {
        item.encode(&mut plain);
    }
    send_plain(writer, &plain)
}

fn send_plain(writer: &Writer, plain: &[u8]) -> Result<(), BoxError> {
    let mut w = writer.lock().unwrap();
    let mut out = Vec::new();
    w.1.seal_frame(plain, &mut out).map_err(|e| format!("seal: {e}"))?;
    w.0.write_all(&out)?;
    Ok(())
}

fn deliver(writer: &Writer, seq: u64, history: bool, envelope: &[u8]) -> Result<(), BoxError> {
    let mut plain = Vec::new();
    encode_deliver(seq, history, envelope, &mut plain);
    send_plain(writer, &plain)
}

fn serve(shared: &Shared, mut stream: TcpStream) -> Result<(), BoxError> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    // -> e
    let msg1 = read_frame(&mut stream)?;
    if msg1.len() != HANDSHAKE1_LEN {
        return Err("bad handshake message 1".into());
    }
    let (awaiting, msg2) = Responder::new(&shared.key)
        .and_then(|r| r.read_hello(&msg1))
        .map_err(|e| format!("handshake: {e}"))?;
    // <- e, ee, s, es
    let mut out = Vec::new();
    encode_frame(&msg2, &mut out)?;
    stream.write_all(&out)?;
    // -> s, se
    let msg3 = read_frame(&mut stream)?;
    if msg3.len() != HANDSHAKE3_LEN {
        return Err("bad handshake message 3".into());
    }
    let transport = awaiting.read_finish(&msg3).map_err(|e| format!("handshake: {e}"))?;
    let hh = *transport.handshake_hash();
    let (sender, mut receiver) = transport.split();
    let writer: Writer = Arc::new(Mutex::new((stream.try_clone()?, sender)));

    let first = receiver.open(&read_frame(&mut stream)?).map_err(|e| format!("open: {e}"))?;
    let Some(ClientMessage::Join(req)) = ClientMessage::decode_all(&first)?.into_iter().next() else {
        return Err("first message is not a join".into());
    };
    let signed = req.verify(&hh).map_err(|e| format!("join: {e}"))?;
    let req = signed.request().clone();
    let (id, room) = {
        let mut st = shared.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        let owner = *st.owner.get_or_insert(req.identity);
        st.members.push(Conn { id, nick: req.nick.clone(), identity: req.identity, writer: writer.clone() });
        let members: Vec<Member> =
            st.members.iter().map(|m| Member { nick: m.nick.clone(), identity: m.identity }).collect();
        let joined = RelayMessage::Joined {
            created: req.create,
            owner,
            latest_seq: st.seq,
            oldest_seq: st.history.first().map_or(0, |h| h.0),
        };
        send(&writer, &[joined])?;
        match &shared.lie {
            Lie::FakeMembers { .. } => {
                for item in fake_members() {
                    send(&writer, &[item])?;
                }
            }
            _ => send(&writer, &[RelayMessage::Members { more: false, members }])?,
        }
        for (seq, env) in st.history.iter().filter(|h| h.0 > req.history_after) {
            deliver(&writer, *seq, true, env)?;
        }
        send(&writer, &[RelayMessage::HistoryEnd { latest_seq: st.seq }])?;
        let joined = RelayMessage::Presence {
            event: PresenceEvent::Joined,
            nick: req.nick.clone(),
            identity: req.identity,
        };
        for m in st.members.iter().filter(|m| m.id != id) {
            let _ = send(&m.writer, std::slice::from_ref(&joined));
        }
        (id, req.room.clone())
    };
    let result = chat(shared, id, &room, &writer, &mut stream, &mut receiver);
    let mut st = shared.state.lock().unwrap();
    st.members.retain(|m| m.id != id);
    let left =
        RelayMessage::Presence { event: PresenceEvent::Left, nick: req.nick.clone(), identity: req.identity };
    for m in &st.members {
        let _ = send(&m.writer, std::slice::from_ref(&left));
    }
    result
}

fn chat(
    shared: &Shared,
    id: u64,
    room: &RoomName,
    writer: &Writer,
    stream: &mut TcpStream,
    receiver: &mut chatroom_crypto::TransportReceiver,
) -> Result<(), BoxError> {
    loop {
        let plain = receiver.open(&read_frame(stream)?).map_err(|e| format!("open: {e}"))?;
        for msg in ClientMessage::decode_all(&plain)? {
            match msg {
                ClientMessage::Send { envelope } => relay_envelope(shared, id, room, writer, envelope)?,
                ClientMessage::Ping { token } => send(writer, &[RelayMessage::Pong { token }])?,
                ClientMessage::Who => {
                    let st = shared.state.lock().unwrap();
                    let members = st
                        .members
                        .iter()
                        .map(|m| Member { nick: m.nick.clone(), identity: m.identity })
                        .collect();
                    send(writer, &[RelayMessage::Members { more: false, members }])?;
                }
                _ => {}
            }
        }
    }
}

fn relay_envelope(
    shared: &Shared,
    id: u64,
    room: &RoomName,
    writer: &Writer,
    envelope: Vec<u8>,
) -> Result<(), BoxError> {
    let header = EnvelopeHeader::parse(&envelope)?;
    let mut st = shared.state.lock().unwrap();
    // An idempotent resend is acknowledged with its stored sequence number.
    if let Some((seq, _)) = st.history.iter().find(|(_, e)| e == &envelope) {
        let seq = *seq;
        return send(writer, &[RelayMessage::Ack { counter: header.counter, seq }]);
    }
    match st.counters.iter_mut().find(|(who, _)| *who == header.sender) {
        Some((_, c)) => *c = (*c).max(header.counter),
        None => st.counters.push((header.sender, header.counter)),
    }
    st.seq += 1;
    let seq = st.seq;
    st.history.push((seq, envelope.clone()));
    send(writer, &[RelayMessage::Ack { counter: header.counter, seq }])?;
    let sender_nick = st.members.iter().find(|m| m.id == id).map(|m| m.nick.clone());
    let others: Vec<(Writer, PublicIdentity)> =
        st.members.iter().filter(|m| m.id != id).map(|m| (m.writer.clone(), m.identity)).collect();
    let identities: Vec<PublicIdentity> = st.members.iter().map(|m| m.identity).collect();
    match &shared.lie {
        Lie::Honest => {
            for (w, _) in &others {
                let _ = deliver(w, seq, false, &envelope);
            }
        }
        Lie::Replay => {
            st.seq += 1;
            let again = st.seq;
            for (w, _) in &others {
                let _ = deliver(w, seq, false, &envelope);
                let _ = deliver(w, again, false, &envelope);
            }
        }
        Lie::Relabel => {
            for (w, recipient) in &others {
                // Claim that a third member (or, failing one, a stranger) sent it.
                let claimed = identities
                    .iter()
                    .copied()
                    .find(|i| *i != header.sender && i != recipient)
                    .unwrap_or_else(|| Identity::generate().public());
                let mut forged = envelope.clone();
                forged[1..33].copy_from_slice(&claimed.0);
                let _ = deliver(w, seq, false, &forged);
            }
        }
        Lie::Tamper => {
            let mut forged = envelope.clone();
            forged[HEADER_LEN + 5] ^= 0x01;
            for (w, _) in &others {
                let _ = deliver(w, seq, false, &forged);
            }
        }
        Lie::SwapIdentity => {
            let stranger = Identity::generate().public();
            for (w, _) in &others {
                let _ = deliver(w, seq, false, &envelope);
                if let Some(nick) = &sender_nick {
                    let presence = RelayMessage::Presence {
                        event: PresenceEvent::Joined,
                        nick: nick.clone(),
                        identity: stranger,
                    };
                    let _ = send(w, &[presence]);
                }
            }
        }
        Lie::Impersonate { password, forged } | Lie::FakeMembers { password, forged } => {
            let fake = forge(shared, room, sender_nick, password, forged)?;
            st.seq += 1;
            let again = st.seq;
            for (w, _) in &others {
                let _ = deliver(w, seq, false, &envelope);
                let _ = deliver(w, again, false, &fake);
            }
        }
        Lie::Poison { password, forged } => {
            let fake = forge(shared, room, sender_nick, password, forged)?;
            st.seq += 1;
            let again = st.seq;
            for (w, _) in &others {
                let _ = deliver(w, u64::MAX - 1, false, &[0xa5; 300]);
                let _ = deliver(w, seq, false, &envelope);
                let _ = deliver(w, again, false, &fake);
            }
        }
    }
    Ok(())
}

/// A message sealed with the room key under the relay's own identity, claiming `nick`.
fn forge(
    shared: &Shared,
    room: &RoomName,
    nick: Option<Nick>,
    password: &str,
    forged: &str,
) -> Result<Vec<u8>, BoxError> {
    let keys = derive_room_keys(password.as_bytes(), shared.key.public(), room, KdfParams::DEFAULT)
        .map_err(|e| format!("derive: {e}"))?;
    let nick = nick.ok_or("sender left")?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let content = Content { timestamp_ms: now_ms, kind: ContentKind::Text, nick, body: forged.to_owned() };
    Ok(seal(&keys.message_key, &shared.forger, room, now_ms * 1000, &content)?)
}
