//! `message_decode`: every item decoder of the transport plaintext.
//!
//! Input: `mode(u8) | rest`. Even modes decode `rest` as raw bytes with both
//! `ClientMessage::decode_all` and `RelayMessage::decode_all` (and `items`,
//! `EnvelopeHeader::parse` and `parse_v2`): no panic, and whatever decodes re-encodes to exactly the same
//! bytes (one encoding per message). Odd modes build messages from `rest` with `arbitrary`,
//! encode them as one plaintext and require `decode_all(encode(x)) == x`.

use arbitrary::{Result, Unstructured};
use chatroom_crypto::{
    items, ClientMessage, EnvelopeHeader, ErrorCode, GroupInfoPart, JoinRequest, JoinSecret, Member, Nick,
    PresenceEvent, PublicIdentity, RelayMessage, RoomName, MAX_DETAIL_LEN, MAX_ENVELOPE_LEN,
    MAX_ENVELOPE_V2_LEN, MAX_GROUP_INFO_CHUNK, MAX_MEMBERS_PER_ITEM, MAX_NICK_LEN, MAX_ROOM_LEN,
    MIN_ENVELOPE_LEN, MIN_ENVELOPE_V2_LEN, PROTOCOL_VERSION, PROTOCOL_VERSION_2,
};

/// Mode byte for raw decoding.
pub const RAW: u8 = 0;
/// Mode byte for structured round trips.
pub const STRUCTURED: u8 = 1;

/// Runs the check on one input.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        // Running out of input ends generation early; what was built is still checked.
        let _ = structured(&mut Unstructured::new(rest));
    }
}

fn raw(bytes: &[u8]) {
    let mut covered = 0usize;
    for item in items(bytes) {
        match item {
            Ok((_, body)) => covered += 3 + body.len(),
            Err(_) => break,
        }
    }
    assert!(covered <= bytes.len(), "items cover more bytes than given");
    let _ = EnvelopeHeader::parse(bytes);
    let _ = EnvelopeHeader::parse_v2(bytes);

    if let Ok(msgs) = ClientMessage::decode_all(bytes) {
        assert!(!msgs.is_empty(), "decode_all succeeded with no message");
        assert_eq!(covered, bytes.len(), "decoded messages do not cover the plaintext");
        let mut again = Vec::new();
        for m in &msgs {
            m.encode(&mut again);
        }
        assert_eq!(again, bytes, "a client message has two encodings");
    }
    if let Ok(msgs) = RelayMessage::decode_all(bytes) {
        assert!(!msgs.is_empty(), "decode_all succeeded with no message");
        assert_eq!(covered, bytes.len(), "decoded messages do not cover the plaintext");
        let mut again = Vec::new();
        for m in &msgs {
            m.encode(&mut again);
        }
        assert_eq!(again, bytes, "a relay message has two encodings");
    }
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let mut client = Vec::new();
    for _ in 0..u.int_in_range(1..=6)? {
        client.push(arb_client(u)?);
    }
    round_trip_client(&client);
    let mut relay = Vec::new();
    for _ in 0..u.int_in_range(1..=6)? {
        relay.push(arb_relay(u)?);
    }
    round_trip_relay(&relay);
    Ok(())
}

fn round_trip_client(msgs: &[ClientMessage]) {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(&mut out);
    }
    match ClientMessage::decode_all(&out) {
        Ok(back) => assert_eq!(back, msgs, "client messages changed in a round trip"),
        Err(e) => panic!("encoded client messages do not decode: {e}"),
    }
}

fn round_trip_relay(msgs: &[RelayMessage]) {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(&mut out);
    }
    // The encoder cuts long details at MAX_DETAIL_LEN on a character boundary.
    let expected: Vec<RelayMessage> = msgs
        .iter()
        .map(|m| match m {
            RelayMessage::Error { code, detail } => RelayMessage::Error { code: *code, detail: cut(detail) },
            RelayMessage::Goodbye { code, detail } => {
                RelayMessage::Goodbye { code: *code, detail: cut(detail) }
            }
            RelayMessage::SendError { counter, code, detail } => {
                RelayMessage::SendError { counter: *counter, code: *code, detail: cut(detail) }
            }
            other => other.clone(),
        })
        .collect();
    match RelayMessage::decode_all(&out) {
        Ok(back) => assert_eq!(back, expected, "relay messages changed in a round trip"),
        Err(e) => panic!("encoded relay messages do not decode: {e}"),
    }
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_DETAIL_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

const NICK_FIRST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";
const NICK_REST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const ROOM_FIRST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
const ROOM_REST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

fn name(u: &mut Unstructured<'_>, max: usize, first: &[u8], rest: &[u8]) -> Result<String> {
    let len = u.int_in_range(1..=max)?;
    let mut s = String::with_capacity(len);
    s.push(char::from(*u.choose(first)?));
    for _ in 1..len {
        s.push(char::from(*u.choose(rest)?));
    }
    Ok(s)
}

fn arb_nick(u: &mut Unstructured<'_>) -> Result<Nick> {
    let s = name(u, MAX_NICK_LEN, NICK_FIRST, NICK_REST)?;
    Nick::new(&s).map_err(|_| arbitrary::Error::IncorrectFormat)
}

