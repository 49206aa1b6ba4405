//! Working out where to connect and as whom: paths, invite or saved room, flags, prompts.

use std::path::{Path, PathBuf};

use crate::config::{Config, RoomEntry};
use chatroom_session::crypto::{KdfParams, Nick, RoomName};
use chatroom_session::display::neutralize_short;
use chatroom_session::invite::{looks_like_invite, parse_fingerprint, Invite};
use chatroom_session::transport::{Proxy, RelayAddrs};
use chatroom_session::trust::KnownRelays;

use crate::app_error::AppError;
use crate::cli::{ChatArgs, Cli, TargetArgs};
use crate::prompt::Input;
use crate::version::{Chosen, Source};

/// The files the program uses.
pub(crate) struct Paths {
    pub(crate) data_dir: PathBuf,
    pub(crate) config: PathBuf,
}

/// Longest profile name.
const MAX_PROFILE_LEN: usize = 32;

/// Checks a `--profile` name: 1 to 32 letters, digits, `-` or `_` (it names directories).
fn profile_name(name: &str) -> Result<&str, AppError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROFILE_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(AppError::new(format!(
            "--profile {:?} is not usable: a profile name is 1 to {MAX_PROFILE_LEN} letters, digits, - or _",
            neutralize_short(name)
        )))
    }
}

impl Paths {
    pub(crate) fn new(cli: &Cli) -> Result<Self, AppError> {
        let dirs = directories::ProjectDirs::from("", "", "chatroom");
        let profile = cli.profile.as_deref().map(profile_name).transpose()?;
        let data_dir = match (&cli.data_dir, &dirs) {
            (Some(d), _) => d.clone(),
            (None, Some(dirs)) => match profile {
                Some(name) => dirs.data_dir().join("profiles").join(name),
                None => dirs.data_dir().to_path_buf(),
            },
            (None, None) => return Err(AppError::new("cannot find a home directory; give --data-dir DIR")),
        };
        let config = match (&cli.config, &dirs) {
            (Some(c), _) => c.clone(),
            (None, Some(dirs)) => match profile {
                Some(name) => dirs.config_dir().join("profiles").join(format!("{name}.toml")),
                None => dirs.config_dir().join("config.toml"),
            },
            (None, None) => return Err(AppError::new("cannot find a home directory; give --config PATH")),
        };
        Ok(Self { data_dir, config })
    }

    pub(crate) fn identity(&self) -> PathBuf {
        self.data_dir.join("identity.key")
    }

    pub(crate) fn known_relays(&self) -> KnownRelays {
        KnownRelays::new(self.data_dir.join("known_relays"))
    }
}

/// Everything about the room except the password.
#[derive(Debug, Default)]
pub(crate) struct Target {
    pub(crate) relay: Option<RelayAddrs>,
    pub(crate) room: Option<RoomName>,
    pub(crate) nick: Option<Nick>,
    /// The pinned relay key and where it came from.
    pub(crate) fingerprint: Option<([u8; 32], String)>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) kdf: KdfParams,
    /// Protocol version (1 or 2) as the flag, the saved room or the invite says.
    pub(crate) protocol: Option<Chosen>,
    /// The target is an invite without `v=`, which names no protocol version.
    pub(crate) old_invite: bool,
}

