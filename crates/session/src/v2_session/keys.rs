//! The room's v2 secrets (join secret, MLS pre-shared key, GroupInfo key, room code), derived
//! once per relay key on a blocking thread with progress reported; the password is wiped as
//! soon as they exist.

use std::sync::Mutex;

use chatroom_crypto::{derive_room_secrets_v2, KdfParams, RoomName, RoomSecretsV2, Zeroizing};

use crate::error::SessionError;
use crate::session::{derive_with_progress, held_password, Callbacks};

/// The room password until the secrets are derived, then the secrets.
pub struct V2Keys {
    password: Mutex<Option<Zeroizing<Vec<u8>>>>,
    room: RoomName,
    params: KdfParams,
    cached: Mutex<Option<([u8; 32], RoomSecretsV2)>>,
}

impl std::fmt::Debug for V2Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V2Keys").field("room", &self.room).finish_non_exhaustive()
    }
}

impl V2Keys {
    /// Keys for `room` from `password`; the parameters are validated.
    pub fn new(
        password: Zeroizing<Vec<u8>>,
        room: RoomName,
        params: KdfParams,
    ) -> Result<Self, SessionError> {
        Ok(Self {
            password: Mutex::new(Some(password)),
            room,
            params: params.validate()?,
            cached: Mutex::new(None),
        })
    }

    fn cached(&self, relay_key: &[u8; 32]) -> Option<RoomSecretsV2> {
        let guard = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|(k, _)| k == relay_key).map(|(_, s)| s.clone())
    }

    /// After a password rotation, or a state file holding a rotated generation: the current
    /// outputs, which the next join presents. The password, if still held, is dropped.
    pub(super) fn replace(&self, relay_key: &[u8; 32], secrets: RoomSecretsV2) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((*relay_key, secrets));
        self.password.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The secrets for `relay_key`, deriving them (Argon2id) off the runtime if needed.
    pub async fn get(
        &self,
        relay_key: &[u8; 32],
        callbacks: &dyn Callbacks,
    ) -> Result<RoomSecretsV2, SessionError> {
        if let Some(secrets) = self.cached(relay_key) {
            return Ok(secrets);
        }
        let password = held_password(&self.password)?;
        let (room, params, key) = (self.room.clone(), self.params, *relay_key);
        let secrets = derive_with_progress(params, callbacks, move || {
            derive_room_secrets_v2(&password, &key, &room, params)
        })
        .await?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((*relay_key, secrets.clone()));
        // Nothing needs the password any more: dropping it overwrites it with zeros.
        self.password.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(secrets)
    }
}
