//! Connecting to the cluster and creating or checking the stream and buckets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind, GetStreamError,
    GetStreamErrorKind, PublishErrorKind, RequestError, RequestErrorKind,
};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, kv, stream};
use async_nats::Client;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use zeroize::Zeroizing;

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
/// Each room's sealed MLS GroupInfo (protocol version 2): one key per room, the stored
/// object's `after_seq` (8 bytes, big-endian) then the object, replaced by compare-and-set.
pub const GROUP_INFO_BUCKET: &str = "chat_group_info";
/// The largest sealed GroupInfo any relay accepts (what clients open:
/// `chatroom_group::MAX_SEALED_GROUP_INFO`); a node's `--max-group-info-bytes` is at most this.
pub const MAX_GROUP_INFO_BYTES: usize = 8 * 1024 * 1024;
/// The group info bucket's largest value: `after_seq` and the largest object. The same for
/// every node, whatever its own `--max-group-info-bytes`.
pub const GROUP_INFO_VALUE_BYTES: usize = 8 + MAX_GROUP_INFO_BYTES;
/// Every bucket, and whether its keys carry a TTL.
pub const BUCKETS: [(&str, bool); 6] = [
    (ROOMS_BUCKET, false),
    (NICKS_BUCKET, false),
    (BANS_BUCKET, false),
    (PRESENCE_BUCKET, true),
    (LOCKOUTS_BUCKET, true),
    (GROUP_INFO_BUCKET, false),
];

/// The largest value a bucket takes, where it has a limit of its own (the server's
/// `max_payload` bounds every message).
fn max_value_size(bucket: &str) -> Option<i32> {
    (bucket == GROUP_INFO_BUCKET).then(|| i32::try_from(GROUP_INFO_VALUE_BYTES).unwrap_or(i32::MAX))
}
/// How long the server keeps the marker it writes when a key's TTL runs out, which tells
/// every node of the expiry without polling.
pub const EXPIRY_MARKER_TTL: Duration = Duration::from_secs(60);

/// Messages one subscription (a room's feed or control subject) buffers before the client
/// drops more: bounded memory per room held; a feed finds what was dropped as a gap and reads
/// it from the stream.
pub const SUBSCRIPTION_CAPACITY: usize = 1024;

/// Why the cluster cannot be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "cannot connect to NATS at {urls}: {detail}; check the --nats addresses and that the servers run \
         (with TLS: --nats-ca, and --nats-cert/--nats-key if they verify clients; \
         with nkey users: --nats-nkey)"
    )]
    Connect { urls: String, detail: String },
    #[error("cannot read {path} (given with {flag}): {detail}; check the path and its permissions")]
    UnreadableFile { flag: &'static str, path: String, detail: String },
    #[error("the nkey seed file {path} (given with --nats-nkey) cannot be used: {why}")]
    NkeyFile { path: String, why: String },
    #[error(
        "the --nats addresses carry different users or passwords; give every address the same one, \
         or give it in one address only"
    )]
    Credentials,
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
    #[error(
        "--max-group-info-bytes {max_group_info_bytes} does not fit the NATS server's max_payload of \
         {max_payload} bytes (a room's GroupInfo is stored as one message); raise max_payload to at \
         least {needed} on every NATS node, or lower --max-group-info-bytes"
    )]
    Payload { max_group_info_bytes: usize, max_payload: usize, needed: usize },
    #[error("JetStream refused to create or read {what}: {detail}; check that JetStream is enabled on every NATS node and that the cluster has at least as many nodes as replicas")]
    JetStream { what: String, detail: String },
    #[error(
        "the NATS cluster did not answer about {what} ({detail}), also after asking again for {:?}; \
         check that most NATS nodes run and reach each other (docs/CLUSTER.md)",
        SETUP_WITHIN
    )]
    Unanswered { what: String, detail: String },
}

