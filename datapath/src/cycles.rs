//! A cycle counter for "cost per packet / per I/O" figures, and its rate.
//!
//! On x86-64 the counter is the TSC. Its rate is measured, not read from
//! `/proc/cpuinfo`: "cpu MHz" there is the core's current clock on a host
//! with frequency scaling and whatever the hypervisor reports in a guest,
//! neither of which is the TSC's rate, and the kernel does not publish the
//! TSC's rate anywhere else.

use std::time::{Duration, Instant};

/// The counter's current value: the TSC on x86-64, nanoseconds since the
/// first call elsewhere.
#[inline]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions and every x86-64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let o = ORIGIN.get_or_init(Instant::now);
        u64::try_from(o.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The counter's rate in Hz: the median of five 50 ms measurements against
/// the monotonic clock (a quarter of a second; a preempted measurement
/// lands at either end and the median drops it).
pub fn hz() -> f64 {
    let mut rates: Vec<f64> = (0..5)
        .map(|_| rate_over(Duration::from_millis(50)))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn rate_over(span: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), now());
    std::thread::sleep(span);
    let (c1, elapsed) = (now(), t0.elapsed());
    c1.wrapping_sub(c0) as f64 / elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_moves_forward() {
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > a);
    }

    #[test]
    fn the_rate_is_a_plausible_clock() {
        // Any TSC of the last two decades runs between 100 MHz and 10 GHz;
        // the fallback counter is 1 GHz.
        let hz = hz();
        assert!((1e8..1e10).contains(&hz), "{hz}");
    }
}
