//! Flood control: the per-member token bucket, failed-join accounting per address and per
//! room, and the count of unauthenticated connections per address. All of them are cheap,
//! bounded in memory, and checked before any expensive work.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Most keys a failure tracker remembers; beyond it expired entries are pruned and, if it is
/// still full, new keys are not tracked (the other tracker still applies).
const MAX_TRACKED: usize = 65_536;

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

/// A token bucket: `burst` tokens, refilled at `per_sec` tokens per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(burst: u32, per_sec: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { tokens: burst, burst, per_sec: f64::from(per_sec), last: Instant::now() }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
    }

    fn is_full(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }

    /// How long until a token is available (zero if one is now).
    pub(crate) fn until_next(&mut self) -> Duration {
        self.refill();
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        if self.per_sec <= 0.0 {
            // Never refilled: the longest wait a deadline computed from it can take.
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Most identities whose send rate is tracked at once; beyond it, buckets that have refilled
/// completely are forgotten (a fresh bucket is the same), and if that is not enough the
/// oldest state is dropped.
const MAX_BUCKETS: usize = 65_536;

/// Per-identity token buckets: a member's allowance survives reconnects, so reconnecting
/// does not buy a fresh burst.
#[derive(Debug)]
pub(crate) struct SendRate<K> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
    burst: u32,
    per_sec: u32,
}

impl<K: Eq + Hash + Clone> SendRate<K> {
    pub(crate) fn new(burst: u32, per_sec: u32) -> Self {
        Self { buckets: Mutex::new(HashMap::new()), burst, per_sec }
    }

    /// Takes one token from `key`'s bucket if there is one.
    pub(crate) fn try_take(&self, key: &K) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| !b.is_full());
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        buckets.entry(key.clone()).or_insert_with(|| TokenBucket::new(self.burst, self.per_sec)).try_take()
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
}

/// Counts failed joins per key within a window; slows and then locks out a key.
#[derive(Debug)]
pub(crate) struct FailureTracker<K> {
    entries: Mutex<HashMap<K, Failures>>,
    slow_after: u32,
    lock_after: u32,
    window: Duration,
}

impl<K: Eq + Hash + Clone> FailureTracker<K> {
    pub(crate) fn new(slow_after: u32, lock_after: u32, window: Duration) -> Self {
        Self { entries: Mutex::new(HashMap::new()), slow_after, lock_after, window }
    }

    pub(crate) fn check(&self, key: &K) -> Verdict {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get_mut(key) else {
            return Verdict::Allow;
        };
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
        if entries.len() >= MAX_TRACKED && !entries.contains_key(key) {
            let window = self.window;
            entries.retain(|_, e| match e.locked_until {
                Some(until) => now < until,
                None => now.saturating_duration_since(e.window_start) <= window,
            });
            if entries.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            window_start: now,
            locked_until: None,
        });
        if now.saturating_duration_since(entry.window_start) > self.window {
            *entry = Failures { count: 0, window_start: now, locked_until: None };
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
