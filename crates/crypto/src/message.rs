//! Protocol messages carried inside Noise transport messages. One transport plaintext holds
//! one or more items, `type(u8) | length(u16 BE) | body`, so the relay can batch several
//! deliveries into one encryption and one write.

use crate::codec::{check_max, put_bytes16, put_bytes8, put_u16, put_u64, put_u8, Reader};
use crate::envelope::{MAX_ENVELOPE_LEN, MIN_ENVELOPE_LEN};
use crate::envelope_v2::{MAX_ENVELOPE_V2_LEN, MIN_ENVELOPE_V2_LEN};
use crate::error::DecodeError;
use crate::identity::PublicIdentity;
use crate::join::JoinRequest;
use crate::kdf::JoinSecret;
use crate::names::{Nick, RoomName, MAX_NICK_LEN, MAX_ROOM_LEN};

/// Largest plaintext of one Noise transport message (65535 minus the 16-byte tag).
pub const MAX_PLAINTEXT_LEN: usize = 65_535 - 16;
/// Bytes of an item header.
pub const ITEM_HEADER_LEN: usize = 3;
/// Most members listed in one `Members` item; longer lists are split with the `more` flag.
pub const MAX_MEMBERS_PER_ITEM: usize = 1000;
/// Longest human-readable detail in `Error` and `Goodbye`.
pub const MAX_DETAIL_LEN: usize = 512;
/// The protocol version a `Join` announces.
pub const PROTOCOL_VERSION: u8 = 1;
/// Protocol version 2 (MLS; docs/PROTOCOL.md part II).
pub const PROTOCOL_VERSION_2: u8 = 2;
/// Largest chunk of a sealed GroupInfo in one `PutGroupInfo` or `GroupInfo` item.
pub const MAX_GROUP_INFO_CHUNK: usize = 60_000;

/// Messages a client sends to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// 0x01: join a room (first message after the handshake, and only then).
    Join(JoinRequest),
    /// 0x02: an envelope for the room.
    Send {
        /// A sealed envelope (opaque to the relay but for its header).
        envelope: Vec<u8>,
    },
    /// 0x04: ask for the member list.
    Who,
    /// 0x05: owner only: disconnect a member.
    Kick {
        /// Whom.
        nick: Nick,
    },
    /// 0x06: owner only: disconnect a member and refuse their identity from now on.
    Ban {
        /// Whom.
        nick: Nick,
    },
    /// 0x07: owner only: lift a ban.
    Unban {
        /// Whom.
        nick: Nick,
    },
    /// 0x08: keep-alive; the relay answers `Pong` with the same token.
    Ping {
        /// Echoed back.
        token: u64,
    },
    /// 0x09: answer to the relay's `Ping`.
    Pong {
        /// The relay's token.
        token: u64,
    },
    /// 0x0a (version 2): one part of the room's sealed GroupInfo, uploaded by a member.
    PutGroupInfo(GroupInfoPart),
    /// 0x0b (version 2): ask for the room's sealed GroupInfo.
    GetGroupInfo,
    /// 0x0c (version 2, owner only): the room's new join verifier, after a password rotation.
    SetVerifier {
        /// `SHA-256("chatroom/2 join verifier" || join_secret)` of the new password.
        verifier: [u8; 32],
    },
}

/// One part of a sealed GroupInfo in transit (`PutGroupInfo`, `GroupInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfoPart {
    /// The room `seq` the GroupInfo follows (the winning commit's, or 0 at creation).
    pub after_seq: u64,
    /// This part's index, below `parts`.
    pub part: u8,
    /// How many parts the object has, 1 to 255.
    pub parts: u8,
    /// 1 to `MAX_GROUP_INFO_CHUNK` bytes of the sealed object.
    pub chunk: Vec<u8>,
}

impl GroupInfoPart {
    fn encode(&self, o: &mut Vec<u8>) {
        put_u64(o, self.after_seq);
        put_u8(o, self.part);
        put_u8(o, self.parts);
        put_bytes16(o, &self.chunk);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let after_seq = r.u64()?;
        let (part, parts) = (r.u8()?, r.u8()?);
        if parts == 0 || part >= parts {
            return Err(DecodeError::UndefinedValue { what: "group info part", value: part.into() });
        }
        let chunk = r.bytes16("group info chunk", MAX_GROUP_INFO_CHUNK)?;
        if chunk.is_empty() {
            return Err(DecodeError::TooShort { what: "group info chunk", len: 0, min: 1 });
        }
        Ok(Self { after_seq, part, parts, chunk: chunk.to_vec() })
    }
}