fn arb_room(u: &mut Unstructured<'_>) -> Result<RoomName> {
    let s = name(u, MAX_ROOM_LEN, ROOM_FIRST, ROOM_REST)?;
    RoomName::new(&s).map_err(|_| arbitrary::Error::IncorrectFormat)
}

fn arb_envelope(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    // Either version's envelope: v2's bounds hold v1's.
    let len = u.int_in_range(
        MIN_ENVELOPE_V2_LEN.min(MIN_ENVELOPE_LEN)..=MAX_ENVELOPE_V2_LEN.max(MAX_ENVELOPE_LEN),
    )?;
    let mut envelope = u.bytes(len.min(u.len()))?.to_vec();
    envelope.resize(len, 0);
    Ok(envelope)
}

fn arb_part(u: &mut Unstructured<'_>) -> Result<GroupInfoPart> {
    let parts = u.int_in_range(1..=255)?;
    let len = u.int_in_range(1..=MAX_GROUP_INFO_CHUNK)?;
    let mut chunk = u.bytes(len.min(u.len()))?.to_vec();
    chunk.resize(len, 0);
    Ok(GroupInfoPart { after_seq: u.arbitrary()?, part: u.int_in_range(0..=parts - 1)?, parts, chunk })
}

fn arb_client(u: &mut Unstructured<'_>) -> Result<ClientMessage> {
    Ok(match u.int_in_range(0..=10)? {
        8 => ClientMessage::PutGroupInfo(arb_part(u)?),
        9 => ClientMessage::GetGroupInfo,
        10 => ClientMessage::SetVerifier { verifier: u.arbitrary()? },
        0 => ClientMessage::Join(JoinRequest {
            version: *u.choose(&[PROTOCOL_VERSION, PROTOCOL_VERSION_2])?,
            create: u.arbitrary()?,
            room: arb_room(u)?,
            nick: arb_nick(u)?,
            identity: PublicIdentity(u.arbitrary()?),
            join_secret: JoinSecret::from_bytes(u.arbitrary()?),
            signature: u.arbitrary()?,
            history_after: u.arbitrary()?,
        }),
        1 => ClientMessage::Send { envelope: arb_envelope(u)? },
        2 => ClientMessage::Who,
        3 => ClientMessage::Kick { nick: arb_nick(u)? },
        4 => ClientMessage::Ban { nick: arb_nick(u)? },
        5 => ClientMessage::Unban { nick: arb_nick(u)? },
        6 => ClientMessage::Ping { token: u.arbitrary()? },
        _ => ClientMessage::Pong { token: u.arbitrary()? },
    })
}

fn arb_relay(u: &mut Unstructured<'_>) -> Result<RelayMessage> {
    Ok(match u.int_in_range(0..=12)? {
        11 => RelayMessage::GroupInfo(arb_part(u)?),
        12 => RelayMessage::GroupInfoStored { after_seq: u.arbitrary()? },
        0 => RelayMessage::Joined {
            created: u.arbitrary()?,
            owner: PublicIdentity(u.arbitrary()?),
            latest_seq: u.arbitrary()?,
            oldest_seq: u.arbitrary()?,
        },
        1 => {
            RelayMessage::Deliver { seq: u.arbitrary()?, history: u.arbitrary()?, envelope: arb_envelope(u)? }
        }
        2 => RelayMessage::Ack { counter: u.arbitrary()?, seq: u.arbitrary()? },
        3 => {
            let n = u.int_in_range(0..=MAX_MEMBERS_PER_ITEM)?;
            let mut members = Vec::new();
            for _ in 0..n {
                if u.is_empty() {
                    break;
                }
                members.push(Member { nick: arb_nick(u)?, identity: PublicIdentity(u.arbitrary()?) });
            }
            RelayMessage::Members { more: u.arbitrary()?, members }
        }
        4 => RelayMessage::Presence {
            event: *u.choose(&[
                PresenceEvent::Joined,
                PresenceEvent::Left,
                PresenceEvent::Kicked,
                PresenceEvent::Banned,
                PresenceEvent::Unbanned,
            ])?,
            nick: arb_nick(u)?,
            identity: PublicIdentity(u.arbitrary()?),
        },
        5 => RelayMessage::HistoryEnd { latest_seq: u.arbitrary()? },
        // Codes come from the wire value: `ErrorCode::Other(1)` would encode as 1 and decode as
        // `Malformed`, so only values `from_u16` produces round-trip.
        6 => RelayMessage::Error { code: ErrorCode::from_u16(u.arbitrary()?), detail: u.arbitrary()? },
        7 => RelayMessage::Ping { token: u.arbitrary()? },
        8 => RelayMessage::Pong { token: u.arbitrary()? },
        9 => RelayMessage::SendError {
            counter: u.arbitrary()?,
            code: ErrorCode::from_u16(u.arbitrary()?),
            detail: u.arbitrary()?,
        },
        _ => RelayMessage::Goodbye { code: ErrorCode::from_u16(u.arbitrary()?), detail: u.arbitrary()? },
    })
}
