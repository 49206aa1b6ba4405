//! What a run does, the payload format every target carries, and the per-receiver tally that
//! decides whether a delivery counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// What kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Join everyone, send, count deliveries.
    Deliver,
    /// Join everyone and hold: memory per joined member.
    Idle,
    /// Connect, handshake, join and leave in a loop: joins per second.
    Connect,
}

/// One workload, the same for every target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Workload {
    /// Name shown in the table (`W1`, `P`, ...).
    pub name: String,
    /// What kind of run.
    pub mode: Mode,
    /// Members in total, spread over the rooms (member i is in room i % rooms).
    pub members: usize,
    /// Rooms (IRC channels; the raw broadcast server has one shared room only).
    pub rooms: usize,
    /// Members 0..senders send.
    pub senders: usize,
    /// Messages per sender.
    pub messages: usize,
    /// Message body size in bytes (at least the header the payload needs).
    pub bytes: usize,
    /// Messages per second per sender; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// Connect mode: how long to keep connecting. Idle mode: how long members stay idle after
    /// the join storm's notices have been delivered, before memory is read; longer than an
    /// allocator's decay of freed pages (jemalloc's ten seconds), it gives the resident memory
    /// an idle server keeps rather than the storm's.
    pub duration: Duration,
    /// Give up waiting for deliveries after this long without a new one.
    pub settle: Duration,
    /// Upper bound on the whole run.
    pub timeout: Duration,
}

/// The most receiver-sender-message combinations tracked for duplicates (one bit each).
pub const MAX_TRACKED: u64 = 1 << 33;
/// Longest line the plaintext targets accept before counting it as corrupted.
pub const MAX_LINE: usize = 8192;

impl Workload {
    /// Checks the numbers before any connection is made.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.members == 0 || self.rooms == 0 || self.rooms > self.members {
            return Err(BenchError::Workload(
                "need at least one member and one room, and no more rooms than members".into(),
            ));
        }
        if self.senders > self.members {
            return Err(BenchError::Workload(format!(
                "--senders {} exceeds --members {}",
                self.senders, self.members
            )));
        }
        if self.concurrency == 0 {
            return Err(BenchError::Workload("--concurrency must be at least 1".into()));
        }
        if self.bytes > chatroom_crypto::MAX_BODY_LEN {
            return Err(BenchError::Workload(format!(
                "--bytes {} exceeds the largest message body, {}",
                self.bytes,
                chatroom_crypto::MAX_BODY_LEN
            )));
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(BenchError::Workload(
                    "--rate must be a positive number of messages per second".into(),
                ));
            }
        }
        let per_receiver = (self.senders as u64).saturating_mul(self.messages as u64);
        if per_receiver.saturating_mul(self.members as u64) > MAX_TRACKED {
            return Err(BenchError::Workload(
                "members x senders x messages is too large to track duplicates; lower one".into(),
            ));
        }
        Ok(())
    }

    /// The room of member `i`.
    pub fn room_of(&self, i: usize) -> usize {
        i % self.rooms
    }

    /// Members in room `r`.
    pub fn members_in(&self, r: usize) -> usize {
        (0..self.members).filter(|&i| self.room_of(i) == r).count()
    }

    /// Deliveries expected if nothing is lost: every message to every other member of the
    /// sender's room.
    pub fn expected_deliveries(&self) -> u64 {
        (0..self.senders)
            .map(|s| (self.messages as u64) * (self.members_in(self.room_of(s)) as u64 - 1))
            .sum()
    }

    /// Join notices expected once every member has joined: each member hears of every member
    /// of its room that joined after it (`Presence(joined)`, an IRC `JOIN` line), so a room of
    /// n members makes n(n-1)/2.
    pub fn expected_join_notices(&self) -> u64 {
        (0..self.rooms)
            .map(|r| {
                let n = self.members_in(r) as u64;
                n * n.saturating_sub(1) / 2
            })
            .sum()
    }
}

/// Builds the payload of message `seq` of sender `sender` sent at `t_ns` (nanoseconds since
/// the run's origin): `sender:seq:t_ns:` then lowercase filler that depends on all three, up
/// to `bytes` bytes (longer if the header alone is longer).
pub fn payload(sender: usize, seq: usize, t_ns: u64, bytes: usize) -> String {
    let mut out = format!("{sender}:{seq}:{t_ns}:");
    let mix = (sender as u64).wrapping_mul(31).wrapping_add((seq as u64).wrapping_mul(7)).wrapping_add(t_ns);
    let mut k = 0u64;
    while out.len() < bytes {
        out.push(char::from(b'a' + (mix.wrapping_add(k) % 26) as u8));
        k += 1;
    }
    out
}

/// Parses a payload's header and checks the whole payload against the one it must be.
/// Returns `(sender, seq, t_ns)`.
pub fn verify_payload(
    text: &str,
    bytes: usize,
    senders: usize,
    messages: usize,
) -> Option<(usize, usize, u64)> {
    let mut fields = text.splitn(4, ':');
    let sender: usize = fields.next()?.parse().ok()?;
    let seq: usize = fields.next()?.parse().ok()?;
    let t_ns: u64 = fields.next()?.parse().ok()?;
    if sender >= senders || seq >= messages {
        return None;
    }
    (payload(sender, seq, t_ns, bytes) == text).then_some((sender, seq, t_ns))
}

