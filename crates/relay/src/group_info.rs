//! The room's sealed GroupInfo slot of protocol version 2 (docs/PROTOCOL-v2-draft.md 4.2), on
//! the connection's side: assembling one upload from its parts, and splitting the stored object
//! into `GroupInfo` items. The bytes are opaque: the relay checks sizes and order only.

use bytes::Bytes;
use chatroom_crypto::{ErrorCode, GroupInfoPart, RelayMessage, MAX_GROUP_INFO_CHUNK};

use crate::outbox::encode;
use crate::rooms::Refusal;

/// One upload in progress on a connection: parts must come in order, 0 to `parts - 1`, all
/// with the same `after_seq` and `parts`; the total is bounded by the relay's limit.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    current: Option<(u64, u8, u8, Vec<u8>)>,
}

impl Upload {
    /// Adds a part; returns the whole object once its last part arrived. A refused part
    /// drops the upload in progress.
    pub(crate) fn push(
        &mut self,
        part: GroupInfoPart,
        max_bytes: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, Refusal> {
        let GroupInfoPart { after_seq, part, parts, chunk } = part;
        let mut upload = match self.current.take() {
            None if part == 0 => (after_seq, parts, 0, Vec::new()),
            Some(up) if (up.0, up.1, up.2) == (after_seq, parts, part) => up,
            _ => {
                return Err(Refusal::new(
                    ErrorCode::GroupInfoTooLarge,
                    format!(
                    "group information part {part} of {parts} came out of order; upload it again from part 0"
                ),
                ))
            }
        };
        if upload.3.len() + chunk.len() > max_bytes {
            return Err(Refusal::new(
                ErrorCode::GroupInfoTooLarge,
                format!("the group information is larger than this relay's limit of {max_bytes} bytes"),
            ));
        }
        upload.3.extend_from_slice(&chunk);
        upload.2 += 1;
        if upload.2 == parts {
            return Ok(Some((after_seq, upload.3)));
        }
        self.current = Some(upload);
        Ok(None)
    }
}

/// The stored object as `GroupInfo` items, one per part, in order.
pub(crate) fn items(after_seq: u64, sealed: &[u8]) -> Vec<Bytes> {
    let chunks: Vec<&[u8]> = sealed.chunks(MAX_GROUP_INFO_CHUNK).collect();
    // The relay's limit keeps objects far below 255 parts; an empty one has none to send.
    let parts = u8::try_from(chunks.len()).unwrap_or(u8::MAX);
    chunks
        .into_iter()
        .take(usize::from(parts))
        .enumerate()
        .map(|(i, chunk)| {
            let part = GroupInfoPart { after_seq, part: i as u8, parts, chunk: chunk.to_vec() };
            encode(&RelayMessage::GroupInfo(part))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(after_seq: u64, part: u8, parts: u8, len: usize) -> GroupInfoPart {
        GroupInfoPart { after_seq, part, parts, chunk: vec![part; len] }
    }

    #[test]
    fn parts_assemble_in_order_within_the_limit() {
        let mut up = Upload::default();
        assert_eq!(up.push(part(4, 0, 2, 10), 30).unwrap(), None);
        let (seq, bytes) = up.push(part(4, 1, 2, 20), 30).unwrap().unwrap();
        assert_eq!((seq, bytes.len(), bytes[0], bytes[29]), (4, 30, 0, 1));
        // A new upload starts afresh.
        assert_eq!(up.push(part(5, 0, 1, 1), 30).unwrap(), Some((5, vec![0])));
    }

    #[test]
    fn out_of_order_or_oversized_parts_are_refused_and_drop_the_upload() {
        let mut up = Upload::default();
        let code = |r: Result<_, Refusal>| r.err().map(|e| e.code);
        assert_eq!(code(up.push(part(4, 1, 2, 1), 30)), Some(ErrorCode::GroupInfoTooLarge), "starts mid-way");
        assert_eq!(up.push(part(4, 0, 3, 10), 30).unwrap(), None);
        assert_eq!(code(up.push(part(5, 1, 3, 10), 30)), Some(ErrorCode::GroupInfoTooLarge), "another seq");
        assert_eq!(
            code(up.push(part(4, 1, 3, 10), 30)),
            Some(ErrorCode::GroupInfoTooLarge),
            "upload dropped"
        );
        assert_eq!(up.push(part(4, 0, 2, 30), 30).unwrap(), None);
        assert_eq!(code(up.push(part(4, 1, 2, 1), 30)), Some(ErrorCode::GroupInfoTooLarge), "one byte over");
    }

    #[test]
    fn items_split_at_the_chunk_size() {
        let sealed = vec![7u8; MAX_GROUP_INFO_CHUNK * 2 + 1];
        let items = items(9, &sealed);
        let decoded: Vec<RelayMessage> =
            items.iter().flat_map(|i| RelayMessage::decode_all(i).unwrap()).collect();
        let sizes: Vec<(u8, u8, usize)> = decoded
            .iter()
            .map(|m| match m {
                RelayMessage::GroupInfo(p) => (p.part, p.parts, p.chunk.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [(0, 3, MAX_GROUP_INFO_CHUNK), (1, 3, MAX_GROUP_INFO_CHUNK), (2, 3, 1)]);
    }
}
