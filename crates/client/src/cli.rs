//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// End-to-end encrypted group chat through a relay that only ever sees ciphertext.
#[derive(Debug, Parser)]
#[command(name = "chatroom", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Sub>,
    #[command(flatten)]
    pub(crate) chat: ChatArgs,
    /// Directory for the identity key, known relays and room state
    /// [default: the platform data directory, e.g. ~/.local/share/chatroom]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The config file with saved rooms [default: the platform config directory, e.g.
    /// ~/.config/chatroom/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Be another member on this machine: an identity, known relays, room state and config
    /// of its own, under profiles/NAME in the data and config directories
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) profile: Option<String>,
}

/// Where to connect; anything missing is asked for.
#[derive(Debug, Args, Default, Clone)]
pub(crate) struct TargetArgs {
    /// An invite URL (chatroom://FINGERPRINT@HOST:PORT/ROOM) or the name of a saved room
    #[arg(value_name = "INVITE|NAME")]
    pub(crate) target: Option<String>,
    /// The relay's address (port 7878 when none is given); the nodes of a relay cluster,
    /// which share one key, as a comma-separated list (at most 8), tried in turn
    #[arg(long, value_name = "HOST[:PORT][,HOST2[:PORT2]...]")]
    pub(crate) relay: Option<String>,
    /// The room's name
    #[arg(long)]
    pub(crate) room: Option<String>,
    /// The relay's fingerprint (64 hex digits), pinning its key
    #[arg(long, value_name = "HEX")]
    pub(crate) fingerprint: Option<String>,
    /// Argon2id parameters of the room key (at least the default m65536t3p1)
    #[arg(long, value_name = "m65536t3p1")]
    pub(crate) kdf: Option<String>,
    /// Protocol version of the room: 2 (MLS: forward secrecy, removal that holds), or 1 (a
    /// key derived from the password) [default: the saved room's `protocol`, the invite's, or
    /// this client's state for the room; else 2]
    #[arg(long, value_name = "1|2", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub(crate) protocol: Option<u8>,
}

/// Options for chatting.
#[derive(Debug, Args, Default)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Your nickname in the room
    #[arg(long)]
    pub(crate) nick: Option<String>,
    /// Create the room if it does not exist (you become its owner)
    #[arg(long)]
    pub(crate) create: bool,
    /// Read the room password from this file (mode 0600) instead of asking
    #[arg(long, value_name = "PATH")]
    pub(crate) password_file: Option<PathBuf>,
    /// Connect through a SOCKS5 proxy that resolves names (e.g. Tor at socks5h://127.0.0.1:9050)
    #[arg(long, value_name = "socks5h://HOST:PORT")]
    pub(crate) proxy: Option<String>,
    /// Line mode: each input line is a message, each received message one output line
    #[arg(long)]
    pub(crate) plain: bool,
    /// Line mode: do not print messages replayed from the room's history (for a one-shot
    /// sender such as `echo hi | chatroom --plain --no-history ...`)
    #[arg(long)]
    pub(crate) no_history: bool,
    /// Messages per second sent at most, after the burst [default: 4.5, under the relay's
    /// default of 5; raise it only as far as the relay's --rate-per-sec]
    #[arg(long, value_name = "N")]
    pub(crate) send_rate: Option<f64>,
    /// Messages sent at once before pacing starts [default: 18, under the relay's default of
    /// 20; raise it only as far as the relay's --rate-burst]
    #[arg(long, value_name = "N")]
    pub(crate) send_burst: Option<u32>,
    /// Protocol 2: renew your keys in the room's group (an MLS update commit) after this many
    /// of your messages [default: 100, or `heal_messages` in config.toml; the room's own
    /// setting caps it]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) heal_messages: Option<u32>,
    /// Protocol 2: ... or after this many hours [default: 24, or `heal_hours` in config.toml;
    /// the room's own setting caps it]
    #[arg(long, value_name = "H", value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub(crate) heal_hours: Option<u32>,
    /// Protocol 2, when creating the room: each newcomer is shown the last N messages (0 to
    /// 100) by a member who is online, as that member's claim [default: 0, off]. Anyone with
    /// the password then reads the last N messages as soon as one member is online
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=100))]
    pub(crate) history_share: Option<u16>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Sub {
    /// Print your identity fingerprint (creating the identity on first use)
    Id,
    /// Generate a strong room passphrase
    Passphrase,
    /// Print the invite URL of a room (it never contains the password)
    Invite(TargetArgs),
    /// Show or forget pinned relay keys
    Relays {
        #[command(subcommand)]
        command: RelaysCommand,
    },
    /// Write man pages and shell completions into DIR (for packaging)
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory
        dir: PathBuf,
    },
}

/// `chatroom relays ...`
#[derive(Debug, Subcommand)]
pub(crate) enum RelaysCommand {
    /// List pinned relays
    List,
    /// Forget the pinned key of a relay (HOST:PORT, or HOST for every port)
    Forget {
        /// HOST:PORT or HOST
        relay: String,
    },
}