/// Presence events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    /// A member joined.
    Joined = 1,
    /// A member left or was disconnected.
    Left = 2,
    /// The owner kicked a member.
    Kicked = 3,
    /// The owner banned a member.
    Banned = 4,
    /// The owner lifted a ban.
    Unbanned = 5,
}

/// One entry of the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Nickname.
    pub nick: Nick,
    /// Identity key bound to it in this room.
    pub identity: PublicIdentity,
}

/// Messages the relay sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayMessage {
    /// 0x81: the join succeeded.
    Joined {
        /// This join created the room.
        created: bool,
        /// The room owner's identity.
        owner: PublicIdentity,
        /// Highest sequence number assigned so far in the room (0 if none).
        latest_seq: u64,
        /// Lowest sequence number still retained (0 if none).
        oldest_seq: u64,
    },
    /// 0x82: an envelope of the room.
    Deliver {
        /// Relay-assigned per-room sequence number.
        seq: u64,
        /// Replayed from history rather than live.
        history: bool,
        /// The envelope as the sender sealed it.
        envelope: Vec<u8>,
    },
    /// 0x83: the relay stored and numbered an envelope this client sent.
    Ack {
        /// The envelope's counter.
        counter: u64,
        /// The sequence number it got.
        seq: u64,
    },
    /// 0x84: part of the member list.
    Members {
        /// Another `Members` item follows.
        more: bool,
        /// Up to `MAX_MEMBERS_PER_ITEM` members.
        members: Vec<Member>,
    },
    /// 0x85: someone joined, left, was kicked, banned or unbanned.
    Presence {
        /// What happened.
        event: PresenceEvent,
        /// To whom.
        nick: Nick,
        /// Their identity.
        identity: PublicIdentity,
    },
    /// 0x86: history replay after a join is complete; live deliveries follow.
    HistoryEnd {
        /// Highest sequence number at the time.
        latest_seq: u64,
    },
    /// 0x87: a request was refused; the connection stays open.
    Error {
        /// What went wrong (see `ErrorCode`).
        code: ErrorCode,
        /// Human-readable detail.
        detail: String,
    },
    /// 0x88: keep-alive; answer with `Pong`.
    Ping {
        /// Echo it back.
        token: u64,
    },
    /// 0x89: answer to a client's `Ping`.
    Pong {
        /// The client's token.
        token: u64,
    },
    /// 0x8a: the relay is closing this connection.
    Goodbye {
        /// Why (see `ErrorCode`).
        code: ErrorCode,
        /// Human-readable detail.
        detail: String,
    },
    /// 0x8b: the envelope with this counter was not stored; the answer to a `Send` that is
    /// not an `Ack`. Naming the counter keeps the client's matching of answers to its sends
    /// intact whatever the reason.
    SendError {
        /// The counter of the envelope it answers (bytes 33..41 of the `Send` body).
        counter: u64,
        /// Why (see `ErrorCode`).
        code: ErrorCode,
        /// Human-readable detail.
        detail: String,
    },
    /// 0x8c (version 2): one part of the room's sealed GroupInfo, answering `GetGroupInfo`;
    /// parts are sent in order.
    GroupInfo(GroupInfoPart),
    /// 0x8d (version 2): the room's stored GroupInfo follows `after_seq` (0: none stored);
    /// sent after `Joined`, to the room when it changes, and to answer a complete upload.
    GroupInfoStored {
        /// The stored GroupInfo's `after_seq`.
        after_seq: u64,
    },
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, )*) => {
        /// Why the relay refused a request or closed a connection.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this version does not know (kept for display).
            Other(u16),
        }

        impl ErrorCode {
            /// The wire value.
            pub fn to_u16(self) -> u16 {
                match self {
                    $( ErrorCode::$name => $value, )*
                    ErrorCode::Other(v) => v,
                }
            }

            /// From the wire value.
            pub fn from_u16(v: u16) -> Self {
                match v {
                    $( $value => ErrorCode::$name, )*
                    other => ErrorCode::Other(other),
                }
            }
        }
    };
}