fn entry_into(target: &mut Target, name: &str, entry: &RoomEntry, path: &Path) -> Result<(), AppError> {
    let ctx =
        |e: String| AppError::new(format!("[rooms.{}] in {}: {e}", neutralize_short(name), path.display()));
    target.relay = Some(
        RelayAddrs::parse_relays(&entry.relay)
            .map_err(|e: chatroom_session::error::AddressError| ctx(e.to_string()))?,
    );
    target.room = Some(RoomName::new(&entry.room).map_err(|e| ctx(e.to_string()))?);
    if let Some(nick) = &entry.nick {
        target.nick = Some(Nick::new(nick).map_err(|e| ctx(e.to_string()))?);
    }
    if let Some(fp) = &entry.fingerprint {
        let key = parse_fingerprint(fp).map_err(|e| ctx(e.to_string()))?;
        target.fingerprint = Some((key, format!("config.toml [rooms.{}]", neutralize_short(name))));
    }
    if let Some(proxy) = &entry.proxy {
        target.proxy =
            Some(proxy.parse().map_err(|e: chatroom_session::error::AddressError| ctx(e.to_string()))?);
    }
    target.password_file = entry.password_file.clone();
    if let Some(v) = entry.protocol {
        if !(1..=2).contains(&v) {
            return Err(ctx(format!("protocol = {v}: the versions are 1 and 2")));
        }
        target.protocol = Some(Chosen { version: v, source: Source::SavedRoom });
    }
    if let Some(kdf) = &entry.kdf {
        target.kdf = kdf.parse().map_err(|e: chatroom_session::crypto::KdfError| ctx(e.to_string()))?;
    }
    Ok(())
}

/// Builds the target from the positional argument (invite or saved name) and flags.
pub(crate) fn resolve(args: &TargetArgs, config: &Config, config_path: &Path) -> Result<Target, AppError> {
    let mut target = Target::default();
    if let Some(proxy) = &config.proxy {
        target.proxy = Some(proxy.parse().map_err(|e: chatroom_session::error::AddressError| {
            AppError::new(format!("proxy in {}: {e}", config_path.display()))
        })?);
    }
    match args.target.as_deref() {
        None => {}
        Some(s) if looks_like_invite(s) => {
            let invite: Invite = s.parse()?;
            target.relay = Some(invite.relay);
            target.room = Some(invite.room);
            target.fingerprint = Some((invite.fingerprint, "the invite".into()));
            target.kdf = invite.kdf;
            target.protocol = invite.version.map(|version| Chosen { version, source: Source::Invite });
            target.old_invite = invite.version.is_none();
        }
        Some(name) => {
            let entry = config.rooms.get(name).ok_or_else(|| {
                let known: Vec<&str> = config.rooms.keys().map(String::as_str).collect();
                AppError::new(format!(
                    "{:?} is neither an invite (chatroom://...) nor a saved room in {} (saved rooms: {}); \
                     add [rooms.{}] there or pass an invite",
                    neutralize_short(name),
                    config_path.display(),
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") },
                    neutralize_short(name),
                ))
            })?;
            entry_into(&mut target, name, entry, config_path)?;
        }
    }
    if let Some(relay) = &args.relay {
        target.relay = Some(RelayAddrs::parse_relays(relay)?);
    }
    if let Some(room) = &args.room {
        target.room = Some(RoomName::new(room).map_err(|e| AppError::new(format!("--room: {e}")))?);
    }
    if let Some(fp) = &args.fingerprint {
        target.fingerprint = Some((parse_fingerprint(fp)?, "--fingerprint".into()));
    }
    if let Some(kdf) = &args.kdf {
        target.kdf = kdf.parse()?;
    }
    if let Some(version) = args.protocol {
        target.protocol = Some(Chosen { version, source: Source::Flag });
    }
    Ok(target)
}

