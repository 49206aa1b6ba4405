//! Process-wide counters of what the relay does, exposed in the OpenMetrics text format on an
//! opt-in loopback address (`--metrics`), and summed up in a periodic log line.
//!
//! Counters are bumped where things happen (one line at each place); gauges that describe
//! state (connections joined, rooms loaded, queued bytes, stored rooms and history) are read
//! when scraped, through the `Gauges` reader `server.rs` hands in. This module imports nothing
//! else of the relay: every layer pushes into it, none is read by it. One relay runs per
//! process, so the counters are global.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use chatroom_crypto::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::info;

/// The state the gauges describe, as the relay reads it at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gauges {
    pub(crate) joined: usize,
    pub(crate) rooms_loaded: usize,
    pub(crate) queued_bytes: usize,
    /// Rooms stored, envelopes in their history and those envelopes' bytes; `None` when
    /// storage could not count them (the gauges keep their last values).
    pub(crate) stored: Option<(i64, i64, i64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Every metric, and the registry that encodes them.
struct Metrics {
    registry: Registry,
    open: AtomicI64,
    accepted: Counter,
    connections: Family<StateLabel, Gauge>,
    closed: Family<ReasonLabel, Counter>,
    joins: Counter,
    refusals: Family<CodeLabel, Counter>,
    deliveries: Counter,
    delivered_bytes: Counter,
    received_bytes: Counter,
    sent_bytes: Counter,
    queued_bytes: Gauge,
    slow_consumers: Counter,
    commit_seconds: Histogram,
    rooms_loaded: Gauge,
    rooms: Gauge,
    history_envelopes: Gauge,
    history_bytes: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("chatroom"),
            open: AtomicI64::new(0),
            accepted: Counter::default(),
            connections: Family::default(),
            closed: Family::default(),
            joins: Counter::default(),
            refusals: Family::default(),
            deliveries: Counter::default(),
            delivered_bytes: Counter::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            queued_bytes: Gauge::default(),
            slow_consumers: Counter::default(),
            // 100 µs to about 3.3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            rooms_loaded: Gauge::default(),
            rooms: Gauge::default(),
            history_envelopes: Gauge::default(),
            history_bytes: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register("connections_accepted", "Connections accepted", m.accepted.clone());
        r.register(
            "connections",
            "Open connections by state (handshaking: not joined yet)",
            m.connections.clone(),
        );
        r.register("connections_closed", "Connections ended, by reason", m.closed.clone());
        r.register("joins", "Successful joins", m.joins.clone());
        r.register(
            "join_refusals",
            "Refused joins and requests that ended a connection, by code",
            m.refusals.clone(),
        );
        r.register("deliveries", "Envelope copies queued for members (live fan-out)", m.deliveries.clone());
        r.register(
            "delivered_bytes",
            "Bytes of envelope copies queued for members",
            m.delivered_bytes.clone(),
        );
        r.register("received_bytes", "Bytes of frames read from members", m.received_bytes.clone());
        r.register("sent_bytes", "Bytes written to members after the handshake", m.sent_bytes.clone());
        r.register("queued_bytes", "Bytes waiting in members' outbound queues", m.queued_bytes.clone());
        r.register(
            "slow_consumer_closes",
            "Members disconnected for falling behind",
            m.slow_consumers.clone(),
        );
        r.register_with_unit(
            "store_commit",
            "Time to commit one storage transaction (a commit group)",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register("rooms_loaded", "Rooms in memory (with members)", m.rooms_loaded.clone());
        r.register("rooms", "Rooms in the database", m.rooms.clone());
        r.register(
            "history_envelopes",
            "Envelopes kept for history in the database",
            m.history_envelopes.clone(),
        );
        r.register(
            "history_bytes",
            "Bytes of envelopes kept for history in the database",
            m.history_bytes.clone(),
        );
        m
    }
}

/// A connection was accepted; dropping the guard counts it closed.
pub(crate) fn connection() -> OpenConnection {
    METRICS.accepted.inc();
    METRICS.open.fetch_add(1, Ordering::Relaxed);
    OpenConnection
}

/// Counts an open connection while alive.
#[derive(Debug)]
pub(crate) struct OpenConnection;

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection ended, for `reason` (a short snake_case word).
pub(crate) fn closed(reason: &str) {
    METRICS.closed.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
}

/// A member was disconnected for falling behind (counted when it happens; the connection
/// itself ends a moment later, after its goodbye).
pub(crate) fn slow_consumer() {
    METRICS.slow_consumers.inc();
}

/// `code` ended a connection: a refused join or request.
pub(crate) fn refused(code: ErrorCode) {
    METRICS.refusals.get_or_create(&CodeLabel { code: format!("{code:?}") }).inc();
}

pub(crate) fn joined() {
    METRICS.joins.inc();
}

/// An envelope of `bytes` was queued for `copies` members.
pub(crate) fn delivered(copies: usize, bytes: usize) {
    METRICS.deliveries.inc_by(copies as u64);
    METRICS.delivered_bytes.inc_by((copies * bytes) as u64);
}

pub(crate) fn received(bytes: usize) {
    METRICS.received_bytes.inc_by(bytes as u64);
}

pub(crate) fn committed(took: Duration) {
    METRICS.commit_seconds.observe(took.as_secs_f64());
}

/// A writer that counts the bytes it writes.
#[derive(Debug)]
pub(crate) struct CountWrites<W>(pub(crate) W);

impl<W: AsyncWrite + Unpin> AsyncWrite for CountWrites<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.0).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            METRICS.sent_bytes.inc_by(n as u64);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Sets the gauges.
fn set(gauges: &Gauges) {
    let m = &*METRICS;
    let joined = gauges.joined as i64;
    let open = m.open.load(Ordering::Relaxed).max(0);
    m.connections.get_or_create(&StateLabel { state: "joined" }).set(joined);
    m.connections.get_or_create(&StateLabel { state: "handshaking" }).set((open - joined).max(0));
    m.rooms_loaded.set(gauges.rooms_loaded as i64);
    m.queued_bytes.set(gauges.queued_bytes as i64);
    if let Some((rooms, envelopes, bytes)) = gauges.stored {
        m.rooms.set(rooms);
        m.history_envelopes.set(envelopes);
        m.history_bytes.set(bytes);
    }
}

