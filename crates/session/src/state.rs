//! Persisted per-room state: the cursor (the relay sequence number a reconnect asks history
//! after), the last counter this member used, the highest counter accepted from each sender
//! (replay protection), and the member pins.
//!
//! One file per (relay key, room): `DATA_DIR/rooms/<first 16 hex digits of the relay key>-<room>`,
//! mode 0600, written to a temporary file, synced, renamed, and the directory synced. Format,
//! one record per line:
//!
//! ```text
//! chatroom room state v2
//! last_seq 42
//! last_counter 1732519000000000
//! counter_floor 1732000000000000
//! kdf m65536t3p1
//! counter <64 hex identity> <u64>
//! pin <canonical nick> <64 hex identity>
//! end
//! ```
//!
//! The `end` line tells a complete file from one cut short. (Version 1 files, without
//! `counter_floor` and `end`, are still read.) The per-sender counters are bounded: beyond
//! `MAX_COUNTERS` senders the entries with the lowest counters are dropped and the highest of
//! them is kept as `counter_floor`, the counter every sender not listed is taken to have
//! reached. Counters start at the sender's clock in microseconds, so the floor is an old time
//! and a current member's next message is above it.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chatroom_crypto::{KdfParams, Nick, PublicIdentity, RoomName};

use crate::error::FileError;
use crate::trust::PinStore;

const HEADER: &str = "chatroom room state v2";
const HEADER_V1: &str = "chatroom room state v1";
const TRAILER: &str = "end";
/// Largest state file read. Bounded pins (`MAX_PINS`, at most 102 bytes each) and counters
/// (`MAX_COUNTERS`, at most 95 bytes each) take at most 11.2 MB.
pub const MAX_STATE_LEN: u64 = 16 << 20;
/// Most per-sender counters kept; beyond it the oldest are folded into `counter_floor`.
pub const MAX_COUNTERS: usize = 10_000;

/// What the client remembers about one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomState {
    /// Highest relay sequence number processed.
    pub last_seq: u64,
    /// Highest envelope counter this member used.
    pub last_counter: u64,
    /// Highest counter accepted per sender (at most `MAX_COUNTERS`; see `accept`).
    pub counters: BTreeMap<PublicIdentity, u64>,
    /// The counter every sender missing from `counters` is taken to have reached.
    pub counter_floor: u64,
    /// Member pins.
    pub pins: PinStore,
    /// The key-derivation parameters this member last joined the room with (so that
    /// `chatroom invite` can name them).
    pub kdf: Option<KdfParams>,
}

/// The state file of `room` on the relay with `relay_key`.
pub fn room_state_path(data_dir: &Path, relay_key: &[u8; 32], room: &RoomName) -> PathBuf {
    data_dir.join("rooms").join(format!("{}-{}", hex::encode(&relay_key[..8]), room))
}

/// The protocol 2 state file of `room` on the relay with `relay_key`: the v1 one's path with
/// `.v2` appended.
pub fn v2_room_state_path(data_dir: &Path, relay_key: &[u8; 32], room: &RoomName) -> PathBuf {
    let mut path = room_state_path(data_dir, relay_key, room).into_os_string();
    path.push(".v2");
    path.into()
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
    // The data must be on disk before the rename makes it the file, and the rename itself
    // (the directory entry) before we rely on it.
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn parse_identity(s: &str) -> Option<PublicIdentity> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(s, &mut key).ok()?;
    Some(PublicIdentity(key))
}

impl RoomState {
    /// The highest counter accepted from `sender` (the floor if it is not listed).
    pub fn highest(&self, sender: &PublicIdentity) -> u64 {
        self.counters.get(sender).copied().unwrap_or(0).max(self.counter_floor)
    }

    /// Records `counter` as the highest accepted from `sender`, keeping at most `MAX_COUNTERS`
    /// senders: when there are more, the tenth with the lowest counters is folded into the floor.
    pub fn accept(&mut self, sender: PublicIdentity, counter: u64) {
        let entry = self.counters.entry(sender).or_insert(0);
        *entry = (*entry).max(counter);
        if self.counters.len() > MAX_COUNTERS {
            self.compact(MAX_COUNTERS - MAX_COUNTERS / 10);
        }
    }

    fn compact(&mut self, keep: usize) {
        let mut by_counter: Vec<(u64, PublicIdentity)> =
            self.counters.iter().map(|(id, c)| (*c, *id)).collect();
        by_counter.sort_unstable();
        let drop = by_counter.len().saturating_sub(keep);
        for (counter, id) in &by_counter[..drop] {
            self.counter_floor = self.counter_floor.max(*counter);
            self.counters.remove(id);
        }
    }

