//! History for newcomers (docs/PROTOCOL.md section 28): the application data of a
//! `HistoryShare` (content kind 5), byte by byte, and its split into envelopes.
//!
//! ```text
//! offset  size  field
//! 0       8     timestamp_ms: u64 (sharer's clock, informational)
//! 8       1     kind = 5 (history share)
//! 9       8     entry_seq: u64, the seq of the entry commit this share answers
//! 17      1     part: u8, 0-based, below parts
//! 18      1     parts: u8, 1..=100, the envelopes of this share
//! 19      1     count: u8, 1..=100, messages in this part
//! 20      ...   count items, seq strictly increasing (oldest first):
//!               sender: 32 | seq: u64 | len: u16 | content: len bytes
//! ...           zero padding, fewer than 64 bytes, to a multiple of 64; at most 12 288 in all
//! ```
//!
//! `content` is the v1 content encoding without its padding (`timestamp_ms | kind | nick8 |
//! body16`), exactly `12 + nick + body` bytes, kind 1 (text) or 2 (action).

use chatroom_crypto::{Content, ContentKind, PublicIdentity, MAX_BODY_LEN, MAX_NICK_LEN, PAD_BLOCK};
use zeroize::Zeroizing;

/// The content kind of a history share: byte 8 of the application data, where the v1 content
/// encoding keeps its kind.
pub const HISTORY_KIND: u8 = 5;
/// The most messages a client keeps for newcomers and the most one share carries, whatever
/// the room's `history_share` says.
pub const MAX_HISTORY_SHARE: usize = 100;
/// The largest application data of one share envelope (well under `MAX_MLS_LEN` with MLS's
/// overhead).
pub const MAX_SHARE_PART_LEN: usize = 12_288;
const HEADER_LEN: usize = 8 + 1 + 8 + 1 + 1 + 1;
const ITEM_FIXED_LEN: usize = 32 + 8 + 2;
const CONTENT_FIXED_LEN: usize = 8 + 1 + 1 + 2;
/// The longest content of one item (a 32-byte nickname and a 4096-byte body).
pub const MAX_SHARED_CONTENT_LEN: usize = CONTENT_FIXED_LEN + MAX_NICK_LEN + MAX_BODY_LEN;

/// Why share bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a malformed history share: {0}")]
pub struct ShareDecodeError(pub &'static str);

/// One message as a member kept it: its original sender (as MLS authenticated it to that
/// member), its `seq` in the log and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMessage {
    /// The original sender, as the sharer claims.
    pub sender: PublicIdentity,
    /// Its relay sequence number.
    pub seq: u64,
    /// What was said.
    pub content: Content,
}

/// One decoded envelope of a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePart {
    /// The seq of the entry commit this share answers.
    pub entry_seq: u64,
    /// This envelope's index, below `parts`.
    pub part: u8,
    /// How many envelopes the share has.
    pub parts: u8,
    /// The messages, oldest first.
    pub messages: Vec<SharedMessage>,
}

fn content_bytes(content: &Content) -> Result<Zeroizing<Vec<u8>>, ShareDecodeError> {
    let nick = content.nick.as_str().as_bytes();
    let body = content.body.as_bytes();
    if !matches!(content.kind, ContentKind::Text | ContentKind::Action) {
        return Err(ShareDecodeError("only text and actions are shared"));
    }
    if body.len() > MAX_BODY_LEN || nick.len() > MAX_NICK_LEN {
        return Err(ShareDecodeError("content too long"));
    }
    let len = CONTENT_FIXED_LEN + nick.len() + body.len();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.extend_from_slice(&content.timestamp_ms.to_be_bytes());
    out.push(content.kind as u8);
    out.push(u8::try_from(nick.len()).map_err(|_| ShareDecodeError("nickname too long"))?);
    out.extend_from_slice(nick);
    out.extend_from_slice(
        &u16::try_from(body.len()).map_err(|_| ShareDecodeError("body too long"))?.to_be_bytes(),
    );
    out.extend_from_slice(body);
    Ok(out)
}

