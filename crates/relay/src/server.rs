//! The accept loop and shutdown, in the shape of mini-redis's `server.rs`: a `Listener` that
//! takes a semaphore permit per connection and backs off on accept errors, a `Handler` task
//! per connection, and a broadcast that tells every handler to say goodbye.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatroom_crypto::{load_or_create_static, KeyFileError, StaticKeypair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::abuse::{AbuseLimits, LocalLimits};
use crate::config::Config;
use crate::handler::{Handler, Shared};
use crate::limits::{address_key, wide_key, AddressCount, AddressSlot, LogBudget, SendRate};
use crate::metrics::Gauges;
use crate::rooms::rules::RuleLimits;
use crate::rooms::{ConnectionIds, HistoryLimit, LocalRooms, RoomAdmin, RoomLimits, RoomService};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, StoreHandle};

/// Connections beyond `max_connections` that are still served, only to be told
/// `ServerFull` after their handshake; any further one is closed at once.
const SERVER_FULL_SLOTS: usize = 64;

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

/// An opened relay: its static key loaded (or created), its database open, and its rooms
/// (`LocalRooms` over that database, unless `with_rooms` put another backend in their place).
#[derive(Debug)]
pub struct Relay<R = LocalRooms> {
    config: Config,
    static_key: StaticKeypair,
    key_created: bool,
    store: Store,
    metrics: Option<TcpListener>,
    rooms: R,
    limits: Box<dyn AbuseLimits>,
}

/// The room limits `config` sets.
pub fn room_limits(config: &Config) -> RoomLimits {
    RoomLimits {
        history: HistoryLimit { count: config.history, bytes: config.history_bytes },
        rules: RuleLimits {
            max_members: config.max_room_members,
            headroom_percent: config.headroom_percent,
            max_nicknames: config.max_room_nicknames,
        },
        max_rooms: config.max_rooms,
    }
}

impl Relay {
    /// Loads or creates the static key (mode 0600) and opens the database in
    /// `config.data_dir`. A database without its key is refused (`KeyLost`); the key is made
    /// before the database, so no crash can leave a database without a key.
    pub fn open(config: Config) -> Result<Self, RelayError> {
        check_key_not_lost(&config)?;
        let (static_key, key_created) = load_or_create_static(&config.key_path())?;
        let max_bytes = u64::try_from(config.max_stored_bytes).unwrap_or(u64::MAX);
        let store = Store::open_with_quota(&config.db_path(), config.synchronous, max_bytes)?;
        let rooms = LocalRooms::new(store.handle(), room_limits(&config), store.rooms());
        let limits = Box::new(LocalLimits::new(&config));
        Ok(Self { config, static_key, key_created, store, metrics: None, rooms, limits })
    }
}

impl<R> Relay<R> {
    /// Serves rooms from another backend in place of `LocalRooms` (the database stays open
    /// for the admin socket's backups and the metrics).
    pub fn with_rooms<S: RoomAdmin>(self, rooms: S) -> Relay<S> {
        self.map_rooms(|_| rooms)
    }

    /// Wraps or replaces the room backend with what `f` makes of it.
    pub fn map_rooms<S: RoomAdmin>(self, f: impl FnOnce(R) -> S) -> Relay<S> {
        let Relay { config, static_key, key_created, store, metrics, rooms, limits } = self;
        Relay { config, static_key, key_created, store, metrics, rooms: f(rooms), limits }
    }

    /// Keeps the shared abuse limits (failed joins, room creations, send rates) in `limits`
    /// instead of this process's memory.
    pub fn with_limits(mut self, limits: impl AbuseLimits) -> Self {
        self.limits = Box::new(limits);
        self
    }

    /// The relay's static public key: members pin it.
    pub fn public_key(&self) -> &[u8; 32] {
        self.static_key.public()
    }

    /// The fingerprint: the static public key in lower-case hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.static_key.public())
    }

    /// Serves the metrics (`GET /metrics`, OpenMetrics text) on `listener` while running.
    pub fn with_metrics(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(listener);
        self
    }

    /// Whether `open` created a new static key.
    pub fn key_created(&self) -> bool {
        self.key_created
    }
}

