//! `chatroom-relay`: run a relay, check its configuration, or print its fingerprint.
#![forbid(unsafe_code)]

mod admin_cli;
mod config_file;
mod error;
mod onion;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chatroom_relay::rooms::jetstream::abuse::SharedLimits;
use chatroom_relay::rooms::jetstream::{setup, ClusterConfig, JetStreamRooms};
use chatroom_relay::rooms::RoomAdmin;
use chatroom_relay::{check_key_not_lost, fingerprint, key_path, room_limits, Config, Relay, Synchronous};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::error::MainError;

/// Relay for chatroom, the end-to-end encrypted group chat. The relay only ever sees
/// ciphertext.
///
/// On start it prints its fingerprint, an invite prefix, and `listening on ADDR:PORT` once it
/// accepts connections. SIGINT or SIGTERM stops it cleanly.
///
/// Every flag can also be set in a TOML config file (`--config FILE`, or
/// ~/.config/chatroom-relay/relay.toml when it exists), one `flag-name = value` per line;
/// flags given on the command line override the file.
#[derive(Debug, Parser)]
#[command(name = "chatroom-relay", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the relay's fingerprint (creating its key if needed) without starting it.
    Fingerprint {
        /// Directory holding the relay key and database [default: the platform data directory].
        #[arg(long, value_name = "DIR", env = "CHATROOM_RELAY_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Validate the config file and flags, and print the effective configuration as a config
    /// file, each value commented with where it came from.
    CheckConfig(Box<RunArgs>),
    /// List, show or delete rooms, on a running relay (through its admin socket) or a stopped one.
    #[command(subcommand)]
    Rooms(admin_cli::Rooms),
    /// List a room's bans.
    #[command(subcommand)]
    Bans(admin_cli::Bans),
    /// Hand a room to a new owner.
    #[command(subcommand)]
    Owner(admin_cli::Owner),
    /// Write a consistent copy of the database to FILE, while the relay runs or not.
    Backup(admin_cli::Backup),
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncArg {
    /// fsync every commit: acknowledged messages survive a power loss.
    Full,
    /// fsync at checkpoints: acknowledged messages survive a crash of the relay process.
    Normal,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The smallest `--queue-bytes`: one transport message of the largest size.
const MIN_QUEUE_BYTES: usize = 65_536;

fn defaults() -> Config {
    Config::new("")
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML config file whose keys are these flags' long names [default:
    /// ~/.config/chatroom-relay/relay.toml, read if it exists].
    #[arg(long, value_name = "FILE", env = "CHATROOM_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address and port to listen on: 127.0.0.1 behind a Tor onion service, 0.0.0.0 on clearnet.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Directory holding the relay key and database [default: the platform data directory].
    #[arg(long, value_name = "DIR", env = "CHATROOM_RELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Envelopes kept per room for members who reconnect.
    #[arg(long, value_name = "N", default_value_t = defaults().history)]
    history: usize,
    /// Bytes of envelopes kept per room (the oldest go first).
    #[arg(long, value_name = "BYTES", default_value_t = defaults().history_bytes)]
    history_bytes: usize,
    /// Rooms the relay stores at most.
    #[arg(long, value_name = "N", default_value_t = defaults().max_rooms)]
    max_rooms: usize,
    /// Bytes of envelopes kept on disk over all rooms (the relay's oldest go first).
    #[arg(long, value_name = "BYTES", default_value_t = defaults().max_stored_bytes)]
    max_stored_bytes: usize,
    /// Nicknames one room binds at most.
    #[arg(long, value_name = "N", default_value_t = defaults().max_room_nicknames)]
    max_room_nicknames: usize,
    /// Idle time after which a room is deleted with everything stored about it.
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = parse_duration)]
    room_expiry: Duration,
    /// Concurrent connections.
    #[arg(long, value_name = "N", default_value_t = defaults().max_connections)]
    max_connections: usize,
    /// Connections per IP address that have not joined a room yet.
    #[arg(long, value_name = "N", default_value_t = defaults().max_unauthenticated_per_ip)]
    max_unauthenticated_per_ip: usize,
    /// Connections per address, joined or not (IPv6: per /64).
    #[arg(long, value_name = "N", default_value_t = defaults().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// Connections per IPv6 /48, joined or not.
    #[arg(long, value_name = "N", default_value_t = defaults().max_connections_per_48)]
    max_connections_per_48: usize,
    /// New connections an address may open in a burst, checked before any key agreement.
    #[arg(long, value_name = "N", default_value_t = defaults().handshake_burst)]
    handshake_burst: u32,
    /// New connections per second an address may open sustained.
    #[arg(long, value_name = "N", default_value_t = defaults().handshakes_per_sec)]
    handshakes_per_sec: u32,
    /// Members of one room at once.
    #[arg(long, value_name = "N", default_value_t = defaults().max_room_members)]
    max_room_members: usize,
    /// Percent of --max-connections and --max-room-members kept for identities already
    /// holding a nickname in the room they join.
    #[arg(long, value_name = "PERCENT", default_value_t = defaults().headroom_percent)]
    headroom_percent: usize,
    /// Bytes queued for one connection before it is disconnected as a slow consumer (at
    /// least 65536).
    #[arg(long, value_name = "BYTES", default_value_t = defaults().outbound_queue_bytes)]
    queue_bytes: usize,
    /// Time a write to a connection may make no progress before it is closed as a slow consumer.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    write_stall: Duration,
    /// `Who` requests a connection may make in a burst.
    #[arg(long, value_name = "N", default_value_t = defaults().who_burst)]
    who_burst: u32,
    /// `Who` requests per second a connection may make sustained (at least 1).
    #[arg(long, value_name = "N", default_value_t = defaults().who_per_sec)]
    who_per_sec: u32,
    /// Time allowed from connect to a completed handshake and join request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Silence after which the relay pings a member.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    ping_after: Duration,
    /// Silence after which the relay disconnects a member.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Envelopes a member may send in a burst.
    #[arg(long, value_name = "N", default_value_t = defaults().rate_burst)]
    rate_burst: u32,
    /// Envelopes per second a member may send sustained.
    #[arg(long, value_name = "N", default_value_t = defaults().rate_per_sec)]
    rate_per_sec: u32,
    /// Envelopes all members on one address may send in a burst.
    #[arg(long, value_name = "N", default_value_t = defaults().ip_rate_burst)]
    ip_rate_burst: u32,
    /// Envelopes per second all members on one address may send sustained.
    #[arg(long, value_name = "N", default_value_t = defaults().ip_rate_per_sec)]
    ip_rate_per_sec: u32,
    /// Envelopes one room may take in a burst, over all its members.
    #[arg(long, value_name = "N", default_value_t = defaults().room_rate_burst)]
    room_rate_burst: u32,
    /// Envelopes per second one room may take sustained, over all its members.
    #[arg(long, value_name = "N", default_value_t = defaults().room_rate_per_sec)]
    room_rate_per_sec: u32,
    /// Largest envelope accepted, in bytes (at most the protocol's maximum).
    #[arg(long, value_name = "BYTES", default_value_t = defaults().max_envelope_len)]
    max_envelope: usize,
    /// Largest sealed group information a protocol version 2 room stores, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = defaults().max_group_info_bytes)]
    max_group_info_bytes: usize,
    /// Failed joins from one address before its joins are slowed.
    #[arg(long, value_name = "N", default_value_t = defaults().ip_failures_slow)]
    ip_failures_slow: u32,
    /// Failed joins from one address before it is locked out for the failure window.
    #[arg(long, value_name = "N", default_value_t = defaults().ip_failures_lockout)]
    ip_failures_lockout: u32,
    /// Failed joins against one room before its joins are slowed.
    #[arg(long, value_name = "N", default_value_t = defaults().room_failures_slow)]
    room_failures_slow: u32,
    /// Failed joins against one room before it is locked for the failure window.
    #[arg(long, value_name = "N", default_value_t = defaults().room_failures_lockout)]
    room_failures_lockout: u32,
    /// Rooms one address may create within the failure window.
    #[arg(long, value_name = "N", default_value_t = defaults().room_creations_per_ip)]
    room_creations_per_ip: u32,
    /// Window over which failed joins are counted, and how long a lockout lasts.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    failure_window: Duration,
    /// Delay added to joins from a slowed address or to a slowed room.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    failure_delay: Duration,
    /// Serve Prometheus metrics on this loopback address (`GET /metrics`) [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Interval of the one-line statistics in the log; 0 turns them off.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Log format on standard error: text, or json (one object per line).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Durability of each commit.
    #[arg(long, value_enum, default_value = "full")]
    synchronous: SyncArg,
    #[command(flatten)]
    onion: onion::OnionArgs,
    /// Run as one node of a relay cluster: rooms live on the NATS JetStream cluster at these
    /// servers (comma-separated nats:// URLs, nats-server 2.12 or newer), shared with every
    /// relay node using it, instead of in this relay's database (docs/CLUSTER.md).
    #[arg(long, value_name = "URL[,URL...]", env = "CHATROOM_RELAY_NATS")]
    nats: Option<String>,
    /// PEM file of the certificate authority that signed the NATS servers' certificates: the
    /// node then speaks to NATS over TLS only and accepts no server this authority did not sign.
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_ca: Option<PathBuf>,
    /// This node's client certificate (PEM), for NATS servers that verify their clients
    /// (`verify: true` in their `tls` block). Needs --nats-key.
    #[arg(long, value_name = "FILE", requires_all = ["nats", "nats_key"])]
    nats_cert: Option<PathBuf>,
    /// The private key (PEM) of --nats-cert; keep it readable by the relay's user only.
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
    /// File holding this node's NATS user nkey seed (`SU...`), for NATS servers that list their
    /// users by nkey (`authorization { users = [{ nkey: U... }] }`). Must be readable by the
    /// relay's user only (chmod 600).
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_nkey: Option<PathBuf>,
    /// Copies the NATS cluster keeps of every message and key: 3 (or 5) on a cluster of that
    /// many nodes, 1 on a single NATS server. Every relay node must use the same.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_replicas: u8,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Parses `500ms`, `10s`, `10m`, `1h`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration such as 500ms, 10s, 10m or 1h"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    // Far beyond any sensible limit, and small enough that deadlines computed from it never
    // overflow the clock.
    const MAX_MS: u64 = 365 * 24 * 3_600_000;
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= MAX_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long: use at most 365 days"))
}

