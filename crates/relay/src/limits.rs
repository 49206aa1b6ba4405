//! Flood control: the per-member token bucket, failed-join accounting per address and per
//! room, and the count of unauthenticated connections per address. All of them are cheap,
//! bounded in memory, and checked before any expensive work.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Most keys a failure tracker remembers. Beyond it, expired entries are pruned, then the least
/// recently used eighth of the entries that are not locked out is forgotten. A tracker full
/// of lockouts forgets none of them: an untracked key is then slowed, never simply allowed.
const MAX_TRACKED: usize = 65_536;

/// Removes about an eighth (at least one) of the entries `candidate` selects, those with the
/// oldest `last_used`: eviction of the least recently used, paid for once per eighth.
fn evict_oldest<K: Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    candidate: impl Fn(&V) -> bool,
    last_used: impl Fn(&V) -> Instant,
) {
    let mut ages: Vec<Instant> = map.values().filter(|v| candidate(v)).map(&last_used).collect();
    if ages.is_empty() {
        return;
    }
    let n = (ages.len() / 8).max(1);
    let (_, cutoff, _) = ages.select_nth_unstable(n - 1);
    let cutoff = *cutoff;
    let mut removed = 0;
    map.retain(|_, v| {
        let evict = removed < n && candidate(v) && last_used(v) <= cutoff;
        removed += usize::from(evict);
        !evict
    });
}

/// The address a client is accounted under: IPv4 addresses as they are, IPv6 addresses by
/// their /64 prefix (one host usually controls a whole /64), IPv4-mapped IPv6 as IPv4.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// A token bucket: `burst` tokens, refilled at `per_sec` tokens per second. The bucket is
/// `chatroom_net`'s; this gives it Tokio's clock, which tests pause and advance.
#[derive(Debug)]
pub(crate) struct TokenBucket(chatroom_net::TokenBucket);

impl TokenBucket {
    pub(crate) fn new(burst: u32, per_sec: u32) -> Self {
        Self(chatroom_net::TokenBucket::new(burst, f64::from(per_sec), Instant::now().into_std()))
    }

    fn is_full(&mut self) -> bool {
        self.0.is_full(Instant::now().into_std())
    }

    fn last_used(&self) -> Instant {
        Instant::from_std(self.0.last_refill())
    }

    /// How long until a token is available (zero if one is now).
    pub(crate) fn until_next(&mut self) -> Duration {
        self.0.until_next(Instant::now().into_std())
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self) -> bool {
        self.0.try_take(Instant::now().into_std())
    }
}

/// Most keys whose rate is tracked at once; beyond it, buckets that have refilled completely
/// are forgotten (a fresh bucket is the same), and if that is not enough the least recently
/// used eighth.
const MAX_BUCKETS: usize = 65_536;

/// Per-identity token buckets: a member's allowance survives reconnects, so reconnecting
/// does not buy a fresh burst.
#[derive(Debug)]
pub(crate) struct SendRate<K> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
    burst: u32,
    per_sec: u32,
    capacity: usize,
}

impl<K: Eq + Hash + Clone> SendRate<K> {
    pub(crate) fn new(burst: u32, per_sec: u32) -> Self {
        Self { buckets: Mutex::new(HashMap::new()), burst, per_sec, capacity: MAX_BUCKETS }
    }

    /// Takes one token from `key`'s bucket if there is one.
    pub(crate) fn try_take(&self, key: &K) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        // The common case, a key already tracked, clones no key (a room name is a `String`).
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.try_take();
        }
        if buckets.len() >= self.capacity {
            buckets.retain(|_, b| !b.is_full());
            if buckets.len() >= self.capacity {
                // The least recently used: the keys least likely to be in the middle of a burst.
                evict_oldest(&mut buckets, |_| true, |b| b.last_used());
            }
        }
        buckets.entry(key.clone()).or_insert_with(|| TokenBucket::new(self.burst, self.per_sec)).try_take()
    }
}

/// Lines of one kind let into the log per minute.
const LOG_LINES_PER_MINUTE: u32 = 20;