/// The metrics in the OpenMetrics text format.
pub(crate) fn render(gauges: &Gauges) -> String {
    set(gauges);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}

/// One line of totals for the log.
pub(crate) fn log_stats(gauges: &Gauges) {
    set(gauges);
    let m = &*METRICS;
    let state = |s| m.connections.get_or_create(&StateLabel { state: s }).get();
    info!(
        joined = state("joined"),
        handshaking = state("handshaking"),
        rooms_loaded = m.rooms_loaded.get(),
        rooms = m.rooms.get(),
        history_envelopes = m.history_envelopes.get(),
        joins = m.joins.get(),
        deliveries = m.deliveries.get(),
        received_bytes = m.received_bytes.get(),
        sent_bytes = m.sent_bytes.get(),
        slow_consumer_closes = m.slow_consumers.get(),
        "stats"
    );
}

/// Longest request head read from a scraper.
const MAX_REQUEST_HEAD: u64 = 8 * 1024;
/// Time a scraper gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` (HTTP/1.x, one request per connection) until dropped.
pub(crate) async fn serve<F, Fut>(listener: TcpListener, read: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Gauges> + Send,
{
    let read = Arc::new(read);
    let scrapes = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let Ok(permit) = scrapes.clone().acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let read = read.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, scrape(stream, &*read)).await;
        });
    }
}

async fn scrape<S, F, Fut>(mut stream: S, read: &F) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: Future<Output = Gauges>,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf)).await??;
        if n == 0 || head.len() as u64 + n as u64 > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, kind, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", render(&read().await))
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics is served here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