error_codes! {
    /// Bytes that do not follow the protocol.
    Malformed = 1,
    /// A protocol version the relay does not speak.
    UnsupportedVersion = 2,
    /// A message not allowed in this state (e.g. `Send` before `Join`).
    UnexpectedMessage = 3,
    /// The room does not exist and the join did not ask to create it.
    NoSuchRoom = 10,
    /// The join secret does not match: wrong room password.
    WrongPassword = 11,
    /// The nickname is bound to another identity in this room.
    NickTaken = 12,
    /// This identity is banned from the room.
    Banned = 13,
    /// Too many failed joins from this address or against this room; wait.
    TooManyAttempts = 14,
    /// Only the room owner may do that.
    NotOwner = 15,
    /// No such member in the room.
    NoSuchMember = 16,
    /// The same identity is already connected to the room.
    AlreadyConnected = 17,
    /// The join signature did not verify.
    BadSignature = 18,
    /// The room is full.
    RoomFull = 19,
    /// The envelope is larger than the relay accepts.
    EnvelopeTooLarge = 20,
    /// Sending faster than the rate limit allows; the envelope was not relayed.
    RateLimited = 21,
    /// The envelope's header names another sender, or its counter did not increase.
    BadEnvelope = 22,
    /// This identity already uses another nickname in this room.
    NickBound = 23,
    /// The room owner cannot be banned.
    OwnerProtected = 24,
    /// A GroupInfo upload is larger than the relay keeps, or its parts came out of order.
    GroupInfoTooLarge = 25,
    /// A GroupInfo upload follows an older `seq` than the stored one, or a `seq` not yet assigned.
    StaleGroupInfo = 26,
    /// The room has no GroupInfo stored yet.
    NoGroupInfo = 27,
    /// The relay has too many connections.
    ServerFull = 30,
    /// The relay is shutting down.
    ShuttingDown = 31,
    /// The client read too slowly and fell behind; reconnect to catch up from history.
    SlowConsumer = 32,
    /// No traffic within the idle timeout.
    IdleTimeout = 33,
    /// The owner kicked this member.
    Kicked = 34,
    /// The handshake or join took too long.
    HandshakeTimeout = 35,
    /// The relay failed internally (e.g. storage); try again later.
    Internal = 36,
}

const T_JOIN: u8 = 0x01;
const T_SEND: u8 = 0x02;
const T_WHO: u8 = 0x04;
const T_KICK: u8 = 0x05;
const T_BAN: u8 = 0x06;
const T_UNBAN: u8 = 0x07;
const T_CPING: u8 = 0x08;
const T_CPONG: u8 = 0x09;
const T_PUT_GROUP_INFO: u8 = 0x0a;
const T_GET_GROUP_INFO: u8 = 0x0b;
const T_SET_VERIFIER: u8 = 0x0c;
const T_JOINED: u8 = 0x81;
const T_DELIVER: u8 = 0x82;
const T_ACK: u8 = 0x83;
const T_MEMBERS: u8 = 0x84;
const T_PRESENCE: u8 = 0x85;
const T_HISTORY_END: u8 = 0x86;
const T_ERROR: u8 = 0x87;
const T_RPING: u8 = 0x88;
const T_RPONG: u8 = 0x89;
const T_GOODBYE: u8 = 0x8a;
const T_SEND_ERROR: u8 = 0x8b;
const T_GROUP_INFO: u8 = 0x8c;
const T_GROUP_INFO_STORED: u8 = 0x8d;

/// Writes one item, filling in the length after the body is written.
fn item(out: &mut Vec<u8>, ty: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.push(ty);
    out.extend_from_slice(&[0, 0]);
    body(out);
    let len = out.len() - start - ITEM_HEADER_LEN;
    // Every body the encoders below write is bounded far below u16::MAX by the same limits
    // the decoders enforce.
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
}

/// Splits a transport plaintext into `(type, body)` items.
pub fn items(plaintext: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), DecodeError>> {
    let mut r = Reader::new(plaintext);
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || r.is_empty() {
            return None;
        }
        let next = (|| {
            let ty = r.u8()?;
            let body = r.bytes16("item", MAX_PLAINTEXT_LEN)?;
            Ok((ty, body))
        })();
        failed = next.is_err();
        Some(next)
    })
}