impl SetupError {
    /// The error of a JetStream request about `what`: [`SetupError::Unanswered`] when the
    /// cluster may answer if asked again (see [`unanswered`]), else a refusal.
    pub fn jetstream(what: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        let (what, detail) = (what.to_owned(), e.to_string());
        if unanswered(e) {
            Self::Unanswered { what, detail }
        } else {
            Self::JetStream { what, detail }
        }
    }
}

/// How long a node starting on the cluster keeps asking while its setup requests go unanswered
/// or are answered "temporarily unavailable" (a leader election, a replicated stream's Raft
/// group still forming, a majority of nodes not yet back): relay and NATS nodes may start in
/// any order within this bound.
pub const SETUP_WITHIN: Duration = Duration::from_secs(90);
/// The pause before asking again.
const SETUP_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// JetStream's answers that a cluster gives while it elects or forms a group.
const TEMPORARY_CODES: [ErrorCode; 5] = [
    ErrorCode::CLUSTER_NOT_ACTIVE,
    ErrorCode::CLUSTER_NOT_ASSIGNED,
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::CLUSTER_NOT_LEADER,
    ErrorCode::STREAM_OFFLINE,
];

/// What nats-server adds to "no suitable peers for placement" when a peer it knows is offline
/// (a node restarting, or one whose first statistics have not reached the meta leader yet).
const PEER_OFFLINE: &str = "peer offline";

/// Whether a JetStream answer is one a cluster gives for a moment: an election, a group still
/// forming, or a placement that failed only because a known peer is offline. Fewer nodes than
/// replicas, with every node online, is final.
fn temporary(e: &jetstream::Error) -> bool {
    let code = e.error_code();
    TEMPORARY_CODES.contains(&code)
        || (code == ErrorCode::CLUSTER_NO_PEERS && e.to_string().contains(PEER_OFFLINE))
}

/// Whether `e` or an error it wraps says the cluster may answer if asked again: a request
/// that timed out, or a temporary answer (see [`temporary`]). No responders (JetStream off)
/// and every other refusal are final.
pub fn unanswered(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let found = if let Some(e) = e.downcast_ref::<RequestError>() {
            e.kind() == RequestErrorKind::TimedOut
        } else if let Some(e) = e.downcast_ref::<CreateStreamError>() {
            match e.kind() {
                CreateStreamErrorKind::TimedOut => true,
                CreateStreamErrorKind::JetStream(e) => temporary(&e),
                _ => false,
            }
        } else if let Some(e) = e.downcast_ref::<GetStreamError>() {
            matches!(e.kind(), GetStreamErrorKind::JetStream(e) if temporary(&e))
        } else if let Some(e) = e.downcast_ref::<CreateKeyValueError>() {
            e.kind() == CreateKeyValueErrorKind::TimedOut
        } else if let Some(e) = e.downcast_ref::<jetstream::Error>() {
            temporary(e)
        } else {
            false
        };
        if found {
            return true;
        }
        next = e.source();
    }
    false
}

/// The stream `name`, asked of the cluster once: wrap it in [`until_answered`] to ask again
/// while a reply goes astray (a new connection's reply subject not yet known to the stream
/// leader's node) or a leader is being elected.
pub async fn open_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream, SetupError> {
    js.get_stream(name).await.map_err(|e| SetupError::jetstream(name, &e))
}

/// Runs `attempt` until it succeeds, fails for another reason than [`SetupError::Unanswered`],
/// or [`SETUP_WITHIN`] has passed (the attempt in progress then ends there too).
pub async fn until_answered<T, F, Fut>(mut attempt: F) -> Result<T, SetupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SetupError>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_WITHIN;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Err(SetupError::Unanswered { what, detail })) => {
                tracing::warn!(%what, %detail, "the NATS cluster did not answer; asking again");
                last = Some(SetupError::Unanswered { what, detail });
            }
            Ok(done) => return done,
            Err(_) => break,
        }
        if tokio::time::Instant::now() + SETUP_RETRY_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(SETUP_RETRY_PAUSE).await;
    }
    let what = "the relay's streams and buckets".to_owned();
    Err(last.unwrap_or(SetupError::Unanswered { what, detail: "no answer".to_owned() }))
}

