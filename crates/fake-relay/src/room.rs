//! The fake relay as a room: admits any number of real clients (Noise, a signed `Join`, no
//! password check), answers `Joined`, `Members`, history, `HistoryEnd`, `Ack`, `Pong` and
//! `Who`, announces `Presence`, and delivers each envelope to the other members falsified as
//! its [`Lie`] says.
//!
//! One reader task per connection and one writer task that seals what the room queues for it,
//! so the room's state lock is never held across an `.await` and every member receives items
//! in the order the room decided them.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chatroom_crypto::{
    derive_room_keys, encode_deliver, seal, ClientMessage, Content, ContentKind, EnvelopeHeader, Identity,
    KdfParams, Member, Nick, PresenceEvent, PublicIdentity, RelayMessage, RoomName, TransportReceiver,
    HEADER_LEN,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

use crate::conn::{encode, member, read_frame};
use crate::{BoxError, FakeConn, FakeRelay};

/// What a room relay falsifies in what it delivers and announces.
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
    /// Answers every join with a member list of [`FAKE_MEMBERS`] made-up members (the first
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

/// Plaintexts queued for one member's writer task, one transport frame each.
type Outbox = mpsc::UnboundedSender<Vec<u8>>;

struct Conn {
    id: u64,
    nick: Nick,
    identity: PublicIdentity,
    out: Outbox,
}

#[derive(Default)]
struct State {
    next_id: u64,
    seq: u64,
    owner: Option<PublicIdentity>,
    history: Vec<(u64, Vec<u8>)>,
    members: Vec<Conn>,
}

impl State {
    fn member_list(&self) -> Vec<Member> {
        self.members.iter().map(|m| member(&m.nick, m.identity)).collect()
    }
}

struct Shared {
    relay_key: [u8; 32],
    lie: Lie,
    state: Mutex<State>,
    forger: Identity,
}

/// Serves a room on `relay` forever, lying as `lie` says; each connection's error ends only
/// that connection.
pub async fn serve(relay: FakeRelay, lie: Lie) {
    let shared = Arc::new(Shared {
        relay_key: *relay.public_key(),
        lie,
        state: Mutex::new(State::default()),
        forger: Identity::generate(),
    });
    loop {
        let Ok(conn) = relay.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_conn(&shared, conn).await;
        });
    }
}

fn queue(out: &Outbox, items: &[RelayMessage]) {
    let _ = out.send(encode(items));
}

fn deliver(out: &Outbox, seq: u64, history: bool, envelope: &[u8]) {
    let mut plain = Vec::new();
    encode_deliver(seq, history, envelope, &mut plain);
    let _ = out.send(plain);
}

