//! Connecting to the cluster and creating or checking the stream and buckets.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::Client;

/// The oldest nats-server accepted: clustered compare-and-set lost updates on followers before
/// 2.11/2.12, and atomic batches and per-message TTLs are 2.12 features.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);
/// The stream holding every room's log, one subject per room.
pub const STREAM: &str = "CHAT";
/// Subjects of the rooms' logs: `chat.<room id>`.
pub const LOG_SUBJECTS: &str = "chat.>";
/// Where the stream's leader republishes each stored message: `fan.<room id>`.
pub const FAN_SUBJECTS: &str = "fan.>";
/// How long a resent `Nats-Msg-Id` is recognised as a duplicate by the server.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Rooms: verifier, owner and creation time, one key per room, created with compare-and-set.
pub const ROOMS_BUCKET: &str = "chat_rooms";
/// Nickname bindings of each room, both ways, written in atomic batches.
pub const NICKS_BUCKET: &str = "chat_nicks";
/// Bans of each room, one key per banned identity.
pub const BANS_BUCKET: &str = "chat_bans";
/// Presence: one key per member connection, kept alive by a per-key TTL.
pub const PRESENCE_BUCKET: &str = "chat_presence";
/// Join-failure lockouts shared by every node, expiring by per-key TTL.
pub const LOCKOUTS_BUCKET: &str = "chat_lockouts";
/// Every bucket, and whether its keys carry a TTL.
pub const BUCKETS: [(&str, bool); 5] = [
    (ROOMS_BUCKET, false),
    (NICKS_BUCKET, false),
    (BANS_BUCKET, false),
    (PRESENCE_BUCKET, true),
    (LOCKOUTS_BUCKET, true),
];
/// How long the server keeps the marker it writes when a key's TTL runs out, which tells
/// every node of the expiry without polling.
pub const EXPIRY_MARKER_TTL: Duration = Duration::from_secs(60);

/// Why the cluster cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "cannot connect to NATS at {urls}: {detail}; check the --nats addresses and that the servers run"
    )]
    Connect { urls: String, detail: String },
    #[error(
        "nats-server {version} is too old: the relay cluster needs nats-server {}.{}.0 or newer; \
         upgrade every NATS node with the NATS project's release binary (docs/CLUSTER.md)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    OldServer { version: String },
    #[error(
        "the NATS server reports the version {version:?}, which is not MAJOR.MINOR.PATCH; \
         the relay cluster needs nats-server {}.{} or newer",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    UnreadableVersion { version: String },
    #[error(
        "{what} exists with {field} = {found}, but the relay needs {wanted}; \
         it was made by something else or by another relay version: fix or remove it (docs/CLUSTER.md)"
    )]
    Mismatch { what: String, field: &'static str, found: String, wanted: String },
    #[error("JetStream refused to create or read {what}: {detail}; check that JetStream is enabled on every NATS node and that the cluster has at least as many nodes as replicas")]
    JetStream { what: String, detail: String },
}

/// Connects to the cluster (`urls`: comma-separated `nats://` addresses) and checks its version.
pub async fn connect(urls: &str) -> Result<Client, SetupError> {
    let connect_error =
        |e: &dyn std::fmt::Display| SetupError::Connect { urls: urls.to_owned(), detail: e.to_string() };
    let addrs = urls
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| connect_error(&e))?;
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .connect(addrs)
        .await
        .map_err(|e| connect_error(&e))?;
    check_version(&client.server_info().version)?;
    Ok(client)
}

/// Accepts `MAJOR.MINOR.PATCH[-suffix]` at or above [`MIN_SERVER_VERSION`]; a pre-release of
/// the minimum itself (`2.12.0-rc.1`) predates its fixes and is refused.
pub fn check_version(version: &str) -> Result<(), SetupError> {
    let unreadable = || SetupError::UnreadableVersion { version: version.to_owned() };
    let bare = version.trim_start_matches('v');
    let core = bare.split(['-', '+']).next().unwrap_or_default();
    let parts =
        core.split('.').map(str::parse::<u64>).collect::<Result<Vec<_>, _>>().map_err(|_| unreadable())?;
    let [major, minor, patch] = parts[..] else { return Err(unreadable()) };
    let minimum = (MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, 0);
    let pre_release_of_minimum = (major, minor, patch) == minimum && bare.contains('-');
    if (major, minor) < MIN_SERVER_VERSION || pre_release_of_minimum {
        return Err(SetupError::OldServer { version: version.to_owned() });
    }
    Ok(())
}

