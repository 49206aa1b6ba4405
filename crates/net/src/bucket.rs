//! A token bucket with time passed in, so that callers choose their clock (the relay passes
//! Tokio's, which tests pause; the client passes the wall clock) and tests need no sleeps.

use std::time::{Duration, Instant};

/// The longest wait `until_next` reports: what a bucket that never refills answers.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// `burst` tokens, refilled at `per_sec` tokens per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens (at least one); `per_sec` at or below zero never refills.
    pub fn new(burst: u32, per_sec: f64, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { burst, per_sec: per_sec.max(0.0), tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available: zero if one is now, at most `MAX_WAIT`.
    pub fn until_next(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        if self.per_sec <= 0.0 {
            return MAX_WAIT;
        }
        Duration::try_from_secs_f64((1.0 - self.tokens) / self.per_sec).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
    }

    /// Whether the bucket has refilled completely (a fresh bucket would be the same).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// Empties the bucket (the peer said we were too fast).
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = 0.0;
    }

    /// When the bucket was last refilled (its last use): the age least-recently-used
    /// eviction goes by.
    pub fn last_refill(&self) -> Instant {
        self.last
    }

    /// Refills to full.
    pub fn reset(&mut self, now: Instant) {
        self.tokens = self.burst;
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_then_paced_drained_and_reset() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut bucket = TokenBucket::new(3, 5.0, t0);
        assert!((0..3).all(|_| bucket.try_take(t0)));
        assert!(!bucket.try_take(t0));
        assert_eq!(bucket.until_next(t0), Duration::from_millis(200));
        assert!(bucket.try_take(ms(200)));
        bucket.drain(ms(200));
        assert_eq!(bucket.until_next(ms(200)), Duration::from_millis(200));
        assert!(!bucket.is_full(ms(300)));
        bucket.reset(ms(200));
        assert!(bucket.is_full(ms(200)));
        assert!((0..3).all(|_| bucket.try_take(ms(200))));
    }

    #[test]
    fn refills_at_the_rate_and_never_past_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0, t0);
        assert!((0..3).all(|_| bucket.try_take(t0)));
        assert!(!bucket.try_take(t0));
        // 2 per second: one token after 500 ms.
        assert!(!bucket.try_take(t0 + Duration::from_millis(400)));
        assert!(bucket.try_take(t0 + Duration::from_millis(500)));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.is_full(later));
        assert!((0..3).all(|_| bucket.try_take(later)));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn a_bucket_that_never_refills_reports_the_longest_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, 0.0, t0);
        assert!(bucket.try_take(t0), "a burst of 0 still allows one");
        assert_eq!(bucket.until_next(t0 + Duration::from_secs(1000)), MAX_WAIT);
        assert!(!bucket.try_take(t0 + Duration::from_secs(100_000)));
    }

    proptest! {
        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(
            burst in 1u32..50, per_sec in 0.1f64..100.0, steps in proptest::collection::vec(0u64..2000, 1..100)
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(burst, per_sec, t0);
            let (mut now, mut taken) = (t0, 0u64);
            for step in steps {
                now += Duration::from_millis(step);
                while bucket.try_take(now) {
                    taken += 1;
                }
                let allowed = f64::from(burst) + per_sec * now.duration_since(t0).as_secs_f64();
                prop_assert!(taken as f64 <= allowed + 1e-6, "{taken} > {allowed}");
                prop_assert!(bucket.until_next(now) > Duration::ZERO);
            }
        }
    }
}
