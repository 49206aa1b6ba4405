//! Administration: list, show and delete rooms, list bans, hand a room to a new owner, and
//! take an online backup.
//!
//! A running relay holds its database in SQLite's exclusive locking mode and keeps loaded
//! rooms in memory, so no other process may write the database behind its back. It answers
//! instead on `admin.sock`, a Unix socket in the data directory (the directory is 0700, the
//! socket 0600: only the relay's user can connect). Each connection carries one JSON request
//! line and gets one JSON reply line. The relay runs each request on its storage thread,
//! between two commit groups, and updates the rooms it has in memory. A stopped relay's
//! database is opened directly (`offline`), with the same queries.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::config::{Synchronous, DB_FILE};
use crate::store::{lock_database, open_connection, StoreError};

/// File name of the admin socket inside the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// Longest request line read from the admin socket.
pub const MAX_REQUEST_LEN: u64 = 64 * 1024;

/// One administrative request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Every room, with counts.
    RoomsList,
    /// One room, with its nicknames.
    RoomsShow {
        /// The room name.
        room: String,
    },
    /// Delete a room: its members are disconnected, its history, bans and nicknames erased.
    RoomsDelete {
        /// The room name.
        room: String,
    },
    /// The banned identities of a room.
    BansList {
        /// The room name.
        room: String,
    },
    /// Make `identity` (64 hex digits) the room's owner.
    OwnerSet {
        /// The room name.
        room: String,
        /// The new owner's public identity.
        identity: String,
    },
    /// Write a consistent copy of the database to `file` (an absolute path that does not exist).
    Backup {
        /// Where the copy goes.
        file: PathBuf,
    },
}

/// The answer to a `Request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// `rooms list`.
    Rooms(Vec<RoomInfo>),
    /// `rooms show`.
    Room(RoomInfo),
    /// `bans list`.
    Bans(Vec<BanInfo>),
    /// A change was made; what it was.
    Done(String),
    /// The request failed; what to do.
    Error(String),
}

/// A room as the operator sees it: only metadata, never content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room name.
    pub name: String,
    /// The owner's public identity (hex).
    pub owner: String,
    /// Creation time, seconds since the Unix epoch (`None` on a cluster node: the cluster keeps
    /// only a room record's last write).
    pub created: Option<i64>,
    /// Highest sequence number handed out.
    pub latest_seq: u64,
    /// Envelopes kept for history replay.
    pub history: u64,
    /// Their total size in bytes (`None` on a cluster node: the stream counts a room's
    /// messages, not their bytes).
    pub history_bytes: Option<u64>,
    /// Nicknames bound in the room.
    pub nicknames: u64,
    /// Banned identities.
    pub bans: u64,
    /// Connected members (`None` when the relay is stopped; on a cluster node, through any node).
    pub online: Option<u64>,
    /// Bound nicknames and their identities (`rooms show` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<NickInfo>,
}

/// A nickname bound in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NickInfo {
    /// The nickname (canonical form).
    pub nick: String,
    /// Its identity (hex).
    pub identity: String,
}

/// A banned identity and the nicknames it had bound in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanInfo {
    /// The identity (hex).
    pub identity: String,
    /// Nicknames bound to it in the room.
    pub nicknames: Vec<String>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a 64-hex-digit identity.
pub(crate) fn parse_identity(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes: Option<Vec<u8>> = (text.len() == 64)
        .then(|| {
            (0..32).map(|i| text.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
        })
        .flatten();
    bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
        format!(
            "{text:?} is not an identity; give the member's full identity, 64 hex digits (they see it \
             with /whoami, or in `rooms show`)"
        )
    })
}

const ROOM_COLUMNS: &str = "SELECT r.name, r.owner, r.created, r.latest_seq,
    (SELECT count(*) FROM history h WHERE h.room = r.name),
    (SELECT coalesce(sum(length(h.envelope)), 0) FROM history h WHERE h.room = r.name),
    (SELECT count(*) FROM nicknames n WHERE n.room = r.name),
    (SELECT count(*) FROM bans b WHERE b.room = r.name)
    FROM rooms r";

fn room_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoomInfo> {
    Ok(RoomInfo {
        name: r.get(0)?,
        owner: hex(&r.get::<_, Vec<u8>>(1)?),
        created: Some(r.get(2)?),
        latest_seq: r.get::<_, i64>(3)? as u64,
        history: r.get::<_, i64>(4)? as u64,
        history_bytes: Some(r.get::<_, i64>(5)? as u64),
        nicknames: r.get::<_, i64>(6)? as u64,
        bans: r.get::<_, i64>(7)? as u64,
        online: None,
        members: Vec::new(),
    })
}

/// Every room, by name.
pub(crate) fn rooms(conn: &Connection) -> rusqlite::Result<Vec<RoomInfo>> {
    conn.prepare(&format!("{ROOM_COLUMNS} ORDER BY r.name"))?.query_map([], room_row)?.collect()
}