/// Shared between every task of one run.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of the run: payload timestamps are nanoseconds since this.
    pub origin: Instant,
    /// Intact deliveries so far, over all receivers.
    pub delivered: AtomicU64,
    /// Messages the server acknowledged so far (chatroom).
    pub acked: AtomicU64,
    /// Notices of another member's join received so far, over all members.
    pub join_notices: AtomicU64,
}

impl Shared {
    /// A run starting now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            delivered: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            join_notices: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the origin.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// What one receiver saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Intact deliveries, each (sender, seq) counted once.
    pub delivered: u64,
    /// Intact deliveries of a (sender, seq) already delivered to this receiver.
    pub duplicated: u64,
    /// Messages that arrived damaged (wrong content, cut or interleaved lines, bad envelope).
    pub corrupted: u64,
    /// End-to-end latency of each intact delivery, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Time of the last intact delivery, nanoseconds since the origin.
    pub last_ns: u64,
    /// Acks (chatroom: messages the relay stored and numbered for this member).
    pub acked: u64,
    /// Error items and anything else that ended or refused this member's traffic.
    pub errors: Vec<String>,
    seen: Vec<u64>,
    messages: usize,
}

impl Tally {
    /// A tally for a receiver that can get `senders x messages` distinct messages.
    pub fn new(senders: usize, messages: usize) -> Self {
        let bits = senders.saturating_mul(messages);
        Self { seen: vec![0; bits.div_ceil(64)], messages, ..Self::default() }
    }

    /// Records an intact delivery of (sender, seq), sent at `t_ns`, received at `now_ns`.
    pub fn intact(&mut self, shared: &Shared, sender: usize, seq: usize, t_ns: u64, now_ns: u64) {
        let bit = sender * self.messages + seq;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        match self.seen.get_mut(word) {
            Some(w) if *w & mask != 0 => self.duplicated += 1,
            Some(w) => {
                *w |= mask;
                self.delivered += 1;
                self.latencies_ns.push(now_ns.saturating_sub(t_ns));
                self.last_ns = self.last_ns.max(now_ns);
                shared.delivered.fetch_add(1, Ordering::Relaxed);
            }
            None => self.corrupted += 1,
        }
    }

