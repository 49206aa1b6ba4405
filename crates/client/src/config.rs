//! `config.toml`: saved rooms (`chatroom NAME`) and defaults. It never holds a password; a room
//! may name a password file, which must have mode 0600.
//!
//! ```toml
//! proxy = "socks5h://127.0.0.1:9050"   # optional default for every room
//! highlight = ["deploy", "alice-team"] # optional: words that mark a message as a mention
//! bell = "unfocused"                   # optional: "unfocused" (default), "always" or "never"
//! heal_messages = 100                  # optional, protocol 2: update commit after N own messages
//! heal_hours = 24                      # optional, protocol 2: ... or after H hours
//!
//! [rooms.work]
//! relay = "chat.example.org:7777"      # or the nodes of a cluster: "n1.example:7777,n2.example:7777"
//! room = "general"
//! nick = "alice"
//! fingerprint = "<64 hex digits>"      # optional: pins the relay
//! proxy = "socks5h://127.0.0.1:9050"   # optional
//! password_file = "~/.config/chatroom/work.pass"   # optional, mode 0600; ~ is the home directory
//! kdf = "m65536t3p1"                   # optional
//! protocol = 1                         # optional: 2 (MLS, the default) or 1
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use chatroom_session::error::FileError;

/// Largest config file read.
pub(crate) const MAX_CONFIG_LEN: u64 = 1 << 20;
/// Largest password file read.
pub(crate) const MAX_PASSWORD_FILE_LEN: u64 = 4096;
/// Most highlight words.
pub(crate) const MAX_HIGHLIGHTS: usize = 64;
/// Longest highlight word, in bytes.
pub(crate) const MAX_HIGHLIGHT_LEN: usize = 64;

/// When a mention rings the terminal bell (and marks the window title).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Bell {
    /// Only while the terminal window does not have the focus (or cannot say).
    #[default]
    Unfocused,
    /// On every mention.
    Always,
    /// Never.
    Never,
}

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Default proxy for every room.
    pub(crate) proxy: Option<String>,
    /// Words that mark a message as a mention, besides your nickname (case-insensitive).
    #[serde(default)]
    pub(crate) highlight: Vec<String>,
    /// When a mention rings the terminal bell.
    #[serde(default)]
    pub(crate) bell: Bell,
    /// Protocol 2: an update commit after this many own messages (1 or more; default 100).
    pub(crate) heal_messages: Option<u32>,
    /// Protocol 2: ... or after this many hours (1 to 8760; default 24).
    pub(crate) heal_hours: Option<u32>,
    /// Saved rooms by name.
    #[serde(default)]
    pub(crate) rooms: BTreeMap<String, RoomEntry>,
}

/// One saved room.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoomEntry {
    /// `HOST:PORT` of the relay, or several (a relay cluster's nodes), separated by commas.
    pub(crate) relay: String,
    /// Room name.
    pub(crate) room: String,
    /// Nickname.
    pub(crate) nick: Option<String>,
    /// The relay's fingerprint (64 hex digits).
    pub(crate) fingerprint: Option<String>,
    /// `socks5h://HOST:PORT`.
    pub(crate) proxy: Option<String>,
    /// A 0600 file holding the room password.
    pub(crate) password_file: Option<PathBuf>,
    /// Argon2id parameters like `m65536t3p1`.
    pub(crate) kdf: Option<String>,
    /// Protocol version of the room: 1 or 2 (what decides without it: `crate::version`).
    pub(crate) protocol: Option<u8>,
    /// Refused with advice: passwords never go into the config file.
    #[serde(default)]
    password: Option<toml::Value>,
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line of the first `KEY = ...`.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
        .map(|i| i + 1)
}

/// The TOML parser's message on one line, without the `password` field it lists as expected
/// (accepted only to be refused with advice).
fn parse_message(message: &str) -> String {
    let one_line: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    chatroom_session::display::neutralize(&one_line.join(": ").replace(", `password`", ""))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.display().to_string(), source }
}

impl Config {
    /// Parses config text; `path` is only for messages.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, FileError> {
        let config: Config = toml::from_str(text).map_err(|e| FileError::Syntax {
            path: path.display().to_string(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            why: parse_message(e.message()),
        })?;
        let too_long = config.highlight.iter().any(|w| w.is_empty() || w.len() > MAX_HIGHLIGHT_LEN);
        if config.highlight.len() > MAX_HIGHLIGHTS || too_long {
            return Err(FileError::Syntax {
                path: path.display().to_string(),
                line: key_line(text, "highlight").unwrap_or(1),
                why: format!(
                    "highlight takes at most {MAX_HIGHLIGHTS} words of 1 to {MAX_HIGHLIGHT_LEN} bytes each"
                ),
            });
        }
        let bad_heal =
            (config.heal_messages == Some(0), config.heal_hours.is_some_and(|h| !(1..=8760).contains(&h)));
        if bad_heal.0 || bad_heal.1 {
            let key = if bad_heal.0 { "heal_messages" } else { "heal_hours" };
            return Err(FileError::Syntax {
                path: path.display().to_string(),
                line: key_line(text, key).unwrap_or(1),
                why: "heal_messages takes 1 or more messages, heal_hours 1 to 8760 hours".into(),
            });
        }
        let mut config = config;
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        for entry in config.rooms.values_mut() {
            entry.password_file = entry.password_file.take().map(|p| expand_home(p, home.as_deref()));
        }
        for (name, entry) in &config.rooms {
            if entry.password.is_some() {
                return Err(FileError::Syntax {
                    path: path.display().to_string(),
                    line: key_line(text, "password").unwrap_or(1),
                    why: format!(
                        "[rooms.{}] holds a password; config.toml never stores passwords: put it in a file \
                         with mode 0600 and name it with password_file = \"...\"",
                        chatroom_session::display::neutralize_short(name)
                    ),
                });
            }
        }
        Ok(config)
    }