/// Lets at most `LOG_LINES_PER_MINUTE` lines of one kind into the log each minute and counts
/// the others, so a flood of refused joins writes a few lines, not one per attempt.
#[derive(Debug)]
pub(crate) struct LogBudget {
    state: Mutex<LogWindow>,
}

#[derive(Debug)]
struct LogWindow {
    start: Instant,
    logged: u32,
    unlogged: u64,
}

impl LogBudget {
    pub(crate) fn new() -> Self {
        Self { state: Mutex::new(LogWindow { start: Instant::now(), logged: 0, unlogged: 0 }) }
    }

    /// `Some(n)` if this line may be written, `n` being the lines of this kind left out since
    /// the last one written; `None` if it is to be left out.
    pub(crate) fn take(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(w.start) >= Duration::from_secs(60) {
            w.start = now;
            w.logged = 0;
        }
        if w.logged >= LOG_LINES_PER_MINUTE {
            w.unlogged += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.unlogged))
    }
}

/// What a failure tracker says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No restriction.
    Allow,
    /// Delay the attempt.
    Slow,
    /// Refuse the attempt.
    Locked,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    last_used: Instant,
}

/// Counts failed joins per key within a window; slows and then locks out a key.
#[derive(Debug)]
pub(crate) struct FailureTracker<K> {
    entries: Mutex<HashMap<K, Failures>>,
    slow_after: u32,
    lock_after: u32,
    window: Duration,
    capacity: usize,
}

impl<K: Eq + Hash + Clone> FailureTracker<K> {
    pub(crate) fn new(slow_after: u32, lock_after: u32, window: Duration) -> Self {
        Self::with_capacity(slow_after, lock_after, window, MAX_TRACKED)
    }

    fn with_capacity(slow_after: u32, lock_after: u32, window: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            slow_after,
            lock_after,
            window,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn check(&self, key: &K) -> Verdict {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let full = entries.len() >= self.capacity;
        let Some(entry) = entries.get_mut(key) else {
            // A tracker too full to record this key fails closed.
            return if full { Verdict::Slow } else { Verdict::Allow };
        };
        entry.last_used = now;
        if let Some(until) = entry.locked_until {
            if now < until {
                return Verdict::Locked;
            }
            entries.remove(key);
            return Verdict::Allow;
        }
        if now.saturating_duration_since(entry.window_start) > self.window {
            entries.remove(key);
            return Verdict::Allow;
        }
        if entry.count >= self.slow_after {
            Verdict::Slow
        } else {
            Verdict::Allow
        }
    }

    pub(crate) fn record_failure(&self, key: &K) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            let window = self.window;
            entries.retain(|_, e| match e.locked_until {
                Some(until) => now < until,
                None => now.saturating_duration_since(e.window_start) <= window,
            });
            if entries.len() >= self.capacity {
                evict_oldest(&mut entries, |e| e.locked_until.is_none(), |e| e.last_used);
            }
            if entries.len() >= self.capacity {
                // Every entry is a running lockout: keep them; `check` slows untracked keys.
                return;
            }
        }
        let fresh = Failures { count: 0, window_start: now, locked_until: None, last_used: now };
        let entry = entries.entry(key.clone()).or_insert(fresh);
        entry.last_used = now;
        if now.saturating_duration_since(entry.window_start) > self.window {
            *entry = Failures { count: 0, window_start: now, locked_until: None, last_used: now };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count >= self.lock_after {
            entry.locked_until = Some(now + self.window);
        }
    }
}

/// The wider aggregate an IPv6 client is also accounted under: its /48 (a site). IPv4
/// addresses have none.
pub(crate) fn wide_key(ip: IpAddr) -> Option<IpAddr> {
    match address_key(ip) {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into())),
    }
}

/// Counts connections per key (an address, a prefix) up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct AddressCount {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

impl AddressCount {
    pub(crate) fn new(max_per_ip: usize) -> Self {
        Self { counts: Arc::new(Mutex::new(HashMap::new())), max_per_ip }
    }

    /// A slot for one more connection under `ip`, or `None` at the cap.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(AddressSlot { owner: self.clone(), ip })
    }
}