/// Decodes every item of a non-empty transport plaintext with `decode`.
fn decode_all<T>(
    plaintext: &[u8],
    decode: fn(u8, &[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    if plaintext.is_empty() {
        return Err(DecodeError::TooShort { what: "transport plaintext", len: 0, min: ITEM_HEADER_LEN });
    }
    items(plaintext).map(|i| i.and_then(|(ty, body)| decode(ty, body))).collect()
}

fn nick(r: &mut Reader<'_>) -> Result<Nick, DecodeError> {
    let bytes = r.bytes8("nickname", MAX_NICK_LEN)?;
    Nick::new(std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8("nickname"))?)
}

fn room(r: &mut Reader<'_>) -> Result<RoomName, DecodeError> {
    let bytes = r.bytes8("room name", MAX_ROOM_LEN)?;
    RoomName::new(std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8("room name"))?)
}

/// The shortest envelope of either version (a v2 one with one byte of MLS).
const MIN_ANY_ENVELOPE_LEN: usize =
    if MIN_ENVELOPE_V2_LEN < MIN_ENVELOPE_LEN { MIN_ENVELOPE_V2_LEN } else { MIN_ENVELOPE_LEN };
/// The longest envelope of either version (a v2 one with `MAX_MLS_LEN` bytes of MLS).
const MAX_ANY_ENVELOPE_LEN: usize =
    if MAX_ENVELOPE_V2_LEN > MAX_ENVELOPE_LEN { MAX_ENVELOPE_V2_LEN } else { MAX_ENVELOPE_LEN };

/// An envelope's bytes, within the bounds of either version: the connection's version is
/// checked by `EnvelopeHeader::parse` (v1) or `parse_v2` where the envelope is used.
fn envelope_bytes(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    check_max("envelope", bytes.len(), MAX_ANY_ENVELOPE_LEN)?;
    if bytes.len() < MIN_ANY_ENVELOPE_LEN {
        return Err(DecodeError::TooShort { what: "envelope", len: bytes.len(), min: MIN_ANY_ENVELOPE_LEN });
    }
    Ok(bytes.to_vec())
}

fn detail(text: &str) -> &str {
    let mut end = text.len().min(MAX_DETAIL_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl ClientMessage {
    /// Appends this message as one item.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::Join(j) => item(out, T_JOIN, |o| {
                put_u8(o, j.version);
                put_u8(o, u8::from(j.create));
                put_bytes8(o, j.room.as_str().as_bytes());
                put_bytes8(o, j.nick.as_str().as_bytes());
                o.extend_from_slice(&j.identity.0);
                o.extend_from_slice(j.join_secret.as_bytes());
                o.extend_from_slice(&j.signature);
                put_u64(o, j.history_after);
            }),
            ClientMessage::Send { envelope } => item(out, T_SEND, |o| o.extend_from_slice(envelope)),
            ClientMessage::Who => item(out, T_WHO, |_| {}),
            ClientMessage::Kick { nick } => item(out, T_KICK, |o| put_bytes8(o, nick.as_str().as_bytes())),
            ClientMessage::Ban { nick } => item(out, T_BAN, |o| put_bytes8(o, nick.as_str().as_bytes())),
            ClientMessage::Unban { nick } => item(out, T_UNBAN, |o| put_bytes8(o, nick.as_str().as_bytes())),
            ClientMessage::Ping { token } => item(out, T_CPING, |o| put_u64(o, *token)),
            ClientMessage::Pong { token } => item(out, T_CPONG, |o| put_u64(o, *token)),
            ClientMessage::PutGroupInfo(p) => item(out, T_PUT_GROUP_INFO, |o| p.encode(o)),
            ClientMessage::GetGroupInfo => item(out, T_GET_GROUP_INFO, |_| {}),
            ClientMessage::SetVerifier { verifier } => {
                item(out, T_SET_VERIFIER, |o| o.extend_from_slice(verifier))
            }
        }
    }

    /// Decodes one item.
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let msg = match ty {
            T_JOIN => {
                let version = r.u8()?;
                if version != PROTOCOL_VERSION && version != PROTOCOL_VERSION_2 {
                    return Err(DecodeError::UnsupportedVersion(version));
                }
                let create = match r.u8()? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(DecodeError::UndefinedValue { what: "join flags", value: other.into() })
                    }
                };
                ClientMessage::Join(JoinRequest {
                    version,
                    create,
                    room: room(&mut r)?,
                    nick: nick(&mut r)?,
                    identity: PublicIdentity(r.array()?),
                    join_secret: JoinSecret::from_bytes(r.array()?),
                    signature: r.array()?,
                    history_after: r.u64()?,
                })
            }
            T_SEND => return Ok(ClientMessage::Send { envelope: envelope_bytes(body)? }),
            T_WHO => ClientMessage::Who,
            T_KICK => ClientMessage::Kick { nick: nick(&mut r)? },
            T_BAN => ClientMessage::Ban { nick: nick(&mut r)? },
            T_UNBAN => ClientMessage::Unban { nick: nick(&mut r)? },
            T_CPING => ClientMessage::Ping { token: r.u64()? },
            T_CPONG => ClientMessage::Pong { token: r.u64()? },
            T_PUT_GROUP_INFO => ClientMessage::PutGroupInfo(GroupInfoPart::decode(&mut r)?),
            T_GET_GROUP_INFO => ClientMessage::GetGroupInfo,
            T_SET_VERIFIER => ClientMessage::SetVerifier { verifier: r.array()? },
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Decodes every item of a transport plaintext; fails on the first bad one.
    pub fn decode_all(plaintext: &[u8]) -> Result<Vec<Self>, DecodeError> {
        decode_all(plaintext, Self::decode)
    }
}