/// Applies chat flags, then asks for whatever is still missing, in order: relay, room, nickname.
pub(crate) fn complete(target: &mut Target, chat: &ChatArgs, input: &mut Input) -> Result<(), AppError> {
    if let Some(nick) = &chat.nick {
        target.nick = Some(Nick::new(nick).map_err(|e| AppError::new(format!("--nick: {e}")))?);
    }
    if let Some(proxy) = &chat.proxy {
        target.proxy = Some(proxy.parse()?);
    }
    if let Some(file) = &chat.password_file {
        target.password_file = Some(file.clone());
    }
    while target.relay.is_none() {
        let answer = input.ask("Relay address (HOST or HOST:PORT): ")?;
        match RelayAddrs::parse_relays(&answer) {
            Ok(relay) => target.relay = Some(relay),
            Err(e) if input.is_tty() => eprintln!("-!- {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    while target.room.is_none() {
        let answer = input.ask("Room: ")?;
        match RoomName::new(&answer) {
            Ok(room) => target.room = Some(room),
            Err(e) if input.is_tty() => eprintln!("-!- {e}"),
            Err(e) => return Err(AppError::new(e.to_string())),
        }
    }
    while target.nick.is_none() {
        let answer = input.ask("Nickname: ")?;
        match Nick::new(&answer) {
            Ok(nick) => target.nick = Some(nick),
            Err(e) if input.is_tty() => eprintln!("-!- {e}"),
            Err(e) => return Err(AppError::new(e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(protocol: &str) -> Config {
        let text = format!("[rooms.v2]\nrelay = \"127.0.0.1:1\"\nroom = \"r\"\n{protocol}\n");
        Config::parse(&text, Path::new("config.toml")).unwrap()
    }

    #[test]
    fn the_protocol_comes_from_the_saved_room_or_the_flag() {
        let saved = TargetArgs { target: Some("v2".into()), ..TargetArgs::default() };
        let path = Path::new("config.toml");
        let version = |t: Target| t.protocol.map(|c| (c.version, c.source));
        assert_eq!(
            version(resolve(&saved, &config("protocol = 2"), path).unwrap()),
            Some((2, Source::SavedRoom))
        );
        assert_eq!(version(resolve(&saved, &config(""), path).unwrap()), None);
        let flagged = TargetArgs { protocol: Some(1), ..saved.clone() };
        assert_eq!(
            version(resolve(&flagged, &config("protocol = 2"), path).unwrap()),
            Some((1, Source::Flag))
        );
        let err = resolve(&saved, &config("protocol = 3"), path).err().unwrap().to_string();
        assert!(err.contains("protocol = 3: the versions are 1 and 2"), "{err}");
        let invite = |tail: &str| {
            let url = format!("chatroom://{}@a:1/r?kdf=m65536t3p1{tail}", "00".repeat(32));
            resolve(&TargetArgs { target: Some(url), ..TargetArgs::default() }, &Config::default(), path)
                .unwrap()
        };
        let v2 = invite("&v=2");
        assert!(!v2.old_invite);
        assert_eq!(version(v2), Some((2, Source::Invite)));
        assert_eq!(version(invite("&v=1")), Some((1, Source::Invite)));
        let old = invite("");
        assert!(old.old_invite && old.protocol.is_none(), "an invite without v= names no version");
    }

    #[test]
    fn relay_addresses_come_as_a_list_from_the_flag_the_config_and_invites() {
        let path = Path::new("config.toml");
        let text = "[rooms.c]\nrelay = \"n1.example,n2.example:7000\"\nroom = \"r\"\n";
        let saved = Config::parse(text, path).unwrap();
        let args = TargetArgs { target: Some("c".into()), ..TargetArgs::default() };
        let relay = resolve(&args, &saved, path).unwrap().relay.unwrap();
        assert_eq!(relay.to_string(), "n1.example:7878,n2.example:7000", "the default port for each");
        let flag = TargetArgs { relay: Some("a:1,[::1]:2".into()), ..args.clone() };
        assert_eq!(resolve(&flag, &saved, path).unwrap().relay.unwrap().len(), 2);
        let twice = TargetArgs { relay: Some("a:1,A:1".into()), ..args };
        let err = resolve(&twice, &saved, path).err().unwrap().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let fp = "00".repeat(32);
        let invite =
            TargetArgs { target: Some(format!("chatroom://{fp}@a:1,b:2/r")), ..TargetArgs::default() };
        let relay = resolve(&invite, &Config::default(), path).unwrap().relay.unwrap();
        assert_eq!(relay.to_string(), "a:1,b:2");
    }
}