/// Splits `messages` (oldest first, at most `MAX_HISTORY_SHARE`; the rest are left out from
/// the oldest) into the application data of as many envelopes as `MAX_SHARE_PART_LEN` needs.
/// Messages that cannot be shared (a topic) are left out. Empty if nothing is left.
pub fn encode_share(
    timestamp_ms: u64,
    entry_seq: u64,
    messages: &[SharedMessage],
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShareDecodeError> {
    let skip = messages.len().saturating_sub(MAX_HISTORY_SHARE);
    let mut items: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut last_seq = None;
    for m in messages.iter().skip(skip) {
        if last_seq.is_some_and(|last| m.seq <= last) {
            return Err(ShareDecodeError("messages not in seq order"));
        }
        let Ok(content) = content_bytes(&m.content) else { continue };
        last_seq = Some(m.seq);
        let mut item = Zeroizing::new(Vec::with_capacity(ITEM_FIXED_LEN + content.len()));
        item.extend_from_slice(&m.sender.0);
        item.extend_from_slice(&m.seq.to_be_bytes());
        item.extend_from_slice(
            &u16::try_from(content.len()).map_err(|_| ShareDecodeError("too long"))?.to_be_bytes(),
        );
        item.extend_from_slice(&content);
        items.push(item);
    }
    // Greedy packing: every item fits alone (42 + 4 140 + 20 < 12 288).
    let mut groups: Vec<Vec<&[u8]>> = Vec::new();
    let mut used = HEADER_LEN;
    for item in &items {
        match groups.last_mut() {
            Some(group) if used + item.len() <= MAX_SHARE_PART_LEN => group.push(item),
            _ => {
                groups.push(vec![item]);
                used = HEADER_LEN;
            }
        }
        used += item.len();
    }
    let parts = u8::try_from(groups.len()).map_err(|_| ShareDecodeError("too many parts"))?;
    let mut out = Vec::with_capacity(groups.len());
    for (part, group) in (0u8..).zip(&groups) {
        let count = u8::try_from(group.len()).map_err(|_| ShareDecodeError("too many messages"))?;
        let len: usize = HEADER_LEN + group.iter().map(|i| i.len()).sum::<usize>();
        let mut data = Zeroizing::new(Vec::with_capacity(len.div_ceil(PAD_BLOCK) * PAD_BLOCK));
        data.extend_from_slice(&timestamp_ms.to_be_bytes());
        data.push(HISTORY_KIND);
        data.extend_from_slice(&entry_seq.to_be_bytes());
        data.extend_from_slice(&[part, parts, count]);
        for item in group {
            data.extend_from_slice(item);
        }
        data.resize(len.div_ceil(PAD_BLOCK) * PAD_BLOCK, 0);
        out.push(data);
    }
    Ok(out)
}

/// Takes from a borrowed slice, never past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ShareDecodeError> {
        let (head, tail) = self.0.split_at_checked(len).ok_or(ShareDecodeError("truncated"))?;
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ShareDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ShareDecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, ShareDecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

fn decode_content(bytes: &[u8]) -> Result<Content, ShareDecodeError> {
    let content = Content::from_padded_bytes(bytes).map_err(|_| ShareDecodeError("bad content"))?;
    // Canonical: no padding inside an item, and only text or actions.
    if bytes.len() != CONTENT_FIXED_LEN + content.nick.as_str().len() + content.body.len() {
        return Err(ShareDecodeError("content with trailing bytes"));
    }
    if !matches!(content.kind, ContentKind::Text | ContentKind::Action) {
        return Err(ShareDecodeError("not text or an action"));
    }
    Ok(content)
}

/// Decodes one envelope's application data (`encode_share`'s output): refuses anything longer
/// than `MAX_SHARE_PART_LEN`, not a multiple of 64 bytes, with bad counts, out-of-order or
/// malformed items, or trailing bytes other than fewer than 64 zeros.
pub fn decode_share(bytes: &[u8]) -> Result<SharePart, ShareDecodeError> {
    if bytes.len() > MAX_SHARE_PART_LEN || !bytes.len().is_multiple_of(PAD_BLOCK) {
        return Err(ShareDecodeError("bad length"));
    }
    let mut r = Reader(bytes);
    let _timestamp = r.u64()?;
    if r.u8()? != HISTORY_KIND {
        return Err(ShareDecodeError("not kind 5"));
    }
    let entry_seq = r.u64()?;
    let (part, parts, count) = (r.u8()?, r.u8()?, r.u8()?);
    let max = u8::try_from(MAX_HISTORY_SHARE).unwrap_or(u8::MAX);
    if parts == 0 || parts > max || part >= parts || count == 0 || count > max {
        return Err(ShareDecodeError("bad counts"));
    }
    let mut messages = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let mut sender = [0u8; 32];
        sender.copy_from_slice(r.take(32)?);
        let seq = r.u64()?;
        if messages.last().is_some_and(|m: &SharedMessage| seq <= m.seq) {
            return Err(ShareDecodeError("messages not in seq order"));
        }
        let len = usize::from(r.u16()?);
        if len > MAX_SHARED_CONTENT_LEN {
            return Err(ShareDecodeError("content too long"));
        }
        let content = decode_content(r.take(len)?)?;
        messages.push(SharedMessage { sender: PublicIdentity(sender), seq, content });
    }
    if r.0.len() >= PAD_BLOCK || r.0.iter().any(|&b| b != 0) {
        return Err(ShareDecodeError("trailing bytes"));
    }
    Ok(SharePart { entry_seq, part, parts, messages })
}