async fn serve_conn(shared: &Shared, mut conn: FakeConn) -> Result<(), BoxError> {
    let (_, signed) = conn.read_join().await?;
    let req = signed.request().clone();
    let (stream, transport) = conn.into_parts();
    let (mut reader, mut writer) = stream.into_split();
    let (mut sender, mut receiver) = transport.split();
    let (out, mut outbox) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(plain) = outbox.recv().await {
            let mut frame = Vec::new();
            if sender.seal_frame(&plain, &mut frame).is_err() || writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let id = join(shared, &req, &out);
    let result = chat(shared, id, &req.room, &out, &mut reader, &mut receiver).await;
    let mut st = shared.state.lock().unwrap();
    st.members.retain(|m| m.id != id);
    let left = RelayMessage::Presence { event: PresenceEvent::Left, nick: req.nick, identity: req.identity };
    for m in &st.members {
        queue(&m.out, std::slice::from_ref(&left));
    }
    result
}

/// Admits the joiner: its `Joined`, member list, history and `HistoryEnd`, and a `Presence`
/// to the others. Returns its connection id.
fn join(shared: &Shared, req: &chatroom_crypto::JoinRequest, out: &Outbox) -> u64 {
    let mut st = shared.state.lock().unwrap();
    st.next_id += 1;
    let id = st.next_id;
    let owner = *st.owner.get_or_insert(req.identity);
    st.members.push(Conn { id, nick: req.nick.clone(), identity: req.identity, out: out.clone() });
    let oldest_seq = st.history.first().map_or(0, |h| h.0);
    queue(out, &[RelayMessage::Joined { created: req.create, owner, latest_seq: st.seq, oldest_seq }]);
    match &shared.lie {
        Lie::FakeMembers { .. } => {
            for item in fake_members() {
                queue(out, &[item]);
            }
        }
        _ => queue(out, &[RelayMessage::Members { more: false, members: st.member_list() }]),
    }
    for (seq, env) in st.history.iter().filter(|h| h.0 > req.history_after) {
        deliver(out, *seq, true, env);
    }
    queue(out, &[RelayMessage::HistoryEnd { latest_seq: st.seq }]);
    let joined = RelayMessage::Presence {
        event: PresenceEvent::Joined,
        nick: req.nick.clone(),
        identity: req.identity,
    };
    for m in st.members.iter().filter(|m| m.id != id) {
        queue(&m.out, std::slice::from_ref(&joined));
    }
    id
}

async fn chat(
    shared: &Shared,
    id: u64,
    room: &RoomName,
    out: &Outbox,
    reader: &mut OwnedReadHalf,
    receiver: &mut TransportReceiver,
) -> Result<(), BoxError> {
    loop {
        let plain = receiver.open(&read_frame(reader).await?)?;
        for msg in ClientMessage::decode_all(&plain)? {
            match msg {
                ClientMessage::Send { envelope } => relay_envelope(shared, id, room, out, envelope)?,
                ClientMessage::Ping { token } => queue(out, &[RelayMessage::Pong { token }]),
                ClientMessage::Who => {
                    let members = shared.state.lock().unwrap().member_list();
                    queue(out, &[RelayMessage::Members { more: false, members }]);
                }
                _ => {}
            }
        }
    }
}

/// Stores and acknowledges one envelope, then delivers it to the others as the lie says.
fn relay_envelope(
    shared: &Shared,
    id: u64,
    room: &RoomName,
    out: &Outbox,
    envelope: Vec<u8>,
) -> Result<(), BoxError> {
    let header = EnvelopeHeader::parse(&envelope)?;
    let mut st = shared.state.lock().unwrap();
    // An idempotent resend is acknowledged with its stored sequence number.
    if let Some((seq, _)) = st.history.iter().find(|(_, e)| e == &envelope) {
        queue(out, &[RelayMessage::Ack { counter: header.counter, seq: *seq }]);
        return Ok(());
    }
    st.seq += 1;
    let seq = st.seq;
    st.history.push((seq, envelope.clone()));
    queue(out, &[RelayMessage::Ack { counter: header.counter, seq }]);
    let sender_nick = st.members.iter().find(|m| m.id == id).map(|m| m.nick.clone());
    let others: Vec<(Outbox, PublicIdentity)> =
        st.members.iter().filter(|m| m.id != id).map(|m| (m.out.clone(), m.identity)).collect();
    let identities: Vec<PublicIdentity> = st.members.iter().map(|m| m.identity).collect();
    match &shared.lie {
        Lie::Honest => others.iter().for_each(|(w, _)| deliver(w, seq, false, &envelope)),
        Lie::Replay => {
            st.seq += 1;
            for (w, _) in &others {
                deliver(w, seq, false, &envelope);
                deliver(w, st.seq, false, &envelope);
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
                deliver(w, seq, false, &forged);
            }
        }
        Lie::Tamper => {
            let mut forged = envelope.clone();
            forged[HEADER_LEN + 5] ^= 0x01;
            others.iter().for_each(|(w, _)| deliver(w, seq, false, &forged));
        }
        Lie::SwapIdentity => {
            let stranger = Identity::generate().public();
            for (w, _) in &others {
                deliver(w, seq, false, &envelope);
                if let Some(nick) = &sender_nick {
                    let event = PresenceEvent::Joined;
                    queue(w, &[RelayMessage::Presence { event, nick: nick.clone(), identity: stranger }]);
                }
            }
        }
        Lie::Impersonate { password, forged }
        | Lie::FakeMembers { password, forged }
        | Lie::Poison { password, forged } => {
            let fake = forge(shared, room, sender_nick, password, forged)?;
            st.seq += 1;
            for (w, _) in &others {
                if matches!(shared.lie, Lie::Poison { .. }) {
                    deliver(w, u64::MAX - 1, false, &[0xa5; 300]);
                }
                deliver(w, seq, false, &envelope);
                deliver(w, st.seq, false, &fake);
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
    let keys = derive_room_keys(password.as_bytes(), &shared.relay_key, room, KdfParams::DEFAULT)?;
    let nick = nick.ok_or("sender left")?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let content = Content { timestamp_ms: now_ms, kind: ContentKind::Text, nick, body: forged.to_owned() };
    Ok(seal(&keys.message_key, &shared.forger, room, now_ms * 1000, &content)?)
}
