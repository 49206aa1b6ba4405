//! The plaintext baselines: a newline-delimited broadcast server (`ncat -l --broker`) and an
//! IRC server (ngIRCd), driven with the same workload and the same payload checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::report::{Outcome, ServerWatch};
use crate::workload::{
    connect_loops, due, gather_sends, gather_tallies, idle, payload, verify_payload, wait_for_deliveries,
    Mode, Sends, Shared, Tally, Workload, MAX_LINE,
};

/// Time allowed for one member's connect and registration.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Most IRC registrations in flight at once.
const IRC_CONCURRENCY: usize = 16;
/// Lines written together by a sender running as fast as possible.
const SEND_BATCH: usize = 8;

/// Which plaintext protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Newline-delimited lines, broadcast to every other connection.
    Raw,
    /// IRC: NICK/USER, JOIN, PRIVMSG.
    Irc,
}

/// A plaintext server to drive.
#[derive(Debug, Clone)]
pub struct PlainTarget {
    /// Protocol.
    pub kind: Kind,
    /// `HOST:PORT`.
    pub addr: String,
    /// Name in the table (`ncat`, `ngircd`).
    pub label: String,
    /// The server's pid.
    pub pid: Option<u32>,
}

/// Splits a byte stream into lines, bounded by `MAX_LINE`.
struct Lines {
    read: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    /// Inside an overlong line: drop bytes up to the next newline.
    skipping: bool,
}

enum Line {
    Text(String),
    Overlong,
}

impl Lines {
    fn new(read: OwnedReadHalf) -> Self {
        Self { read, buf: Vec::with_capacity(64 * 1024), start: 0, skipping: false }
    }

    /// The next line without its `\r\n` or `\n`; `None` at end of stream.
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(pos) = self.buf.get(self.start..).and_then(|b| b.iter().position(|&c| c == b'\n')) {
                let end = self.start + pos;
                let mut line = self.buf.get(self.start..end).unwrap_or_default();
                self.start = end + 1;
                if self.skipping {
                    self.skipping = false;
                    return Ok(Some(Line::Overlong));
                }
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                return Ok(Some(match std::str::from_utf8(line) {
                    Ok(s) => Line::Text(s.to_owned()),
                    Err(_) => Line::Overlong,
                }));
            }
            // Compact, then bound what an unterminated line may hold.
            self.buf.drain(..self.start);
            self.start = 0;
            if self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.skipping = true;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.read.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

fn channel(r: usize) -> String {
    format!("#bench{r}")
}

async fn open(addr: &str) -> Result<TcpStream, BenchError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(BenchError::io(format!("cannot connect to {addr} (is the server running?)")))?;
    stream.set_nodelay(true).map_err(BenchError::io("cannot set TCP_NODELAY"))?;
    Ok(stream)
}

/// A connected member, registered and in its channel for IRC.
struct Member {
    lines: Lines,
    write: OwnedWriteHalf,
    /// `JOIN` lines of later members read before the channel's names ended.
    join_notices: u64,
}

/// Whether an IRC line announces a join (`:nick!user@host JOIN #channel`).
fn is_join_line(line: &str) -> bool {
    line.starts_with(':') && line.split(' ').nth(1) == Some("JOIN")
}

