//! Token buckets for rate limits (IOPS, bytes per second, bits per second).
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per
//! second. Time comes from a [`Clock`], so tests advance it by hand instead
//! of sleeping.

use std::time::{Duration, Instant};

/// A monotonic time source.
pub trait Clock {
    /// Nanoseconds since an arbitrary, fixed origin.
    fn now_ns(&self) -> u64;
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A token bucket. Not shared between threads: each worker owns its buckets
/// and gets new limits as a whole new configuration.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: u64,
    burst: u64,
    tokens: u64,
    /// Fractional tokens carried between refills, in token-nanoseconds.
    carry: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `rate_per_s` up to `burst` (at least one
    /// token, so that a request of `burst` tokens can pass).
    pub fn new(rate_per_s: u64, burst: u64, now_ns: u64) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            rate_per_s,
            burst,
            tokens: burst,
            carry: 0,
            last_ns: now_ns,
        }
    }

    /// The refill rate.
    pub fn rate_per_s(&self) -> u64 {
        self.rate_per_s
    }

    /// The bucket's capacity.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns.max(self.last_ns);
        if self.tokens >= self.burst {
            self.carry = 0;
            return;
        }
        let total = u128::from(elapsed) * u128::from(self.rate_per_s) + u128::from(self.carry);
        let whole = total / 1_000_000_000;
        self.carry = u64::try_from(total % 1_000_000_000).unwrap_or(0);
        let whole = u64::try_from(whole).unwrap_or(u64::MAX);
        self.tokens = self.tokens.saturating_add(whole).min(self.burst);
    }

    /// Takes `n` tokens if the bucket holds them now. A request larger than
    /// the burst passes when the bucket is full, and leaves it in debt-free
    /// empty state (so huge requests are slowed, never starved).
    pub fn try_take(&mut self, n: u64, now_ns: u64) -> bool {
        self.refill(now_ns);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else if n > self.burst && self.tokens == self.burst {
            self.tokens = 0;
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens (capped at the burst) are available.
    pub fn time_until(&mut self, n: u64, now_ns: u64) -> Duration {
        self.refill(now_ns);
        let want = n.min(self.burst);
        if self.tokens >= want || self.rate_per_s == 0 {
            return if self.tokens >= want {
                Duration::ZERO
            } else {
                Duration::MAX
            };
        }
        let missing = u128::from(want - self.tokens) * 1_000_000_000;
        let have = u128::from(self.carry);
        let ns = (missing.saturating_sub(have)).div_ceil(u128::from(self.rate_per_s));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn starts_full_and_refills_at_rate() {
        let mut b = TokenBucket::new(100, 10, 0);
        for _ in 0..10 {
            assert!(b.try_take(1, 0));
        }
        assert!(!b.try_take(1, 0));
        // 100/s: one token every 10 ms.
        assert!(!b.try_take(1, 9_999_999));
        assert!(b.try_take(1, 10_000_000));
        assert_eq!(b.time_until(1, 10_000_000), Duration::from_millis(10));
        // A long idle period refills only up to the burst.
        assert!(b.try_take(10, 100 * S));
        assert!(!b.try_take(1, 100 * S));
    }

    #[test]
    fn long_run_rate_is_exact_with_fractional_refills() {
        // 3 tokens/s polled every 1 ms: carry keeps fractions.
        let mut b = TokenBucket::new(3, 1, 0);
        let mut taken = 0;
        for ms in 0..=10_000u64 {
            if b.try_take(1, ms * 1_000_000) {
                taken += 1;
            }
        }
        // One from the initial burst plus 3/s for 10 s.
        assert_eq!(taken, 31);
    }

    #[test]
    fn oversize_requests_pass_only_from_a_full_bucket() {
        let mut b = TokenBucket::new(1000, 100, 0);
        assert!(b.try_take(500, 0));
        assert!(!b.try_take(500, S / 20)); // 50 tokens back
        assert!(b.try_take(500, S)); // full again
    }

    #[test]
    fn zero_rate_never_refills() {
        let mut b = TokenBucket::new(0, 2, 0);
        assert!(b.try_take(2, 0));
        assert!(!b.try_take(1, 1000 * S));
        assert_eq!(b.time_until(1, 1000 * S), Duration::MAX);
    }
}