/// Appends a `Deliver` item without building a `RelayMessage`: the relay encodes each
/// envelope once and hands the same bytes to every recipient.
pub fn encode_deliver(seq: u64, history: bool, envelope: &[u8], out: &mut Vec<u8>) {
    item(out, T_DELIVER, |o| {
        put_u64(o, seq);
        put_u8(o, u8::from(history));
        o.extend_from_slice(envelope);
    });
}

/// A one-byte flag: 0 or 1, anything else refused.
fn flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::UndefinedValue { what, value: other.into() }),
    }
}

/// A `Members` item's count and entries.
fn members(r: &mut Reader<'_>) -> Result<Vec<Member>, DecodeError> {
    let count = usize::from(r.u16()?);
    if count > MAX_MEMBERS_PER_ITEM {
        return Err(DecodeError::TooMany { what: "member list", count, max: MAX_MEMBERS_PER_ITEM });
    }
    // Each entry is at least 34 bytes; refuse a count the body cannot hold before allocating
    // for it.
    if count * 34 > r.remaining().len() {
        return Err(DecodeError::Truncated);
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(Member { nick: nick(r)?, identity: PublicIdentity(r.array()?) });
    }
    Ok(members)
}

fn presence_event(value: u8) -> Result<PresenceEvent, DecodeError> {
    Ok(match value {
        1 => PresenceEvent::Joined,
        2 => PresenceEvent::Left,
        3 => PresenceEvent::Kicked,
        4 => PresenceEvent::Banned,
        5 => PresenceEvent::Unbanned,
        other => return Err(DecodeError::UndefinedValue { what: "presence event", value: other.into() }),
    })
}

