//! mls-rs's `GroupStateStorage` as one blob in memory: `Group::write_to_storage` puts the whole
//! state here and the caller takes it out to persist atomically. No prior epoch is ever stored:
//! mls-rs is built without `prior_epoch`, and a write carrying epoch records is refused.

use std::sync::{Arc, Mutex};

use mls_rs::error::IntoAnyError;
use mls_rs::GroupStateStorage;
use mls_rs_core::group::{EpochRecord, GroupState};
use zeroize::Zeroizing;

/// The latest written state of the one group a client holds.
#[derive(Clone, Default)]
pub(crate) struct BlobStorage(Arc<Mutex<Option<Zeroizing<Vec<u8>>>>>);

impl std::fmt::Debug for BlobStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobStorage")
    }
}

/// The storage refused a write or its lock was poisoned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("the group state lock was poisoned")]
    Poisoned,
    #[error("a prior epoch was offered for storage, which this build never keeps")]
    PriorEpoch,
}

impl IntoAnyError for StorageError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

impl BlobStorage {
    /// A storage holding a previously saved state, for `Client::load_group`.
    pub(crate) fn with_state(state: Zeroizing<Vec<u8>>) -> Self {
        Self(Arc::new(Mutex::new(Some(state))))
    }

    /// The state written last, if any.
    pub(crate) fn take(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        Ok(self.0.lock().map_err(|_| StorageError::Poisoned)?.take())
    }
}

impl GroupStateStorage for BlobStorage {
    type Error = StorageError;

    fn state(&self, _group_id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        Ok(self.0.lock().map_err(|_| StorageError::Poisoned)?.clone())
    }

    fn epoch(&self, _group_id: &[u8], _epoch: u64) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        Ok(None)
    }

    fn write(
        &mut self,
        state: GroupState,
        inserts: Vec<EpochRecord>,
        updates: Vec<EpochRecord>,
    ) -> Result<(), StorageError> {
        if !inserts.is_empty() || !updates.is_empty() {
            return Err(StorageError::PriorEpoch);
        }
        *self.0.lock().map_err(|_| StorageError::Poisoned)? = Some(state.data);
        Ok(())
    }

    fn max_epoch_id(&self, _group_id: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }
}