/// How a node proves itself to NATS and checks the servers, beyond the addresses (which may
/// carry a user and password: `nats://user:password@host:4222`).
#[derive(Debug, Clone, Default)]
pub struct NatsAccess {
    /// PEM certificates of the authority that signed the servers' certificates; when set, the
    /// connection must be TLS and the server verified against these only.
    pub ca: Option<PathBuf>,
    /// This node's client certificate and key (PEM), for servers that verify their clients.
    pub client: Option<(PathBuf, PathBuf)>,
    /// A file holding this node's NATS user nkey seed (`SU...`), for servers that list users
    /// by nkey; readable by its owner only.
    pub nkey: Option<PathBuf>,
}

impl NatsAccess {
    /// Checks that every file given can be read, naming the flag of one that cannot.
    fn check_files(&self) -> Result<(), SetupError> {
        let files = self
            .ca
            .iter()
            .map(|ca| ("--nats-ca", ca))
            .chain(self.client.iter().flat_map(|(cert, key)| [("--nats-cert", cert), ("--nats-key", key)]))
            .chain(self.nkey.iter().map(|seed| ("--nats-nkey", seed)));
        for (flag, path) in files {
            std::fs::File::open(path).map_err(|e| SetupError::UnreadableFile {
                flag,
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, SetupError> {
        if let Some(ca) = &self.ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(path) = &self.nkey {
            options = options.nkey(read_nkey_seed(path)?.to_string());
        }
        Ok(options)
    }
}

/// The user nkey seed in `path`: refused if others may read the file (as OpenSSH refuses such
/// a key) or if it is not one seed.
fn read_nkey_seed(path: &Path) -> Result<Zeroizing<String>, SetupError> {
    let bad = |why: String| SetupError::NkeyFile { path: path.display().to_string(), why };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "others may read it (mode {:o}); run chmod 600 {}",
                mode & 0o777,
                path.display()
            )));
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let seed = text.trim();
    // A user seed: 'S', 'U', then base32 (nkeys checks the rest when it signs).
    let well_formed = seed.len() == 58
        && seed.starts_with("SU")
        && seed.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    if !well_formed {
        return Err(bad(
            "it does not hold one NATS user seed (58 characters starting with SU, as `nsc` or `nk -gen user` write)"
                .to_owned(),
        ));
    }
    Ok(Zeroizing::new(seed.to_owned()))
}

/// `urls` as they may be shown and logged: a password in one is replaced by `***`.
pub fn shown_urls(urls: &str) -> String {
    let shown = urls.split(',').map(|url| {
        let url = url.trim();
        let authority_start = url.find("://").map_or(0, |i| i + 3);
        let authority_end = url[authority_start..].find('/').map_or(url.len(), |i| authority_start + i);
        match url[authority_start..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &url[authority_start..authority_start + at];
                let user = userinfo.split(':').next().unwrap_or_default();
                let hidden = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
                format!("{}{hidden}{}", &url[..authority_start], &url[authority_start + at..])
            }
            None => url.to_owned(),
        }
    });
    shown.collect::<Vec<_>>().join(",")
}

/// A user and password, or a token alone.
type Credentials = (Zeroizing<String>, Option<Zeroizing<String>>);

/// The user and password (`nats://user:password@host`) or token (`nats://token@host`) the
/// addresses carry, percent-decoded: async-nats takes them from its options only. Addresses
/// without any share the others'; two different ones are refused.
fn credentials(addrs: &[async_nats::ServerAddr]) -> Result<Option<Credentials>, SetupError> {
    let decode = |text: &str| Zeroizing::new(percent_decode_str(text).decode_utf8_lossy().into_owned());
    let mut found: Option<Credentials> = None;
    for addr in addrs {
        let Some(user) = addr.username() else { continue };
        let these = (decode(user), addr.password().map(decode));
        match &found {
            Some(seen) if *seen != these => return Err(SetupError::Credentials),
            _ => found = Some(these),
        }
    }
    Ok(found)
}

