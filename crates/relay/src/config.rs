//! Every limit the relay enforces, with its default. `docs/RELAY.md` lists the same table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chatroom_crypto::MAX_ENVELOPE_LEN;

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// `FULL`: the write-ahead log is fsynced at every commit. An acknowledged message
    /// survives a crash of the relay process and a power loss or kernel crash.
    Full,
    /// `NORMAL`: the log is fsynced only at checkpoints. An acknowledged message survives a
    /// crash of the relay process (`kill -9`); a power loss may lose the last commits (never
    /// corrupt the database).
    Normal,
}

/// The relay's configuration. `Config::new(data_dir)` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the static key (`relay.key`) and the database (`relay.sqlite3`).
    pub data_dir: PathBuf,
    /// Envelopes kept per room for history replay (default 1000).
    pub history: usize,
    /// Bytes of envelopes kept per room (default 4 MiB): the oldest go first when either
    /// this or `history` is reached.
    pub history_bytes: usize,
    /// Rooms the relay stores at most (default 10 000); creating one more is refused with
    /// `ServerFull`. With `history_bytes` it bounds the disk history takes.
    pub max_rooms: usize,
    /// Nicknames one room binds at most (default 10 000); a join that would bind one more
    /// gets `RoomFull`. Each binding (and each sender's counter) is a row kept as long as the
    /// room.
    pub max_room_nicknames: usize,
    /// Bytes of envelopes the relay keeps on disk over all rooms (default 4 GiB); beyond it
    /// the oldest envelopes of the relay, whatever their room, are deleted.
    pub max_stored_bytes: usize,
    /// A room nobody joined or sent to for this long is deleted with its history, nicknames,
    /// bans and counters (default 90 days).
    pub room_expiry: Duration,
    /// Concurrent connections, joined or not (default 4096). Further connections wait in
    /// the kernel's accept backlog until a slot frees up.
    pub max_connections: usize,
    /// Connections per source IP address that have not completed a join yet (default 16).
    /// Further connections from that address are closed at once.
    pub max_unauthenticated_per_ip: usize,
    /// Connections per source address, joined or not (default 64; IPv6 per /64). Further
    /// connections from it are closed at once.
    pub max_connections_per_ip: usize,
    /// Connections per IPv6 /48, joined or not (default 256).
    pub max_connections_per_48: usize,
    /// New connections one address may open in a burst (default 30), checked at accept,
    /// before any Diffie-Hellman; over the rate they are closed at once.
    pub handshake_burst: u32,
    /// New connections per second one address may open sustained (default 10).
    pub handshakes_per_sec: u32,
    /// Members of one room at once (default 1000); further joins get `RoomFull`.
    pub max_room_members: usize,
    /// Share of `max_connections` and of `max_room_members`, in percent, kept for identities
    /// that already hold a nickname in the room they join (default 10): strangers get
    /// `ServerFull` or `RoomFull` once only this much is left.
    pub headroom_percent: usize,
    /// Bytes waiting to be written to one connection before it is disconnected as a slow
    /// consumer (default 256 KiB, at least 64 KiB). History replay is not counted: it is
    /// pulled from the room's shared history as the connection drains.
    pub outbound_queue_bytes: usize,
    /// Time a write may make no progress before the connection is closed as a slow consumer
    /// (default 30 s).
    pub write_stall: Duration,
    /// `Who` requests one connection may make in a burst (default 5); beyond it, each waits
    /// for its turn, and the connection is not read meanwhile.
    pub who_burst: u32,
    /// `Who` requests per second one connection may make sustained (default 1).
    pub who_per_sec: u32,
    /// Time from accept to a completed handshake and join request (default 10 s).
    pub handshake_timeout: Duration,
    /// Silence after which the relay pings a member (default 30 s).
    pub ping_after: Duration,
    /// Silence after which the relay closes a member's connection (default 90 s).
    pub idle_timeout: Duration,
    /// Envelopes a member (identity, over all its connections) may send in a burst (default 20).
    pub rate_burst: u32,
    /// Envelopes per second a member may send sustained (default 5).
    pub rate_per_sec: u32,
    /// Envelopes all identities on one address may send in a burst (default 60) and per
    /// second sustained (default 20): new identities cost nothing, addresses do.
    pub ip_rate_burst: u32,
    pub ip_rate_per_sec: u32,
    /// Envelopes one room may take in a burst (default 200) and per second sustained
    /// (default 50), over all its members.
    pub room_rate_burst: u32,
    pub room_rate_per_sec: u32,
    /// Largest envelope accepted, in bytes (default and maximum: the protocol's 4305).
    pub max_envelope_len: usize,
    /// Largest sealed GroupInfo a protocol version 2 room stores, in bytes (default 524 288:
    /// about 1 800 members' ratchet tree). A larger upload is refused with `GroupInfoTooLarge`.
    pub max_group_info_bytes: usize,
    /// Failed joins from one IP address within `failure_window` after which each further
    /// join from it is delayed by `failure_delay` (default 3).
    pub ip_failures_slow: u32,
    /// Failed joins from one IP address within `failure_window` after which it is refused
    /// with `TooManyAttempts` for `failure_window` (default 10).
    pub ip_failures_lockout: u32,
    /// Failed joins against one room within `failure_window` after which each further join
    /// to it is delayed (default 20).
    pub room_failures_slow: u32,
    /// Failed joins against one room within `failure_window` after which joins to it are
    /// refused with `TooManyAttempts` for `failure_window` (default 100).
    pub room_failures_lockout: u32,
    /// Rooms one IP address may create within `failure_window`; further creations are
    /// refused with `TooManyAttempts` (default 10).
    pub room_creations_per_ip: u32,
    /// Window over which failures are counted, and how long a lockout lasts (default 10 min).
    pub failure_window: Duration,
    /// Delay applied to a join once its address or room is being slowed (default 1 s).
    pub failure_delay: Duration,
    /// Durability of commits (default `Full`).
    pub synchronous: Synchronous,
    /// Interval of the one-line statistics in the log; zero turns them off (default 10 min).
    pub stats_interval: Duration,
    /// Time connections get to say goodbye at shutdown before the store is closed anyway
    /// (default 5 s).
    pub shutdown_grace: Duration,
}

