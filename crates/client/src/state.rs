//! Persisted per-room state: the last sequence number processed (so a reconnect asks only for
//! what it has not seen), the last counter this member used, the highest counter accepted from
//! each sender (replay protection), and the member pins.
//!
//! One file per (relay key, room): `DATA_DIR/rooms/<first 16 hex digits of the relay key>-<room>`,
//! mode 0600, written to a temporary file and renamed. Format, one record per line:
//!
//! ```text
//! chatroom room state v1
//! last_seq 42
//! last_counter 1732519000000000
//! counter <64 hex identity> <u64>
//! pin <canonical nick> <64 hex identity>
//! ```

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chatroom_crypto::{Nick, PublicIdentity, RoomName};

use crate::error::FileError;
use crate::trust::PinStore;

const HEADER: &str = "chatroom room state v1";
/// Largest state file read.
pub const MAX_STATE_LEN: u64 = 16 << 20;

/// What the client remembers about one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomState {
    /// Highest relay sequence number processed.
    pub last_seq: u64,
    /// Highest envelope counter this member used.
    pub last_counter: u64,
    /// Highest counter accepted per sender.
    pub counters: BTreeMap<PublicIdentity, u64>,
    /// Member pins.
    pub pins: PinStore,
}

/// The state file of `room` on the relay with `relay_key`.
pub fn room_state_path(data_dir: &Path, relay_key: &[u8; 32], room: &RoomName) -> PathBuf {
    data_dir.join("rooms").join(format!("{}-{}", hex::encode(&relay_key[..8]), room))
}

/// Writes `contents` to `path` with mode 0600 through a temporary file and a rename,
/// creating the directory with mode 0700 if needed.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let io = |p: &Path| {
        let shown = p.display().to_string();
        move |source| FileError::Io { path: shown, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        }
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))
}

fn parse_identity(s: &str) -> Option<PublicIdentity> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(s, &mut key).ok()?;
    Some(PublicIdentity(key))
}

impl RoomState {
    /// Parses a state file's text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FileError> {
        let mut lines = text.lines().enumerate();
        let syntax = |line: usize, why: &str| FileError::Syntax {
            path: path.display().to_string(),
            line,
            why: why.into(),
        };
        if lines.next().map(|(_, l)| l) != Some(HEADER) {
            return Err(syntax(1, "not a chatroom room state file"));
        }
        let mut state = RoomState::default();
        for (i, line) in lines {
            let n = i + 1;
            let fields: Vec<&str> = line.split(' ').collect();
            let num = |s: &str| s.parse::<u64>().map_err(|_| syntax(n, "expected a number"));
            match fields.as_slice() {
                [] | [""] => {}
                ["last_seq", v] => state.last_seq = num(v)?,
                ["last_counter", v] => state.last_counter = num(v)?,
                ["counter", id, v] => {
                    let id = parse_identity(id).ok_or_else(|| syntax(n, "bad identity"))?;
                    state.counters.insert(id, num(v)?);
                }
                ["pin", nick, id] => {
                    let nick = Nick::new(nick).map_err(|_| syntax(n, "bad nickname"))?;
                    let id = parse_identity(id).ok_or_else(|| syntax(n, "bad identity"))?;
                    state.pins.set(&nick, id);
                }
                _ => return Err(syntax(n, "unknown record")),
            }
        }
        Ok(state)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = format!("{HEADER}\nlast_seq {}\nlast_counter {}\n", self.last_seq, self.last_counter);
        for (id, counter) in &self.counters {
            out.push_str(&format!("counter {} {counter}\n", id.fingerprint()));
        }
        for (nick, id) in self.pins.iter() {
            out.push_str(&format!("pin {nick} {}\n", id.fingerprint()));
        }
        out
    }

    /// Loads the state at `path`; a missing file is a fresh state.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(FileError::Io { path: path.display().to_string(), source }),
        };
        let mut text = String::new();
        file.take(MAX_STATE_LEN)
            .read_to_string(&mut text)
            .map_err(|source| FileError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    /// Saves the state to `path` (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        write_private(path, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn Error>>;

    #[test]
    fn round_trip_through_a_private_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let room = RoomName::new("general")?;
        let path = room_state_path(dir.path(), &[0xab; 32], &room);
        assert!(path.ends_with("rooms/abababababababab-general"));
        assert_eq!(RoomState::load(&path)?, RoomState::default());
        let mut s = RoomState { last_seq: 42, last_counter: u64::MAX, ..RoomState::default() };
        s.counters.insert(PublicIdentity([3; 32]), 17);
        s.pins.set(&Nick::new("Bob")?, PublicIdentity([4; 32]));
        s.save(&path)?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(RoomState::load(&path)?, s);
        Ok(())
    }

    #[test]
    fn corrupt_files_are_refused_with_a_line_number() {
        let p = Path::new("s");
        assert!(RoomState::parse("", p).is_err());
        let err = RoomState::parse("chatroom room state v1\nlast_seq x\n", p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(RoomState::parse("chatroom room state v1\npin 9x 00\n", p).is_err());
        assert!(RoomState::parse("chatroom room state v1\nwhat ever\n", p).is_err());
    }
}