pub(crate) fn default_data_dir() -> Result<PathBuf, String> {
    directories::ProjectDirs::from("", "", "chatroom-relay")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or_else(|| "cannot determine a data directory (no home directory); pass --data-dir DIR".into())
}

/// Bytes of a sealed GroupInfo per member of a version 2 room, with the ratchet tree
/// (about 290 measured at 500 members: docs/PROTOCOL.md section 22.2).
const GROUP_INFO_BYTES_PER_MEMBER: usize = 290;
/// The largest sealed GroupInfo clients open (chatroom_group::MAX_SEALED_GROUP_INFO).
const MAX_GROUP_INFO_BYTES: usize = 8 * 1024 * 1024;

/// A version 2 room's GroupInfo must fit the relay's limit at the room's member limit, or
/// nobody could enter a full room; and no client opens one above 8 MiB.
fn group_info_covers_members(args: &RunArgs) -> Result<(), String> {
    if args.max_group_info_bytes > MAX_GROUP_INFO_BYTES {
        return Err(format!(
            "--max-group-info-bytes {} exceeds what clients open; use a value up to {MAX_GROUP_INFO_BYTES}",
            args.max_group_info_bytes
        ));
    }
    let needed = args.max_room_members.saturating_mul(GROUP_INFO_BYTES_PER_MEMBER);
    if args.max_group_info_bytes < needed {
        return Err(format!(
            "--max-group-info-bytes {} holds the group information of about {} members, fewer than \
             --max-room-members {}; raise it to at least {needed} or lower --max-room-members",
            args.max_group_info_bytes,
            args.max_group_info_bytes / GROUP_INFO_BYTES_PER_MEMBER,
            args.max_room_members
        ));
    }
    Ok(())
}