impl RelayMessage {
    /// Appends this message as one item.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RelayMessage::Joined { created, owner, latest_seq, oldest_seq } => item(out, T_JOINED, |o| {
                put_u8(o, u8::from(*created));
                o.extend_from_slice(&owner.0);
                put_u64(o, *latest_seq);
                put_u64(o, *oldest_seq);
            }),
            RelayMessage::Deliver { seq, history, envelope } => encode_deliver(*seq, *history, envelope, out),
            RelayMessage::Ack { counter, seq } => item(out, T_ACK, |o| {
                put_u64(o, *counter);
                put_u64(o, *seq);
            }),
            RelayMessage::Members { more, members } => item(out, T_MEMBERS, |o| {
                let members = &members[..members.len().min(MAX_MEMBERS_PER_ITEM)];
                put_u8(o, u8::from(*more));
                put_u16(o, members.len() as u16);
                for m in members {
                    put_bytes8(o, m.nick.as_str().as_bytes());
                    o.extend_from_slice(&m.identity.0);
                }
            }),
            RelayMessage::Presence { event, nick, identity } => item(out, T_PRESENCE, |o| {
                put_u8(o, *event as u8);
                put_bytes8(o, nick.as_str().as_bytes());
                o.extend_from_slice(&identity.0);
            }),
            RelayMessage::HistoryEnd { latest_seq } => item(out, T_HISTORY_END, |o| put_u64(o, *latest_seq)),
            RelayMessage::Error { code, detail: d } => item(out, T_ERROR, |o| {
                put_u16(o, code.to_u16());
                put_bytes16(o, detail(d).as_bytes());
            }),
            RelayMessage::Ping { token } => item(out, T_RPING, |o| put_u64(o, *token)),
            RelayMessage::Pong { token } => item(out, T_RPONG, |o| put_u64(o, *token)),
            RelayMessage::Goodbye { code, detail: d } => item(out, T_GOODBYE, |o| {
                put_u16(o, code.to_u16());
                put_bytes16(o, detail(d).as_bytes());
            }),
            RelayMessage::SendError { counter, code, detail: d } => item(out, T_SEND_ERROR, |o| {
                put_u64(o, *counter);
                put_u16(o, code.to_u16());
                put_bytes16(o, detail(d).as_bytes());
            }),
            RelayMessage::GroupInfo(p) => item(out, T_GROUP_INFO, |o| p.encode(o)),
            RelayMessage::GroupInfoStored { after_seq } => {
                item(out, T_GROUP_INFO_STORED, |o| put_u64(o, *after_seq))
            }
        }
    }

    /// Decodes one item.
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let msg = match ty {
            T_JOINED => RelayMessage::Joined {
                created: flag(&mut r, "joined flags")?,
                owner: PublicIdentity(r.array()?),
                latest_seq: r.u64()?,
                oldest_seq: r.u64()?,
            },
            T_DELIVER => {
                let seq = r.u64()?;
                let history = flag(&mut r, "deliver flags")?;
                let envelope = envelope_bytes(r.remaining())?;
                return Ok(RelayMessage::Deliver { seq, history, envelope });
            }
            T_ACK => RelayMessage::Ack { counter: r.u64()?, seq: r.u64()? },
            T_MEMBERS => {
                let more = flag(&mut r, "members flags")?;
                RelayMessage::Members { more, members: members(&mut r)? }
            }
            T_PRESENCE => RelayMessage::Presence {
                event: presence_event(r.u8()?)?,
                nick: nick(&mut r)?,
                identity: PublicIdentity(r.array()?),
            },
            T_HISTORY_END => RelayMessage::HistoryEnd { latest_seq: r.u64()? },
            T_ERROR => RelayMessage::Error {
                code: ErrorCode::from_u16(r.u16()?),
                detail: r.str16("error detail", MAX_DETAIL_LEN)?.to_owned(),
            },
            T_RPING => RelayMessage::Ping { token: r.u64()? },
            T_RPONG => RelayMessage::Pong { token: r.u64()? },
            T_GOODBYE => RelayMessage::Goodbye {
                code: ErrorCode::from_u16(r.u16()?),
                detail: r.str16("goodbye detail", MAX_DETAIL_LEN)?.to_owned(),
            },
            T_SEND_ERROR => RelayMessage::SendError {
                counter: r.u64()?,
                code: ErrorCode::from_u16(r.u16()?),
                detail: r.str16("send error detail", MAX_DETAIL_LEN)?.to_owned(),
            },
            T_GROUP_INFO => RelayMessage::GroupInfo(GroupInfoPart::decode(&mut r)?),
            T_GROUP_INFO_STORED => RelayMessage::GroupInfoStored { after_seq: r.u64()? },
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Decodes every item of a transport plaintext; fails on the first bad one.
    pub fn decode_all(plaintext: &[u8]) -> Result<Vec<Self>, DecodeError> {
        decode_all(plaintext, Self::decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::kdf::split_master;
    use proptest::prelude::*;

    fn arb_nick() -> impl Strategy<Value = Nick> {
        "[a-zA-Z_][a-zA-Z0-9_-]{0,31}".prop_map(|s| Nick::new(&s).unwrap())
    }
    fn arb_identity() -> impl Strategy<Value = PublicIdentity> {
        any::<[u8; 32]>().prop_map(PublicIdentity)
    }
    fn arb_envelope() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), MIN_ENVELOPE_LEN..MAX_ENVELOPE_LEN + 1)
    }
    fn arb_code() -> impl Strategy<Value = ErrorCode> {
        any::<u16>().prop_map(ErrorCode::from_u16)
    }

    fn arb_client() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (any::<bool>(), "[a-z0-9_][a-z0-9._-]{0,63}", arb_nick(), any::<[u8; 32]>(), any::<u64>())
                .prop_map(|(create, room, nick, seed, after)| {
                    let id = Identity::from_seed(&seed);
                    let keys = split_master(&seed);
                    ClientMessage::Join(JoinRequest::new(
                        &id,
                        &[1; 32],
                        RoomName::new(&room).unwrap(),
                        nick,
                        keys.join_secret.clone(),
                        create,
                        after,
                    ))
                }),
            arb_envelope().prop_map(|envelope| ClientMessage::Send { envelope }),
            Just(ClientMessage::Who),
            arb_nick().prop_map(|nick| ClientMessage::Kick { nick }),
            arb_nick().prop_map(|nick| ClientMessage::Ban { nick }),
            arb_nick().prop_map(|nick| ClientMessage::Unban { nick }),
            any::<u64>().prop_map(|token| ClientMessage::Ping { token }),
            any::<u64>().prop_map(|token| ClientMessage::Pong { token }),
        ]
    }

    fn arb_relay() -> impl Strategy<Value = RelayMessage> {
        prop_oneof![
            (any::<bool>(), arb_identity(), any::<u64>(), any::<u64>()).prop_map(
                |(created, owner, latest_seq, oldest_seq)| RelayMessage::Joined {
                    created,
                    owner,
                    latest_seq,
                    oldest_seq
                }
            ),
            (any::<u64>(), any::<bool>(), arb_envelope())
                .prop_map(|(seq, history, envelope)| RelayMessage::Deliver { seq, history, envelope }),
            (any::<u64>(), any::<u64>()).prop_map(|(counter, seq)| RelayMessage::Ack { counter, seq }),
            (any::<bool>(), proptest::collection::vec((arb_nick(), arb_identity()), 0..40)).prop_map(
                |(more, m)| RelayMessage::Members {
                    more,
                    members: m.into_iter().map(|(nick, identity)| Member { nick, identity }).collect()
                }
            ),
            (1u8..=5, arb_nick(), arb_identity()).prop_map(|(e, nick, identity)| RelayMessage::Presence {
                event: [
                    PresenceEvent::Joined,
                    PresenceEvent::Left,
                    PresenceEvent::Kicked,
                    PresenceEvent::Banned,
                    PresenceEvent::Unbanned
                ][usize::from(e - 1)],
                nick,
                identity
            }),
            any::<u64>().prop_map(|latest_seq| RelayMessage::HistoryEnd { latest_seq }),
            (arb_code(), "\\PC{0,100}").prop_map(|(code, detail)| RelayMessage::Error { code, detail }),
            any::<u64>().prop_map(|token| RelayMessage::Ping { token }),
            any::<u64>().prop_map(|token| RelayMessage::Pong { token }),
            (arb_code(), "\\PC{0,100}").prop_map(|(code, detail)| RelayMessage::Goodbye { code, detail }),
            (any::<u64>(), arb_code(), "\\PC{0,100}")
                .prop_map(|(counter, code, detail)| RelayMessage::SendError { counter, code, detail }),
        ]
    }

    proptest! {
        #[test]
        fn client_batches_round_trip(msgs in proptest::collection::vec(arb_client(), 1..6)) {
            let mut out = Vec::new();
            for m in &msgs {
                m.encode(&mut out);
            }
            prop_assert_eq!(ClientMessage::decode_all(&out).unwrap(), msgs);
        }

        #[test]
        fn relay_batches_round_trip(msgs in proptest::collection::vec(arb_relay(), 1..6)) {
            let mut out = Vec::new();
            for m in &msgs {
                m.encode(&mut out);
            }
            prop_assert_eq!(RelayMessage::decode_all(&out).unwrap(), msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ClientMessage::decode_all(&bytes);
            let _ = RelayMessage::decode_all(&bytes);
        }

        #[test]
        fn truncated_items_are_refused(msg in arb_relay(), cut in 1usize..20) {
            let mut out = Vec::new();
            msg.encode(&mut out);
            let cut = cut.min(out.len());
            prop_assert!(RelayMessage::decode_all(&out[..out.len() - cut]).is_err());
        }
    }

    #[test]
    fn empty_plaintext_unknown_type_and_trailing_bytes_are_refused() {
        assert!(ClientMessage::decode_all(&[]).is_err());
        assert_eq!(ClientMessage::decode_all(&[0x7f, 0, 0]), Err(DecodeError::UnknownMessageType(0x7f)));
        assert_eq!(ClientMessage::decode_all(&[T_WHO, 0, 1, 0]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(
            RelayMessage::decode_all(&[T_JOINED, 0, 1, 7]),
            Err(DecodeError::UndefinedValue { what: "joined flags", value: 7 })
        );
    }

    #[test]
    fn member_count_beyond_body_is_refused_before_allocation() {
        let body = [0u8, 0x03, 0xe8]; // more = 0, count = 1000, no entries
        let mut item_bytes = vec![T_MEMBERS, 0, 3];
        item_bytes.extend_from_slice(&body);
        assert_eq!(RelayMessage::decode_all(&item_bytes), Err(DecodeError::Truncated));
        let over = [0u8, 0x03, 0xe9];
        let mut item_bytes = vec![T_MEMBERS, 0, 3];
        item_bytes.extend_from_slice(&over);
        assert!(matches!(
            RelayMessage::decode_all(&item_bytes),
            Err(DecodeError::TooMany { count: 1001, .. })
        ));
    }

    #[test]
    fn unknown_error_codes_survive_a_round_trip() {
        assert_eq!(ErrorCode::from_u16(11), ErrorCode::WrongPassword);
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Other(999));
        assert_eq!(ErrorCode::Other(999).to_u16(), 999);
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        RelayMessage::Error { code: ErrorCode::Internal, detail: "é".repeat(600) }.encode(&mut out);
        match &RelayMessage::decode_all(&out).unwrap()[0] {
            RelayMessage::Error { detail, .. } => {
                assert!(detail.len() <= MAX_DETAIL_LEN && detail.len() >= 510)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn group_info_items_round_trip_and_bad_parts_are_refused() {
        let part = GroupInfoPart { after_seq: 9, part: 1, parts: 2, chunk: vec![7; MAX_GROUP_INFO_CHUNK] };
        let mut out = Vec::new();
        ClientMessage::PutGroupInfo(part.clone()).encode(&mut out);
        ClientMessage::GetGroupInfo.encode(&mut out);
        ClientMessage::SetVerifier { verifier: [3; 32] }.encode(&mut out);
        assert_eq!(
            ClientMessage::decode_all(&out).unwrap(),
            vec![
                ClientMessage::PutGroupInfo(part.clone()),
                ClientMessage::GetGroupInfo,
                ClientMessage::SetVerifier { verifier: [3; 32] }
            ]
        );
        let mut out = Vec::new();
        RelayMessage::GroupInfo(part.clone()).encode(&mut out);
        RelayMessage::GroupInfoStored { after_seq: 3 }.encode(&mut out);
        assert_eq!(
            RelayMessage::decode_all(&out).unwrap(),
            vec![RelayMessage::GroupInfo(part.clone()), RelayMessage::GroupInfoStored { after_seq: 3 }]
        );
        for bad in [
            GroupInfoPart { part: 2, ..part.clone() },
            GroupInfoPart { part: 0, parts: 0, ..part.clone() },
            GroupInfoPart { chunk: Vec::new(), ..part.clone() },
            GroupInfoPart { chunk: vec![0; MAX_GROUP_INFO_CHUNK + 1], ..part.clone() },
        ] {
            let mut out = Vec::new();
            ClientMessage::PutGroupInfo(bad.clone()).encode(&mut out);
            assert!(ClientMessage::decode_all(&out).is_err(), "{:?}", (bad.part, bad.parts, bad.chunk.len()));
        }
    }

    #[test]
    fn a_join_carries_its_version_and_the_version_picks_the_verifier() {
        let keys = split_master(&[4; 32]);
        let id = Identity::from_seed(&[1; 32]);
        let v2 = JoinRequest::new(
            &id,
            &[5; 32],
            RoomName::new("general").unwrap(),
            Nick::new("alice").unwrap(),
            keys.join_secret.clone(),
            true,
            0,
        )
        .for_version_2();
        let mut out = Vec::new();
        ClientMessage::Join(v2.clone()).encode(&mut out);
        assert_eq!(out[ITEM_HEADER_LEN], PROTOCOL_VERSION_2);
        assert_eq!(ClientMessage::decode_all(&out).unwrap(), vec![ClientMessage::Join(v2.clone())]);
        let signed = v2.verify(&[5; 32]).unwrap();
        let verifier = signed.new_room_verifier();
        assert_eq!(verifier.0, crate::kdf_v2::join_verifier_v2(&keys.join_secret).0);
        assert!(!verifier.matches(&keys.join_secret), "not the version-1 verifier");
        assert!(signed.admit(&verifier).is_ok());
    }
}