    /// Loads the config file; a missing file is an empty config.
    pub(crate) fn load(path: &Path) -> Result<Config, FileError> {
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

/// `~` or `~/rest` in a path from the config file means the home directory; any other path
/// (and `~` when there is no home directory) is kept as written.
pub(crate) fn expand_home(path: PathBuf, home: Option<&Path>) -> PathBuf {
    let Some(home) = home else { return path };
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path,
    }
}

/// Reads a room password from a file that only its owner may read (mode 0600 or stricter).
/// One trailing newline is removed.
pub(crate) fn read_password_file(path: &Path) -> Result<Zeroizing<String>, FileError> {
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
    fn a_leading_tilde_is_the_home_directory() {
        let home = Some(Path::new("/home/alice"));
        let expand = |p: &str| expand_home(PathBuf::from(p), home);
        assert_eq!(expand("~/.config/w.pass"), Path::new("/home/alice/.config/w.pass"));
        assert_eq!(expand("~"), Path::new("/home/alice"));
        assert_eq!(expand("~bob/w.pass"), Path::new("~bob/w.pass"), "another user's home is not guessed");
        assert_eq!(expand("/etc/~/w"), Path::new("/etc/~/w"));
        assert_eq!(expand("rel/~"), Path::new("rel/~"));
        assert_eq!(expand_home(PathBuf::from("~/w"), None), Path::new("~/w"));
    }

    #[test]
    fn passwords_unknown_keys_and_bad_syntax_are_refused() {
        let pw = "[rooms.w]\nrelay = \"h:1\"\nroom = \"r\"\npassword = \"hunter2\"\n";
        let err = Config::parse(pw, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("password_file") && !err.contains("hunter2"), "{err}");
        assert!(err.contains("c.toml, line 4: [rooms.w] holds a password"), "at the key's line: {err}");
        let unknown = "[rooms.w]\nrelay = \"h:1\"\nroom = \"r\"\ncolour = 1\n";
        let err = Config::parse(unknown, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml, line 4: unknown field `colour`"), "at the key's line: {err}");
        assert!(err.contains("`password_file`") && !err.contains("`password`"), "{err}");
        let header = "proxy = \"socks5h://h:1\"\n[rooms.w\nrelay = 1\n";
        let err = Config::parse(header, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.starts_with("c.toml, line 2: invalid table header"), "{err}");
        assert!(!err.contains('^') && !err.contains('\n'), "one line, no control characters: {err}");
        let missing = "[rooms.w]\nrelay = \"h:1\"\n";
        assert!(Config::parse(missing, Path::new("c.toml")).is_err());
        let err = Config::parse("[rooms\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml, line 1"), "{err}");
    }

    #[test]
    fn highlight_words_and_bell_are_read_and_bounded() -> TestResult {
        let c = Config::parse("highlight = [\"deploy\", \"Ops\"]\nbell = \"never\"\n", Path::new("c.toml"))?;
        assert_eq!((c.highlight.len(), c.bell), (2, Bell::Never));
        assert_eq!(Config::parse("", Path::new("c.toml"))?.bell, Bell::Unfocused);
        let err = Config::parse("\nhighlight = [\"\"]\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.starts_with("c.toml, line 2: highlight takes at most"), "{err}");
        assert!(Config::parse("bell = \"loud\"\n", Path::new("c.toml")).is_err());
        let c = Config::parse("heal_messages = 5\nheal_hours = 2\n", Path::new("c.toml"))?;
        assert_eq!((c.heal_messages, c.heal_hours), (Some(5), Some(2)));
        for bad in ["heal_messages = 0\n", "heal_hours = 0\n", "heal_hours = 8761\n"] {
            assert!(Config::parse(bad, Path::new("c.toml")).is_err(), "{bad}");
        }
        Ok(())
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
        let err = read_password_file(&path).unwrap_err();
        assert!(matches!(err, FileError::Permissions { mode: 0o644, .. }), "{err}");
        assert!(crate::advice::file(&err).contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        assert_eq!(read_password_file(&path)?.as_str(), "correct horse");
        fs::write(&path, "\n")?;
        assert!(read_password_file(&path).is_err());
        Ok(())
    }
}
