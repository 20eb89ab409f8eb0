//! Per-export QoS: IOPS and bandwidth token buckets, one pair per export,
//! shared by all its queues.
//!
//! One pair per export, not per queue: a guest that spreads its I/O over
//! four queues must not get four times its share (it did, when each queue's
//! worker kept its own buckets). Limits are set by the control thread at
//! any time: it replaces the buckets. A worker takes the buckets' lock once
//! per request only when a limit is set (one relaxed atomic load tells it);
//! a request that finds the buckets short stays in the virtqueue (the
//! worker steps the avail index back) and the worker sleeps on a timer
//! until enough tokens have accrued.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datapath::token_bucket::{Clock, MonotonicClock, TokenBucket};

use super::request::Op;
use crate::api::types::Qos;

/// What a request costs in the bandwidth bucket; every request also costs
/// one token of the IOPS bucket.
///
/// Reads and writes pay for the bytes they move, and so does write-zeroes:
/// the guest asks for that many bytes to be written (QEMU's throttle groups
/// charge it the same way, as a write of its length), and where the backing
/// store cannot punch holes it is real writing. A discard pays only its
/// IOP: it moves no data and promises none, and charging its length would
/// let one trim of a whole disk (what mkfs sends) stall the volume for
/// minutes. A flush pays its IOP too.
pub(crate) fn bytes_charged(op: &Op) -> u64 {
    match *op {
        Op::Read { len, .. } | Op::Write { len, .. } | Op::WriteZeroes { len, .. } => len,
        Op::Discard { .. } | Op::Flush | Op::GetId => 0,
    }
}

/// The limits of an export and their buckets, shared by its workers and
/// the control thread.
#[derive(Debug, Default)]
pub(crate) struct QosShared {
    /// Whether any limit is set: the workers' fast path.
    limited: AtomicBool,
    limiter: Mutex<Option<Limiter>>,
}

impl QosShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Limiter>> {
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the limits (and the buckets, full); every queue of the
    /// export is held to them from its next request.
    pub(crate) fn set(&self, qos: Qos) {
        let mut limiter = self.lock();
        *limiter = Limiter::new(&qos);
        self.limited.store(limiter.is_some(), Ordering::Release);
    }

    /// Takes one request of `bytes` from the export's buckets if they
    /// allow it now; otherwise takes nothing and says how long to wait.
    pub(crate) fn admit(&self, bytes: u64) -> Result<(), Duration> {
        if !self.limited.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.lock().as_mut() {
            Some(limiter) => limiter.admit(bytes),
            None => Ok(()),
        }
    }
}

/// An export's buckets.
#[derive(Debug)]
pub(crate) struct Limiter {
    clock: MonotonicClock,
    iops: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl Limiter {
    /// Buckets for `qos`, or `None` when it sets no limit. A burst defaults
    /// to one second's worth.
    pub(crate) fn new(qos: &Qos) -> Option<Self> {
        if qos.iops.is_none() && qos.bytes_per_sec.is_none() {
            return None;
        }
        let clock = MonotonicClock::default();
        let now = clock.now_ns();
        Some(Limiter {
            iops: qos
                .iops
                .map(|rate| TokenBucket::new(rate, qos.iops_burst.unwrap_or(rate), now)),
            bytes: qos
                .bytes_per_sec
                .map(|rate| TokenBucket::new(rate, qos.bytes_burst.unwrap_or(rate), now)),
            clock,
        })
    }

    /// Takes one request of `bytes` if both buckets allow it now; otherwise
    /// takes nothing and says how long to wait.
    pub(crate) fn admit(&mut self, bytes: u64) -> Result<(), Duration> {
        let now = self.clock.now_ns();
        let mut wait = Duration::ZERO;
        if let Some(b) = self.iops.as_mut() {
            wait = wait.max(b.time_until(1, now));
        }
        if let Some(b) = self.bytes.as_mut() {
            wait = wait.max(b.time_until(bytes, now));
        }
        if wait > Duration::ZERO {
            return Err(wait.max(Duration::from_micros(50)));
        }
        if let Some(b) = self.iops.as_mut() {
            b.try_take(1, now);
        }
        if let Some(b) = self.bytes.as_mut() {
            b.try_take(bytes, now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limits_no_limiter() {
        assert!(Limiter::new(&Qos::default()).is_none());
    }

    #[test]
    fn admits_the_burst_then_asks_to_wait() {
        let qos = Qos {
            iops: Some(10),
            iops_burst: Some(3),
            ..Qos::default()
        };
        let mut l = Limiter::new(&qos).unwrap();
        for _ in 0..3 {
            assert!(l.admit(4096).is_ok());
        }
        let wait = l.admit(4096).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
    }

    #[test]
    fn write_zeroes_pays_for_its_bytes_discard_for_its_iop() {
        let zeroes = Op::WriteZeroes {
            offset: 0,
            len: 1 << 20,
            unmap: true,
        };
        assert_eq!(bytes_charged(&zeroes), 1 << 20);
        let discard = Op::Discard {
            offset: 0,
            len: 1 << 20,
        };
        assert_eq!(bytes_charged(&discard), 0);
        assert_eq!(
            bytes_charged(&Op::Write {
                offset: 0,
                len: 4096
            }),
            4096
        );
    }

    #[test]
    fn the_queues_of_an_export_share_its_buckets() {
        let shared = std::sync::Arc::new(QosShared::default());
        assert!(shared.admit(4096).is_ok(), "no limit set");
        shared.set(Qos {
            iops: Some(1),
            iops_burst: Some(4),
            ..Qos::default()
        });
        // Four queue threads at once get the burst of four between them.
        let admitted: usize = (0..4)
            .map(|_| {
                let s = std::sync::Arc::clone(&shared);
                std::thread::spawn(move || (0..4).filter(|_| s.admit(512).is_ok()).count())
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 4);
        shared.set(Qos::default());
        assert!(shared.admit(4096).is_ok(), "limits lifted");
    }

    #[test]
    fn bandwidth_counts_bytes() {
        let qos = Qos {
            bytes_per_sec: Some(8192),
            ..Qos::default()
        };
        let mut l = Limiter::new(&qos).unwrap();
        assert!(l.admit(4096).is_ok());
        assert!(l.admit(4096).is_ok());
        assert!(l.admit(4096).is_err());
    }
}