/// One room with its nicknames, or `None`.
pub(crate) fn room(conn: &Connection, name: &str) -> rusqlite::Result<Option<RoomInfo>> {
    let Some(mut info) =
        conn.prepare(&format!("{ROOM_COLUMNS} WHERE r.name = ?1"))?.query_row([name], room_row).optional()?
    else {
        return Ok(None);
    };
    info.members = conn
        .prepare("SELECT nick, identity FROM nicknames WHERE room = ?1 ORDER BY nick")?
        .query_map([name], |r| Ok(NickInfo { nick: r.get(0)?, identity: hex(&r.get::<_, Vec<u8>>(1)?) }))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(info))
}

fn room_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM rooms WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// The bans of a room, or `None` if it does not exist.
pub(crate) fn bans(conn: &Connection, name: &str) -> rusqlite::Result<Option<Vec<BanInfo>>> {
    if !room_exists(conn, name)? {
        return Ok(None);
    }
    let identities: Vec<Vec<u8>> = conn
        .prepare("SELECT identity FROM bans WHERE room = ?1 ORDER BY identity")?
        .query_map([name], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut nicks =
        conn.prepare("SELECT nick FROM nicknames WHERE room = ?1 AND identity = ?2 ORDER BY nick")?;
    identities
        .into_iter()
        .map(|id| {
            let nicknames =
                nicks.query_map(params![name, id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(BanInfo { identity: hex(&id), nicknames })
        })
        .collect::<rusqlite::Result<_>>()
        .map(Some)
}

/// Deletes a room and everything stored with it; false if it did not exist.
pub(crate) fn delete_room(conn: &mut Connection, name: &str) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let found = tx.execute("DELETE FROM rooms WHERE name = ?1", [name])? > 0;
    for table in ["nicknames", "bans", "history", "senders"] {
        tx.execute(&format!("DELETE FROM {table} WHERE room = ?1"), [name])?;
    }
    tx.commit()?;
    Ok(found)
}

/// Sets a room's owner; false if the room does not exist.
pub(crate) fn set_owner(conn: &Connection, name: &str, owner: &[u8; 32]) -> rusqlite::Result<bool> {
    Ok(conn.execute("UPDATE rooms SET owner = ?2 WHERE name = ?1", params![name, owner])? > 0)
}

/// Writes a consistent, compacted copy of the database to `file` with `VACUUM INTO`: first to
/// `FILE.partial` (mode 0600), fsynced, then renamed, so `file` is always a complete database.
pub(crate) fn backup(conn: &Connection, file: &Path) -> Result<(), String> {
    if file.exists() {
        return Err(format!("{} already exists; choose a new file name", file.display()));
    }
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let target = partial.to_str().ok_or("the backup path must be UTF-8")?;
        conn.execute("VACUUM INTO ?1", [target]).map_err(|e| format!("backup failed: {e}"))?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&partial, file))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        if let Some(dir) = file.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Answers a request against a stopped relay's database in `data_dir`.
pub fn offline(data_dir: &Path, request: &Request) -> Result<Reply, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Io {
            path,
            message: "no relay database here; check --data-dir (a relay creates it on its first start)"
                .into(),
        });
    }
    // A running relay holds this lock: its admin socket is the way to it.
    let _lock = lock_database(&path)?;
    let mut conn = open_connection(&path, Synchronous::Full)?;
    let sql = |e: rusqlite::Error| Reply::Error(format!("database error: {e}"));
    let reply = match request {
        Request::RoomsList => rooms(&conn).map_or_else(sql, Reply::Rooms),
        Request::RoomsShow { room: name } => match room(&conn, name) {
            Ok(Some(info)) => Reply::Room(info),
            Ok(None) => no_such_room(name),
            Err(e) => sql(e),
        },
        Request::BansList { room } => match bans(&conn, room) {
            Ok(Some(list)) => Reply::Bans(list),
            Ok(None) => no_such_room(room),
            Err(e) => sql(e),
        },
        Request::RoomsDelete { room } => match delete_room(&mut conn, room) {
            Ok(true) => Reply::Done(format!("deleted room {room}")),
            Ok(false) => no_such_room(room),
            Err(e) => sql(e),
        },
        Request::OwnerSet { room, identity } => match parse_identity(identity) {
            Err(e) => Reply::Error(e),
            Ok(id) => match set_owner(&conn, room, &id) {
                Ok(true) => Reply::Done(format!("{} now owns room {room}", hex(&id))),
                Ok(false) => no_such_room(room),
                Err(e) => sql(e),
            },
        },
        Request::Backup { file } => match backup(&conn, file) {
            Ok(()) => Reply::Done(format!("backed up to {}", file.display())),
            Err(e) => Reply::Error(e),
        },
    };
    Ok(reply)
}

pub(crate) fn no_such_room(name: &str) -> Reply {
    Reply::Error(format!("there is no room {name:?} on this relay; `rooms list` shows them"))
}
