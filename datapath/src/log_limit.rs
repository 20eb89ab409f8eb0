//! Rate limits for log lines a guest or a local client can trigger.
//!
//! A guest that sends a bad request a million times a second must not
//! write a million log lines a second: the datastore's partition would
//! fill, and the lines that matter would be lost among them. Every log
//! line on a path a guest (or a frontend, or an API client) drives goes
//! through a [`LogLimit`]: at most one line per interval passes, and the
//! next line that passes says how many were held back since the last one,
//! so nothing goes unreported. Counters (the daemons' metrics) still count
//! every event; the log is the human's summary of them.
//!
//! A limit is lock-free and `const`-constructible, so it lives either in
//! the object whose events it limits (a queue, a port: one guest cannot
//! silence another's lines) or in a `static` at the call site (events with
//! no such object). It is written here rather than taken from a crate:
//! `tracing` has no rate limiting of its own, and the crates that add one
//! are layers that limit by call site only, which would let one guest's
//! flood silence every other guest's lines.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most `burst` lines per interval; counts the lines it holds back.
#[derive(Debug)]
pub struct LogLimit {
    interval_ms: u64,
    burst: u64,
    /// The current window: when it began, in ms since the first
    /// [`now_ms`] plus one (zero: no window yet), in the high 48 bits;
    /// the lines it let through in the low 16.
    window: AtomicU64,
    held: AtomicU64,
}

/// Lines per window fit in the low bits of [`LogLimit::window`].
const COUNT_BITS: u32 = 16;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl LogLimit {
    /// A limit that lets `burst` lines through per `interval` (`burst`
    /// is at least one and at most 65535).
    pub const fn new(interval: Duration, burst: u16) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            burst: if burst == 0 { 1 } else { burst as u64 },
            window: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// One line a second: for events a guest can repeat at will (each
    /// refused request).
    pub const fn per_second() -> Self {
        Self::new(Duration::from_secs(1), 1)
    }

    /// Ten lines per ten seconds: for events that come in pairs or small
    /// groups in normal use (a frontend connects, sets up, leaves) but
    /// that a misbehaving peer can repeat in a loop.
    pub const fn bursts() -> Self {
        Self::new(Duration::from_secs(10), 10)
    }

    /// Whether a line may go out now. `Some(n)`: yes, and `n` lines were
    /// held back since the last one that went out (say so in the line);
    /// `None`: no, and this one is counted as held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(now_ms())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let start = current >> COUNT_BITS;
            let count = current & COUNT_MASK;
            let next = if start == 0 || now.saturating_sub(start - 1) >= self.interval_ms {
                ((now + 1) << COUNT_BITS) | 1
            } else if count < self.burst {
                current + 1
            } else {
                self.held.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            // Of several threads that race for the last line of a window,
            // the one that moves the window writes it.
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.held.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::per_second()
    }
}

/// Milliseconds on the monotonic clock since the first call in this
/// process.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A `tracing` event at `$level` (`warn`, `error`, `info`) through a
/// [`LogLimit`]; the line carries `held_back`, the number of lines the
/// limit held back since the last one. With `limit: <&LogLimit>,` first
/// it uses that limit (one per queue or port, so one guest cannot silence
/// another); without, a limit of its own for this call site, one line a
/// second. The calling crate must depend on `tracing`.
#[macro_export]
macro_rules! log_limited {
    ($level:ident, limit: $limit:expr, $($arg:tt)+) => {
        if let Some(held_back) = $crate::log_limit::LogLimit::admit($limit) {
            ::tracing::$level!(held_back, $($arg)+);
        }
    };
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit = $crate::log_limit::LogLimit::per_second();
        $crate::log_limited!($level, limit: &LIMIT, $($arg)+);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_says_how_many_were_held() {
        let l = LogLimit::new(Duration::from_millis(1000), 1);
        assert_eq!(l.admit_at(5), Some(0));
        assert_eq!(l.admit_at(6), None);
        assert_eq!(l.admit_at(1004), None);
        assert_eq!(l.admit_at(1005), Some(2));
        assert_eq!(l.admit_at(1006), None);
        assert_eq!(l.admit_at(5000), Some(1));
    }

    #[test]
    fn the_first_line_passes_at_time_zero() {
        let l = LogLimit::per_second();
        assert_eq!(l.admit_at(0), Some(0));
        assert_eq!(l.admit_at(999), None);
        assert_eq!(l.admit_at(1000), Some(1));
    }

    #[test]
    fn racing_threads_let_one_line_through() {
        let l = std::sync::Arc::new(LogLimit::new(Duration::from_secs(3600), 3));
        let passed: u64 = (0..4)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || (0..10_000).filter(|_| l.admit().is_some()).count())
            })
            .map(|t| t.join().unwrap() as u64)
            .sum();
        assert_eq!(passed, 3);
        assert_eq!(l.held.load(Ordering::Relaxed), 39_997);
    }

    #[test]
    fn a_burst_passes_then_the_rest_of_the_window_is_held() {
        let l = LogLimit::new(Duration::from_secs(10), 3);
        assert_eq!(l.admit_at(100), Some(0));
        assert_eq!(l.admit_at(101), Some(0));
        assert_eq!(l.admit_at(102), Some(0));
        assert_eq!(l.admit_at(103), None);
        assert_eq!(l.admit_at(9_000), None);
        assert_eq!(l.admit_at(10_100), Some(2));
        assert_eq!(l.admit_at(10_101), Some(0));
    }
}