/// The flag values no relay can run with, each refused with the value to use instead.
fn validate(args: &RunArgs, defaults: &Config) -> Result<(), String> {
    if args.max_envelope > defaults.max_envelope_len {
        return Err(format!(
            "--max-envelope {} exceeds the protocol's maximum of {}; use a value up to {}",
            args.max_envelope, defaults.max_envelope_len, defaults.max_envelope_len
        ));
    }
    if args.max_connections == 0
        || args.max_unauthenticated_per_ip == 0
        || args.who_per_sec == 0
        || args.max_connections_per_ip == 0
        || args.max_connections_per_48 == 0
        || args.max_room_members == 0
    {
        return Err("--max-connections, --max-unauthenticated-per-ip, --max-connections-per-ip, \
                    --max-connections-per-48, --max-room-members and --who-per-sec must be at least 1"
            .into());
    }
    // Version 2 envelopes (MLS) reach 16 490 bytes, whatever --max-envelope says.
    let largest = defaults.max_envelope_len.max(chatroom_crypto::MAX_ENVELOPE_V2_LEN);
    if args.history_bytes < largest {
        return Err(format!(
            "--history-bytes {} cannot hold one envelope; use at least {largest}",
            args.history_bytes
        ));
    }
    group_info_covers_members(args)?;
    if args.headroom_percent > 50 {
        return Err(format!(
            "--headroom-percent {} would keep most of the relay from newcomers; use at most 50",
            args.headroom_percent
        ));
    }
    if args.queue_bytes < MIN_QUEUE_BYTES {
        return Err(format!(
            "--queue-bytes {} is below the smallest useful queue; use at least {MIN_QUEUE_BYTES} (one full message)",
            args.queue_bytes
        ));
    }
    if let Some(addr) = args.metrics.filter(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "--metrics {addr} is not a loopback address; the metrics show who is active when, so serve them \
             on 127.0.0.1 (for example --metrics 127.0.0.1:9187) and let the scraper or a proxy with \
             authentication reach them there"
        ));
    }
    Ok(())
}

