//! Per-thread counters.
//!
//! A worker owns its counter block and is its only writer, so an increment
//! is a relaxed load and store (no locked instruction, no shared cache line
//! with other workers). Readers (metrics, stats) load each worker's block and
//! sum them; a value they read may lag by the increments in flight.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter, written by a single thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning thread may call this: concurrent adders
    /// would lose updates.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket latency histogram (powers of two of microseconds, up to
/// about 1 s and an overflow bucket), written by a single thread.
#[derive(Debug)]
pub struct Histogram {
    buckets: [Counter; Histogram::BUCKETS],
    sum_us: Counter,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| Counter::default()),
            sum_us: Counter::default(),
        }
    }
}

impl Histogram {
    /// Bucket `i` counts observations of at most `2^i` µs; the last one
    /// counts everything above.
    pub const BUCKETS: usize = 21;

    /// Records one observation of `us` microseconds.
    #[inline]
    pub fn observe_us(&self, us: u64) {
        let index = if us <= 1 {
            0
        } else {
            (64 - (us - 1).leading_zeros()) as usize
        };
        self.buckets[index.min(Self::BUCKETS - 1)].inc();
        self.sum_us.add(us);
    }

    /// The upper bound of bucket `i` in µs (`None` for the overflow bucket).
    pub fn bound_us(i: usize) -> Option<u64> {
        (i + 1 < Self::BUCKETS).then(|| 1u64 << i)
    }

    /// Per-bucket counts (not cumulative) and the sum of observations.
    pub fn snapshot(&self) -> ([u64; Self::BUCKETS], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].get()),
            self.sum_us.get(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
    }

    #[test]
    fn histogram_buckets_by_power_of_two() {
        let h = Histogram::default();
        for us in [0, 1, 2, 3, 4, 5, 1000, u64::MAX / 4] {
            h.observe_us(us);
        }
        let (b, _) = h.snapshot();
        assert_eq!(b[0], 2); // 0 and 1 µs
        assert_eq!(b[1], 1); // 2
        assert_eq!(b[2], 2); // 3, 4
        assert_eq!(b[3], 1); // 5
        assert_eq!(b[10], 1); // 1000 <= 1024
        assert_eq!(b[Histogram::BUCKETS - 1], 1);
        assert_eq!(Histogram::bound_us(10), Some(1024));
        assert_eq!(Histogram::bound_us(Histogram::BUCKETS - 1), None);
    }
}