/// Connects and, for IRC, registers and joins the member's channel.
async fn join_member(target: &PlainTarget, i: usize, room: usize) -> Result<Member, BenchError> {
    let work = async {
        let (read, mut write) = open(&target.addr).await?.into_split();
        let mut lines = Lines::new(read);
        let mut join_notices = 0;
        if target.kind == Kind::Irc {
            let io = |e: std::io::Error| BenchError::io("IRC registration")(e);
            write.write_all(format!("NICK b{i}\r\nUSER b{i} 0 * :bench\r\n").as_bytes()).await.map_err(io)?;
            let mut joined = false;
            let own_prefix = format!(":b{i}!");
            loop {
                let line = match lines.next().await.map_err(io)? {
                    Some(Line::Text(l)) => l,
                    Some(Line::Overlong) => continue,
                    None => {
                        return Err(BenchError::Server(
                            "the IRC server closed the connection during registration".into(),
                        ))
                    }
                };
                if is_join_line(&line) && !line.starts_with(&own_prefix) {
                    join_notices += 1;
                } else if let Some(token) = line.strip_prefix("PING ") {
                    write.write_all(format!("PONG {token}\r\n").as_bytes()).await.map_err(io)?;
                } else if line.starts_with("ERROR") {
                    return Err(BenchError::Server(format!("the IRC server refused: {line}")));
                } else if line.split(' ').nth(1) == Some("001") {
                    write.write_all(format!("JOIN {}\r\n", channel(room)).as_bytes()).await.map_err(io)?;
                } else if line.split(' ').nth(1) == Some("366") {
                    joined = true;
                } else if matches!(
                    line.split(' ').nth(1),
                    Some("433" | "403" | "405" | "471" | "473" | "474")
                ) {
                    return Err(BenchError::Server(format!("the IRC server refused: {line}")));
                }
                if joined {
                    break;
                }
            }
        }
        Ok(Member { lines, write, join_notices })
    };
    tokio::time::timeout(JOIN_TIMEOUT, work).await.map_err(|_| {
        BenchError::Server(format!("member {i} did not join within {} s", JOIN_TIMEOUT.as_secs()))
    })?
}

struct Ctx {
    shared: Arc<Shared>,
    kind: Kind,
    bytes: usize,
    senders: usize,
    messages: usize,
    probes: AtomicUsize,
}

