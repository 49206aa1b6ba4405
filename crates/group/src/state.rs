//! The room's state as one blob for the caller to write atomically (temporary file, fsync,
//! rename, mode 0600): our phase, then mls-rs's `write_to_storage` output. It holds the
//! current epoch only; the previous epoch's secrets are not in it.
//!
//! ```text
//! version: u8 = 1 | phase: u8 (0 member, 1 entering, 2 gone) | entering_epoch: u64
//! | entering_commit: 32 (SHA-256 of the entry commit) | mls_state: rest
//! ```

use chatroom_crypto::{Identity, RoomPsk};
use zeroize::Zeroizing;

use crate::client;
use crate::error::GroupError;
use crate::ids::RoomRef;
use crate::room::{Phase, Room};
use crate::storage::BlobStorage;

const STATE_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 8 + 32;

impl Room {
    /// The whole state, to persist atomically after each processed log entry (with the log
    /// cursor) and after each commit this client builds.
    pub fn export_state(&mut self) -> Result<Zeroizing<Vec<u8>>, GroupError> {
        self.group.write_to_storage()?;
        let mls = self.handles.storage.take().map_err(|_| GroupError::State("storage lock poisoned"))?;
        let mls = mls.ok_or(GroupError::State("mls-rs wrote no state"))?;
        let (tag, epoch, commit) = match self.phase {
            Phase::Member => (0u8, 0u64, [0u8; 32]),
            Phase::Entering { epoch, commit } => (1, epoch, commit),
            Phase::Gone => (2, 0, [0; 32]),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + mls.len()));
        out.extend_from_slice(&[STATE_VERSION, tag]);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&commit);
        out.extend_from_slice(&mls);
        Ok(out)
    }

    /// Rebuilds a room from `export_state`'s blob, with the same identity and password PSK.
    pub fn load_state(
        identity: &Identity,
        room: RoomRef,
        psk: &RoomPsk,
        blob: &[u8],
    ) -> Result<Self, GroupError> {
        let (header, mls) = blob.split_at_checked(HEADER_LEN).ok_or(GroupError::State("too short"))?;
        if header[0] != STATE_VERSION {
            return Err(GroupError::State("unknown version"));
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&header[2..10]);
        let mut commit = [0u8; 32];
        commit.copy_from_slice(&header[10..42]);
        let phase = match header[1] {
            0 => Phase::Member,
            1 => Phase::Entering { epoch: u64::from_be_bytes(epoch), commit },
            2 => Phase::Gone,
            _ => return Err(GroupError::State("unknown phase")),
        };
        let storage = BlobStorage::with_state(Zeroizing::new(mls.to_vec()));
        let (client, handles) = client::build(identity, &room, psk, storage);
        let group = client.load_group(&room.group_id())?;
        if group.group_id() != room.group_id().as_slice() {
            return Err(GroupError::State("it belongs to another room or relay"));
        }
        // The state's own leaf must be this identity's: another identity's state (a shared
        // data directory) would otherwise hand over its secrets.
        if group.current_member_signing_identity()?.signature_key.as_bytes() != identity.public().0 {
            return Err(GroupError::State("it belongs to another identity"));
        }
        // The copy in storage is only for loading; the blob is the caller's.
        drop(handles.storage.take());
        Ok(Room { room, me: identity.public(), group, handles, phase })
    }
}
