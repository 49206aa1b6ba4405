//! Room keys, derived once per (relay key, room, password) and shared across reconnects and,
//! for a load generator, across many sessions. Argon2id runs on a blocking thread, never on
//! the async runtime, and reports progress while it runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatroom_crypto::{derive_room_keys, KdfError, KdfParams, RoomKeys, RoomName, Zeroizing};

use super::event::{Callbacks, Event, KdfProgress};
use crate::error::SessionError;

/// How often progress is reported while deriving.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The room password and the keys derived from it. The password is wiped as soon as the keys
/// are derived: a session is bound to one relay key (its pin), so nothing needs it after that.
pub struct RoomKeyCache {
    password: Mutex<Option<Zeroizing<Vec<u8>>>>,
    room: RoomName,
    params: KdfParams,
    cached: Mutex<Option<([u8; 32], Arc<RoomKeys>)>>,
    /// Held while deriving, so sessions sharing this cache derive once, not once each.
    deriving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RoomKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKeyCache")
            .field("room", &self.room)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl RoomKeyCache {
    /// A cache for `room` with `password`; parameters are validated.
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
            deriving: tokio::sync::Mutex::new(()),
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> KdfParams {
        self.params
    }

    /// Whether the password is still held (it is wiped once keys are derived).
    pub fn holds_password(&self) -> bool {
        self.password.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Whether keys were derived for some relay key.
    pub fn has_any(&self) -> bool {
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The keys if already derived for `relay_key`.
    pub fn cached(&self, relay_key: &[u8; 32]) -> Option<Arc<RoomKeys>> {
        let guard = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|(k, _)| k == relay_key).map(|(_, keys)| keys.clone())
    }

    /// The keys for `relay_key`, deriving them on a blocking thread if needed.
    pub async fn get(
        &self,
        relay_key: &[u8; 32],
        callbacks: &dyn Callbacks,
    ) -> Result<Arc<RoomKeys>, SessionError> {
        if let Some(keys) = self.cached(relay_key) {
            return Ok(keys);
        }
        let _deriving = self.deriving.lock().await;
        if let Some(keys) = self.cached(relay_key) {
            return Ok(keys);
        }
        let password = held_password(&self.password)?;
        let (room, params, key) = (self.room.clone(), self.params, *relay_key);
        let keys = Arc::new(
            derive_with_progress(params, callbacks, move || derive_room_keys(&password, &key, &room, params))
                .await?,
        );
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((*relay_key, keys.clone()));
        // Nothing needs the password any more: drop it, which overwrites it with zeros.
        self.password.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(keys)
    }
}

/// The password still held, or the error saying it was wiped once keys were derived for another
/// relay key.
pub(crate) fn held_password(
    password: &Mutex<Option<Zeroizing<Vec<u8>>>>,
) -> Result<Zeroizing<Vec<u8>>, SessionError> {
    password.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| {
        SessionError::Kdf(KdfError::Argon2(
            "the room password was wiped after the keys were derived for another relay key; start \
             chatroom again to join through this relay"
                .into(),
        ))
    })
}

/// Runs `derive` (Argon2id and what follows it) on a blocking thread, never on the runtime,
/// reporting its start, progress every `PROGRESS_INTERVAL` and end to `callbacks`.
pub(crate) async fn derive_with_progress<T: Send + 'static>(
    params: KdfParams,
    callbacks: &dyn Callbacks,
    derive: impl FnOnce() -> Result<T, KdfError> + Send + 'static,
) -> Result<T, SessionError> {
    callbacks.event(Event::KeyDerivation(KdfProgress::Started(params)));
    let started = Instant::now();
    let mut job = tokio::task::spawn_blocking(derive);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.tick().await;
    let derived = loop {
        tokio::select! {
            done = &mut job => break done.map_err(|e| KdfError::Argon2(e.to_string()))??,
            _ = ticker.tick() => {
                callbacks.event(Event::KeyDerivation(KdfProgress::Running(started.elapsed())));
            }
        }
    };
    callbacks.event(Event::KeyDerivation(KdfProgress::Done(started.elapsed())));
    Ok(derived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_sessions_derive_once_and_report_progress() {
        let cache = Arc::new(
            RoomKeyCache::new(
                Zeroizing::new(b"pw".to_vec()),
                RoomName::new("r").unwrap(),
                KdfParams::DEFAULT,
            )
            .unwrap(),
        );
        let started = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (s, d) = (started.clone(), done.clone());
        let callbacks: Arc<dyn Callbacks> = Arc::new(move |e: Event| match e {
            Event::KeyDerivation(KdfProgress::Started(_)) => {
                s.fetch_add(1, Ordering::SeqCst);
            }
            Event::KeyDerivation(KdfProgress::Done(_)) => {
                d.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        });
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let (cache, callbacks) = (cache.clone(), callbacks.clone());
                tokio::spawn(async move {
                    cache.get(&[5; 32], &*callbacks).await.map(|k| k.safety_code().clone())
                })
            })
            .collect();
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap().unwrap());
        }
        assert!(codes.windows(2).all(|w| w[0] == w[1]));
        assert_eq!((started.load(Ordering::SeqCst), done.load(Ordering::SeqCst)), (1, 1));
        assert!(cache.cached(&[5; 32]).is_some());
        assert!(cache.cached(&[6; 32]).is_none(), "keys are bound to the relay key");
        assert!(!cache.holds_password(), "the password is wiped once the keys are derived");
        assert!(cache.get(&[6; 32], &*callbacks).await.is_err(), "and cannot be used again");
    }

    #[test]
    fn weak_parameters_are_refused() {
        let weak = KdfParams { m_kib: 1024, t: 1, p: 1 };
        assert!(RoomKeyCache::new(Zeroizing::new(b"pw".to_vec()), RoomName::new("r").unwrap(), weak).is_err());
    }
}