#[cfg(test)]
mod tests {
    use chatroom_crypto::Nick;

    use super::*;

    fn message(seq: u64, body: &str) -> SharedMessage {
        SharedMessage {
            sender: PublicIdentity([seq as u8; 32]),
            seq,
            content: Content {
                timestamp_ms: seq * 1000,
                kind: if seq.is_multiple_of(2) { ContentKind::Text } else { ContentKind::Action },
                nick: Nick::new(&format!("n{seq}")).unwrap(),
                body: body.into(),
            },
        }
    }

    #[test]
    fn a_share_round_trips_and_its_layout_is_exact() {
        let messages = vec![message(3, "hello"), message(7, "there")];
        let parts = encode_share(0x0102, 9, &messages).unwrap();
        assert_eq!(parts.len(), 1);
        let bytes = &parts[0];
        assert_eq!(bytes.len() % 64, 0);
        assert_eq!(&bytes[..20], &[0, 0, 0, 0, 0, 0, 1, 2, 5, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 2]);
        assert_eq!(&bytes[20..52], &[3; 32]);
        assert_eq!(&bytes[52..60], &3u64.to_be_bytes());
        assert_eq!(&bytes[60..62], &(12u16 + 2 + 5).to_be_bytes());
        let back = decode_share(bytes).unwrap();
        assert_eq!(back, SharePart { entry_seq: 9, part: 0, parts: 1, messages });
    }

    #[test]
    fn long_histories_split_across_envelopes_within_bounds() {
        let body = "x".repeat(MAX_BODY_LEN);
        let messages: Vec<_> = (1..=150).map(|s| message(s, &body)).collect();
        let parts = encode_share(1, 200, &messages).unwrap();
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= MAX_SHARE_PART_LEN);
            let d = decode_share(p).unwrap();
            assert_eq!((usize::from(d.part), usize::from(d.parts)), (i, parts.len()));
            back.extend(d.messages);
        }
        assert_eq!(back, messages[50..], "the last 100, oldest first");
        assert!(encode_share(1, 2, &[]).unwrap().is_empty());
        let unordered = [message(5, "a"), message(5, "b")];
        assert!(encode_share(1, 9, &unordered).is_err());
    }

    #[test]
    fn hostile_bytes_are_refused_without_panic() {
        let messages = vec![message(3, "hello"), message(7, "there"), message(8, "ü")];
        let good = encode_share(5, 9, &messages).unwrap().remove(0);
        // Every truncation, every single-byte change, and trailing bytes.
        for len in 0..good.len() {
            assert!(decode_share(&good[..len]).is_err(), "{len}");
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = decode_share(&bad);
            }
        }
        let mut trailing = good.to_vec();
        trailing.extend_from_slice(&[0; 64]);
        assert!(decode_share(&trailing).is_err(), "a whole block of padding");
        let mut nonzero = good.to_vec();
        *nonzero.last_mut().unwrap() = 1;
        assert!(decode_share(&nonzero).is_err());
        let mut zero_count = good.to_vec();
        zero_count[19] = 0;
        assert!(decode_share(&zero_count).is_err());
        let mut part_past = good.to_vec();
        part_past[17] = 1;
        assert!(decode_share(&part_past).is_err());
        let mut huge = good.to_vec();
        huge[60] = 0xff;
        huge[61] = 0xff;
        assert!(decode_share(&huge).is_err());
        assert!(decode_share(&vec![0; MAX_SHARE_PART_LEN + 64]).is_err());
        // A pseudo-random sweep.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut bytes = good.to_vec();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % bytes.len();
                bytes[i] = (x >> 32) as u8;
            }
            let _ = decode_share(&bytes);
        }
    }
}
