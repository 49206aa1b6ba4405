//! The room's sealed GroupInfo slot of protocol version 2 (docs/PROTOCOL.md section 22.2), on
//! the connection's side: assembling one upload from its parts, and splitting the stored object
//! into `GroupInfo` items. The bytes are opaque: the relay checks sizes and order only.

use std::sync::Arc;

use bytes::Bytes;
use chatroom_crypto::{ErrorCode, GroupInfoPart, RelayMessage, MAX_GROUP_INFO_CHUNK};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::outbox::encode;
use crate::rooms::Refusal;

/// How many largest GroupInfo objects' worth of uploads all connections together may hold
/// in memory: one upload per connection, times thousands of connections, would otherwise
/// reach gigabytes.
pub(crate) const UPLOAD_BUDGET_OBJECTS: usize = 16;

/// The bytes of GroupInfo uploads in progress on all connections, bounded relay-wide; a part
/// that does not fit is refused at once (the client uploads again later), never waited for.
#[derive(Debug, Clone)]
pub(crate) struct UploadBudget(Arc<Semaphore>);

impl UploadBudget {
    /// Room for `UPLOAD_BUDGET_OBJECTS` uploads of `max_group_info_bytes` each.
    pub(crate) fn new(max_group_info_bytes: usize) -> Self {
        let bytes = max_group_info_bytes.saturating_mul(UPLOAD_BUDGET_OBJECTS).min(Semaphore::MAX_PERMITS);
        Self(Arc::new(Semaphore::new(bytes)))
    }

    fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        self.0.clone().try_acquire_many_owned(bytes).ok()
    }
}

/// A completed upload: the room's sealed GroupInfo and the budget it holds until stored.
pub(crate) struct Complete {
    pub(crate) after_seq: u64,
    pub(crate) sealed: Vec<u8>,
    /// Released when the completed upload is dropped, after it was stored.
    pub(crate) held: OwnedSemaphorePermit,
}

/// One upload in progress on a connection: parts must come in order, 0 to `parts - 1`, all
/// with the same `after_seq` and `parts`; the total is bounded by the relay's limit, and the
/// bytes held by the relay-wide `UploadBudget`.
#[derive(Debug, Default)]
pub(crate) struct Upload {
    current: Option<InProgress>,
}

/// The parts received so far of one upload.
#[derive(Debug)]
struct InProgress {
    after_seq: u64,
    parts: u8,
    /// The part expected next.
    next: u8,
    bytes: Vec<u8>,
    /// The budget the bytes hold; `None` before the first part.
    held: Option<OwnedSemaphorePermit>,
}

impl Upload {
    /// Adds a part; returns the whole object once its last part arrived. A refused part
    /// drops the upload in progress.
    pub(crate) fn push(
        &mut self,
        part: GroupInfoPart,
        max_bytes: usize,
        budget: &UploadBudget,
    ) -> Result<Option<Complete>, Refusal> {
        let GroupInfoPart { after_seq, part, parts, chunk } = part;
        let mut upload = match self.current.take() {
            None if part == 0 => InProgress { after_seq, parts, next: 0, bytes: Vec::new(), held: None },
            Some(up) if (up.after_seq, up.parts, up.next) == (after_seq, parts, part) => up,
            _ => {
                return Err(Refusal::new(
                    ErrorCode::GroupInfoTooLarge,
                    format!(
                    "group information part {part} of {parts} came out of order; upload it again from part 0"
                ),
                ))
            }
        };
        if upload.bytes.len() + chunk.len() > max_bytes {
            return Err(Refusal::new(
                ErrorCode::GroupInfoTooLarge,
                format!("the group information is larger than this relay's limit of {max_bytes} bytes"),
            ));
        }
        let Some(permit) = budget.take(chunk.len()) else {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                "the relay is taking in too much group information at once; upload it again from part 0 in a few seconds",
            ));
        };
        match &mut upload.held {
            Some(held) => held.merge(permit),
            held => *held = Some(permit),
        }
        upload.bytes.extend_from_slice(&chunk);
        upload.next += 1;
        if upload.next == parts {
            let InProgress { bytes: sealed, held, .. } = upload;
            // Every accepted part took a permit, and a complete upload has at least one part.
            return match held {
                Some(held) => Ok(Some(Complete { after_seq, sealed, held })),
                None => Err(Refusal::new(
                    ErrorCode::Internal,
                    "the relay lost track of this upload; upload it again",
                )),
            };
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

    /// The upload's outcome without the budget it holds.
    fn done(r: Result<Option<Complete>, Refusal>) -> Option<(u64, Vec<u8>)> {
        r.unwrap().map(|c| (c.after_seq, c.sealed))
    }

    #[test]
    fn parts_assemble_in_order_within_the_limit() {
        let (mut up, budget) = (Upload::default(), UploadBudget::new(30));
        assert_eq!(done(up.push(part(4, 0, 2, 10), 30, &budget)), None);
        let (seq, bytes) = done(up.push(part(4, 1, 2, 20), 30, &budget)).unwrap();
        assert_eq!((seq, bytes.len(), bytes[0], bytes[29]), (4, 30, 0, 1));
        // A new upload starts afresh.
        assert_eq!(done(up.push(part(5, 0, 1, 1), 30, &budget)), Some((5, vec![0])));
    }

    #[test]
    fn out_of_order_or_oversized_parts_are_refused_and_drop_the_upload() {
        let (mut up, budget) = (Upload::default(), UploadBudget::new(30));
        let code = |r: Result<_, Refusal>| r.err().map(|e| e.code);
        let too_large = Some(ErrorCode::GroupInfoTooLarge);
        assert_eq!(code(up.push(part(4, 1, 2, 1), 30, &budget)), too_large, "starts mid-way");
        assert_eq!(done(up.push(part(4, 0, 3, 10), 30, &budget)), None);
        assert_eq!(code(up.push(part(5, 1, 3, 10), 30, &budget)), too_large, "another seq");
        assert_eq!(code(up.push(part(4, 1, 3, 10), 30, &budget)), too_large, "upload dropped");
        assert_eq!(done(up.push(part(4, 0, 2, 30), 30, &budget)), None);
        assert_eq!(code(up.push(part(4, 1, 2, 1), 30, &budget)), too_large, "one byte over");
        // Refused uploads gave their bytes back: the whole budget is free again.
        assert_eq!(budget.0.available_permits(), 30 * UPLOAD_BUDGET_OBJECTS);
    }

    #[test]
    fn uploads_on_all_connections_together_stay_within_the_budget() {
        let budget = UploadBudget::new(30);
        // Every connection holds a half-finished upload of the largest size.
        let mut held: Vec<Upload> = (0..UPLOAD_BUDGET_OBJECTS).map(|_| Upload::default()).collect();
        for up in &mut held {
            assert_eq!(done(up.push(part(1, 0, 2, 29), 30, &budget)), None);
        }
        let mut late = Upload::default();
        let refused = late.push(part(1, 0, 1, 30), 30, &budget).err().map(|e| e.code);
        assert_eq!(refused, Some(ErrorCode::RateLimited), "no room left relay-wide");
        // A connection that ends gives its bytes back; a completed upload holds its bytes
        // until it was stored (dropped).
        held.pop();
        let complete = late.push(part(1, 0, 1, 29), 30, &budget).unwrap().unwrap();
        let mut next = Upload::default();
        assert!(next.push(part(1, 0, 1, 17), 30, &budget).is_err(), "the completed upload still holds");
        drop(complete);
        assert_eq!(done(next.push(part(1, 0, 1, 17), 30, &budget)), Some((1, vec![0; 17])));
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