async fn receive(mut lines: Lines, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> Tally {
    let mut tally = Tally::new(ctx.senders, ctx.messages);
    let mut probed = false;
    loop {
        let line = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = lines.next() => match r {
                Ok(Some(line)) => line,
                Ok(None) => {
                    if !*stop.borrow() {
                        tally.errors.push("the server closed the connection".into());
                    }
                    break;
                }
                Err(e) => {
                    tally.errors.push(format!("connection failed: {e}"));
                    break;
                }
            },
        };
        let now = ctx.shared.now_ns();
        let text = match line {
            Line::Text(t) => t,
            Line::Overlong => {
                tally.corrupted += 1;
                continue;
            }
        };
        let body = match ctx.kind {
            Kind::Raw => {
                if text.starts_with("probe") {
                    if !probed {
                        probed = true;
                        ctx.probes.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                text.as_str()
            }
            Kind::Irc if is_join_line(&text) => {
                ctx.shared.join_notices.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Kind::Irc => match text.split_once(" PRIVMSG ").and_then(|(_, rest)| rest.split_once(" :")) {
                Some((_, body)) => body,
                None => {
                    if text.starts_with("ERROR") && tally.errors.len() < 5 {
                        tally.errors.push(text.clone());
                    }
                    continue;
                }
            },
        };
        match verify_payload(body, ctx.bytes, ctx.senders, ctx.messages) {
            Some((s, n, t)) => tally.intact(&ctx.shared, s, n, t, now),
            None => tally.corrupted += 1,
        }
    }
    tally
}

async fn send(
    mut write: OwnedWriteHalf,
    ctx: Arc<Ctx>,
    s: usize,
    room: usize,
    rate: Option<f64>,
    start: tokio::time::Instant,
) -> Result<(OwnedWriteHalf, u64, u64), BenchError> {
    let mut out = Vec::new();
    let mut n = 0;
    while n < ctx.messages {
        if let Some(at) = due(rate, n) {
            tokio::time::sleep_until(start + at).await;
        }
        let take = if rate.is_some() { 1 } else { SEND_BATCH.min(ctx.messages - n) };
        out.clear();
        for k in n..n + take {
            let body = payload(s, k, ctx.shared.now_ns(), ctx.bytes);
            match ctx.kind {
                Kind::Raw => out.extend_from_slice(format!("{body}\n").as_bytes()),
                Kind::Irc => {
                    out.extend_from_slice(format!("PRIVMSG {} :{body}\r\n", channel(room)).as_bytes())
                }
            }
        }
        write.write_all(&out).await.map_err(|e| BenchError::member(s)(BenchError::io("send")(e)))?;
        n += take;
    }
    Ok((write, n as u64, ctx.shared.now_ns()))
}

/// Raw servers have no join: member 0 sends probe lines until every other member saw one.
async fn await_probes(write: &mut OwnedWriteHalf, ctx: &Ctx, others: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    while ctx.probes.load(Ordering::Relaxed) < others {
        if Instant::now() >= deadline {
            return Err(BenchError::Server(format!(
                "only {} of {others} members saw the probe line within {} s",
                ctx.probes.load(Ordering::Relaxed),
                JOIN_TIMEOUT.as_secs()
            )));
        }
        write.write_all(b"probe\n").await.map_err(BenchError::io("probe"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Connects (and for IRC registers and joins) every member, starting each one's receiver as
/// soon as it is in; on a raw server, until every member saw a probe line. Returns the
/// members' writers and the receiver tasks.
async fn join_all(
    target: &PlainTarget,
    w: &Workload,
    ctx: &Arc<Ctx>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(Vec<Option<OwnedWriteHalf>>, JoinSet<Tally>), BenchError> {
    // ncat --broker loses track of some connections accepted in a burst (they are never sent
    // anything), so raw members connect one at a time.
    // ngIRCd listens with a short accept backlog: beyond 16 registrations at once some
    // connections wait out SYN retransmissions for many seconds.
    let concurrency = if target.kind == Kind::Raw { 1 } else { w.concurrency.min(IRC_CONCURRENCY) };
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut joins = JoinSet::new();
    for i in 0..w.members {
        let (target, permits) = (target.clone(), permits.clone());
        let room = w.room_of(i);
        joins.spawn(async move {
            let _permit =
                permits.acquire_owned().await.map_err(|_| BenchError::Internal("join permits closed"))?;
            join_member(&target, i, room).await.map(|j| (i, j))
        });
    }
    let mut writers: Vec<Option<OwnedWriteHalf>> = (0..w.members).map(|_| None).collect();
    let mut receivers = JoinSet::new();
    while let Some(joined) = joins.join_next().await {
        let (i, member) = joined.map_err(BenchError::task("join"))??;
        writers[i] = Some(member.write);
        ctx.shared.join_notices.fetch_add(member.join_notices, Ordering::Relaxed);
        receivers.spawn(receive(member.lines, ctx.clone(), stop_rx.clone()));
    }
    if target.kind == Kind::Raw {
        let first = writers.first_mut().and_then(Option::as_mut).ok_or(BenchError::Internal("no member"))?;
        await_probes(first, ctx, w.members - 1).await?;
    }
    Ok((writers, receivers))
}

/// Runs one workload against a plaintext server.
pub async fn run(target: &PlainTarget, w: &Workload) -> Result<Outcome, BenchError> {
    w.validate()?;
    if target.kind == Kind::Raw && w.rooms != 1 {
        return Err(BenchError::Workload("a raw broadcast server has one room only; use --rooms 1".into()));
    }
    if w.mode == Mode::Connect {
        if target.kind == Kind::Raw {
            return Err(BenchError::Workload(
                "a raw broadcast server has no handshake or join to measure; connect mode is for --relay and --irc".into(),
            ));
        }
        return connect_rate(target, w).await;
    }
    let shared = Arc::new(Shared::new());
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        kind: target.kind,
        bytes: w.bytes,
        senders: w.senders,
        messages: w.messages,
        probes: AtomicUsize::new(0),
    });
    let mut watch_server = ServerWatch::start(target.pid.as_slice());
    let (stop_tx, stop_rx) = watch::channel(false);
    let join_start = Instant::now();
    let (mut writers, mut receivers) = join_all(target, w, &ctx, &stop_rx).await?;
    let join_secs = join_start.elapsed().as_secs_f64();

    let mut outcome = if w.mode == Mode::Idle {
        // A raw broadcast server announces nothing; an IRC server sends `JOIN` lines.
        let expected = if target.kind == Kind::Irc { w.expected_join_notices() } else { 0 };
        idle(&shared, w, expected).await?;
        let mut o = Outcome { target: target.label.clone(), workload: w.name.clone(), ..Outcome::default() };
        if let (Some(before), Some(after)) = (watch_server.before(), watch_server.now()) {
            o.kib_per_member = Some(after.rss_kib.saturating_sub(before.rss_kib) as f64 / w.members as f64);
            o.peak_rss_kib = Some(after.peak_rss_kib);
        }
        let _ = stop_tx.send(true);
        while receivers.join_next().await.is_some() {}
        o
    } else {
        // Let probe lines drain before sending.
        tokio::time::sleep(Duration::from_millis(300)).await;
        watch_server.restart();
        let shared_start = shared.now_ns();
        let start = tokio::time::Instant::now();
        let deadline = Instant::now() + w.timeout;
        let mut sends = JoinSet::new();
        for (s, write) in writers.iter_mut().take(w.senders).enumerate() {
            let write = write.take().ok_or(BenchError::Internal("a sender has no connection"))?;
            sends.spawn(send(write, ctx.clone(), s, w.room_of(s), w.rate, start));
        }
        // Senders' connections stay open until every delivery is counted.
        let Sends { sent, last_write, errors, kept } = gather_sends(sends, shared_start).await;
        wait_for_deliveries(&shared, w.expected_deliveries(), w.settle, deadline).await;
        let _ = stop_tx.send(true);
        let mut tally = gather_tallies(receivers).await?;
        tally.errors.extend(errors);
        tally.last_ns = tally.last_ns.saturating_sub(shared_start);
        let send_secs = last_write.saturating_sub(shared_start) as f64 / 1e9;
        let mut o = Outcome::from_tally(&target.label, w, tally, sent, send_secs);
        let units = o.delivered;
        watch_server.finish(&mut o, units);
        drop(kept);
        o
    };
    outcome.joined = w.members;
    outcome.join_secs = join_secs;
    drop(writers);
    Ok(outcome)
}

/// Connect (and for IRC register, join and quit), `concurrency` at a time, for `duration`.
async fn connect_rate(target: &PlainTarget, w: &Workload) -> Result<Outcome, BenchError> {
    let watch_server = ServerWatch::start(target.pid.as_slice());
    let shared_target = target.clone();
    let rate = connect_loops(w, move |k, j| {
        let target = shared_target.clone();
        async move {
            // Distinct nicknames: past the members' numbers, unique per loop and iteration.
            let i = 1_000_000 + j as usize * 1000 + k;
            let Member { mut write, .. } = join_member(&target, i, 0).await?;
            if target.kind == Kind::Irc {
                let _ = write.write_all(b"QUIT\r\n").await;
            }
            let _ = write.shutdown().await;
            Ok(())
        }
    })
    .await;
    let mut o = Outcome {
        target: target.label.clone(),
        workload: w.name.clone(),
        joined: rate.done as usize,
        join_secs: rate.secs,
        joins_per_sec: Some(rate.done as f64 / rate.secs),
        errors: rate.errors,
        ..Outcome::default()
    };
    watch_server.finish(&mut o, rate.done);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_lines_are_told_from_other_lines() {
        assert!(is_join_line(":b7!~b7@localhost JOIN :#bench0"));
        assert!(is_join_line(":b7!~b7@localhost JOIN #bench0"));
        assert!(!is_join_line(":b7!~b7@localhost PRIVMSG #bench0 :JOIN"));
        assert!(!is_join_line(":irc.example.net 353 b1 = #bench0 :b1 b7"));
        assert!(!is_join_line("JOIN #bench0"));
        assert!(!is_join_line(""));
    }
}
