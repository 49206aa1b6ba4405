//! The floor of fan-out on this machine: a plaintext broadcast server with nothing of the
//! relay's in the way (no Noise, no storage, no rules), driven like `ncat --broker` (`--raw`)
//! by the same generator. Unlike ncat it sets TCP_NODELAY and forwards whole lines only, so
//! its tail is the kernel's and the scheduler's, not Nagle's, and nothing is interleaved.
//!
//! Its shape is the relay's without the work: a reader task per connection that hands each
//! chunk of complete lines to every other member's queue, and a writer task per member that
//! writes everything queued for it in one `write` (one write per member per burst).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::workload::MAX_LINE;

/// Most bytes queued for one member: past it the member is dropped (it does not read).
pub const MAX_QUEUED: usize = 16 << 20;
/// Most connections served at once.
pub const MAX_MEMBERS: usize = 20_000;

/// One member's outbound queue.
struct Member {
    id: u64,
    queue: Mutex<Outbound>,
    ready: Notify,
}

#[derive(Default)]
struct Outbound {
    chunks: VecDeque<Arc<[u8]>>,
    bytes: usize,
    /// Over `MAX_QUEUED`, or its connection failed: the writer stops.
    closed: bool,
}

/// Everyone connected.
#[derive(Default)]
struct Members {
    list: Mutex<Vec<Arc<Member>>>,
    next_id: AtomicU64,
}

impl Members {
    /// Queues `chunk` for every member but `from`.
    fn broadcast(&self, from: u64, chunk: &Arc<[u8]>) {
        let Ok(list) = self.list.lock() else { return };
        for m in list.iter().filter(|m| m.id != from) {
            let Ok(mut q) = m.queue.lock() else { continue };
            if q.closed {
                continue;
            }
            q.bytes += chunk.len();
            if q.bytes > MAX_QUEUED {
                q.closed = true;
                q.chunks.clear();
            } else {
                q.chunks.push_back(chunk.clone());
            }
            drop(q);
            m.ready.notify_one();
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut l) = self.list.lock() {
            l.retain(|m| m.id != id);
        }
    }
}

/// Serves `listener` until the task is dropped (the process ends).
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let members = Arc::new(Members::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let full = members.list.lock().map_or(true, |l| l.len() >= MAX_MEMBERS);
        if full || stream.set_nodelay(true).is_err() {
            continue;
        }
        tokio::spawn(connection(stream, members.clone()));
    }
}

async fn connection(stream: TcpStream, members: Arc<Members>) {
    let id = members.next_id.fetch_add(1, Ordering::Relaxed);
    let member = Arc::new(Member { id, queue: Mutex::default(), ready: Notify::new() });
    if let Ok(mut l) = members.list.lock() {
        l.push(member.clone());
    }
    let (read, write) = stream.into_split();
    let writer = tokio::spawn(write_queued(write, member.clone()));
    read_lines(read, id, &members).await;
    members.remove(id);
    if let Ok(mut q) = member.queue.lock() {
        q.closed = true;
    }
    member.ready.notify_one();
    let _ = writer.await;
}

/// Reads until the peer closes, broadcasting each read's complete lines as one chunk. A line
/// longer than `MAX_LINE` ends the connection.
async fn read_lines(mut read: OwnedReadHalf, id: u64, members: &Members) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        let Some(spare) = buf.get_mut(filled..) else { return };
        let n = match read.read(spare).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let Some(last) = buf.get(..filled).and_then(|b| b.iter().rposition(|&c| c == b'\n')) else {
            if filled > MAX_LINE {
                return;
            }
            continue;
        };
        let chunk: Arc<[u8]> = Arc::from(buf.get(..=last).unwrap_or_default());
        members.broadcast(id, &chunk);
        buf.copy_within(last + 1..filled, 0);
        filled -= last + 1;
    }
}

/// Writes whatever is queued for the member, all of it in one `write_all`.
async fn write_queued(mut write: OwnedWriteHalf, member: Arc<Member>) {
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        member.ready.notified().await;
        let closed = {
            let Ok(mut q) = member.queue.lock() else { return };
            out.clear();
            for c in q.chunks.drain(..) {
                out.extend_from_slice(&c);
            }
            q.bytes = 0;
            q.closed
        };
        if closed || write.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plain::{self, Kind, PlainTarget};
    use crate::{Mode, Workload};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_line_reaches_every_other_member_once_and_whole() -> Result<(), Box<dyn std::error::Error>>
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let server = tokio::spawn(serve(listener));
        let w = Workload {
            name: "floor".into(),
            mode: Mode::Deliver,
            members: 6,
            rooms: 1,
            senders: 3,
            messages: 200,
            bytes: 100,
            rate: None,
            concurrency: 4,
            duration: Duration::from_secs(1),
            settle: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        };
        let target = PlainTarget { kind: Kind::Raw, addr, label: "floor".into(), pid: None };
        let got = plain::run(&target, &w).await?;
        server.abort();
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        assert_eq!((got.delivered, got.lost, got.duplicated, got.corrupted), (3 * 200 * 5, 0, 0, 0));
        Ok(())
    }
}
