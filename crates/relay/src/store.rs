//! Durable storage in SQLite: rooms, nickname bindings, bans, and the last N envelopes per
//! room.
//!
//! One thread owns the database connection. Every operation is queued to it; it takes
//! whatever is queued, and what keeps arriving less than `COALESCE_GAP` apart for up to
//! `COALESCE_MAX` (up to `MAX_BATCH` operations), and runs it as one transaction (group
//! commit), then completes each operation in queue order. A write is reported done only after
//! its transaction committed, so the relay acknowledges an envelope only once it is durable.
//!
//! Durability: the database runs in WAL mode. With `synchronous = FULL` (the default) every
//! commit fsyncs the log: a committed transaction survives a crash of the process and a power
//! loss. With `NORMAL` the log is fsynced at checkpoints only: a commit survives a crash of
//! the process (`kill -9`, a panic, the OOM killer), while a power loss or kernel crash may
//! roll back the most recent commits without corrupting the database.
//!
//! Checkpoints stay off the commit path: SQLite's automatic checkpoint (which ran inside the
//! commit that crossed 1000 pages) is off, and a second connection on its own thread
//! (`relay-checkpoint`) copies the log into the database while commits go on, once writes pause
//! for `CHECKPOINT_IDLE` or at the latest `CHECKPOINT_EVERY` after a commit. The log restarts
//! from its beginning once a checkpoint has caught up; if it never catches up (writes without
//! a pause), the writer checkpoints and restarts it itself when it passes `WAL_MAX_BYTES`, so it
//! stays bounded.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use crate::config::Synchronous;

/// `PRAGMA application_id` of a chatroom relay database ("chrm").
pub const APPLICATION_ID: i32 = 0x6368_726d;
/// `PRAGMA user_version` this relay reads and writes. Versions 1 (without `rooms.active`), 2
/// (`history` with a rowid) and 3 (without `group_info`) are upgraded in place when opened.
pub const SCHEMA_VERSION: i32 = 4;
/// Most operations committed in one transaction.
const MAX_BATCH: usize = 256;
/// A commit group stays open while operations keep arriving less than this apart...
const COALESCE_GAP: std::time::Duration = std::time::Duration::from_micros(200);
/// ...for at most this long after its first operation: what a lone operation may wait for
/// company is `COALESCE_GAP`, what the first of a steady stream may wait is this.
const COALESCE_MAX: std::time::Duration = std::time::Duration::from_millis(1);
/// A room's envelopes beyond its kept history are deleted once there are this many: one
/// `DELETE` per 64 envelopes rather than one per commit. Only storage lags: a room loaded from
/// disk is trimmed to its limits before anyone sees it.
const PRUNE_SLACK: u64 = 64;
/// The writer checkpoints the log itself and restarts it when it grows past this (the
/// checkpoint thread never caught up), and SQLite cuts the file back to it when it restarts.
const WAL_MAX_BYTES: u64 = 64 << 20;
/// The checkpoint thread runs once no commit came for this long...
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(100);
/// ...or at the latest this long after the first commit it has not yet checkpointed.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE rooms (
    name TEXT PRIMARY KEY NOT NULL,
    verifier BLOB NOT NULL,
    owner BLOB NOT NULL,
    created INTEGER NOT NULL,
    latest_seq INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE nicknames (
    room TEXT NOT NULL,
    nick TEXT NOT NULL,
    identity BLOB NOT NULL,
    PRIMARY KEY (room, nick)
) WITHOUT ROWID;
CREATE TABLE bans (
    room TEXT NOT NULL,
    identity BLOB NOT NULL,
    PRIMARY KEY (room, identity)
) WITHOUT ROWID;
CREATE TABLE history (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender BLOB NOT NULL,
    counter INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    stored INTEGER NOT NULL,
    PRIMARY KEY (room, seq),
    UNIQUE (room, sender, counter)
) WITHOUT ROWID;
CREATE TABLE senders (
    room TEXT NOT NULL,
    sender BLOB NOT NULL,
    max_counter INTEGER NOT NULL,
    PRIMARY KEY (room, sender)
) WITHOUT ROWID;
CREATE TABLE group_info (
    room TEXT PRIMARY KEY NOT NULL,
    after_seq INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
";

/// Version 3 to 4: the sealed MLS GroupInfo of protocol version 2 rooms (one per room, with
/// a rowid: the objects are large).
const UPGRADE_3_TO_4: &str = "
CREATE TABLE group_info (
    room TEXT PRIMARY KEY NOT NULL,
    after_seq INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
";

/// Version 2 to 3: `history` without its rowid (an insert updates two B-trees instead of
/// three), with `stored`, the relay-wide order in which envelopes were stored, which the
/// rowid gave before (the oldest go first when the relay is over `--max-stored-bytes`).
const UPGRADE_2_TO_3: &str = "
CREATE TABLE history_v3 (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender BLOB NOT NULL,
    counter INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    stored INTEGER NOT NULL,
    PRIMARY KEY (room, seq),
    UNIQUE (room, sender, counter)
) WITHOUT ROWID;
INSERT INTO history_v3 (room, seq, sender, counter, envelope, stored)
    SELECT room, seq, sender, counter, envelope, rowid FROM history;
DROP TABLE history;
ALTER TABLE history_v3 RENAME TO history;
";

/// Storage failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database belongs to another program.
    #[error(
        "{path} is not a chatroom-relay database (application_id {found:#x}); \
         move it away or choose another --data-dir"
    )]
    NotOurs {
        /// The database file.
        path: PathBuf,
        /// Its application id.
        found: i32,
    },
    /// The database was written by another version of the relay.
    #[error(
        "{path} has schema version {found}, but this chatroom-relay supports only version {supported}; \
         run the chatroom-relay version that wrote it, or choose another --data-dir"
    )]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i32,
        /// What this build reads.
        supported: i32,
    },
    /// Another process holds the database.
    #[error("{path} is in use by another process (is another chatroom-relay running on this --data-dir?)")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// SQLite reported an error.
    #[error("database error while {context}: {message}")]
    Sqlite {
        /// What the relay was doing.
        context: &'static str,
        /// SQLite's message.
        message: String,
    },
    /// The data directory or database file could not be created.
    #[error("cannot create {path}: {message}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The storage thread has stopped (the relay is shutting down).
    #[error("storage is closed")]
    Closed,
    /// The NATS cluster holding shared rooms refused or did not answer.
    #[error(
        "the NATS cluster failed while {context}: {message}; check that the NATS nodes run (docs/CLUSTER.md)"
    )]
    Cluster {
        /// What the relay was doing.
        context: &'static str,
        /// The cluster's answer.
        message: String,
    },
}

fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Sqlite { context, message: e.to_string() }
}

/// One stored envelope.
#[derive(Debug, Clone)]
pub(crate) struct StoredEnvelope {
    pub(crate) seq: u64,
    pub(crate) sender: [u8; 32],
    pub(crate) counter: u64,
    pub(crate) envelope: Bytes,
}

/// A room as stored.
pub(crate) struct RoomRecord {
    pub(crate) verifier: [u8; 32],
    pub(crate) owner: [u8; 32],
    pub(crate) latest_seq: u64,
    pub(crate) nicks: Vec<(String, [u8; 32])>,
    pub(crate) bans: Vec<[u8; 32]>,
    pub(crate) history: Vec<StoredEnvelope>,
    pub(crate) counters: Vec<([u8; 32], u64)>,
    /// The stored GroupInfo's `after_seq` (protocol version 2), if one is stored.
    pub(crate) group_info_seq: Option<u64>,
}

impl fmt::Debug for RoomRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomRecord")
            .field("latest_seq", &self.latest_seq)
            .field("history", &self.history.len())
            .finish_non_exhaustive()
    }
}

