//! The accept loop and shutdown, in the shape of mini-redis's `server.rs`: a `Listener` that
//! takes a semaphore permit per connection and backs off on accept errors, a `Handler` task
//! per connection, and a broadcast that tells every handler to say goodbye.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatroom_crypto::{load_or_create_static, KeyFileError, StaticKeypair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tracing::{info, warn};

use crate::config::Config;
use crate::handler::{Handler, Shared};
use crate::hub::{LocalRooms, RoomService};
use crate::limits::{address_key, FailureTracker, SendRate, Unauthenticated};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

/// Longest pause between two failed accepts (e.g. while out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The static key file could not be read or created.
    #[error("relay key: {0}")]
    Key(#[from] KeyFileError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database exists but the key it was used with does not.
    #[error(
        "the database {db} exists but the relay key {key} does not. A new key would change the \
         fingerprint and break every room in it (members would be told \"wrong room password\"). \
         Restore {key} from your backup; or, to start over with a new key and no rooms, move the \
         database aside: mv {db} {db}.old"
    )]
    KeyLost {
        /// The missing key file.
        key: String,
        /// The database.
        db: String,
    },
}

/// Refuses to create a relay key beside an existing database, which holds rooms bound to the
/// key that was lost.
pub fn check_key_not_lost(config: &Config) -> Result<(), RelayError> {
    let (key, db) = (config.key_path(), config.db_path());
    if db.exists() && !key.exists() {
        return Err(RelayError::KeyLost { key: key.display().to_string(), db: db.display().to_string() });
    }
    Ok(())
}

/// An opened relay: its static key loaded (or created) and its database open.
#[derive(Debug)]
pub struct Relay {
    config: Config,
    static_key: StaticKeypair,
    key_created: bool,
    store: Store,
}

impl Relay {
    /// Loads or creates the static key (mode 0600) and opens the database in
    /// `config.data_dir`. A database without its key is refused (`KeyLost`); the key is made
    /// before the database, so no crash can leave a database without a key.
    pub fn open(config: Config) -> Result<Self, RelayError> {
        check_key_not_lost(&config)?;
        let (static_key, key_created) = load_or_create_static(&config.key_path())?;
        let store = Store::open(&config.db_path(), config.synchronous)?;
        Ok(Self { config, static_key, key_created, store })
    }

    /// The relay's static public key: members pin it.
    pub fn public_key(&self) -> &[u8; 32] {
        self.static_key.public()
    }

    /// The fingerprint: the static public key in lower-case hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.static_key.public())
    }

    /// Whether `open` created a new static key.
    pub fn key_created(&self) -> bool {
        self.key_created
    }

    /// Serves connections from `listener` until `shutdown` completes, then says goodbye to
    /// every member, flushes the database and returns.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future) -> Result<(), RelayError> {
        let Relay { config, static_key, store, .. } = self;
        let hub = LocalRooms::new(store.handle(), config.history);
        let shared = Arc::new(Shared {
            hub,
            ip_failures: FailureTracker::new(
                config.ip_failures_slow,
                config.ip_failures_lockout,
                config.failure_window,
            ),
            room_failures: FailureTracker::new(
                config.room_failures_slow,
                config.room_failures_lockout,
                config.failure_window,
            ),
            unauthenticated: Unauthenticated::new(config.max_unauthenticated_per_ip),
            send_rate: SendRate::new(config.rate_burst, config.rate_per_sec),
            room_creations: FailureTracker::new(
                config.room_creations_per_ip,
                config.room_creations_per_ip,
                config.failure_window,
            ),
            static_key,
            config,
        });
        let grace = shared.config.shutdown_grace;
        let (notify_shutdown, _) = broadcast::channel(1);
        let (done_tx, mut done_rx) = mpsc::channel(1);
        let mut server = Listener {
            listener,
            limit: Arc::new(Semaphore::new(shared.config.max_connections)),
            shared,
            notify_shutdown,
            done_tx,
            next_id: AtomicU64::new(1),
            warned_full: Throttle::default(),
            warned_unauthenticated: Throttle::default(),
        };
        tokio::select! {
            _ = server.run() => {}
            _ = shutdown => info!("shutting down"),
        }
        let Listener { notify_shutdown, done_tx, listener, .. } = server;
        drop(listener);
        drop(notify_shutdown);
        drop(done_tx);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            warn!("connections still open after the shutdown grace period; closing storage anyway");
        }
        store.handle().flush().await;
        store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// The fingerprint of a relay key: 64 lower-case hex digits.
pub fn fingerprint(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the relay in `config.data_dir` and serves `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> Result<(), RelayError> {
    Relay::open(config)?.run(listener, shutdown).await
}

struct Listener<H> {
    listener: TcpListener,
    shared: Arc<Shared<H>>,
    limit: Arc<Semaphore>,
    notify_shutdown: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
    next_id: AtomicU64,
    warned_full: Throttle,
    warned_unauthenticated: Throttle,
}

/// Lets a repeated warning through at most once a minute, so a flood cannot flood the log.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<tokio::time::Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(60)) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

impl<H: RoomService> Listener<H> {
    async fn run(&mut self) {
        loop {
            if self.limit.available_permits() == 0 && self.warned_full.ready() {
                warn!(
                    max = self.shared.config.max_connections,
                    "connection limit reached; new connections wait until one ends"
                );
            }
            // The semaphore is never closed.
            let Ok(permit) = self.limit.clone().acquire_owned().await else { return };
            let (socket, peer) = self.accept().await;
            let Some(slot) = self.shared.unauthenticated.acquire(address_key(peer.ip())) else {
                if self.warned_unauthenticated.ready() {
                    warn!(%peer, "too many unauthenticated connections from this address; closing new ones");
                }
                continue;
            };
            let handler = Handler {
                shared: self.shared.clone(),
                peer,
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                shutdown: Shutdown::new(self.notify_shutdown.subscribe()),
                _done: self.done_tx.clone(),
                _permit: permit,
            };
            tokio::spawn(handler.run(socket, slot));
        }
    }

    async fn accept(&mut self) -> (TcpStream, std::net::SocketAddr) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}