    /// Parses a state file's text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FileError> {
        let mut lines = text.lines().enumerate();
        let shown = path.display().to_string();
        let syntax =
            |line: usize, why: &str| FileError::Syntax { path: shown.clone(), line, why: why.into() };
        let v2 = match lines.next().map(|(_, l)| l) {
            Some(HEADER) => true,
            Some(HEADER_V1) => false,
            _ => return Err(syntax(1, "not a chatroom room state file")),
        };
        if v2 && text.lines().next_back() != Some(TRAILER) {
            return Err(FileError::Damaged {
                path: shown,
                why: "the file was cut short (it lacks its last line, `end`), so its counters and pins \
                      cannot be trusted"
                    .into(),
            });
        }
        let mut state = RoomState::default();
        let mut ended = false;
        for (i, line) in lines {
            let n = i + 1;
            if ended {
                return Err(syntax(n, "text after the `end` line"));
            }
            let fields: Vec<&str> = line.split(' ').collect();
            let num = |s: &str| s.parse::<u64>().map_err(|_| syntax(n, "expected a number"));
            match fields.as_slice() {
                [] | [""] => {}
                [TRAILER] if v2 => ended = true,
                ["last_seq", v] => state.last_seq = num(v)?,
                ["last_counter", v] => state.last_counter = num(v)?,
                ["counter_floor", v] if v2 => state.counter_floor = num(v)?,
                ["kdf", v] if v2 => {
                    state.kdf = Some(v.parse().map_err(|_| syntax(n, "bad key-derivation parameters"))?)
                }
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
        if state.counters.len() > MAX_COUNTERS {
            state.compact(MAX_COUNTERS);
        }
        Ok(state)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{HEADER}\nlast_seq {}\nlast_counter {}\ncounter_floor {}\n",
            self.last_seq, self.last_counter, self.counter_floor
        );
        if let Some(kdf) = self.kdf {
            out.push_str(&format!("kdf {kdf}\n"));
        }
        for (id, counter) in &self.counters {
            out.push_str(&format!("counter {} {counter}\n", id.fingerprint()));
        }
        for (nick, id) in self.pins.iter() {
            out.push_str(&format!("pin {nick} {}\n", id.fingerprint()));
        }
        out.push_str(TRAILER);
        out.push('\n');
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
        let io = |source| FileError::Io { path: path.display().to_string(), source };
        file.take(MAX_STATE_LEN + 1).read_to_string(&mut text).map_err(io)?;
        if text.len() as u64 > MAX_STATE_LEN {
            return Err(FileError::Damaged {
                path: path.display().to_string(),
                why: format!("the file is larger than the {} MiB a room state can be", MAX_STATE_LEN >> 20),
            });
        }
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
        let mut s = RoomState {
            last_seq: 42,
            last_counter: u64::MAX,
            kdf: Some(KdfParams { m_kib: 131_072, t: 4, p: 1 }),
            ..RoomState::default()
        };
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

    fn id(i: u64) -> PublicIdentity {
        let mut key = [7u8; 32];
        key[..8].copy_from_slice(&i.to_be_bytes());
        PublicIdentity(key)
    }

    #[test]
    fn counters_stay_bounded_and_the_floor_still_refuses_old_counters() {
        let mut s = RoomState::default();
        for i in 0..(MAX_COUNTERS as u64 + 1) {
            s.accept(id(i), 1000 + i);
        }
        assert!(s.counters.len() <= MAX_COUNTERS, "{}", s.counters.len());
        assert!(s.counter_floor >= 1000 && s.counter_floor < 1000 + MAX_COUNTERS as u64);
        // A dropped sender is taken to have reached the floor: its old counters stay refused.
        assert_eq!(s.highest(&id(0)), s.counter_floor);
        assert_eq!(s.highest(&id(MAX_COUNTERS as u64)), 1000 + MAX_COUNTERS as u64);
        let text = s.render();
        assert_eq!(RoomState::parse(&text, Path::new("s")).unwrap(), s);
    }

    #[test]
    fn a_file_of_100000_senders_loads_compacted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state");
        let mut text = format!("{HEADER_V1}\nlast_seq 5\nlast_counter 9\n");
        for i in 0..100_000u64 {
            text.push_str(&format!("counter {} {}\n", id(i).fingerprint(), 1_000_000 + i));
            text.push_str(&format!("pin n{i} {}\n", id(i).fingerprint()));
        }
        fs::write(&path, &text)?;
        let s = RoomState::load(&path)?;
        assert_eq!(s.counters.len(), MAX_COUNTERS);
        assert_eq!(s.counter_floor, 1_000_000 + 100_000 - MAX_COUNTERS as u64 - 1);
        assert_eq!(s.pins.len(), 100_000);
        s.save(&path)?;
        assert!(fs::metadata(&path)?.len() < MAX_STATE_LEN * 3 / 4);
        assert_eq!(RoomState::load(&path)?, s);
        Ok(())
    }

    #[test]
    fn cut_short_or_oversized_files_are_reported_as_damaged() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state");
        let mut s = RoomState { last_seq: 3, ..RoomState::default() };
        s.accept(id(1), 10);
        s.save(&path)?;
        let full = fs::read_to_string(&path)?;
        fs::write(&path, &full[..full.len() - 10])?;
        let err = RoomState::load(&path).unwrap_err();
        assert!(matches!(&err, FileError::Damaged { why, .. } if why.contains("cut short")), "{err}");
        fs::write(&path, format!("{full}last_seq 4\n"))?;
        assert!(RoomState::load(&path).unwrap_err().to_string().contains("cut short"));
        fs::write(&path, format!("{full}end\n"))?;
        assert!(RoomState::load(&path).unwrap_err().to_string().contains("after the `end` line"));
        let big = fs::File::create(&path)?;
        big.set_len(MAX_STATE_LEN + 1)?;
        let err = RoomState::load(&path).unwrap_err();
        assert!(
            matches!(&err, FileError::Damaged { why, .. } if why.contains("larger than the 16 MiB")),
            "{err}"
        );
        Ok(())
    }
}