fn config(args: &RunArgs) -> Result<Config, String> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    let mut config = Config::new(data_dir);
    validate(args, &config)?;
    config.history = args.history;
    config.history_bytes = args.history_bytes;
    config.max_rooms = args.max_rooms;
    config.max_room_nicknames = args.max_room_nicknames;
    config.max_stored_bytes = args.max_stored_bytes;
    config.room_expiry = args.room_expiry;
    config.max_connections = args.max_connections;
    config.max_unauthenticated_per_ip = args.max_unauthenticated_per_ip;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.max_connections_per_48 = args.max_connections_per_48;
    config.handshake_burst = args.handshake_burst;
    config.handshakes_per_sec = args.handshakes_per_sec;
    config.max_room_members = args.max_room_members;
    config.headroom_percent = args.headroom_percent;
    config.outbound_queue_bytes = args.queue_bytes;
    config.write_stall = args.write_stall;
    config.who_burst = args.who_burst;
    config.who_per_sec = args.who_per_sec;
    config.handshake_timeout = args.handshake_timeout;
    config.ping_after = args.ping_after;
    config.idle_timeout = args.idle_timeout;
    config.rate_burst = args.rate_burst;
    config.rate_per_sec = args.rate_per_sec;
    config.ip_rate_burst = args.ip_rate_burst;
    config.ip_rate_per_sec = args.ip_rate_per_sec;
    config.room_rate_burst = args.room_rate_burst;
    config.room_rate_per_sec = args.room_rate_per_sec;
    config.max_envelope_len = args.max_envelope;
    config.max_group_info_bytes = args.max_group_info_bytes;
    config.ip_failures_slow = args.ip_failures_slow;
    config.ip_failures_lockout = args.ip_failures_lockout;
    config.room_failures_slow = args.room_failures_slow;
    config.room_failures_lockout = args.room_failures_lockout;
    config.room_creations_per_ip = args.room_creations_per_ip;
    config.failure_window = args.failure_window;
    config.failure_delay = args.failure_delay;
    config.stats_interval = args.stats_interval;
    config.synchronous = match args.synchronous {
        SyncArg::Full => Synchronous::Full,
        SyncArg::Normal => Synchronous::Normal,
    };
    Ok(config)
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