/// Connects to the cluster (`urls`: comma-separated `nats://` addresses) and checks its version.
pub async fn connect(urls: &str) -> Result<Client, SetupError> {
    connect_watched(urls, &NatsAccess::default()).await.map(|(client, _)| client)
}

/// [`connect`] with `tls`, and a watch of the servers the client reconnects to later.
pub async fn connect_watched(urls: &str, access: &NatsAccess) -> Result<(Client, VersionWatch), SetupError> {
    access.check_files()?;
    let connect_error =
        |e: &dyn std::fmt::Display| SetupError::Connect { urls: shown_urls(urls), detail: e.to_string() };
    let addrs = urls
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| connect_error(&e))?;
    let mut options = access.apply(async_nats::ConnectOptions::new())?;
    match credentials(&addrs)? {
        Some((user, Some(password))) => {
            options = options.user_and_password(user.to_string(), password.to_string())
        }
        Some((token, None)) => options = options.token(token.to_string()),
        None => {}
    }
    let (connected, reconnects) = tokio::sync::mpsc::unbounded_channel();
    let client = options
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let connected = connected.clone();
            async move {
                if matches!(event, async_nats::Event::Connected) {
                    let _ = connected.send(());
                }
            }
        })
        .connect(addrs)
        .await
        .map_err(|e| connect_error(&e))?;
    check_version(&client.server_info().version)?;
    Ok((client.clone(), VersionWatch { client, reconnects }))
}

