//! Per-queue counters of a vhost-user-blk export, written by the queue's
//! worker thread only and summed per volume when read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use datapath::counters::{Counter, Histogram};

use super::broken::RingFault;
use super::request::Fault;

/// The counters of one queue.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    pub reads: Counter,
    pub writes: Counter,
    pub flushes: Counter,
    pub discards: Counter,
    pub write_zeroes: Counter,
    pub get_ids: Counter,
    pub read_bytes: Counter,
    pub write_bytes: Counter,
    /// Requests refused, by [`Fault::index`].
    pub faults: [Counter; Fault::ALL.len()],
    /// Times the guest broke the queue's ring, by [`RingFault::index`].
    pub broken_rings: [Counter; RingFault::ALL.len()],
    /// Requests the backing store failed (negative io_uring result).
    pub io_errors: Counter,
    /// Times QoS held a request back.
    pub throttled: Counter,
    /// Requests handed to the backing store.
    pub submitted: Counter,
    /// Of those, completed.
    pub completed: Counter,
    /// Completion latency of reads and writes.
    pub latency: Histogram,
    /// Times a write was held because the backing store had no space.
    pub no_space_holds: Counter,
    /// Times a held write was submitted again.
    pub no_space_retries: Counter,
    /// Requests held right now because the backing store has no space
    /// (a gauge: see [`QueueMetrics::hold`]).
    pub no_space_held: AtomicU64,
    /// When the queue's current run of held requests began, in seconds
    /// since the Unix epoch; 0 when none is held.
    pub no_space_since: AtomicU64,
}

impl QueueMetrics {
    /// Notes one more request held for space.
    pub fn hold(&self) {
        self.no_space_holds.inc();
        if self.no_space_held.fetch_add(1, Ordering::Relaxed) == 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs().max(1));
            self.no_space_since.store(now, Ordering::Relaxed);
        }
    }

    /// Notes that a held request was completed or let go.
    pub fn unhold(&self) {
        if self.no_space_held.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.no_space_since.store(0, Ordering::Relaxed);
        }
    }
}

/// A summed view of several queues' counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub write_zeroes: u64,
    pub get_ids: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub faults: [u64; Fault::ALL.len()],
    pub broken_rings: [u64; RingFault::ALL.len()],
    pub io_errors: u64,
    pub throttled: u64,
    /// Submitted minus completed, across queues (the queue depth).
    pub in_flight: u64,
    pub latency_buckets: [u64; Histogram::BUCKETS],
    pub latency_sum_us: u64,
    /// Times a write was held for space.
    pub no_space_holds: u64,
    /// Times a held write was submitted again.
    pub no_space_retries: u64,
    /// Requests held right now, waiting for space on the backing store.
    pub no_space_held: u64,
    /// When the oldest current hold began (seconds since the Unix epoch).
    pub no_space_since: Option<u64>,
}

impl MetricsSnapshot {
    /// Sums the counters of `queues`.
    pub fn sum<'a>(queues: impl IntoIterator<Item = &'a QueueMetrics>) -> Self {
        let mut s = MetricsSnapshot::default();
        for q in queues {
            s.reads += q.reads.get();
            s.writes += q.writes.get();
            s.flushes += q.flushes.get();
            s.discards += q.discards.get();
            s.write_zeroes += q.write_zeroes.get();
            s.get_ids += q.get_ids.get();
            s.read_bytes += q.read_bytes.get();
            s.write_bytes += q.write_bytes.get();
            for (total, c) in s.faults.iter_mut().zip(&q.faults) {
                *total += c.get();
            }
            for (total, c) in s.broken_rings.iter_mut().zip(&q.broken_rings) {
                *total += c.get();
            }
            s.io_errors += q.io_errors.get();
            s.throttled += q.throttled.get();
            s.in_flight += q.submitted.get().saturating_sub(q.completed.get());
            let (buckets, sum) = q.latency.snapshot();
            for (total, b) in s.latency_buckets.iter_mut().zip(buckets) {
                *total += b;
            }
            s.latency_sum_us += sum;
            s.no_space_holds += q.no_space_holds.get();
            s.no_space_retries += q.no_space_retries.get();
            s.no_space_held += q.no_space_held.load(Ordering::Relaxed);
            let since = q.no_space_since.load(Ordering::Relaxed);
            if since != 0 {
                s.no_space_since = Some(s.no_space_since.map_or(since, |t| t.min(since)));
            }
        }
        s
    }

    /// Requests refused for `fault`.
    pub fn fault(&self, fault: Fault) -> u64 {
        self.faults[fault.index()]
    }

    /// Queues stopped because the guest broke their ring for `fault`.
    pub fn broken(&self, fault: RingFault) -> u64 {
        self.broken_rings[fault.index()]
    }
}