impl Config {
    /// The defaults, storing everything in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            history: 1000,
            history_bytes: 4 << 20,
            max_rooms: 10_000,
            max_room_nicknames: 10_000,
            max_stored_bytes: 4 << 30,
            room_expiry: Duration::from_secs(90 * 24 * 3600),
            max_connections: 4096,
            max_unauthenticated_per_ip: 16,
            max_connections_per_ip: 64,
            max_connections_per_48: 256,
            handshake_burst: 30,
            handshakes_per_sec: 10,
            max_room_members: 1000,
            headroom_percent: 10,
            outbound_queue_bytes: 256 * 1024,
            write_stall: Duration::from_secs(30),
            who_burst: 5,
            who_per_sec: 1,
            handshake_timeout: Duration::from_secs(10),
            ping_after: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            rate_burst: 20,
            rate_per_sec: 5,
            ip_rate_burst: 60,
            ip_rate_per_sec: 20,
            room_rate_burst: 200,
            room_rate_per_sec: 50,
            max_envelope_len: MAX_ENVELOPE_LEN,
            max_group_info_bytes: 512 * 1024,
            ip_failures_slow: 3,
            ip_failures_lockout: 10,
            room_failures_slow: 20,
            room_failures_lockout: 100,
            room_creations_per_ip: 10,
            failure_window: Duration::from_secs(600),
            failure_delay: Duration::from_secs(1),
            synchronous: Synchronous::Full,
            stats_interval: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// The relay's static Noise key file.
    pub fn key_path(&self) -> PathBuf {
        key_path(&self.data_dir)
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }
}

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "relay.sqlite3";
/// File name of the static key inside the data directory.
pub const KEY_FILE: &str = "relay.key";

/// The static key file inside `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}