fn serve(args: RunArgs) -> Result<(), MainError> {
    init_logging(args.verbose, args.log_format);
    return_freed_memory();
    let config = config(&args)?;
    let data_dir = config.data_dir.clone();
    let max_connections = config.max_connections;
    let runtime = tokio::runtime::Runtime::new().map_err(MainError::Runtime)?;
    runtime.block_on(async {
        let relay = Relay::open(config.clone())?;
        let Some(urls) = &args.nats else {
            return start(relay, &args, &data_dir, max_connections).await;
        };
        let access = setup::NatsAccess {
            ca: args.nats_ca.clone(),
            client: args.nats_cert.clone().zip(args.nats_key.clone()),
            nkey: args.nats_nkey.clone(),
        };
        let (client, versions) = setup::connect_watched(urls, &access).await?;
        setup::check_max_payload(client.server_info().max_payload, config.max_group_info_bytes)?;
        let cluster = ClusterConfig { replicas: args.nats_replicas.into(), limits: room_limits(&config) };
        let rooms = JetStreamRooms::open(client.clone(), cluster).await?;
        let limits = SharedLimits::open(&async_nats::jetstream::new(client), &config).await?;
        tracing::info!(nats = %setup::shown_urls(urls), tls = access.ca.is_some(), nkey = access.nkey.is_some(), "serving rooms from the NATS cluster");
        tokio::select! {
            served = start(relay.with_rooms(rooms).with_limits(limits), &args, &data_dir, max_connections) => served,
            old = versions.old_server() => {
                tracing::error!(error = %old, "stopping: a NATS server this node reconnected to is too old");
                Err(old.into())
            }
        }
    })
}

/// Listens, prints the relay's fingerprint and invite prefix, and serves until a signal.
async fn start<R: RoomAdmin>(
    mut relay: Relay<R>,
    args: &RunArgs,
    data_dir: &std::path::Path,
    max_connections: usize,
) -> Result<(), MainError> {
    let metrics = match args.metrics {
        Some(addr) => {
            let listener =
                TcpListener::bind(addr).await.map_err(|source| MainError::Metrics { addr, source })?;
            let local =
                listener.local_addr().map_err(|source| MainError::LocalAddr { what: "metrics", source })?;
            relay = relay.with_metrics(listener);
            Some(local)
        }
        None => None,
    };
    let addr = args.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| MainError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(|source| MainError::LocalAddr { what: "listening", source })?;
    let onion = match args.onion.onion {
        true => Some(publish_onion(&args.onion, data_dir, local).await?),
        false => None,
    };
    let fp = relay.fingerprint();
    let mut out = std::io::stdout().lock();
    if relay.key_created() {
        let _ = writeln!(out, "created a new relay key in {}", key_path(data_dir).display());
    }
    let host = if local.ip().is_unspecified() {
        format!("PUBLIC-ADDRESS:{}", local.port())
    } else {
        local.to_string()
    };
    let _ = writeln!(out, "fingerprint {fp}");
    let _ = writeln!(out, "invite prefix chatroom://{fp}@{host}/ (append the room name)");
    if let Some(service) = onion {
        if service.key_created {
            let path = data_dir.join(onion::ONION_KEY_FILE);
            let _ = writeln!(out, "created a new onion service key in {}", path.display());
        }
        let (address, port) = (&service.address, service.port);
        let _ = writeln!(out, "onion address {address}:{port}");
        let _ = writeln!(out, "invite prefix chatroom://{fp}@{address}:{port}/ (append the room name)");
        service.forward(local, max_connections, tokio::runtime::Handle::current())?;
    }
    if let Some(metrics) = metrics {
        let _ = writeln!(out, "metrics on http://{metrics}/metrics");
    }
    let _ = writeln!(out, "listening on {local}");
    let _ = out.flush();
    drop(out);
    Ok(relay.run(listener, signal()).await?)
}

/// Publishes the onion service (blocking control-port work off the runtime's threads).
async fn publish_onion(
    args: &onion::OnionArgs,
    data_dir: &std::path::Path,
    local: SocketAddr,
) -> Result<onion::OnionService, MainError> {
    let (args, data_dir) = (args.clone(), data_dir.to_owned());
    let published = tokio::task::spawn_blocking(move || onion::publish(&args, &data_dir, local));
    Ok(published.await.map_err(MainError::OnionTask)??)
}