    /// Adds another receiver's tally (its duplicate bitmap is not merged).
    pub fn absorb(&mut self, other: Tally) {
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
        self.latencies_ns.extend(other.latencies_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.acked += other.acked;
        if self.errors.len() < 20 {
            self.errors.extend(other.errors.into_iter().take(20));
        }
    }
}

/// Waits until `expected` deliveries arrived, or none arrived for `settle`, or `deadline`.
pub async fn wait_for_deliveries(shared: &Shared, expected: u64, settle: Duration, deadline: Instant) {
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = shared.delivered.load(Ordering::Relaxed);
        if now >= expected || Instant::now() >= deadline {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= settle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Idle mode: waits until every member has heard of every later join, then `w.duration`.
pub async fn idle(shared: &Shared, w: &Workload, expected: u64) -> Result<(), BenchError> {
    wait_for_join_notices(shared, expected, Instant::now() + w.timeout).await?;
    tokio::time::sleep(w.duration).await;
    Ok(())
}

/// Waits until every member has heard of every later join (`expected` notices), so that idle
/// mode reads the server's memory once the join storm's presence traffic has been delivered
/// and nothing is left queued for the members. An error if that takes past `deadline`.
async fn wait_for_join_notices(shared: &Shared, expected: u64, deadline: Instant) -> Result<(), BenchError> {
    loop {
        let seen = shared.join_notices.load(Ordering::Relaxed);
        if seen >= expected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Server(format!(
                "members heard of {seen} of the {expected} joins that followed theirs before the run's \
                 timeout; raise --timeout, or the server loses presence notices"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The schedule of one sender: when message `n` is due, relative to the start of sending.
pub fn due(rate: Option<f64>, n: usize) -> Option<Duration> {
    rate.map(|r| Duration::from_secs_f64(n as f64 / r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_has_the_requested_size() {
        let p = payload(7, 123, 987_654_321, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(verify_payload(&p, 100, 10, 1000), Some((7, 123, 987_654_321)));
    }

    #[test]
    fn damaged_or_foreign_payloads_do_not_verify() {
        let p = payload(1, 2, 3, 100);
        let mut cut = p.clone();
        cut.truncate(60);
        assert_eq!(verify_payload(&cut, 100, 10, 10), None);
        let flipped = p.replacen('a', "b", 1);
        assert_ne!(flipped, p);
        assert_eq!(verify_payload(&flipped, 100, 10, 10), None);
        // A sender or sequence number outside the run.
        assert_eq!(verify_payload(&payload(11, 2, 3, 100), 100, 10, 10), None);
        assert_eq!(verify_payload("1:2", 100, 10, 10), None);
        // Two lines run together.
        assert_eq!(
            verify_payload(&format!("{}{}", &p[..50], &payload(1, 3, 3, 100)[..50]), 100, 10, 10),
            None
        );
    }

    #[test]
    fn tally_counts_duplicates_once() {
        let shared = Shared::new();
        let mut t = Tally::new(2, 3);
        t.intact(&shared, 1, 2, 0, 10);
        t.intact(&shared, 1, 2, 0, 10);
        t.intact(&shared, 0, 0, 0, 10);
        assert_eq!((t.delivered, t.duplicated, t.corrupted), (2, 1, 0));
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn expected_deliveries_follow_rooms() {
        let mut w = Workload {
            name: "t".into(),
            mode: Mode::Deliver,
            members: 10,
            rooms: 1,
            senders: 10,
            messages: 5,
            bytes: 100,
            rate: None,
            concurrency: 4,
            duration: Duration::ZERO,
            settle: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(w.expected_deliveries(), 10 * 5 * 9);
        w.rooms = 2;
        assert_eq!(w.expected_deliveries(), 10 * 5 * 4);
        assert!(w.validate().is_ok());
        w.senders = 11;
        assert!(w.validate().is_err());
    }

    #[test]
    fn expected_join_notices_count_later_joins_per_room() {
        let mut w = Workload {
            name: "t".into(),
            mode: Mode::Idle,
            members: 5,
            rooms: 1,
            senders: 0,
            messages: 0,
            bytes: 100,
            rate: None,
            concurrency: 4,
            duration: Duration::ZERO,
            settle: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(w.expected_join_notices(), 4 + 3 + 2 + 1);
        // Members 0, 2, 4 and 1, 3.
        w.rooms = 2;
        assert_eq!(w.expected_join_notices(), 3 + 1);
        w.rooms = 5;
        assert_eq!(w.expected_join_notices(), 0);
    }
}

/// What connect mode measured: completed connections and how long the loops ran.
#[derive(Debug, Default)]
pub struct ConnectRate {
    /// Connections that completed `connect_once`.
    pub done: u64,
    /// Seconds from the start of the loops until the last one ended.
    pub secs: f64,
    /// What went wrong (each loop gives up after more than 10 errors).
    pub errors: Vec<String>,
}

/// Connect mode's load, the same for every target: `w.concurrency` loops, each calling
/// `connect_once(loop, iteration)` (connect, handshake or register, join, leave) again and
/// again until `w.duration` has passed.
pub async fn connect_loops<F, Fut>(w: &Workload, connect_once: F) -> ConnectRate
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + w.duration;
    let mut loops = tokio::task::JoinSet::new();
    for k in 0..w.concurrency {
        let (connect_once, done) = (connect_once.clone(), done.clone());
        loops.spawn(async move {
            let mut errors = Vec::new();
            let mut j = 0u64;
            while Instant::now() < end && errors.len() <= 10 {
                match connect_once(k, j).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                j += 1;
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = loops.join_next().await {
        match r {
            Ok(e) => errors.extend(e),
            Err(e) => errors.push(format!("a connect loop failed: {e}")),
        }
    }
    ConnectRate { done: done.load(Ordering::Relaxed), secs: start.elapsed().as_secs_f64(), errors }
}

/// What the senders of one run did, gathered from their tasks.
#[derive(Debug)]
pub struct Sends<W> {
    /// Messages written, over all senders.
    pub sent: u64,
    /// When the last write returned (ns since the run's origin; `since` if none did).
    pub last_write: u64,
    /// Senders that failed, and why.
    pub errors: Vec<String>,
    /// The senders' connections: kept open until every delivery is counted, since closing the
    /// sending direction ends the session.
    pub kept: Vec<W>,
}

/// Waits for every sender task (each returns its connection, the messages it wrote and when
/// its last write returned); `since` is the start of sending.
pub async fn gather_sends<W: 'static>(
    mut sends: tokio::task::JoinSet<Result<(W, u64, u64), BenchError>>,
    since: u64,
) -> Sends<W> {
    let mut gathered = Sends { sent: 0, last_write: since, errors: Vec::new(), kept: Vec::new() };
    while let Some(r) = sends.join_next().await {
        match r.map_err(BenchError::task("sender")).and_then(|r| r) {
            Ok((writer, n, at)) => {
                gathered.sent += n;
                gathered.last_write = gathered.last_write.max(at);
                gathered.kept.push(writer);
            }
            // Kept as report rows: the other senders' figures stand.
            Err(e) => gathered.errors.push(e.to_string()),
        }
    }
    gathered
}

/// Waits for every receiver task and adds up what they counted.
pub async fn gather_tallies(mut receivers: tokio::task::JoinSet<Tally>) -> Result<Tally, BenchError> {
    let mut tally = Tally::default();
    while let Some(t) = receivers.join_next().await {
        tally.absorb(t.map_err(BenchError::task("receiver"))?);
    }
    Ok(tally)
}