impl<R: RoomAdmin> Relay<R> {
    /// Serves connections from `listener` until `shutdown` completes, then says goodbye to
    /// every member, flushes the database and returns.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future) -> Result<(), RelayError> {
        let Relay { config, static_key, store, metrics, rooms, limits, .. } = self;
        let shared = Arc::new(Shared {
            hub: rooms,
            limits,
            unauthenticated: AddressCount::new(config.max_unauthenticated_per_ip),
            connections: AddressCount::new(config.max_connections_per_ip),
            connections_wide: AddressCount::new(config.max_connections_per_48),
            handshake_rate: SendRate::new(config.handshake_burst, config.handshakes_per_sec),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            uploads: crate::group_info::UploadBudget::new(config.max_group_info_bytes),
            refusal_log: LogBudget::new(),
            rate_log: LogBudget::new(),
            ended_log: LogBudget::new(),
            static_key,
            config,
        });
        let admin = crate::admin_socket::start(&shared, store.handle());
        let observers = observe(&shared, store.handle(), metrics);
        let grace = shared.config.shutdown_grace;
        let sweeper = tokio::spawn(sweep(shared.clone()));
        let (notify_shutdown, _) = broadcast::channel(1);
        let (done_tx, mut done_rx) = mpsc::channel(1);
        let nodelay = Nodelay::for_listener(&listener);
        let mut server = Listener {
            listener,
            overflow: Arc::new(Semaphore::new(SERVER_FULL_SLOTS)),
            shared,
            notify_shutdown,
            done_tx,
            ids: ConnectionIds::random(),
            warned_full: Throttle::default(),
            warned_unauthenticated: Throttle::default(),
            warned_rate: Throttle::default(),
            nodelay,
        };
        tokio::select! {
            _ = server.run() => {}
            _ = shutdown => info!("shutting down"),
        }
        sweeper.abort();
        let Listener { notify_shutdown, done_tx, listener, .. } = server;
        drop(listener);
        drop(notify_shutdown);
        drop(done_tx);
        admin.stop();
        observers.into_iter().for_each(|task| task.abort());
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            warn!("connections still open after the shutdown grace period; closing storage anyway");
        }
        store.handle().flush().await;
        store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Starts the metrics endpoint (if given a listener) and the periodic statistics line.
fn observe<R: RoomService>(
    shared: &Arc<Shared<R>>,
    store: StoreHandle,
    metrics: Option<TcpListener>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(listener) = metrics {
        let (shared, store) = (shared.clone(), store.clone());
        let read = move || {
            let (shared, store) = (shared.clone(), store.clone());
            async move { gauges(&shared.hub, &store).await }
        };
        tasks.push(tokio::spawn(crate::metrics::serve(listener, read)));
    }
    let interval = shared.config.stats_interval;
    if !interval.is_zero() {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tick.tick().await;
                crate::metrics::log_stats(&gauges(&shared.hub, &store).await);
            }
        }));
    }
    tasks
}

/// What the metrics' gauges show: the rooms' census, and what the database holds.
async fn gauges<R: RoomService>(rooms: &R, store: &StoreHandle) -> Gauges {
    let census = rooms.census();
    let stored = store
        .exec(|conn| {
            conn.query_row(
                "SELECT (SELECT count(*) FROM rooms), count(*), coalesce(sum(length(envelope)), 0) FROM history",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )
        })
        .await;
    let stored = match stored {
        Ok(Ok(stored)) => Some(stored),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot count rooms and history for the metrics");
            None
        }
        Err(_) => None,
    };
    Gauges { joined: census.members, rooms_loaded: census.rooms, queued_bytes: census.queued_bytes, stored }
}

