//! `/join`: another room in a window of its own, from an invite URL or a saved room of
//! config.toml. The nickname, proxy, data directory and known relays are those of the first
//! room unless the saved room says otherwise; the password comes from the saved room's
//! password file, or is asked for on the normal screen (as the question to create a room is).

use std::path::Path;
use std::sync::Arc;

use crate::config::{read_password_file, Config};
use chatroom_session::crypto::{RoomName, Zeroizing};
use chatroom_session::session::{RoomKeyCache, SessionConfig};
use chatroom_session::v2_session::V2Limits;

use super::window::Protocol;
use chatroom_session::trust::RelayPin;

use crate::app_error::AppError;
use crate::cli::TargetArgs;
use crate::setup::resolve;
use crate::version::Chosen;

/// A room to join, ready to start.
pub(crate) struct Joining {
    /// Its session configuration.
    pub(crate) config: SessionConfig,
    /// Its room key cache.
    pub(crate) keys: Arc<RoomKeyCache>,
    /// The relay as shown.
    pub(crate) relay_label: String,
    /// Its protocol version (as `crate::version` chooses it).
    pub(crate) protocol: Protocol,
    /// That version and why.
    pub(crate) chosen: Chosen,
}

/// Resolves `target` (an invite or a saved room's name) against the config file; `base` is
/// the first room's configuration; `ask` asks for the password of a room without a password
/// file; `v2_limits` are those of a protocol 2 room.
pub(crate) fn prepare(
    target: &str,
    base: &SessionConfig,
    v2_limits: &V2Limits,
    config_file: &Config,
    config_path: &Path,
    ask: impl FnOnce(&RoomName) -> Result<Zeroizing<String>, AppError>,
) -> Result<Joining, AppError> {
    let args = TargetArgs { target: Some(target.to_owned()), ..TargetArgs::default() };
    let target = resolve(&args, config_file, config_path)?;
    let chosen = crate::version::choose_in(&target, base.data_dir.as_deref(), base.relay_pin.known.as_ref());
    let (Some(relay), Some(room)) = (target.relay, target.room) else {
        return Err(AppError::new(
            "/join needs an invite URL or the name of a saved room with relay and room",
        ));
    };
    let password = match &target.password_file {
        Some(file) => read_password_file(file)?,
        None => ask(&room)?,
    };
    if password.is_empty() {
        return Err(AppError::new("the room password is empty; nothing was joined"));
    }
    let keys =
        Arc::new(RoomKeyCache::new(Zeroizing::new(password.as_bytes().to_vec()), room.clone(), target.kdf)?);
    let protocol = match chosen.version {
        2 => Protocol::V2 {
            limits: v2_limits.clone(),
            password: Arc::new(Zeroizing::new(password.as_bytes().to_vec())),
        },
        _ => Protocol::V1,
    };
    let (expected, expected_source) = match target.fingerprint {
        Some((key, source)) => (Some(key), source),
        None => (None, String::new()),
    };
    let proxy = target.proxy.or_else(|| base.proxy.clone());
    let relay_label = match &proxy {
        Some(p) => format!("{relay} via {p}"),
        None => relay.to_string(),
    };
    let config = SessionConfig {
        relay,
        proxy,
        room,
        nick: target.nick.unwrap_or_else(|| base.nick.clone()),
        create: false,
        relay_pin: RelayPin { expected, expected_source, known: base.relay_pin.known.clone() },
        data_dir: base.data_dir.clone(),
        limits: base.limits.clone(),
    };
    Ok(Joining { config, keys, relay_label, protocol, chosen })
}
