//! Key files: one 32-byte secret as hex under a header naming its kind, created with mode
//! 0600 (written to a temporary file and renamed, so a crash never leaves half a key), and
//! refused when other users can read them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::KeyFileError;
use crate::handshake::StaticKeypair;
use crate::identity::Identity;

/// What a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A relay's X25519 Noise static key.
    RelayStatic,
    /// A member's Ed25519 identity seed.
    Identity,
}

impl KeyKind {
    fn header(self) -> &'static str {
        match self {
            KeyKind::RelayStatic => "chatroom relay x25519 static key v1",
            KeyKind::Identity => "chatroom member ed25519 identity v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::RelayStatic => "relay static",
            KeyKind::Identity => "identity",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.display().to_string(), source }
}

/// Writes a key file with mode 0600, creating its directory (mode 0700) if needed.
pub fn write_key_file(path: &Path, kind: KeyKind, secret: &[u8; 32]) -> Result<(), KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        }
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let contents = Zeroizing::new(format!("{}\n{}\n", kind.header(), hex::encode(secret)));
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Reads a key file, refusing one that group or others may read or write.
pub fn read_key_file(path: &Path, kind: KeyKind) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let shown = || path.display().to_string();
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions { path: shown(), mode });
    }
    if meta.len() > 256 {
        return Err(KeyFileError::Format { path: shown(), kind: kind.name(), reason: "file is too large" });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
    let mut lines = text.lines();
    if lines.next() != Some(kind.header()) {
        return Err(KeyFileError::Format {
            path: shown(),
            kind: kind.name(),
            reason: "unexpected header line",
        });
    }
    let mut key = Zeroizing::new([0u8; 32]);
    let hex_line = lines.next().unwrap_or("");
    hex::decode_to_slice(hex_line.trim(), key.as_mut()).map_err(|_| KeyFileError::Format {
        path: shown(),
        kind: kind.name(),
        reason: "second line is not 64 hex digits",
    })?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(KeyFileError::Format {
            path: shown(),
            kind: kind.name(),
            reason: "unexpected extra lines",
        });
    }
    Ok(key)
}

/// Loads the relay's static key, creating it on first use. Returns the key and whether it
/// was created.
pub fn load_or_create_static(path: &Path) -> Result<(StaticKeypair, bool), KeyFileError> {
    if path.exists() {
        let private = read_key_file(path, KeyKind::RelayStatic)?;
        return Ok((StaticKeypair::from_private(&private), false));
    }
    let pair = StaticKeypair::generate();
    write_key_file(path, KeyKind::RelayStatic, pair.private())?;
    Ok((pair, true))
}

/// Loads a member identity, creating it on first use. Returns it and whether it was created.
pub fn load_or_create_identity(path: &Path) -> Result<(Identity, bool), KeyFileError> {
    if path.exists() {
        let seed = read_key_file(path, KeyKind::Identity)?;
        return Ok((Identity::from_seed(&seed), false));
    }
    let id = Identity::generate();
    write_key_file(path, KeyKind::Identity, &id.seed())?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_files_are_0600_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/relay.key");
        let (pair, created) = load_or_create_static(&path).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let (again, created) = load_or_create_static(&path).unwrap();
        assert!(!created);
        assert_eq!(pair.public(), again.public());
    }

    #[test]
    fn identity_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let (id, _) = load_or_create_identity(&path).unwrap();
        let (again, created) = load_or_create_identity(&path).unwrap();
        assert!(!created);
        assert_eq!(id.public(), again.public());
    }

    #[test]
    fn loose_permissions_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        load_or_create_static(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_static(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn wrong_kind_and_corrupt_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        load_or_create_identity(&path).unwrap();
        assert!(matches!(read_key_file(&path, KeyKind::RelayStatic), Err(KeyFileError::Format { .. })));
        write_key_file(&path, KeyKind::Identity, &[1; 32]).unwrap();
        let text = fs::read_to_string(&path).unwrap().replace('0', "z");
        fs::write(&path, text).unwrap();
        assert!(matches!(read_key_file(&path, KeyKind::Identity), Err(KeyFileError::Format { .. })));
    }
}