/// Deletes rooms idle for `room_expiry`, checking a quarter of that often (at most hourly).
async fn sweep<H: RoomService>(shared: Arc<Shared<H>>) {
    let idle = shared.config.room_expiry;
    let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.hub.expire(idle).await;
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
    /// Slots for connections over the cap that are told `ServerFull`.
    overflow: Arc<Semaphore>,
    notify_shutdown: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
    ids: ConnectionIds,
    warned_full: Throttle,
    warned_unauthenticated: Throttle,
    warned_rate: Throttle,
    nodelay: Nodelay,
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

/// `TCP_NODELAY` on accepted sockets. Set on the listener, Linux copies it to every socket the
/// listener accepts, which saves a `setsockopt` per connection; whether it did is read once,
/// from the first accepted socket, and where it did not, each socket gets it set.
#[derive(Debug)]
struct Nodelay {
    /// `None` until the first accepted socket shows whether it came with the option.
    inherited: Option<bool>,
}

impl Nodelay {
    fn for_listener(listener: &TcpListener) -> Self {
        let set = socket2::SockRef::from(listener).set_tcp_nodelay(true).is_ok();
        Nodelay { inherited: if set { None } else { Some(false) } }
    }

    fn set(&mut self, socket: &TcpStream) {
        let inherited = *self.inherited.get_or_insert_with(|| socket.nodelay().unwrap_or(false));
        if !inherited {
            let _ = socket.set_nodelay(true);
        }
    }
}

impl<H: RoomService> Listener<H> {
    async fn run(&mut self) {
        loop {
            let (socket, peer) = self.accept().await;
            // Every check here is a lookup: a connection refused costs no key agreement.
            let Some(admitted) = self.admit(peer.ip()) else { continue };
            let (slots, slot, permit, full) = admitted;
            self.nodelay.set(&socket);
            let handler = Handler {
                _open: crate::metrics::connection(),
                shared: self.shared.clone(),
                peer,
                id: self.ids.next(),
                shutdown: Shutdown::new(self.notify_shutdown.subscribe()),
                full,
                _done: self.done_tx.clone(),
                _permit: permit,
                _slots: slots,
                unauthenticated: Some(slot),
            };
            // Spawned as it is: an `async` block awaiting it would hold it twice over (its
            // capture and the awaited copy, rust-lang/rust#62958), doubling every idle
            // member's task.
            tokio::spawn(handler.run(socket));
        }
    }

    /// The per-address checks of a new connection, then its place under the connection cap
    /// (or, over it, one of the slots that answer `ServerFull`); `None` closes it at once.
    /// Warnings are written at most once a minute per kind, however long a flood lasts.
    #[allow(clippy::type_complexity)]
    fn admit(
        &mut self,
        ip: std::net::IpAddr,
    ) -> Option<((AddressSlot, Option<AddressSlot>), AddressSlot, OwnedSemaphorePermit, bool)> {
        let shared = &self.shared;
        let key = address_key(ip);
        if !shared.handshake_rate.try_take(&key) {
            if self.warned_rate.ready() {
                warn!(%ip, "new connections from this address over --handshakes-per-sec; closing them");
            }
            return None;
        }
        let wide = match wide_key(ip) {
            Some(wide) => Some(shared.connections_wide.acquire(wide)?),
            None => None,
        };
        let Some(narrow) = shared.connections.acquire(key) else {
            if self.warned_unauthenticated.ready() {
                warn!(%ip, "too many connections from this address; closing new ones");
            }
            return None;
        };
        let Some(slot) = shared.unauthenticated.acquire(key) else {
            if self.warned_unauthenticated.ready() {
                warn!(%ip, "too many unauthenticated connections from this address; closing new ones");
            }
            return None;
        };
        let (permit, full) = match shared.slots.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => {
                if self.warned_full.ready() {
                    warn!(
                        max = shared.config.max_connections,
                        "connection limit reached; new connections are told the relay is full"
                    );
                }
                (self.overflow.clone().try_acquire_owned().ok()?, true)
            }
        };
        Some(((narrow, wide), slot, permit, full))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn accepted(listener: &TcpListener, nodelay: &mut Nodelay) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        nodelay.set(&socket);
        (client, socket)
    }

    #[tokio::test]
    async fn every_accepted_socket_has_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut nodelay = Nodelay::for_listener(&listener);
        let (_c1, first) = accepted(&listener, &mut nodelay).await;
        let (_c2, second) = accepted(&listener, &mut nodelay).await;
        assert!(first.nodelay().unwrap());
        assert!(second.nodelay().unwrap());
        // Linux copies the listener's option: no setsockopt per connection.
        if cfg!(target_os = "linux") {
            assert_eq!(nodelay.inherited, Some(true));
        }
    }

    #[tokio::test]
    async fn sockets_get_nodelay_where_the_listener_does_not_pass_it_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut nodelay = Nodelay { inherited: None };
        let (_c1, first) = accepted(&listener, &mut nodelay).await;
        let (_c2, second) = accepted(&listener, &mut nodelay).await;
        assert_eq!(nodelay.inherited, Some(false));
        assert!(first.nodelay().unwrap());
        assert!(second.nodelay().unwrap());
    }
}