/// Where a room's appends are reported, on the storage thread: `appended` once per append,
/// in queue order, once the transaction holding it committed (or failed); then `group_done`
/// once per commit group that held any of the room's appends. The room keeps what it needs
/// to finish an append (its place in the queue says which one completed), so queuing one
/// costs no allocation of its own.
pub(crate) trait AppendSink: Send + Sync {
    /// The room's name, as stored.
    fn name(&self) -> &str;
    /// The room's next append completed.
    fn appended(&self, result: Result<(), StoreError>);
    /// Every append of the commit group completed.
    fn group_done(self: Arc<Self>);
}

/// An append's room, reported to even if the append is dropped unrun (the storage thread
/// stopped): then with `StoreError::Closed`.
struct Appending(Option<Arc<dyn AppendSink>>);

impl Appending {
    fn take(mut self) -> Option<Arc<dyn AppendSink>> {
        self.0.take()
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        if let Some(sink) = self.0.take() {
            sink.appended(Err(StoreError::Closed));
            sink.group_done();
        }
    }
}

enum Write {
    CreateRoom {
        room: String,
        verifier: [u8; 32],
        owner: [u8; 32],
        nick: String,
        created: i64,
    },
    BindNick {
        room: String,
        nick: String,
        identity: [u8; 32],
    },
    /// The room was used (joined) at this time.
    Touch {
        room: String,
        at: i64,
    },
    /// The room and everything stored about it go.
    DeleteRoom {
        room: String,
    },
    SetBan {
        room: String,
        identity: [u8; 32],
        banned: bool,
    },
}

/// Work run on the storage thread between two commit groups (administration, backups).
type Exec = Box<dyn FnOnce(&mut Connection) + Send>;

enum Op {
    Exec(Exec),
    Load {
        room: String,
        reply: oneshot::Sender<Result<Option<RoomRecord>, StoreError>>,
    },
    /// Names of rooms last used before `before` (seconds since the epoch), at most `limit`.
    Idle {
        before: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<String>, StoreError>>,
    },
    Write {
        write: Write,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// An envelope, keeping the last `keep` of its room and none before `drop_before`.
    Append {
        room: Appending,
        record: StoredEnvelope,
        keep: usize,
        drop_before: u64,
    },
    Flush {
        reply: oneshot::Sender<()>,
    },
    Stop,
}

/// The database and its writer thread.
#[derive(Debug)]
pub(crate) struct Store {
    handle: StoreHandle,
    thread: Mutex<Option<JoinHandle<()>>>,
    rooms: usize,
    /// Held until the store is closed: one process owns the database.
    lock: Mutex<Option<Flock<std::fs::File>>>,
}

/// The log's bound and the thread that checkpoints it, as the writer sees them.
struct Wal {
    path: PathBuf,
    max_bytes: u64,
    /// Tells the checkpoint thread a commit happened; dropped to stop it.
    nudge: SyncSender<()>,
    checkpointer: JoinHandle<()>,
}

/// A cheap handle that queues operations to the writer thread.
#[derive(Clone)]
pub(crate) struct StoreHandle {
    tx: Sender<Op>,
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreHandle")
    }
}

fn busy_or<'a>(path: &'a Path, context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Locked { path: path.to_owned() }
        }
        _ => StoreError::Sqlite { context, message: e.to_string() },
    }
}

/// Opens (creating if needed) the database at `path` and checks its schema version.
pub(crate) fn open_connection(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(sqlite("opening the database"))?;
    // Never wait for a lock here: `Store` holds the lock file, so a lock held now belongs to
    // another program, which is an error.
    conn.busy_timeout(std::time::Duration::ZERO).map_err(sqlite("opening the database"))?;
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(busy_or(path, "reading the application id"))?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(busy_or(path, "reading the schema version"))?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(busy_or(path, "reading the schema"))?;
    let fresh = app_id == 0 && version == 0 && objects == 0;
    if !fresh {
        if app_id != APPLICATION_ID {
            return Err(StoreError::NotOurs { path: path.to_owned(), found: app_id });
        }
        if !(1..=SCHEMA_VERSION).contains(&version) {
            return Err(StoreError::SchemaVersion {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(busy_or(path, "switching to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!(mode, "SQLite refused WAL mode; commits are still durable but slower");
    }
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(sqlite("setting synchronous"))?;
    // Checkpoints run on their own thread (see the module's documentation), never in a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sqlite("setting wal_autocheckpoint"))?;
    if version < SCHEMA_VERSION && !fresh {
        upgrade(&mut conn, path, version)?;
    }
    if fresh {
        let tx = conn.transaction().map_err(busy_or(path, "creating the schema"))?;
        tx.execute_batch(SCHEMA).map_err(sqlite("creating the schema"))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sqlite("creating the schema"))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite("creating the schema"))?;
        tx.commit().map_err(busy_or(path, "creating the schema"))?;
    }
    Ok(conn)
}

/// `path` with `suffix` appended to its file name (`relay.sqlite3-wal`, `relay.sqlite3.lock`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Takes the lock that makes one process the database's only user: a second relay (or an
/// offline admin command) on the same data directory fails at once instead of interleaving
/// writes. A lock file of its own, since closing any descriptor of the database file would
/// drop SQLite's locks on it. Held until the returned value is dropped.
pub(crate) fn lock_database(path: &Path) -> Result<Flock<std::fs::File>, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = sibling(path, ".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| StoreError::Io { path: lock_path.clone(), message: e.to_string() })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => StoreError::Locked { path: path.to_owned() },
        other => StoreError::Io { path: lock_path, message: other.desc().to_owned() },
    })
}

/// Opens a second connection and starts the thread that checkpoints the log with it.
fn start_checkpointer(path: &Path, synchronous: Synchronous, max_bytes: u64) -> Result<Wal, StoreError> {
    let conn = open_connection(path, synchronous)?;
    let (nudge, nudged) = mpsc::sync_channel(1);
    let checkpointer = std::thread::Builder::new()
        .name("relay-checkpoint".into())
        .spawn(move || checkpointer(conn, nudged))
        .map_err(|e| StoreError::Sqlite {
            context: "starting the checkpoint thread",
            message: e.to_string(),
        })?;
    Ok(Wal { path: sibling(path, "-wal"), max_bytes, nudge, checkpointer })
}

/// Copies the log into the database once commits pause for `CHECKPOINT_IDLE`, or at the latest
/// `CHECKPOINT_EVERY` after the first commit since the last checkpoint. A passive checkpoint
/// never holds up the writer. Ends when the writer drops its end of `nudged`.
fn checkpointer(conn: Connection, nudged: Receiver<()>) {
    let mut failing = false;
    while nudged.recv().is_ok() {
        let first = std::time::Instant::now();
        loop {
            let left = CHECKPOINT_EVERY.saturating_sub(first.elapsed());
            match nudged.recv_timeout(CHECKPOINT_IDLE.min(left)) {
                Ok(()) if !left.is_zero() => {}
                Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "checkpoint failed; the log grows until the writer restarts it");
            }
            Err(_) => {}
        }
    }
}

impl Wal {
    /// After a commit: wakes the checkpoint thread, and restarts the log here if it is past its
    /// bound (writes never paused long enough for a checkpoint to catch up).
    fn committed(&self, conn: &Connection) {
        let _ = self.nudge.try_send(());
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > self.max_bytes {
            // RESTART: the next commit writes the log from its beginning again, over blocks
            // the file already has (`journal_size_limit` then cuts the file to the bound).
            // Busy (1) while the checkpoint thread is in the middle of a checkpoint.
            match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
                Ok(0) => {}
                Ok(_) => {
                    debug!(size, "the log could not be restarted yet; trying again after the next commit")
                }
                Err(e) => {
                    warn!(error = %e, size, "restarting the log failed; trying again after the next commit")
                }
            }
        }
    }

    /// Stops the checkpoint thread.
    fn stop(self) {
        drop(self.nudge);
        let _ = self.checkpointer.join();
    }
}