/// Checks the version of every server the client connects to after the first.
#[derive(Debug)]
pub struct VersionWatch {
    client: Client,
    reconnects: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl VersionWatch {
    /// Returns once the client is connected to a server older than [`MIN_SERVER_VERSION`] (a
    /// node of a cluster upgraded only in part): the relay must stop rather than rely on what
    /// that server lacks. Pending for as long as every server is new enough.
    pub async fn old_server(mut self) -> SetupError {
        while self.reconnects.recv().await.is_some() {
            // The connection's task records the new server's INFO just after announcing the
            // connection; a flush is answered by that task, so the INFO is current after it.
            if self.client.flush().await.is_err() {
                continue;
            }
            if let Err(e) = check_version(&self.client.server_info().version) {
                return e;
            }
        }
        std::future::pending().await
    }
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

/// The log stream's configuration for `replicas` copies of every message, keeping the last
/// `history` messages of each room (every node must be started with the same `history`).
pub fn stream_config(replicas: usize, history: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![LOG_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        max_messages_per_subject: i64::try_from(history.max(1)).unwrap_or(i64::MAX),
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

/// How long one setup request may take before it is asked again (within [`SETUP_WITHIN`]):
/// creating a replicated stream or bucket forms a Raft group on the cluster, which can take
/// longer than the client's default of 5 s on loaded servers.
pub const SETUP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `js` with the setup requests' longer timeout.
fn setup_context(js: &jetstream::Context) -> jetstream::Context {
    let mut js = js.clone();
    js.set_timeout(SETUP_REQUEST_TIMEOUT);
    js
}

/// Creates the log stream, or finds it, and checks the configuration the server stored.
pub async fn ensure_stream(
    js: &jetstream::Context,
    replicas: usize,
    history: usize,
) -> Result<stream::Config, SetupError> {
    let js = &setup_context(js);
    let wanted = stream_config(replicas, history);
    let what = format!("the stream {STREAM}");
    let mut stream =
        js.get_or_create_stream(wanted.clone()).await.map_err(|e| SetupError::jetstream(&what, &e))?;
    let found = stream.info().await.map_err(|e| SetupError::jetstream(&what, &e))?;
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
    let js = &setup_context(js);
    for (bucket, ttl_keys) in BUCKETS {
        let config = kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            limit_markers: ttl_keys.then_some(EXPIRY_MARKER_TTL),
            max_value_size: max_value_size(bucket).unwrap_or_default(),
            ..Default::default()
        };
        let what = format!("the key-value bucket {bucket}");
        let api = |e: &(dyn std::error::Error + 'static)| SetupError::jetstream(&what, e);
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
        if let Some(limit) = max_value_size(bucket) {
            if found.max_message_size != limit {
                return Err(SetupError::Mismatch {
                    what,
                    field: "max_msg_size",
                    found: found.max_message_size.to_string(),
                    wanted: limit.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// What a GroupInfo's message carries beyond the object: its `after_seq` and the headers.
const GROUP_INFO_OVERHEAD: usize = 8 + 1024;

/// Checks that a GroupInfo of `max_group_info_bytes` (this node's `--max-group-info-bytes`)
/// fits one message of a server whose `max_payload` is `max_payload`.
pub fn check_max_payload(max_payload: usize, max_group_info_bytes: usize) -> Result<(), SetupError> {
    let needed = max_group_info_bytes.saturating_add(GROUP_INFO_OVERHEAD);
    if needed > max_payload {
        return Err(SetupError::Payload { max_group_info_bytes, max_payload, needed });
    }
    Ok(())
}

/// How long a node waits at start for the stream and buckets to answer its publishes.
pub const ROUTED_WITHIN: Duration = Duration::from_secs(30);

/// Waits until the log stream and every bucket answer publishes sent through this node: on a
/// cluster a stream created a moment ago may not be routed from every server yet, and a write
/// to it then finds no stream. Each probe expects an impossible last sequence on a subject no
/// room uses, so the stream answers with a refusal and stores nothing.
pub async fn wait_routed(js: &jetstream::Context) -> Result<(), SetupError> {
    let subjects = std::iter::once("chat.probe".to_owned())
        .chain(BUCKETS.iter().map(|(bucket, _)| format!("$KV.{bucket}.probe")));
    let deadline = tokio::time::Instant::now() + ROUTED_WITHIN;
    for subject in subjects {
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Expected-Last-Subject-Sequence", u64::MAX.to_string().as_str());
            let answer = match js.publish_with_headers(subject.clone(), headers, Bytes::new()).await {
                Ok(ack) => ack.await.map(drop),
                Err(e) => Err(e),
            };
            match answer {
                Err(e)
                    if matches!(e.kind(), PublishErrorKind::StreamNotFound | PublishErrorKind::TimedOut) => {}
                // A refusal (or, impossibly, an acceptance) comes from the stream: it is routed.
                _ => break,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SetupError::Unanswered {
                    what: subject,
                    detail: format!("no stream answered it within {ROUTED_WITHIN:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Compares the settings the relay relies on, naming the first that differs.
fn check_stream(what: &str, wanted: &stream::Config, found: &stream::Config) -> Result<(), SetupError> {
    let fields: [(&'static str, String, String); 9] = [
        ("subjects", format!("{:?}", wanted.subjects), format!("{:?}", found.subjects)),
        ("storage", format!("{:?}", wanted.storage), format!("{:?}", found.storage)),
        ("num_replicas", wanted.num_replicas.to_string(), found.num_replicas.to_string()),
        (
            "max_msgs_per_subject (the relay's history option)",
            wanted.max_messages_per_subject.to_string(),
            found.max_messages_per_subject.to_string(),
        ),
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

    fn api_error(err_code: u64) -> jetstream::Error {
        described_api_error(err_code, "test")
    }

    fn described_api_error(err_code: u64, description: &str) -> jetstream::Error {
        let json = format!(r#"{{"code":503,"err_code":{err_code},"description":"{description}"}}"#);
        serde_json::from_str(&json).expect("an API error")
    }

    #[test]
    fn a_placement_failing_on_an_offline_peer_is_asked_again_and_too_few_nodes_is_final() {
        // nats-server's wording (selectPeerError in jetstream_cluster.go).
        let offline = described_api_error(10005, "no suitable peers for placement, peer offline");
        let bucket = CreateKeyValueError::with_source(
            CreateKeyValueErrorKind::BucketCreate,
            CreateStreamError::new(CreateStreamErrorKind::JetStream(offline)),
        );
        assert!(unanswered(&bucket));
        let too_few = described_api_error(10005, "no suitable peers for placement");
        assert!(!unanswered(&CreateStreamError::new(CreateStreamErrorKind::JetStream(too_few))));
        let storage = described_api_error(10005, "no suitable peers for placement, insufficient storage");
        assert!(!unanswered(&CreateStreamError::new(CreateStreamErrorKind::JetStream(storage))));
    }

    #[test]
    fn timeouts_and_temporary_answers_are_asked_again_and_refusals_are_final() {
        let timed_out = RequestError::new(RequestErrorKind::TimedOut);
        assert!(unanswered(&timed_out));
        assert!(!unanswered(&RequestError::new(RequestErrorKind::NoResponders)), "JetStream is off");
        assert!(unanswered(&CreateStreamError::new(CreateStreamErrorKind::TimedOut)));
        let unavailable = CreateStreamErrorKind::JetStream(api_error(10008));
        assert!(unanswered(&CreateStreamError::new(unavailable)));
        let name_in_use = CreateStreamErrorKind::JetStream(api_error(10058));
        assert!(!unanswered(&CreateStreamError::new(name_in_use)));
        assert!(!unanswered(&CreateStreamError::new(CreateStreamErrorKind::JetStreamUnavailable)));
        // Found through the errors it wraps.
        let get = GetStreamError::with_source(GetStreamErrorKind::Request, timed_out);
        let bucket = async_nats::jetstream::context::KeyValueError::with_source(
            async_nats::jetstream::context::KeyValueErrorKind::GetBucket,
            get,
        );
        assert!(unanswered(&bucket));
        assert!(matches!(SetupError::jetstream("x", &bucket), SetupError::Unanswered { .. }));
        let refused = CreateStreamError::new(CreateStreamErrorKind::JetStream(api_error(10058)));
        assert!(matches!(SetupError::jetstream("x", &refused), SetupError::JetStream { .. }));
    }

    #[test]
    fn credentials_come_from_the_addresses_decoded_and_must_agree() {
        let parse = |urls: &[&str]| -> Vec<async_nats::ServerAddr> {
            urls.iter().map(|u| u.parse().expect("an address")).collect()
        };
        let found = credentials(&parse(&["nats://relay:p%40ss%3Aw@h:1", "nats://h2:1"])).expect("agree");
        let (user, password) = found.expect("a user");
        assert_eq!((user.as_str(), password.as_deref().map(String::as_str)), ("relay", Some("p@ss:w")));
        let token = credentials(&parse(&["nats://s3cr3t-token@h:1"])).expect("one").expect("a token");
        assert_eq!((token.0.as_str(), token.1.is_none()), ("s3cr3t-token", true));
        assert!(credentials(&parse(&["nats://h:1"])).expect("none").is_none());
        let differ = credentials(&parse(&["nats://a:x@h:1", "nats://a:y@h2:1"]));
        assert!(matches!(differ, Err(SetupError::Credentials)));
    }

    #[test]
    fn passwords_in_urls_are_never_shown() {
        let urls = "nats://relay:s3cret@10.0.0.1:4222, nats://10.0.0.2:4222,tls://token@h:1/x";
        let shown = shown_urls(urls);
        assert_eq!(shown, "nats://relay:***@10.0.0.1:4222,nats://10.0.0.2:4222,tls://***@h:1/x");
        assert!(!shown.contains("s3cret") && !shown.contains("token"));
        assert_eq!(
            shown_urls("nats://p@ss:word@h:1"),
            "nats://p@ss:***@h:1",
            "the last @ ends the user part"
        );
    }

    #[test]
    fn a_group_info_limit_beyond_the_servers_max_payload_is_refused_with_what_to_do() {
        assert!(check_max_payload(1024 * 1024, 512 * 1024).is_ok(), "the defaults fit");
        let text =
            check_max_payload(1024 * 1024, 1024 * 1024).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("--max-group-info-bytes 1048576") && text.contains("max_payload of 1048576"),
            "{text}"
        );
        assert!(text.contains("at least 1049608") && text.contains("lower --max-group-info-bytes"), "{text}");
    }

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
