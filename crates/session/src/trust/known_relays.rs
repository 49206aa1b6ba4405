//! The known-relays file: one `HOST:PORT FINGERPRINT` line per relay, `#` comments allowed,
//! mode 0600. A relay seen for the first time is recorded (trust on first use) unless an
//! invite or the config already pins its key; a different key later is refused.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{FileError, SessionError};
use crate::state::write_private;

/// Largest known-relays file read.
pub const MAX_KNOWN_RELAYS_LEN: u64 = 4 << 20;

/// The known-relays file.
#[derive(Debug, Clone)]
pub struct KnownRelays {
    path: PathBuf,
}

impl KnownRelays {
    /// The file at `path` (created on first record).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, in file order.
    pub fn list(&self) -> Result<Vec<(String, [u8; 32])>, FileError> {
        let shown = || self.path.display().to_string();
        let file = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(FileError::Io { path: shown(), source }),
        };
        let mut text = String::new();
        file.take(MAX_KNOWN_RELAYS_LEN)
            .read_to_string(&mut text)
            .map_err(|source| FileError::Io { path: shown(), source })?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |why: &str| FileError::Syntax { path: shown(), line: i + 1, why: why.into() };
            let (addr, fp) = line.split_once(' ').ok_or_else(|| syntax("expected HOST:PORT FINGERPRINT"))?;
            let key = crate::invite::parse_fingerprint(fp.trim())
                .map_err(|_| syntax("the fingerprint is not 64 hexadecimal digits"))?;
            out.push((addr.to_ascii_lowercase(), key));
        }
        Ok(out)
    }

    /// The pinned key of `addr` (`HOST:PORT`), if any.
    pub fn lookup(&self, addr: &str) -> Result<Option<[u8; 32]>, FileError> {
        let addr = addr.to_ascii_lowercase();
        Ok(self.list()?.into_iter().find(|(a, _)| *a == addr).map(|(_, k)| k))
    }

    /// Records `addr` with `key`, replacing nothing (callers check `lookup` first).
    pub fn record(&self, addr: &str, key: &[u8; 32]) -> Result<(), FileError> {
        let mut entries = self.list()?;
        entries.retain(|(a, _)| *a != addr.to_ascii_lowercase());
        entries.push((addr.to_ascii_lowercase(), *key));
        self.write(&entries)
    }

    /// Removes every entry for `target`: either `HOST:PORT`, or `HOST` for all its ports.
    /// Returns how many were removed.
    pub fn forget(&self, target: &str) -> Result<usize, FileError> {
        let target = target.to_ascii_lowercase();
        let mut entries = self.list()?;
        let before = entries.len();
        entries.retain(|(addr, _)| {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            *addr != target && host != target.trim_start_matches('[').trim_end_matches(']')
        });
        let removed = before - entries.len();
        if removed > 0 {
            self.write(&entries)?;
        }
        Ok(removed)
    }

    fn write(&self, entries: &[(String, [u8; 32])]) -> Result<(), FileError> {
        let mut text = String::from("# chatroom known relays: HOST:PORT FINGERPRINT\n");
        for (addr, key) in entries {
            text.push_str(&format!("{addr} {}\n", hex::encode(key)));
        }
        write_private(&self.path, text.as_bytes())
    }
}

/// What pins a relay's key for one connection.
#[derive(Debug, Clone, Default)]
pub struct RelayPin {
    /// A fingerprint from an invite, `--fingerprint`-style config, or the caller.
    pub expected: Option<[u8; 32]>,
    /// Where `expected` came from, for messages ("the invite", "config.toml").
    pub expected_source: String,
    /// The known-relays file (trust on first use); `None` trusts only `expected`.
    pub known: Option<KnownRelays>,
}

/// The result of a successful relay key check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCheck {
    /// The key matched a pin.
    Pinned,
    /// No pin existed: the key is now recorded in the known-relays file.
    FirstUse,
    /// No pin and nowhere to record one (no known-relays file, no expected key).
    Unpinned,
}