fn print_fingerprint(data_dir: Option<PathBuf>) -> Result<(), MainError> {
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    // A typo in --data-dir must not quietly create a new key somewhere else.
    if !data_dir.is_dir() {
        return Err(MainError::Usage(format!(
            "{} is not a directory, so there is no relay key to print. Check --data-dir; to create a \
             new relay there, run mkdir -p {} first",
            data_dir.display(),
            data_dir.display()
        )));
    }
    check_key_not_lost(&Config::new(&data_dir))?;
    let (key, _) = chatroom_crypto::load_or_create_static(&key_path(&data_dir))?;
    println!("{}", fingerprint(key.public()));
    Ok(())
}

/// The keys a config file may hold: the long names of the run flags.
fn config_keys() -> Vec<String> {
    RunArgs::augment_args(clap::Command::new("keys"))
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !matches!(*long, "config" | "help" | "version"))
        .map(str::to_owned)
        .collect()
}

/// Parses the command line together with the config file.
fn parse_cli(args: Vec<OsString>) -> Result<(Cli, config_file::Parsed), String> {
    let parsed = match config_file::parse(Cli::command(), args, &config_keys()) {
        Ok(parsed) => parsed,
        Err(config_file::ParseError::Clap(e)) => e.exit(),
        Err(config_file::ParseError::File(e)) => return Err(e),
    };
    let cli = Cli::from_arg_matches(&parsed.matches).map_err(|e| e.to_string())?;
    Ok((cli, parsed))
}

/// `check-config`: validates everything `serve` would and prints the effective configuration.
fn check_config(args: &RunArgs, parsed: &config_file::Parsed) -> Result<(), MainError> {
    let config = config(args)?;
    let mut out = std::io::stdout().lock();
    let from =
        parsed.file.as_ref().map_or("no config file".to_owned(), |p| format!("config file {}", p.display()));
    let _ = writeln!(out, "# effective configuration ({from}); valid");
    let _ = write!(out, "{}", config_file::render(&Cli::command(), parsed));
    let _ = writeln!(out, "# data directory in use: {}", config.data_dir.display());
    Ok(())
}

/// jemalloc rather than the system's malloc: a join storm's transient buffers (presence notices
/// queued per member) are freed between the members' long-lived state, and glibc's arenas keep
/// those holes resident; jemalloc keeps sizes apart and can hand emptied pages back.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background thread, which returns pages freed for about ten seconds to the
/// system (its default decay), so a relay's resident memory falls back after a burst.
fn return_freed_memory() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "memory freed after a burst stays resident: the allocator's background thread did not start");
    }
}

/// Runs what the command line asks for.
fn dispatch(cli: Cli, parsed: &config_file::Parsed) -> Result<(), MainError> {
    match cli.command {
        Some(Command::Fingerprint { data_dir }) => print_fingerprint(data_dir),
        Some(Command::CheckConfig(args)) => check_config(&args, parsed),
        Some(Command::Rooms(command)) => Ok(admin_cli::rooms(command)?),
        Some(Command::Bans(command)) => Ok(admin_cli::bans(command)?),
        Some(Command::Owner(command)) => Ok(admin_cli::owner(command)?),
        Some(Command::Backup(command)) => Ok(admin_cli::backup(command)?),
        Some(Command::GenerateAssets { dir }) => Ok(chatroom_cli_assets::write(Cli::command(), &dir)?),
        None => serve(cli.run),
    }
}

fn main() -> ExitCode {
    let result = parse_cli(std::env::args_os().collect())
        .map_err(MainError::Usage)
        .and_then(|(cli, parsed)| dispatch(cli, &parsed));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatroom-relay: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("9000h").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[cfg(feature = "jemalloc")]
    #[test]
    fn freed_memory_is_returned_by_the_allocators_background_thread() {
        return_freed_memory();
        assert_eq!(tikv_jemalloc_ctl::background_thread::read(), Ok(true));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
