//! `rooms`, `bans`, `owner` and `backup`: ask a running relay on its admin socket, or open a
//! stopped relay's database directly; print a table, or JSON with `--json`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chatroom_relay::admin::{self, BanInfo, Reply, Request, RoomInfo, ADMIN_SOCKET};
use chatroom_relay::StoreError;
use clap::{Args, Subcommand};

/// Longest reply read from the admin socket.
const MAX_REPLY_LEN: u64 = 256 << 20;
/// How long a reply may take (a backup of a large database takes a while).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which relay to administer, and how to print.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// TOML config file of the relay (its data-dir is used) [default:
    /// ~/.config/chatroom-relay/relay.toml, read if it exists].
    #[arg(long, value_name = "FILE", env = "CHATROOM_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// The relay's data directory [default: the platform data directory].
    #[arg(long, value_name = "DIR", env = "CHATROOM_RELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of a table, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Rooms {
    /// List every room with its counts.
    List(Target),
    /// Show one room and the nicknames bound in it.
    Show {
        /// The room name.
        room: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a room: connected members are disconnected; its history, bans and nicknames are
    /// erased. Members who join it again create a new room.
    Delete {
        /// The room name.
        room: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Bans {
    /// List the identities banned from a room, with the nicknames they had.
    List {
        /// The room name.
        room: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Owner {
    /// Make IDENTITY the owner of ROOM (for a room whose owner lost their key). The relay then
    /// lets IDENTITY kick, ban and unban; it grants no access to messages, which only the room
    /// password opens.
    Set {
        /// The room name.
        room: String,
        /// The new owner's full identity: 64 hex digits (`rooms show ROOM` lists identities).
        identity: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `backup FILE`.
#[derive(Debug, Args)]
pub(crate) struct Backup {
    /// Where to write the copy of the database; must not exist.
    file: PathBuf,
    #[command(flatten)]
    target: Target,
}

pub(crate) fn rooms(command: Rooms) -> Result<(), String> {
    match command {
        Rooms::List(target) => run(&target, Request::RoomsList),
        Rooms::Show { room, target } => run(&target, Request::RoomsShow { room }),
        Rooms::Delete { room, target } => run(&target, Request::RoomsDelete { room }),
    }
}

pub(crate) fn bans(command: Bans) -> Result<(), String> {
    let Bans::List { room, target } = command;
    run(&target, Request::BansList { room })
}

pub(crate) fn owner(command: Owner) -> Result<(), String> {
    let Owner::Set { room, identity, target } = command;
    run(&target, Request::OwnerSet { room, identity })
}

pub(crate) fn backup(command: Backup) -> Result<(), String> {
    // The relay may run in another directory: it gets an absolute path.
    let file = std::path::absolute(&command.file)
        .map_err(|e| format!("cannot resolve {}: {e}", command.file.display()))?;
    run(&command.target, Request::Backup { file })
}

fn run(target: &Target, request: Request) -> Result<(), String> {
    let data_dir = match &target.data_dir {
        Some(dir) => dir.clone(),
        None => crate::default_data_dir()?,
    };
    match ask(&data_dir, &request)? {
        Reply::Error(e) => Err(e),
        reply if target.json => {
            let json = match &reply {
                Reply::Rooms(rooms) => serde_json::to_string_pretty(rooms),
                Reply::Room(room) => serde_json::to_string_pretty(room),
                Reply::Bans(bans) => serde_json::to_string_pretty(bans),
                other => serde_json::to_string_pretty(other),
            };
            println!("{}", json.map_err(|e| e.to_string())?);
            Ok(())
        }
        reply => {
            print!("{}", table(&reply));
            Ok(())
        }
    }
}

/// Asks the running relay, or opens the database of a stopped one.
fn ask(data_dir: &Path, request: &Request) -> Result<Reply, String> {
    let socket = data_dir.join(ADMIN_SOCKET);
    if !data_dir.join(chatroom_relay::DB_FILE).exists() {
        return Err(format!(
            "there is no relay database in {}; check --data-dir (a relay creates it when it first starts)",
            data_dir.display()
        ));
    }
    match UnixStream::connect(&socket) {
        Ok(stream) => over_socket(stream, request).map_err(|e| {
            format!("the relay's admin socket {} failed: {e}; check the relay's log", socket.display())
        }),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            admin::offline(data_dir, request).map_err(|e| match e {
                StoreError::Locked { .. } => format!(
                    "a relay is running on {} but its admin socket {} does not answer; stop the relay and \
                     run this again",
                    data_dir.display(),
                    socket.display()
                ),
                other => other.to_string(),
            })
        }
        Err(e) => Err(format!("cannot connect to {}: {e}; run this as the relay's user", socket.display())),
    }
}

fn over_socket(mut stream: UnixStream, request: &Request) -> std::io::Result<Reply> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut reply = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_REPLY_LEN)).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

fn table(reply: &Reply) -> String {
    match reply {
        Reply::Rooms(rooms) if rooms.is_empty() => "no rooms\n".into(),
        Reply::Rooms(rooms) => rooms_table(rooms),
        Reply::Room(room) => room_detail(room),
        Reply::Bans(bans) if bans.is_empty() => "nobody is banned\n".into(),
        Reply::Bans(bans) => bans_table(bans),
        Reply::Done(what) => format!("{what}\n"),
        Reply::Error(e) => format!("{e}\n"),
    }
}

/// Left-aligned columns wide enough for every cell.
fn columns(rows: &[Vec<String>]) -> String {
    let width =
        |col: usize| rows.iter().map(|r| r.get(col).map_or(0, |c| c.chars().count())).max().unwrap_or(0);
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len)).map(width).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A count or `-` where it is not known (stopped relay; a field a cluster does not keep).
fn known(value: Option<impl ToString>) -> String {
    value.map_or("-".into(), |n| n.to_string())
}

fn online(room: &RoomInfo) -> String {
    known(room.online)
}

fn rooms_table(rooms: &[RoomInfo]) -> String {
    let mut rows =
        vec![["ROOM", "ONLINE", "LATEST", "HISTORY", "BYTES", "NICKS", "BANS", "CREATED", "OWNER"]
            .map(String::from)
            .to_vec()];
    for r in rooms {
        rows.push(vec![
            r.name.clone(),
            online(r),
            r.latest_seq.to_string(),
            r.history.to_string(),
            known(r.history_bytes),
            r.nicknames.to_string(),
            r.bans.to_string(),
            known(r.created.map(date)),
            r.owner.clone(),
        ]);
    }
    columns(&rows)
}

fn room_detail(r: &RoomInfo) -> String {
    let mut out = columns(&[
        vec!["room".into(), r.name.clone()],
        vec!["owner".into(), r.owner.clone()],
        vec!["created".into(), known(r.created.map(date))],
        vec!["online".into(), online(r)],
        vec!["latest seq".into(), r.latest_seq.to_string()],
        vec!["history".into(), format!("{} envelopes, {} bytes", r.history, known(r.history_bytes))],
        vec!["bans".into(), r.bans.to_string()],
    ]);
    let mut rows = vec![vec!["NICK".to_owned(), "IDENTITY".to_owned()]];
    rows.extend(r.members.iter().map(|m| vec![m.nick.clone(), m.identity.clone()]));
    out.push('\n');
    out.push_str(&columns(&rows));
    out
}

fn bans_table(bans: &[BanInfo]) -> String {
    let mut rows = vec![vec!["IDENTITY".to_owned(), "NICKNAMES".to_owned()]];
    rows.extend(bans.iter().map(|b| vec![b.identity.clone(), b.nicknames.join(", ")]));
    columns(&rows)
}

/// `YYYY-MM-DD` (UTC) of a Unix time, by the days-to-civil algorithm.
fn date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_795_000_000), "2026-11-18");
    }

    #[test]
    fn columns_align() {
        let rows = vec![vec!["A".to_owned(), "B".to_owned()], vec!["long".to_owned(), "x".to_owned()]];
        assert_eq!(columns(&rows), "A     B\nlong  x\n");
    }
}
