//! `config.toml`: saved rooms (`chatroom NAME`) and defaults. It never holds a password; a room
//! may name a password file, which must have mode 0600.
//!
//! ```toml
//! proxy = "socks5h://127.0.0.1:9050"   # optional default for every room
//!
//! [rooms.work]
//! relay = "chat.example.org:7777"
//! room = "general"
//! nick = "alice"
//! fingerprint = "<64 hex digits>"      # optional: pins the relay
//! proxy = "socks5h://127.0.0.1:9050"   # optional
//! password_file = "/home/alice/.config/chatroom/work.pass"   # optional, mode 0600
//! kdf = "m65536t3p1"                   # optional
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::FileError;

/// Largest config file read.
pub const MAX_CONFIG_LEN: u64 = 1 << 20;
/// Largest password file read.
pub const MAX_PASSWORD_FILE_LEN: u64 = 4096;

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default proxy for every room.
    pub proxy: Option<String>,
    /// Saved rooms by name.
    #[serde(default)]
    pub rooms: BTreeMap<String, RoomEntry>,
}

/// One saved room.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomEntry {
    /// `HOST:PORT` of the relay.
    pub relay: String,
    /// Room name.
    pub room: String,
    /// Nickname.
    pub nick: Option<String>,
    /// The relay's fingerprint (64 hex digits).
    pub fingerprint: Option<String>,
    /// `socks5h://HOST:PORT`.
    pub proxy: Option<String>,
    /// A 0600 file holding the room password.
    pub password_file: Option<PathBuf>,
    /// Argon2id parameters like `m65536t3p1`.
    pub kdf: Option<String>,
    /// Refused with advice: passwords never go into the config file.
    #[serde(default)]
    password: Option<toml::Value>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.display().to_string(), source }
}

impl Config {
    /// Parses config text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, FileError> {
        let config: Config = toml::from_str(text).map_err(|e| FileError::Syntax {
            path: path.display().to_string(),
            line: e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1)).unwrap_or(1),
            why: crate::display::neutralize(e.message()),
        })?;
        for (name, entry) in &config.rooms {
            if entry.password.is_some() {
                return Err(FileError::Syntax {
                    path: path.display().to_string(),
                    line: 1,
                    why: format!(
                        "[rooms.{}] holds a password; config.toml never stores passwords: put it in a file \
                         with mode 0600 and name it with password_file = \"...\"",
                        crate::display::neutralize_short(name)
                    ),
                });
            }
        }
        Ok(config)
    }

    /// Loads the config file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, FileError> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(io(path)(e)),
        };
        let mut text = String::new();
        file.take(MAX_CONFIG_LEN).read_to_string(&mut text).map_err(io(path))?;
        Config::parse(&text, path)
    }
}

/// Reads a room password from a file that only its owner may read (mode 0600 or stricter).
/// One trailing newline is removed.
pub fn read_password_file(path: &Path) -> Result<Zeroizing<String>, FileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FileError::Permissions { path: path.display().to_string(), mode });
    }
    // Room for the whole file at once: a buffer that grew would leave copies behind unwiped.
    let mut text = Zeroizing::new(String::with_capacity(MAX_PASSWORD_FILE_LEN as usize + 1));
    fs::File::open(path)
        .map_err(io(path))?
        .take(MAX_PASSWORD_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(FileError::Syntax {
            path: path.display().to_string(),
            line: 1,
            why: "the password file is empty; write the room password on its first line".into(),
        });
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    type TestResult = Result<(), Box<dyn Error>>;

    #[test]
    fn saved_rooms_parse() -> TestResult {
        let text = r#"
proxy = "socks5h://127.0.0.1:9050"
[rooms.work]
relay = "chat.example.org:7777"
room = "general"
nick = "alice"
fingerprint = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
password_file = "/tmp/x"
[rooms.home]
relay = "127.0.0.1:1"
room = "family"
"#;
        let c = Config::parse(text, Path::new("config.toml"))?;
        assert_eq!(c.proxy.as_deref(), Some("socks5h://127.0.0.1:9050"));
        let work = &c.rooms["work"];
        assert_eq!(work.relay, "chat.example.org:7777");
        assert_eq!(work.nick.as_deref(), Some("alice"));
        assert_eq!(work.password_file.as_deref(), Some(Path::new("/tmp/x")));
        assert!(c.rooms["home"].nick.is_none());
        Ok(())
    }

    #[test]
    fn passwords_unknown_keys_and_bad_syntax_are_refused() {
        let pw = "[rooms.w]\nrelay = \"h:1\"\nroom = \"r\"\npassword = \"hunter2\"\n";
        let err = Config::parse(pw, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("password_file") && !err.contains("hunter2"), "{err}");
        let unknown = "[rooms.w]\nrelay = \"h:1\"\nroom = \"r\"\ncolour = 1\n";
        assert!(Config::parse(unknown, Path::new("c.toml")).is_err());
        let missing = "[rooms.w]\nrelay = \"h:1\"\n";
        assert!(Config::parse(missing, Path::new("c.toml")).is_err());
        let err = Config::parse("[rooms\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml, line 1"), "{err}");
    }

    #[test]
    fn missing_config_is_empty() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert!(Config::load(&dir.path().join("none.toml"))?.rooms.is_empty());
        Ok(())
    }

    #[test]
    fn password_files_must_be_private() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pw");
        fs::write(&path, "correct horse\n")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        let err = read_password_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        assert_eq!(read_password_file(&path)?.as_str(), "correct horse");
        fs::write(&path, "\n")?;
        assert!(read_password_file(&path).is_err());
        Ok(())
    }
}
