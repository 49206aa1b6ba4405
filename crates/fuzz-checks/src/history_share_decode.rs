//! `history_share_decode`: the application data of a v2 history share (content kind 5,
//! `chatroom_session::v2_history::decode_share`), which a newcomer's client decodes from
//! another member's MLS message (docs/PROTOCOL.md section 28).
//!
//! Input: the raw application data.
//! - No panic, and nothing decodes from more than 12 288 bytes or a length that is not a
//!   multiple of 64.
//! - A decoded share has 1 to 100 messages in strictly increasing `seq` order, a `part` below
//!   `parts`, and re-encodes to exactly the input bytes (one encoding per share).

use chatroom_session::v2_history::{decode_share, encode_share, MAX_HISTORY_SHARE, MAX_SHARE_PART_LEN};

/// The target's check.
pub fn check(data: &[u8]) {
    let Ok(share) = decode_share(data) else { return };
    assert!(data.len() <= MAX_SHARE_PART_LEN && data.len().is_multiple_of(64), "{}", data.len());
    assert!(!share.messages.is_empty() && share.messages.len() <= MAX_HISTORY_SHARE);
    assert!(share.part < share.parts);
    assert!(share.messages.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    if share.part == 0 && share.parts == 1 {
        let timestamp = data.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        let parts = encode_share(timestamp.unwrap_or(0), share.entry_seq, &share.messages);
        let parts = parts.unwrap_or_else(|e| panic!("a decoded share does not encode: {e}"));
        assert_eq!(parts.len(), 1, "fits one envelope as it came");
        assert_eq!(parts[0].as_slice(), data, "one encoding per share");
    }
}