/// The log stream's configuration for `replicas` copies of every message.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![LOG_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        allow_atomic_publish: true,
        republish: Some(stream::Republish {
            source: LOG_SUBJECTS.to_owned(),
            destination: FAN_SUBJECTS.to_owned(),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// Creates the log stream, or finds it, and checks the configuration the server stored.
pub async fn ensure_stream(js: &jetstream::Context, replicas: usize) -> Result<stream::Config, SetupError> {
    let wanted = stream_config(replicas);
    let what = format!("the stream {STREAM}");
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| SetupError::JetStream { what: what.clone(), detail: e.to_string() })?;
    let found = stream
        .info()
        .await
        .map_err(|e| SetupError::JetStream { what: what.clone(), detail: e.to_string() })?;
    check_stream(&what, &wanted, &found.config)?;
    if found.config.duplicate_window < DUPLICATE_WINDOW {
        return Err(SetupError::Mismatch {
            what,
            field: "duplicate_window",
            found: format!("{:?}", found.config.duplicate_window),
            wanted: format!("at least {DUPLICATE_WINDOW:?}"),
        });
    }
    Ok(found.config.clone())
}

/// Creates the buckets, or finds them, and checks what the server stored.
pub async fn ensure_buckets(js: &jetstream::Context, replicas: usize) -> Result<(), SetupError> {
    for (bucket, ttl_keys) in BUCKETS {
        let config = kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            limit_markers: ttl_keys.then_some(EXPIRY_MARKER_TTL),
            ..Default::default()
        };
        let what = format!("the key-value bucket {bucket}");
        let api =
            |e: &dyn std::fmt::Display| SetupError::JetStream { what: what.clone(), detail: e.to_string() };
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => js.create_key_value(config).await.map_err(|e| api(&e))?,
        };
        let mut backing = js.get_stream(&store.stream_name).await.map_err(|e| api(&e))?;
        let found = backing.info().await.map_err(|e| api(&e))?.config.clone();
        let mut wanted = found.clone();
        wanted.num_replicas = replicas;
        wanted.storage = stream::StorageType::File;
        wanted.allow_message_ttl = ttl_keys;
        wanted.subject_delete_marker_ttl = ttl_keys.then_some(EXPIRY_MARKER_TTL);
        check_stream(&what, &wanted, &found)?;
    }
    Ok(())
}

/// Compares the settings the relay relies on, naming the first that differs.
fn check_stream(what: &str, wanted: &stream::Config, found: &stream::Config) -> Result<(), SetupError> {
    let fields: [(&'static str, String, String); 8] = [
        ("subjects", format!("{:?}", wanted.subjects), format!("{:?}", found.subjects)),
        ("storage", format!("{:?}", wanted.storage), format!("{:?}", found.storage)),
        ("num_replicas", wanted.num_replicas.to_string(), found.num_replicas.to_string()),
        ("allow_direct", wanted.allow_direct.to_string(), found.allow_direct.to_string()),
        ("allow_atomic", wanted.allow_atomic_publish.to_string(), found.allow_atomic_publish.to_string()),
        ("republish", republish_text(wanted), republish_text(found)),
        ("allow_msg_ttl", wanted.allow_message_ttl.to_string(), found.allow_message_ttl.to_string()),
        (
            "subject_delete_marker_ttl",
            format!("{:?}", wanted.subject_delete_marker_ttl),
            format!("{:?}", found.subject_delete_marker_ttl),
        ),
    ];
    for (field, wanted, found) in fields {
        if wanted != found {
            return Err(SetupError::Mismatch { what: what.to_owned(), field, found, wanted });
        }
    }
    Ok(())
}

fn republish_text(config: &stream::Config) -> String {
    match &config.republish {
        Some(r) => format!("{} -> {} (headers only: {})", r.source, r.destination, r.headers_only),
        None => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_2_12_on_are_accepted() {
        for ok in ["2.12.0", "2.12.1", "2.12.1-rc.1", "2.15.1", "v2.15.1", "2.13.0-beta.1", "3.0.0"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn older_or_unreadable_versions_are_refused_with_what_to_do() {
        for old in ["2.9.10", "2.11.9", "1.99.0", "2.12.0-rc.1"] {
            let text = check_version(old).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                text.contains(old) && text.contains("2.12.0 or newer") && text.contains("release binary"),
                "{text}"
            );
        }
        for bad in ["", "2.12", "two.12.0", "2.12.0.1", "2..0"] {
            assert!(matches!(check_version(bad), Err(SetupError::UnreadableVersion { .. })), "{bad:?}");
        }
    }
}