/// Held while a connection counts under its key; released on drop.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    owner: AddressCount,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_sustained_rate() {
        let mut bucket = TokenBucket::new(3, 2);
        assert!((0..3).all(|_| bucket.try_take()));
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_take());
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| bucket.try_take()));
        assert!(!bucket.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn send_rate_is_kept_per_key() {
        let rate = SendRate::new(2, 1);
        assert!(rate.try_take(&"a") && rate.try_take(&"a"));
        assert!(!rate.try_take(&"a"), "a second handle on the same key gets no fresh burst");
        assert!(rate.try_take(&"b"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rate.try_take(&"a"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_slow_then_lock_then_expire() {
        let t = FailureTracker::new(2, 4, Duration::from_secs(60));
        let key = "room";
        assert_eq!(t.check(&key), Verdict::Allow);
        t.record_failure(&key);
        t.record_failure(&key);
        assert_eq!(t.check(&key), Verdict::Slow);
        t.record_failure(&key);
        t.record_failure(&key);
        assert_eq!(t.check(&key), Verdict::Locked);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(t.check(&key), Verdict::Locked);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.check(&key), Verdict::Allow);
        assert_eq!(t.check(&"other"), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_are_forgotten() {
        let t = FailureTracker::new(2, 4, Duration::from_secs(60));
        t.record_failure(&1);
        t.record_failure(&1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.check(&1), Verdict::Allow);
        t.record_failure(&1);
        assert_eq!(t.check(&1), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_tracker_forgets_the_least_recently_used_and_never_lets_a_stranger_through() {
        let t = FailureTracker::with_capacity(2, 3, Duration::from_secs(600), 8);
        for key in 0..8 {
            t.record_failure(&key);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // Key 0 is touched again: key 1 is now the least recently used.
        assert_eq!(t.check(&0), Verdict::Allow);
        t.record_failure(&100);
        assert_eq!(t.entries.lock().unwrap().len(), 8);
        assert!(!t.entries.lock().unwrap().contains_key(&1), "the least recently used went");
        assert!(t.entries.lock().unwrap().contains_key(&0));

        // Filled with lockouts, the tracker keeps them all, and a key it cannot record is
        // slowed, not allowed.
        let t = FailureTracker::with_capacity(2, 3, Duration::from_secs(600), 4);
        for key in 0..4 {
            (0..3).for_each(|_| t.record_failure(&key));
            assert_eq!(t.check(&key), Verdict::Locked);
        }
        (0..3).for_each(|_| t.record_failure(&99));
        assert!((0..4).all(|key| t.check(&key) == Verdict::Locked), "no lockout was forgotten");
        assert_eq!(t.check(&99), Verdict::Slow);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 7]));
        assert_eq!(address_key([10, 0, 0, 1].into()), IpAddr::from([10, 0, 0, 1]));
        // The wider aggregate: a /48 for IPv6, none for IPv4.
        let d: IpAddr = "2001:db8:1:ffff::1".parse().unwrap();
        let e: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(wide_key(a), wide_key(d));
        assert_ne!(wide_key(a), wide_key(e));
        assert_eq!(wide_key(mapped), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_budget_writes_a_few_lines_a_minute_and_counts_the_rest() {
        let budget = LogBudget::new();
        let written: Vec<Option<u64>> = (0..25).map(|_| budget.take()).collect();
        assert_eq!(written.iter().filter(|w| w.is_some()).count(), LOG_LINES_PER_MINUTE as usize);
        assert!(written[20..].iter().all(Option::is_none));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(budget.take(), Some(5), "the next line says how many were left out");
        assert_eq!(budget.take(), Some(0));
    }

    #[test]
    fn unauthenticated_slots_are_capped_per_address_and_released() {
        let u = AddressCount::new(2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = u.acquire(a).unwrap();
        let _s2 = u.acquire(a).unwrap();
        assert!(u.acquire(a).is_none());
        assert!(u.acquire(b).is_some());
        drop(s1);
        assert!(u.acquire(a).is_some());
    }
}