/// Checks a relay's key against its pins; records it on first use.
pub fn check_relay(pin: &RelayPin, addr: &str, actual: &[u8; 32]) -> Result<RelayCheck, SessionError> {
    let mismatch = |expected: &[u8; 32], source: &str| SessionError::RelayKeyMismatch {
        addr: addr.to_owned(),
        expected: hex::encode(expected),
        actual: hex::encode(actual),
        pin_source: source.to_owned(),
    };
    let known = match &pin.known {
        Some(k) => k.lookup(addr)?,
        None => None,
    };
    if let Some(known_key) = known {
        if known_key != *actual {
            return Err(mismatch(&known_key, "the known-relays file"));
        }
    }
    if let Some(expected) = pin.expected {
        if expected != *actual {
            return Err(mismatch(&expected, &pin.expected_source));
        }
    }
    match (&pin.known, known) {
        (_, Some(_)) => Ok(RelayCheck::Pinned),
        (Some(file), None) => {
            file.record(addr, actual)?;
            Ok(if pin.expected.is_some() { RelayCheck::Pinned } else { RelayCheck::FirstUse })
        }
        (None, None) if pin.expected.is_some() => Ok(RelayCheck::Pinned),
        (None, None) => Ok(RelayCheck::Unpinned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::os::unix::fs::PermissionsExt;

    type TestResult = Result<(), Box<dyn Error>>;

    #[test]
    fn first_use_is_recorded_then_enforced() -> TestResult {
        let dir = tempfile::tempdir()?;
        let known = KnownRelays::new(dir.path().join("known_relays"));
        let pin = RelayPin { known: Some(known.clone()), ..RelayPin::default() };
        assert_eq!(check_relay(&pin, "h:1", &[1; 32])?, RelayCheck::FirstUse);
        assert_eq!(fs::metadata(known.path())?.permissions().mode() & 0o777, 0o600);
        assert_eq!(check_relay(&pin, "H:1", &[1; 32])?, RelayCheck::Pinned);
        let err = check_relay(&pin, "h:1", &[2; 32]).unwrap_err().to_string();
        assert!(err.contains(&hex::encode([1u8; 32])) && err.contains(&hex::encode([2u8; 32])), "{err}");
        assert!(err.contains("RELAY KEY MISMATCH for h:1"), "{err}");
        assert_eq!(check_relay(&pin, "h:2", &[2; 32])?, RelayCheck::FirstUse);
        assert_eq!(known.forget("h")?, 2);
        assert_eq!(check_relay(&pin, "h:1", &[2; 32])?, RelayCheck::FirstUse);
        assert_eq!(known.forget("h:1")?, 1);
        assert_eq!(known.forget("h:1")?, 0);
        Ok(())
    }

    #[test]
    fn an_invite_fingerprint_is_enforced_and_recorded() -> TestResult {
        let dir = tempfile::tempdir()?;
        let known = KnownRelays::new(dir.path().join("known_relays"));
        let pin = RelayPin {
            expected: Some([7; 32]),
            expected_source: "the invite".into(),
            known: Some(known.clone()),
        };
        let err = check_relay(&pin, "h:1", &[8; 32]).unwrap_err().to_string();
        assert!(err.contains("the invite"), "{err}");
        assert!(known.lookup("h:1")?.is_none(), "a refused key is never recorded");
        assert_eq!(check_relay(&pin, "h:1", &[7; 32])?, RelayCheck::Pinned);
        assert_eq!(known.lookup("h:1")?, Some([7; 32]));
        Ok(())
    }

    #[test]
    fn corrupt_lines_are_reported_with_their_number() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("known_relays");
        fs::write(&path, "# c\nh:1 nothex\n")?;
        let err = KnownRelays::new(&path).list().unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        Ok(())
    }
}