/// Upgrades a database of schema `version` to `SCHEMA_VERSION` in one transaction.
fn upgrade(conn: &mut Connection, path: &Path, version: i32) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(busy_or(path, "upgrading the schema"))?;
    if version < 2 {
        // Version 2 records when each room was last used, so idle rooms can expire.
        tx.execute_batch(
            "ALTER TABLE rooms ADD COLUMN active INTEGER NOT NULL DEFAULT 0; UPDATE rooms SET active = created;",
        )
        .map_err(sqlite("upgrading the schema"))?;
    }
    if version < 3 {
        tx.execute_batch(UPGRADE_2_TO_3).map_err(sqlite("upgrading the schema"))?;
    }
    if version < 4 {
        tx.execute_batch(UPGRADE_3_TO_4).map_err(sqlite("upgrading the schema"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite("upgrading the schema"))?;
    tx.commit().map_err(busy_or(path, "upgrading the schema"))
}

impl Store {
    /// Opens the database in `data_dir`, creating the directory (0700) and schema if needed,
    /// and starts the writer thread.
    #[cfg(test)]
    pub(crate) fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        Self::open_with_quota(path, synchronous, u64::MAX)
    }

    /// `open`, keeping at most `max_bytes` of envelopes over all rooms: beyond it the oldest
    /// envelopes of the relay, whatever their room, are deleted.
    pub(crate) fn open_with_quota(
        path: &Path,
        synchronous: Synchronous,
        max_bytes: u64,
    ) -> Result<Self, StoreError> {
        Self::open_with_limits(path, synchronous, max_bytes, WAL_MAX_BYTES)
    }

    /// `open_with_quota`, restarting the log when it passes `wal_max_bytes`.
    fn open_with_limits(
        path: &Path,
        synchronous: Synchronous,
        max_bytes: u64,
        wal_max_bytes: u64,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::Io { path: dir.to_owned(), message: e.to_string() })?;
        }
        // The database holds room verifiers and history: readable by the relay's user only.
        // SQLite gives its -wal and -shm files the database file's permissions.
        let create = |path: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Io { path: path.to_owned(), message: e.to_string() })
        };
        create(path)?;
        let lock = lock_database(path)?;
        let conn = open_connection(path, synchronous)?;
        // The writer may wait for the checkpoint thread (restarting the log), never for
        // anyone else: the lock file keeps other processes out.
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sqlite("opening the database"))?;
        conn.pragma_update(None, "journal_size_limit", i64::try_from(wal_max_bytes).unwrap_or(i64::MAX))
            .map_err(sqlite("setting journal_size_limit"))?;
        let wal = start_checkpointer(path, synchronous, wal_max_bytes)?;
        let rooms: i64 = conn
            .query_row("SELECT count(*) FROM rooms", [], |r| r.get(0))
            .map_err(sqlite("counting rooms"))?;
        let (stored, last): (i64, i64) = conn
            .query_row(
                "SELECT coalesce(sum(length(envelope)), 0), coalesce(max(stored), 0) FROM history",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sqlite("measuring the history"))?;
        let budget = Budget {
            stored,
            max: i64::try_from(max_bytes).unwrap_or(i64::MAX),
            warned: None,
            order: last + 1,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relay-store".into())
            .spawn(move || writer(conn, rx, budget, wal))
            .map_err(|e| StoreError::Sqlite {
                context: "starting the storage thread",
                message: e.to_string(),
            })?;
        let rooms = usize::try_from(rooms).unwrap_or(0);
        Ok(Self {
            handle: StoreHandle { tx },
            thread: Mutex::new(Some(thread)),
            rooms,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Rooms in the database when it was opened.
    pub(crate) fn rooms(&self) -> usize {
        self.rooms
    }

    pub(crate) fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Commits everything queued, checkpoints the log into the database file, and stops the
    /// writer thread.
    pub(crate) async fn close(&self) {
        let _ = self.handle.tx.send(Op::Stop);
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

impl StoreHandle {
    fn write(&self, write: Write) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, rx) = oneshot::channel();
        // A send error drops `reply`, which the caller sees as `Closed`.
        let _ = self.tx.send(Op::Write { write, done: reply });
        rx
    }

    async fn wait(rx: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Reads a room, or `None` if it does not exist.
    pub(crate) async fn load_room(&self, room: &str) -> Result<Option<RoomRecord>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Load { room: room.to_owned(), reply }).map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    pub(crate) async fn create_room(
        &self,
        room: &str,
        verifier: [u8; 32],
        owner: [u8; 32],
        nick: &str,
    ) -> Result<(), StoreError> {
        let created = now_secs();
        Self::wait(self.write(Write::CreateRoom {
            room: room.to_owned(),
            verifier,
            owner,
            nick: nick.to_owned(),
            created,
        }))
        .await
    }

    /// Records that the room was used now; nothing waits for it.
    pub(crate) fn touch(&self, room: &str) {
        drop(self.write(Write::Touch { room: room.to_owned(), at: now_secs() }));
    }

    /// Deletes a room with its history, nicknames, bans and counters.
    pub(crate) async fn delete_room(&self, room: &str) -> Result<(), StoreError> {
        Self::wait(self.write(Write::DeleteRoom { room: room.to_owned() })).await
    }

    /// Rooms last used before `before` (seconds since the epoch), at most `limit` of them.
    pub(crate) async fn idle_rooms(&self, before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Op::Idle { before, limit, reply }).map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    pub(crate) async fn bind_nick(
        &self,
        room: &str,
        nick: &str,
        identity: [u8; 32],
    ) -> Result<(), StoreError> {
        Self::wait(self.write(Write::BindNick { room: room.to_owned(), nick: nick.to_owned(), identity }))
            .await
    }

    pub(crate) async fn set_ban(
        &self,
        room: &str,
        identity: [u8; 32],
        banned: bool,
    ) -> Result<(), StoreError> {
        Self::wait(self.write(Write::SetBan { room: room.to_owned(), identity, banned })).await
    }

    /// Queues an envelope without waiting; `room` hears of it on the storage thread, in queue
    /// order, once the transaction holding it committed. Keeps the last `keep` envelopes of
    /// the room, none before `drop_before` (what the room's byte budget let go).
    pub(crate) fn append(
        &self,
        room: Arc<dyn AppendSink>,
        record: StoredEnvelope,
        keep: usize,
        drop_before: u64,
    ) -> Result<(), StoreError> {
        let op = Op::Append { room: Appending(Some(room)), record, keep, drop_before };
        self.tx.send(op).map_err(|mpsc::SendError(op)| {
            // Not queued: the caller is answered by the error, not by the room.
            if let Op::Append { room, .. } = op {
                drop(room.take());
            }
            StoreError::Closed
        })
    }

    /// Runs `f` on the storage thread after everything queued before it is committed, outside
    /// any transaction; appends queued meanwhile wait for it.
    pub(crate) async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Exec(Box::new(move |conn| {
            let _ = reply.send(f(conn));
        }));
        self.tx.send(op).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Replaces the room's sealed GroupInfo if `after_seq` is at least the stored one's and at
    /// most the room's latest stored `seq`; returns whether it did. Runs after every envelope
    /// queued before it, so a commit a client saw delivered is already counted.
    pub(crate) async fn put_group_info(
        &self,
        room: &str,
        after_seq: u64,
        sealed: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let room = room.to_owned();
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.exec(move |conn| {
            conn.prepare_cached(
                "INSERT INTO group_info (room, after_seq, sealed) \
                 SELECT ?1, ?2, ?3 WHERE ?2 <= (SELECT latest_seq FROM rooms WHERE name = ?1) \
                 ON CONFLICT (room) DO UPDATE SET after_seq = excluded.after_seq, sealed = excluded.sealed \
                 WHERE excluded.after_seq >= group_info.after_seq",
            )
            .and_then(|mut s| s.execute(params![room, after, sealed]))
            .map(|changed| changed == 1)
            .map_err(sqlite("storing a group info"))
        })
        .await?
    }

    /// Replaces the room's join verifier.
    pub(crate) async fn set_verifier(&self, room: &str, verifier: [u8; 32]) -> Result<(), StoreError> {
        let room = room.to_owned();
        self.exec(move |conn| {
            conn.prepare_cached("UPDATE rooms SET verifier = ?2 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![room, verifier]))
                .map(drop)
                .map_err(sqlite("replacing a room's verifier"))
        })
        .await?
    }

    /// The room's sealed GroupInfo and its `after_seq`, if one is stored.
    pub(crate) async fn group_info(&self, room: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let room = room.to_owned();
        self.exec(move |conn| {
            conn.prepare_cached("SELECT after_seq, sealed FROM group_info WHERE room = ?1")
                .and_then(|mut s| {
                    s.query_row(params![room], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                        .optional()
                })
                .map(|row| row.map(|(seq, sealed)| (u64::try_from(seq).unwrap_or(0), sealed)))
                .map_err(sqlite("reading a group info"))
        })
        .await?
    }

    /// Waits until everything queued before this call is committed.
    pub(crate) async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Op::Flush { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The bytes of envelopes on disk, over all rooms, and the most the relay keeps.
pub(crate) struct Budget {
    stored: i64,
    max: i64,
    /// When the last warning about deleted envelopes was written.
    warned: Option<std::time::Instant>,
    /// `history.stored` of the next envelope: the relay-wide order of storing.
    order: i64,
}

impl Budget {
    #[cfg(test)]
    fn unlimited() -> Self {
        Self { stored: 0, max: i64::MAX, warned: None, order: 1 }
    }

    /// Deletes the oldest envelopes of the relay, whatever their room, until what the group
    /// leaves on disk fits; returns that total. Oldest by `stored`: each room's envelopes are
    /// stored in seq order, so the relay's oldest is the oldest of the rooms' first ones.
    fn enforce(&mut self, tx: &rusqlite::Transaction<'_>, appends: &GroupAppends) -> Result<i64, StoreError> {
        let mut projected = self.stored + appends.added - appends.freed;
        let mut deleted = 0usize;
        let mut progress = false;
        while projected > self.max {
            let Some((room, next)) = oldest_room(tx)? else { break };
            // The room's envelopes go until the next room's first is older.
            while projected > self.max {
                let freed = tx
                    .prepare_cached(
                        "DELETE FROM history WHERE room = ?1 AND stored < ?2 AND seq = \
                         (SELECT seq FROM history WHERE room = ?1 ORDER BY seq LIMIT 1) \
                         RETURNING length(envelope)",
                    )
                    .and_then(|mut s| {
                        s.query_map(params![room, next], |r| r.get::<_, i64>(0))?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(sqlite("deleting the oldest history"))?;
                let Some(&bytes) = freed.first() else { break };
                deleted += 1;
                projected -= bytes;
                progress = true;
            }
            if !std::mem::take(&mut progress) {
                break;
            }
        }
        let quiet = self.warned.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(60));
        if deleted > 0 && !quiet {
            self.warned = Some(std::time::Instant::now());
            warn!(
                deleted,
                max = self.max,
                "history over --max-stored-bytes: the relay's oldest envelopes were deleted"
            );
        }
        Ok(projected)
    }
}

/// The room holding the relay's oldest envelope, and when the next room's first one was
/// stored (`i64::MAX` if no other room has history).
fn oldest_room(tx: &rusqlite::Transaction<'_>) -> Result<Option<(String, i64)>, StoreError> {
    let firsts = tx
        .prepare_cached(
            "SELECT name, first FROM (SELECT name, \
             (SELECT stored FROM history WHERE room = name ORDER BY seq LIMIT 1) AS first FROM rooms) \
             WHERE first IS NOT NULL ORDER BY first LIMIT 2",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite("finding the oldest history"))?;
    let next = firsts.get(1).map_or(i64::MAX, |(_, first)| *first);
    Ok(firsts.into_iter().next().map(|(room, _)| (room, next)))
}

fn writer(mut conn: Connection, rx: Receiver<Op>, mut budget: Budget, wal: Wal) {
    let mut stop = false;
    // An `Exec` ends the commit group it would have joined and runs after it.
    let mut held = None;
    while !stop {
        let first = match held.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
        };
        if let Op::Exec(f) = first {
            f(&mut conn);
            continue;
        }
        let mut batch = vec![first];
        gather(&rx, &mut batch, &mut held, COALESCE_GAP, COALESCE_MAX);
        if let Some(at) = batch.iter().position(|op| matches!(op, Op::Stop)) {
            stop = true;
            batch.truncate(at);
        }
        run_batch(&mut conn, batch, &mut budget);
        wal.committed(&conn);
    }
    wal.stop();
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        warn!(error = %e, "final checkpoint failed; the log is replayed at the next start");
    }
    debug!("storage closed");
}

/// Gathers a commit group after its first operation: what is queued, then what keeps
/// arriving with pauses shorter than `gap`, for at most `max`. A burst of sends is read by
/// several workers over a few hundred microseconds; gathered into one group it costs one
/// commit (one fsync), where a group closed early makes the rest of the burst wait for that
/// commit and then pay one of its own. `MAX_BATCH` operations, an `Exec` (held for after the
/// group) or `Stop` end the group at once.
fn gather(
    rx: &Receiver<Op>,
    batch: &mut Vec<Op>,
    held: &mut Option<Op>,
    gap: std::time::Duration,
    max: std::time::Duration,
) {
    let until = std::time::Instant::now() + max;
    let mut seen = 0;
    loop {
        drain(rx, batch, held);
        let stopping = batch.get(seen..).is_some_and(|new| new.iter().any(|op| matches!(op, Op::Stop)));
        seen = batch.len();
        let left = until.saturating_duration_since(std::time::Instant::now());
        if held.is_some() || stopping || batch.len() >= MAX_BATCH || left.is_zero() {
            return;
        }
        match rx.recv_timeout(gap.min(left)) {
            Ok(op @ Op::Exec(_)) => {
                *held = Some(op);
                return;
            }
            Ok(op) => batch.push(op),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Moves what is queued into `batch`, up to `MAX_BATCH`; an `Exec` ends the group and is
/// held for after it.
fn drain(rx: &Receiver<Op>, batch: &mut Vec<Op>, held: &mut Option<Op>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op @ Op::Exec(_)) => {
                *held = Some(op);
                return;
            }
            Ok(op) => batch.push(op),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
        }
    }
}

enum Completion {
    Load(oneshot::Sender<Result<Option<RoomRecord>, StoreError>>, Result<Option<RoomRecord>, StoreError>),
    Idle(oneshot::Sender<Result<Vec<String>, StoreError>>, Result<Vec<String>, StoreError>),
    Write(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Append(Appending, Result<(), StoreError>),
    Flush(oneshot::Sender<()>),
}

fn run_batch(conn: &mut Connection, batch: Vec<Op>, budget: &mut Budget) {
    let mut completions = Vec::with_capacity(batch.len());
    let writes = batch.len();
    let started = std::time::Instant::now();
    let committed = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Err(e) => Err(StoreError::Sqlite { context: "starting a transaction", message: e.to_string() }),
        Ok(tx) => {
            let mut appends = GroupAppends { order: budget.order, ..GroupAppends::default() };
            let mut bookkeeping = Ok(());
            for op in batch {
                match op {
                    Op::Load { room, reply } => {
                        // A load must see the group's earlier appends.
                        bookkeeping =
                            bookkeeping.and_then(|()| in_transaction(&tx)).and_then(|()| appends.write(&tx));
                        let loaded = in_transaction(&tx).and_then(|()| load(&tx, &room));
                        completions.push(Completion::Load(reply, loaded));
                    }
                    Op::Idle { before, limit, reply } => {
                        completions.push(Completion::Idle(reply, idle_rooms(&tx, before, limit)));
                    }
                    Op::Write { write, done } => {
                        let applied = in_transaction(&tx).and_then(|()| apply(&tx, write, &mut appends));
                        completions.push(Completion::Write(done, applied))
                    }
                    Op::Append { room, record, keep, drop_before } => {
                        let applied = in_transaction(&tx).and_then(|()| {
                            let name = room.0.as_ref().map_or("", |r| r.name());
                            append(&tx, name, &record, appends.order)?;
                            appends.order += 1;
                            appends.add(name, &record, keep, drop_before);
                            Ok(())
                        });
                        completions.push(Completion::Append(room, applied))
                    }
                    Op::Flush { reply } => completions.push(Completion::Flush(reply)),
                    Op::Stop | Op::Exec(_) => {}
                }
            }
            // On error the transaction rolls back when dropped: nothing of the group is kept.
            let mut left = budget.stored;
            let committed = bookkeeping
                .and_then(|()| in_transaction(&tx))
                .and_then(|()| appends.write(&tx))
                .and_then(|()| in_transaction(&tx))
                .and_then(|()| budget.enforce(&tx, &appends))
                .and_then(|total| {
                    left = total;
                    tx.commit().map_err(sqlite("committing"))
                });
            if committed.is_ok() {
                budget.stored = left;
            }
            budget.order = appends.order;
            committed
        }
    };
    crate::metrics::committed(started.elapsed());
    if let Err(e) = &committed {
        error!(error = %e, operations = writes, "a storage transaction failed; its writes were not acknowledged");
    }
    // A commit group's deliveries reach each member's writer together.
    crate::outbox::batched(|| complete(committed, completions));
}

/// Whether the group's transaction is still open. SQLite rolls a transaction back by itself
/// after some errors (a full disk, an I/O error): a statement run after that would commit on
/// its own, stored although the group is reported failed, so nothing more is run.
fn in_transaction(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    if tx.is_autocommit() {
        return Err(StoreError::Sqlite {
            context: "storing",
            message: "the transaction was rolled back by an earlier error".into(),
        });
    }
    Ok(())
}

/// What a commit group's appends change besides the history rows: each room's latest seq, each
/// sender's highest counter, and the pruning of history beyond the kept length. Written once
/// per room and sender for the whole group rather than once per envelope (three statements
/// less per message when many arrive together).
#[derive(Default)]
struct GroupAppends {
    rooms: HashMap<String, RoomAppends>,
    /// Bytes of envelopes the group stored, and deleted (pruned histories, deleted rooms).
    added: i64,
    freed: i64,
    /// `history.stored` of the group's next envelope.
    order: i64,
}

struct RoomAppends {
    latest_seq: u64,
    keep: usize,
    drop_before: u64,
    max_counters: HashMap<[u8; 32], u64>,
}

impl GroupAppends {
    fn add(&mut self, room: &str, record: &StoredEnvelope, keep: usize, drop_before: u64) {
        if !self.rooms.contains_key(room) {
            // Once per room and group: the name is copied here, not per envelope.
            let fresh = RoomAppends { latest_seq: 0, keep, drop_before, max_counters: HashMap::new() };
            self.rooms.insert(room.to_owned(), fresh);
        }
        let Some(entry) = self.rooms.get_mut(room) else { return };
        entry.latest_seq = entry.latest_seq.max(record.seq);
        entry.keep = keep;
        entry.drop_before = entry.drop_before.max(drop_before);
        self.added += i64::try_from(record.envelope.len()).unwrap_or(i64::MAX);
        let counter = entry.max_counters.entry(record.sender).or_insert(record.counter);
        *counter = (*counter).max(record.counter);
    }

    /// Writes and forgets what has been added so far.
    fn write(&mut self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        for (room, appends) in self.rooms.drain() {
            let seq = appends.latest_seq as i64;
            tx.prepare_cached(
                "UPDATE rooms SET latest_seq = max(latest_seq, ?2), active = max(active, ?3) WHERE name = ?1",
            )
            .and_then(|mut s| s.execute(params![room, seq, now_secs()]))
            .map_err(sqlite("storing an envelope"))?;
            for (sender, counter) in appends.max_counters {
                tx.prepare_cached(
                    "INSERT INTO senders (room, sender, max_counter) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (room, sender) DO UPDATE \
                     SET max_counter = max(max_counter, excluded.max_counter)",
                )
                .and_then(|mut s| s.execute(params![room, sender, counter as i64]))
                .map_err(sqlite("storing an envelope"))?;
            }
            let last_dropped = appends
                .latest_seq
                .saturating_sub(appends.keep as u64)
                .max(appends.drop_before.saturating_sub(1));
            self.freed += prune(tx, &room, last_dropped)?;
        }
        Ok(())
    }
}

/// Deletes the room's envelopes up to `last_dropped` once there are `PRUNE_SLACK` of them;
/// returns the bytes freed.
fn prune(tx: &rusqlite::Transaction<'_>, room: &str, last_dropped: u64) -> Result<i64, StoreError> {
    if last_dropped == 0 {
        return Ok(0);
    }
    let first: Option<i64> = tx
        .prepare_cached("SELECT seq FROM history WHERE room = ?1 ORDER BY seq LIMIT 1")
        .and_then(|mut s| s.query_row(params![room], |r| r.get(0)).optional())
        .map_err(sqlite("pruning history"))?;
    let Some(first) = first.map(|f| f.max(0) as u64) else { return Ok(0) };
    if last_dropped < first || last_dropped - first + 1 < PRUNE_SLACK {
        return Ok(0);
    }
    // Summed first, then deleted: with `RETURNING`, SQLite collects every deleted row in a
    // temporary table before the first comes back, which made the delete cost almost twice as much.
    let freed = tx
        .prepare_cached(
            "SELECT coalesce(sum(length(envelope)), 0) FROM history WHERE room = ?1 AND seq <= ?2",
        )
        .and_then(|mut s| s.query_row(params![room, last_dropped as i64], |r| r.get::<_, i64>(0)))
        .map_err(sqlite("pruning history"))?;
    tx.prepare_cached("DELETE FROM history WHERE room = ?1 AND seq <= ?2")
        .and_then(|mut s| s.execute(params![room, last_dropped as i64]))
        .map_err(sqlite("pruning history"))?;
    Ok(freed)
}

fn append(
    tx: &rusqlite::Transaction<'_>,
    room: &str,
    record: &StoredEnvelope,
    order: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO history (room, seq, sender, counter, envelope, stored) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            room,
            record.seq as i64,
            record.sender,
            record.counter as i64,
            &record.envelope[..],
            order
        ])
    })
    .map(drop)
    .map_err(sqlite("storing an envelope"))
}

fn complete(committed: Result<(), StoreError>, completions: Vec<Completion>) {
    // The rooms whose appends the group held, each told once when all are reported.
    let mut rooms: Vec<Arc<dyn AppendSink>> = Vec::new();
    for completion in completions {
        match completion {
            Completion::Load(reply, result) => {
                let _ = reply.send(committed.clone().and(result));
            }
            Completion::Idle(reply, result) => {
                let _ = reply.send(committed.clone().and(result));
            }
            Completion::Write(reply, result) => {
                let _ = reply.send(committed.clone().and(result));
            }
            Completion::Append(room, result) => {
                if let Some(room) = room.take() {
                    room.appended(committed.clone().and(result));
                    if !rooms.iter().any(|r| Arc::ptr_eq(r, &room)) {
                        rooms.push(room);
                    }
                }
            }
            Completion::Flush(reply) => {
                let _ = reply.send(());
            }
        }
    }
    for room in rooms {
        room.group_done();
    }
}

fn apply(tx: &rusqlite::Transaction<'_>, write: Write, appends: &mut GroupAppends) -> Result<(), StoreError> {
    match write {
        Write::CreateRoom { room, verifier, owner, nick, created } => {
            tx.prepare_cached(
                "INSERT INTO rooms (name, verifier, owner, created, active) VALUES (?1, ?2, ?3, ?4, ?4)",
            )
            .and_then(|mut s| s.execute(params![room, verifier, owner, created]))
            .map_err(sqlite("creating a room"))?;
            tx.prepare_cached("INSERT OR REPLACE INTO nicknames (room, nick, identity) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![room, nick, owner]))
                .map_err(sqlite("binding a nickname"))?;
        }
        Write::Touch { room, at } => {
            tx.prepare_cached("UPDATE rooms SET active = max(active, ?2) WHERE name = ?1")
                .and_then(|mut s| s.execute(params![room, at]))
                .map_err(sqlite("recording a room's use"))?;
        }
        Write::DeleteRoom { room } => {
            let freed: i64 = tx
                .prepare_cached("DELETE FROM history WHERE room = ?1 RETURNING length(envelope)")
                .and_then(|mut s| s.query_map(params![room], |r| r.get::<_, i64>(0))?.sum::<Result<i64, _>>())
                .map_err(sqlite("deleting a room"))?;
            appends.freed += freed;
            for table in ["senders", "nicknames", "bans", "group_info"] {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE room = ?1"))
                    .and_then(|mut s| s.execute(params![room]))
                    .map_err(sqlite("deleting a room"))?;
            }
            tx.prepare_cached("DELETE FROM rooms WHERE name = ?1")
                .and_then(|mut s| s.execute(params![room]))
                .map_err(sqlite("deleting a room"))?;
        }
        Write::BindNick { room, nick, identity } => {
            tx.prepare_cached("INSERT OR IGNORE INTO nicknames (room, nick, identity) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![room, nick, identity]))
                .map_err(sqlite("binding a nickname"))?;
        }
        Write::SetBan { room, identity, banned } => {
            let sql = if banned {
                "INSERT OR IGNORE INTO bans (room, identity) VALUES (?1, ?2)"
            } else {
                "DELETE FROM bans WHERE room = ?1 AND identity = ?2"
            };
            tx.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![room, identity]))
                .map_err(sqlite("updating a ban"))?;
        }
    }
    Ok(())
}

fn idle_rooms(tx: &rusqlite::Transaction<'_>, before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
    tx.prepare_cached("SELECT name FROM rooms WHERE active < ?1 LIMIT ?2")
        .and_then(|mut s| {
            s.query_map(params![before, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite("finding idle rooms"))
}

/// Seconds since the epoch (0 on a clock before it).
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn load(tx: &rusqlite::Transaction<'_>, room: &str) -> Result<Option<RoomRecord>, StoreError> {
    let ctx = "loading a room";
    let row = tx
        .prepare_cached(
            "SELECT verifier, owner, latest_seq, (SELECT after_seq FROM group_info WHERE room = ?1) \
             FROM rooms WHERE name = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![room], |r| {
                let seqs = (r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?);
                Ok((r.get::<_, [u8; 32]>(0)?, r.get::<_, [u8; 32]>(1)?, seqs))
            })
            .optional()
        })
        .map_err(sqlite(ctx))?;
    let Some((verifier, owner, (latest_seq, group_info_seq))) = row else {
        return Ok(None);
    };
    let group_info_seq = group_info_seq.map(|seq| u64::try_from(seq).unwrap_or(0));
    let nicks = tx
        .prepare_cached("SELECT nick, identity FROM nicknames WHERE room = ?1")
        .and_then(|mut s| {
            s.query_map(params![room], |r| Ok((r.get::<_, String>(0)?, r.get::<_, [u8; 32]>(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite(ctx))?;
    let bans = tx
        .prepare_cached("SELECT identity FROM bans WHERE room = ?1")
        .and_then(|mut s| {
            s.query_map(params![room], |r| r.get::<_, [u8; 32]>(0))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite(ctx))?;
    let history = tx
        .prepare_cached("SELECT seq, sender, counter, envelope FROM history WHERE room = ?1 ORDER BY seq")
        .and_then(|mut s| {
            s.query_map(params![room], |r| {
                Ok(StoredEnvelope {
                    seq: r.get::<_, i64>(0)? as u64,
                    sender: r.get(1)?,
                    counter: r.get::<_, i64>(2)? as u64,
                    envelope: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite(ctx))?;
    let counters = tx
        .prepare_cached("SELECT sender, max_counter FROM senders WHERE room = ?1")
        .and_then(|mut s| {
            s.query_map(params![room], |r| Ok((r.get::<_, [u8; 32]>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite(ctx))?;
    Ok(Some(RoomRecord {
        verifier,
        owner,
        latest_seq: latest_seq as u64,
        nicks,
        bans,
        history,
        counters,
        group_info_seq,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(seq: u64, counter: u64) -> StoredEnvelope {
        StoredEnvelope { seq, sender: [7; 32], counter, envelope: Bytes::from(vec![seq as u8; 10]) }
    }

    type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

    /// A room that hands its one append's outcome to `done`.
    struct Sink {
        name: String,
        done: Mutex<Option<Done>>,
    }

    impl AppendSink for Sink {
        fn name(&self) -> &str {
            &self.name
        }
        fn appended(&self, result: Result<(), StoreError>) {
            if let Some(done) = self.done.lock().unwrap().take() {
                done(result);
            }
        }
        fn group_done(self: Arc<Self>) {}
    }

    fn sink(name: &str, done: impl FnOnce(Result<(), StoreError>) + Send + 'static) -> Arc<dyn AppendSink> {
        Arc::new(Sink { name: name.into(), done: Mutex::new(Some(Box::new(done))) })
    }

    fn queued(
        name: &str,
        record: StoredEnvelope,
        keep: usize,
    ) -> (Op, oneshot::Receiver<Result<(), StoreError>>) {
        let (tx, rx) = oneshot::channel();
        let room = Appending(Some(sink(name, move |r| drop(tx.send(r)))));
        (Op::Append { room, record, keep, drop_before: 0 }, rx)
    }

    async fn append(store: &StoreHandle, e: StoredEnvelope, keep: usize) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        store.append(sink("r", move |r| drop(tx.send(r))), e, keep, 0)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    #[tokio::test]
    async fn rooms_history_and_bans_round_trip_and_history_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path, Synchronous::Normal).unwrap();
        let h = store.handle();
        assert!(h.load_room("r").await.unwrap().is_none());
        h.create_room("r", [1; 32], [2; 32], "alice").await.unwrap();
        assert!(h.create_room("r", [1; 32], [2; 32], "alice").await.is_err(), "a room is created once");
        h.bind_nick("r", "bob", [3; 32]).await.unwrap();
        h.set_ban("r", [3; 32], true).await.unwrap();
        for seq in 1..=5 {
            append(&h, envelope(seq, seq * 10), 3).await.unwrap();
        }
        assert!(append(&h, envelope(6, 30), 3).await.is_err(), "(room, sender, counter) is unique");
        store.close().await;

        let store = Store::open(&path, Synchronous::Normal).unwrap();
        let room = store.handle().load_room("r").await.unwrap().unwrap();
        assert_eq!(room.verifier, [1; 32]);
        assert_eq!(room.owner, [2; 32]);
        assert_eq!(room.latest_seq, 5);
        // Fewer than PRUNE_SLACK envelopes beyond the kept three: none deleted yet.
        assert_eq!(room.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(room.counters, [([7; 32], 50)]);
        assert_eq!(room.bans, [[3; 32]]);
        let mut nicks = room.nicks.clone();
        nicks.sort();
        assert_eq!(nicks, [("alice".to_owned(), [2; 32]), ("bob".to_owned(), [3; 32])]);
        store.close().await;
    }

    /// One commit group holding appends to two rooms from two senders, a failing append, and a
    /// load between them: the load sees the appends queued before it, and after the group each
    /// room has its latest seq, each sender its highest counter, and history its kept length.
    fn flush_op() -> Op {
        Op::Flush { reply: oneshot::channel().0 }
    }

    #[test]
    fn a_commit_group_gathers_what_keeps_arriving_and_an_exec_or_stop_ends_it_at_once() {
        let long = std::time::Duration::from_secs(60);
        // Sent one at a time by another thread until it hangs up: all of it joins the group.
        let (tx, rx) = mpsc::channel();
        let producer = std::thread::spawn(move || {
            for _ in 0..5 {
                tx.send(flush_op()).unwrap();
                std::thread::yield_now();
            }
        });
        let (mut batch, mut held) = (vec![flush_op()], None);
        gather(&rx, &mut batch, &mut held, long, long);
        producer.join().unwrap();
        assert_eq!((batch.len(), held.is_some()), (6, false));

        // An `Exec` ends the group without waiting for the gap, and is held for after it.
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            tx.send(flush_op()).unwrap();
        }
        tx.send(Op::Exec(Box::new(|_| {}))).unwrap();
        tx.send(flush_op()).unwrap();
        let (mut batch, mut held) = (vec![flush_op()], None);
        gather(&rx, &mut batch, &mut held, long, long);
        assert_eq!(batch.len(), 4);
        assert!(matches!(held, Some(Op::Exec(_))));
        assert!(matches!(rx.try_recv(), Ok(Op::Flush { .. })));

        // `Stop` ends it too, and past `max` nothing more is waited for.
        tx.send(Op::Stop).unwrap();
        let (mut batch, mut held) = (vec![flush_op()], None);
        gather(&rx, &mut batch, &mut held, long, long);
        assert!(matches!(batch.last(), Some(Op::Stop)));
        tx.send(flush_op()).unwrap();
        let (mut batch, mut held) = (vec![flush_op()], None);
        gather(&rx, &mut batch, &mut held, long, std::time::Duration::ZERO);
        assert_eq!((batch.len(), held.is_some()), (2, false));
    }

    #[tokio::test]
    async fn a_commit_group_writes_room_bookkeeping_once_and_its_loads_see_earlier_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("db"), Synchronous::Normal).unwrap();
        let mut batch = Vec::new();
        for room in ["r", "s"] {
            let (reply, _) = oneshot::channel();
            let write = Write::CreateRoom {
                room: room.into(),
                verifier: [1; 32],
                owner: [2; 32],
                nick: "alice".into(),
                created: 0,
            };
            batch.push(Op::Write { write, done: reply });
        }
        let mut results = Vec::new();
        let mut queue_append = |batch: &mut Vec<Op>, room: &str, seq: u64, sender: u8, counter: u64| {
            let record =
                StoredEnvelope { seq, sender: [sender; 32], counter, envelope: Bytes::from_static(b"e") };
            let (op, rx) = queued(room, record, 3);
            batch.push(op);
            results.push(rx);
        };
        for seq in 1..=4 {
            queue_append(&mut batch, "r", seq, 7, seq * 10);
        }
        let (reply, mid_load) = oneshot::channel();
        batch.push(Op::Load { room: "r".into(), reply });
        queue_append(&mut batch, "r", 5, 8, 3);
        queue_append(&mut batch, "r", 6, 7, 20); // counter reused by sender 7: refused
        queue_append(&mut batch, "s", 1, 7, 1);
        run_batch(&mut conn, batch, &mut Budget::unlimited());

        let outcomes: Vec<bool> = results.into_iter().map(|mut rx| rx.try_recv().unwrap().is_ok()).collect();
        assert_eq!(outcomes, [true, true, true, true, true, false, true]);
        let mid = mid_load.await.unwrap().unwrap().unwrap();
        assert_eq!(mid.latest_seq, 4, "a load sees the appends queued before it");
        assert_eq!(mid.counters, [([7; 32], 40)]);
        assert_eq!(mid.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);

        let tx = conn.transaction().unwrap();
        let r = load(&tx, "r").unwrap().unwrap();
        assert_eq!(r.latest_seq, 5);
        let mut counters = r.counters.clone();
        counters.sort();
        assert_eq!(counters, [([7; 32], 40), ([8; 32], 3)]);
        assert_eq!(r.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let s = load(&tx, "s").unwrap().unwrap();
        assert_eq!((s.latest_seq, s.counters, s.history.len()), (1, vec![([7; 32], 1)], 1));
    }

    /// SQLite rolls the whole transaction back after some errors (here a trigger's
    /// `RAISE(ROLLBACK)`, as a full disk can): nothing after it in the group runs, so nothing
    /// is stored on its own while the group is reported failed.
    #[test]
    fn nothing_of_a_group_is_stored_after_sqlite_rolled_its_transaction_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("db"), Synchronous::Normal).unwrap();
        conn.execute_batch(
            "INSERT INTO rooms (name, verifier, owner, created) VALUES ('r', x'00', x'00', 0); \
             CREATE TRIGGER fail BEFORE INSERT ON history WHEN NEW.seq = 2 \
             BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
        )
        .unwrap();
        let mut batch = Vec::new();
        let mut results = Vec::new();
        for seq in 1..=3 {
            let record =
                StoredEnvelope { seq, sender: [7; 32], counter: seq, envelope: Bytes::from_static(b"e") };
            let (op, rx) = queued("r", record, 10);
            batch.push(op);
            results.push(rx);
        }
        run_batch(&mut conn, batch, &mut Budget::unlimited());
        let outcomes: Vec<bool> = results.into_iter().map(|mut rx| rx.try_recv().unwrap().is_ok()).collect();
        assert_eq!(outcomes, [false, false, false], "the whole group failed");
        let stored: i64 = conn.query_row("SELECT count(*) FROM history", [], |r| r.get(0)).unwrap();
        let senders: i64 = conn.query_row("SELECT count(*) FROM senders", [], |r| r.get(0)).unwrap();
        assert_eq!((stored, senders), (0, 0), "and none of it was stored");
    }

    /// An append queued behind the writer's stop is never run: its room still hears of it,
    /// as a failure, so nobody waits for it for ever.
    #[tokio::test]
    async fn an_append_the_storage_thread_never_ran_is_reported_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), Synchronous::Normal).unwrap();
        let h = store.handle();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held, holding) = oneshot::channel();
        let writer = h.clone();
        tokio::spawn(async move {
            writer
                .exec(move |_| {
                    let _ = held.send(());
                    let _ = released.recv();
                })
                .await
        });
        holding.await.unwrap();
        h.tx.send(Op::Stop).unwrap();
        let (tx, rx) = oneshot::channel();
        h.append(sink("r", move |r| drop(tx.send(r))), envelope(1, 1), 10, 0).unwrap();
        drop(release);
        assert!(matches!(rx.await.unwrap(), Err(StoreError::Closed)));
        store.close().await;
    }

    /// A room keeping 10 envelopes (or, later, fewer by bytes): after every commit, in groups
    /// of 1 to 97 envelopes, at most PRUNE_SLACK - 1 envelopes it no longer keeps are still on
    /// disk, and everything it keeps is there.
    #[tokio::test]
    async fn history_is_pruned_in_bulk_and_stays_within_its_limits_plus_the_slack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path, Synchronous::Normal).unwrap();
        let h = store.handle();
        h.create_room("r", [1; 32], [2; 32], "alice").await.unwrap();
        let reader = Connection::open(&path).unwrap();
        let (mut seq, mut deletes, mut previous) = (0u64, 0, 0);
        for group in 1..=40u64 {
            // The last ten groups keep by bytes: only envelopes from seq - 4 on.
            let bytes_floor = |seq: u64| if group > 30 { seq.saturating_sub(4) } else { 0 };
            let mut last = None;
            for _ in 0..(group * 37 % 97 + 1) {
                seq += 1;
                let (tx, rx) = oneshot::channel();
                h.append(sink("r", move |r| drop(tx.send(r))), envelope(seq, seq), 10, bytes_floor(seq))
                    .unwrap();
                last = Some(rx);
            }
            last.unwrap().await.unwrap().unwrap();
            let (rows, first, newest): (u64, u64, u64) = reader
                .query_row("SELECT count(*), min(seq), max(seq) FROM history WHERE room = 'r'", [], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
                })
                .unwrap();
            let kept_from = seq.saturating_sub(9).max(bytes_floor(seq)).max(1);
            assert_eq!((newest, rows), (seq, seq - first + 1), "every envelope from the first on");
            assert!(first <= kept_from, "group {group}: kept envelopes deleted ({first} > {kept_from})");
            assert!(kept_from - first < PRUNE_SLACK, "group {group}: {} not pruned", kept_from - first);
            deletes += u32::from(first != previous);
            previous = first;
        }
        assert!(deletes < 40, "pruned in bulk, not every commit ({deletes} of 40)");
        store.close().await;
    }

    #[test]
    fn another_schema_version_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
        conn.execute_batch("CREATE TABLE future (x)").unwrap();
        drop(conn);
        let err = Store::open(&path, Synchronous::Full).unwrap_err().to_string();
        assert!(err.contains("schema version 7") && err.contains("supports only version 4"), "{err}");

        let other = dir.path().join("other");
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        drop(conn);
        let err = Store::open(&other, Synchronous::Full).unwrap_err().to_string();
        assert!(err.contains("not a chatroom-relay database"), "{err}");
    }

    #[tokio::test]
    async fn a_version_1_database_is_upgraded_and_rooms_expire_with_everything_stored_about_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&schema_v2().replace(",\n    active INTEGER NOT NULL DEFAULT 0", "")).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO rooms (name, verifier, owner, created) VALUES ('old', ?1, ?1, 1000)",
            [[1u8; 32]],
        )
        .unwrap();
        drop(conn);

        let store = Store::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(store.rooms(), 1);
        let h = store.handle();
        // The old room was last used when it was created; a new one now.
        h.create_room("new", [1; 32], [2; 32], "alice").await.unwrap();
        h.bind_nick("old", "bob", [3; 32]).await.unwrap();
        h.set_ban("old", [3; 32], true).await.unwrap();
        assert_eq!(h.idle_rooms(2000, 10).await.unwrap(), ["old"]);
        h.delete_room("old").await.unwrap();
        assert!(h.load_room("old").await.unwrap().is_none());
        assert!(h.load_room("new").await.unwrap().is_some());
        store.close().await;

        let conn = Connection::open(&path).unwrap();
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        for table in ["nicknames", "bans"] {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table} WHERE room = 'old'"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0, "{table} rows of the deleted room");
        }
    }

    /// The schema of version 2: `history` with its rowid and without `stored`, and no
    /// `group_info`.
    fn schema_v2() -> String {
        let v3 = "    stored INTEGER NOT NULL,\n    PRIMARY KEY (room, seq),\n    UNIQUE (room, sender, counter)\n) WITHOUT ROWID;";
        let v2 = "    PRIMARY KEY (room, seq),\n    UNIQUE (room, sender, counter)\n);";
        let v4 = UPGRADE_3_TO_4.trim_start();
        assert!(SCHEMA.contains(v3) && SCHEMA.contains(v4));
        SCHEMA.replace(v3, v2).replace(v4, "")
    }

    /// A version-2 database with history in two rooms, stored alternately: after the upgrade
    /// the table has no rowid, every envelope is there, and the relay-wide quota still deletes
    /// the oldest first, in the order the rowid recorded, then appends continue after them.
    #[tokio::test]
    async fn a_version_2_database_is_upgraded_and_keeps_its_history_and_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&schema_v2()).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        for room in ["a", "b"] {
            conn.execute(
                "INSERT INTO rooms (name, verifier, owner, created, latest_seq, active) VALUES (?1, ?2, ?2, 1, 3, 1)",
                params![room, [1u8; 32]],
            )
            .unwrap();
        }
        // b1, a1, b2, a2, b3, a3: ten bytes each.
        for seq in 1..=3i64 {
            for room in ["b", "a"] {
                conn.execute(
                    "INSERT INTO history (room, seq, sender, counter, envelope) VALUES (?1, ?2, ?3, ?2, ?4)",
                    params![room, seq, [7u8; 32], vec![seq as u8; 10]],
                )
                .unwrap();
            }
        }
        drop(conn);

        let store = Store::open(&path, Synchronous::Normal).unwrap();
        let h = store.handle();
        for room in ["a", "b"] {
            let loaded = h.load_room(room).await.unwrap().unwrap();
            assert_eq!(loaded.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3], "{room}");
            assert_eq!(loaded.history[2].envelope, vec![3u8; 10]);
        }
        store.close().await;
        let conn = Connection::open(&path).unwrap();
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'history'", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
        drop(conn);

        // 60 bytes stored, 45 allowed: one more envelope in a makes room by deleting b1 and a1
        // and b2, the three oldest, whatever their room.
        let store = Store::open_with_quota(&path, Synchronous::Normal, 45).unwrap();
        let h = store.handle();
        let new = StoredEnvelope { seq: 4, sender: [7; 32], counter: 4, envelope: Bytes::from(vec![4; 10]) };
        let (tx, rx) = oneshot::channel();
        h.append(sink("a", move |r| drop(tx.send(r))), new, 10, 0).unwrap();
        rx.await.unwrap().unwrap();
        let seqs = |room: &'static str| {
            let h = h.clone();
            async move {
                h.load_room(room).await.unwrap().unwrap().history.iter().map(|e| e.seq).collect::<Vec<_>>()
            }
        };
        assert_eq!(seqs("a").await, [2, 3, 4]);
        assert_eq!(seqs("b").await, [3]);
        store.close().await;
    }

    /// What pruning deletes is taken off the relay's stored bytes: a room that keeps writing
    /// within its history limit never pushes another room's envelopes out over the quota.
    #[tokio::test]
    async fn pruned_bytes_leave_the_stored_total() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open_with_quota(&path, Synchronous::Normal, 1000).unwrap();
        let h = store.handle();
        h.create_room("old", [1; 32], [2; 32], "alice").await.unwrap();
        h.create_room("r", [1; 32], [2; 32], "alice").await.unwrap();
        let (tx, rx) = oneshot::channel();
        h.append(sink("old", move |r| drop(tx.send(r))), envelope(1, 1), 10, 0).unwrap();
        rx.await.unwrap().unwrap();
        // 300 envelopes of 10 bytes, 10 kept (plus the slack): 3000 bytes went in, at most
        // about 740 stay, so the quota of 1000 is never reached if the pruned bytes count.
        for seq in 1..=300 {
            append(&h, envelope(seq, seq), 10).await.unwrap();
        }
        let old = h.load_room("old").await.unwrap().unwrap();
        assert_eq!(old.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
        let kept = h.load_room("r").await.unwrap().unwrap().history.len() as u64;
        assert!((10..10 + PRUNE_SLACK).contains(&kept), "{kept} kept");
        store.close().await;
    }

    /// 3000 envelopes of 1000 bytes queued at once, so commits follow each other without a
    /// pause: the log, measured after every commit, never passes its bound by more than about
    /// one commit group, though far more than that was written through it.
    #[tokio::test]
    async fn the_log_stays_bounded_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let bound = 256 << 10;
        let store = Store::open_with_limits(&path, Synchronous::Normal, u64::MAX, bound).unwrap();
        let h = store.handle();
        h.create_room("r", [1; 32], [2; 32], "alice").await.unwrap();
        let wal = sibling(&path, "-wal");
        let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut last = None;
        for seq in 1..=3000u64 {
            let (tx, rx) = oneshot::channel();
            let (wal, largest) = (wal.clone(), largest.clone());
            let record =
                StoredEnvelope { seq, sender: [7; 32], counter: seq, envelope: Bytes::from(vec![1; 1000]) };
            let room = sink("r", move |r| {
                // Runs on the writer thread right after the commit.
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                largest.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
                let _ = tx.send(r);
            });
            h.append(room, record, 100_000, 0).unwrap();
            last = Some(rx);
        }
        last.unwrap().await.unwrap().unwrap();
        let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
        assert!(largest > 0, "the log was measured");
        // A group of 256 such envelopes writes about 1.3 MB of log here; the writer restarts
        // the log after the group that crossed the bound, or after the next one if the
        // checkpoint thread was busy. Unbounded, the log would hold all 3000 (about 15 MB).
        assert!(largest < bound + (4 << 20), "the log reached {largest} bytes");
        let stored =
            h.exec(|c| c.query_row("SELECT count(*) FROM history", [], |r| r.get::<_, i64>(0))).await;
        assert_eq!(stored.unwrap().unwrap(), 3000, "3 MB went through the log");
        store.close().await;
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0, "closed with an empty log");
    }

    #[test]
    fn a_second_process_on_the_same_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = Store::open(&path, Synchronous::Full).unwrap();
        let err = Store::open(&path, Synchronous::Full).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        // An offline admin command takes the same lock.
        assert!(matches!(lock_database(&path), Err(StoreError::Locked { .. })));
        drop(first);
        assert!(lock_database(&path).is_ok(), "the lock goes with the store");
    }
}
