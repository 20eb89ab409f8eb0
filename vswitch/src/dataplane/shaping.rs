//! Traffic shaping of a port, as vSphere defines it: a sustained average
//! rate, a peak rate, and a burst size (bytes the port may send above the
//! average, at no more than the peak rate). Two token buckets: the
//! average bucket holds the burst allowance, the peak bucket holds ten
//! milliseconds at the peak rate (at least 64 KiB: a few bursts of full
//! frames, so a worker that was off its CPU for a moment does not drop a
//! burst the average allows), so a burst drains no faster than the peak
//! over any span longer than that.

use std::time::Duration;

use datapath::token_bucket::TokenBucket;

use crate::control_plane::config::ShapingRule;

/// One direction of a port's shaping.
#[derive(Debug, Clone)]
pub struct Shaper {
    average: TokenBucket,
    peak: TokenBucket,
}

impl Shaper {
    /// A shaper for `rule`, full at `now_ns`.
    pub fn new(rule: &ShapingRule, now_ns: u64) -> Self {
        let peak_bytes = rule.peak_bps / 8;
        Shaper {
            average: TokenBucket::new(rule.average_bps / 8, rule.burst_bytes, now_ns),
            peak: TokenBucket::new(peak_bytes, (peak_bytes / 100).max(64 * 1024), now_ns),
        }
    }

    /// Takes `bytes` if both rates allow them now.
    pub fn admit(&mut self, bytes: u64, now_ns: u64) -> bool {
        if self.average.time_until(bytes, now_ns).is_zero()
            && self.peak.time_until(bytes, now_ns).is_zero()
        {
            self.average.try_take(bytes, now_ns);
            self.peak.try_take(bytes, now_ns);
            true
        } else {
            false
        }
    }

    /// How long until `bytes` would be admitted.
    pub fn wait(&mut self, bytes: u64, now_ns: u64) -> Duration {
        self.average
            .time_until(bytes, now_ns)
            .max(self.peak.time_until(bytes, now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Sends 1000-byte frames as fast as the shaper admits, for
    /// `seconds`, on a clock advanced by hand; returns bytes sent in each
    /// 100 ms.
    fn run(rule: ShapingRule, seconds: u64) -> Vec<u64> {
        let mut s = Shaper::new(&rule, 0);
        let mut per_slot = vec![0u64; (seconds * 10) as usize];
        let mut now = 0;
        while now < seconds * 1000 * MS {
            while s.admit(1000, now) {
                per_slot[(now / (100 * MS)) as usize] += 1000;
            }
            now += 50_000; // 50 us
        }
        per_slot
    }

    #[test]
    fn sustained_rate_is_the_average() {
        let rule = ShapingRule {
            average_bps: 80_000_000,
            peak_bps: 160_000_000,
            burst_bytes: 1_000_000,
        };
        let slots = run(rule, 10);
        let total: u64 = slots.iter().sum();
        // 10 MB/s for 10 s plus the burst allowance.
        let want = 100_000_000 + 1_000_000;
        assert!(total.abs_diff(want) < want / 100, "total {total}");
        // The last second runs at the average.
        let last: u64 = slots[90..].iter().sum();
        assert!(last.abs_diff(10_000_000) < 100_000, "last {last}");
    }

    #[test]
    fn a_burst_drains_at_the_peak_rate() {
        let rule = ShapingRule {
            average_bps: 8_000_000,
            peak_bps: 80_000_000,
            burst_bytes: 2_000_000,
        };
        let slots = run(rule, 2);
        // While the burst lasts, 100 ms carry about 1 MB (the peak),
        // not the whole 2 MB allowance at once.
        // (plus the peak bucket's own 10 ms, 100 kB, at the start).
        assert!(
            (1_000_000..1_150_000).contains(&slots[0]),
            "first {}",
            slots[0]
        );
        // Afterwards, the average: 100 kB per 100 ms.
        assert!(slots[15].abs_diff(100_000) < 5_000, "later {}", slots[15]);
    }
}
