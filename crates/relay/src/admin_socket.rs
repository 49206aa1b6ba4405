//! The admin socket of a running relay: `admin.sock` in the data directory, mode 0600. One
//! JSON request line per connection, one JSON reply line back (`admin::Request`/`Reply`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chatroom_crypto::RoomName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::admin::{self, Reply, Request, MAX_REQUEST_LEN};
use crate::handler::Shared;
use crate::rooms::RoomAdmin;
use crate::store::{StoreError, StoreHandle};

/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What is read and dropped after replying to an oversized request, at most.
const DRAIN_LIMIT: u64 = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Admin connections served at once; more wait in the socket's backlog.
const MAX_ADMIN_CONNECTIONS: usize = 4;

/// Binds `admin.sock` in `data_dir`, replacing a stale one: the caller holds the database's
/// exclusive lock, so no other relay serves this data directory.
pub(crate) fn bind(data_dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(admin::ADMIN_SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// Serves admin requests until dropped.
pub(crate) async fn serve<R: RoomAdmin>(listener: UnixListener, shared: Arc<Shared<R>>, store: StoreHandle) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, store) = (shared.clone(), store.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, &shared.hub, &store).await {
                warn!(error = %e, "admin connection failed");
            }
        });
    }
}

async fn connection<R: RoomAdmin>(stream: UnixStream, hub: &R, store: &StoreHandle) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(rd.take(MAX_REQUEST_LEN));
    let read = reader.read_line(&mut line);
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => Reply::Error("no request within 10 s".into()),
        Ok(Err(e)) => Reply::Error(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') => Reply::Error("the request must be one line of JSON".into()),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(request, hub, store).await,
            Err(e) => Reply::Error(format!("not a request: {e}; use the chatroom-relay of the same version")),
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.shutdown().await?;
    // Closing with unread bytes would reset the connection and lose the reply: read what an
    // oversized request still sends, within bounds, first.
    let mut rest = reader.into_inner().into_inner().take(DRAIN_LIMIT);
    let _ = tokio::time::timeout(DRAIN_TIME, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
    Ok(())
}

fn storage(e: StoreError) -> Reply {
    Reply::Error(format!("{e}; see the relay's log"))
}

/// A name that is not a valid room name cannot name a stored room.
fn room_name(name: &str) -> Option<RoomName> {
    RoomName::new(name).ok()
}

/// Runs one request against the rooms (reads and changes) or the storage thread (backup).
pub(crate) async fn handle<R: RoomAdmin>(request: Request, hub: &R, store: &StoreHandle) -> Reply {
    match request {
        Request::RoomsList => hub.list_rooms().await.map_or_else(storage, Reply::Rooms),
        Request::RoomsShow { room } => match hub.room_info(&room).await {
            Ok(Some(info)) => Reply::Room(info),
            Ok(None) => admin::no_such_room(&room),
            Err(e) => storage(e),
        },
        Request::BansList { room } => match hub.list_bans(&room).await {
            Ok(Some(bans)) => Reply::Bans(bans),
            Ok(None) => admin::no_such_room(&room),
            Err(e) => storage(e),
        },
        Request::RoomsDelete { room } => {
            let Some(name) = room_name(&room) else { return admin::no_such_room(&room) };
            match hub.delete_room(&name).await {
                Ok(true) => Reply::Done(format!("deleted room {room}")),
                Ok(false) => admin::no_such_room(&room),
                Err(e) => storage(e),
            }
        }
        Request::OwnerSet { room, identity } => {
            let (name, owner) = match (room_name(&room), admin::parse_identity(&identity)) {
                (Some(name), Ok(owner)) => (name, owner),
                (None, _) => return admin::no_such_room(&room),
                (_, Err(e)) => return Reply::Error(e),
            };
            match hub.set_owner(&name, owner).await {
                Ok(true) => Reply::Done(format!("{} now owns room {room}", identity.trim())),
                Ok(false) => admin::no_such_room(&room),
                Err(e) => storage(e),
            }
        }
        Request::Backup { file } => {
            if let Some(refusal) = hub.backup_refusal() {
                return Reply::Error(refusal);
            }
            let target = file.clone();
            let started = std::time::Instant::now();
            match store.exec(move |conn| admin::backup(conn, &target)).await {
                Ok(Ok(())) => {
                    info!(file = %file.display(), took = ?started.elapsed(), "online backup written");
                    Reply::Done(format!("backed up to {}", file.display()))
                }
                Ok(Err(e)) => Reply::Error(e),
                Err(e) => storage(e),
            }
        }
    }
}

/// The admin socket's task and file, removed when the relay stops.
#[derive(Debug)]
pub(crate) struct Running(Option<(tokio::task::JoinHandle<()>, PathBuf)>);

/// Binds the admin socket and serves it; a relay whose socket cannot be bound still runs, and
/// its operator is told that administration then needs it stopped.
pub(crate) fn start<R: RoomAdmin>(shared: &Arc<Shared<R>>, store: StoreHandle) -> Running {
    match bind(&shared.config.data_dir) {
        Ok((listener, path)) => {
            info!(socket = %path.display(), "admin socket ready");
            Running(Some((tokio::spawn(serve(listener, shared.clone(), store)), path)))
        }
        Err(e) => {
            warn!(
                error = %e,
                "cannot create the admin socket in the data directory; admin commands and online backups \
                 need the relay stopped"
            );
            Running(None)
        }
    }
}

impl Running {
    pub(crate) fn stop(self) {
        if let Some((task, path)) = self.0 {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
    }
}
