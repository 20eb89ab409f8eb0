//! Per-export QoS in the worker: IOPS and bandwidth token buckets.
//!
//! Limits are set by the control thread at any time: it stores the new
//! [`Qos`] and bumps a generation counter; each worker compares the
//! generation once per batch (one relaxed atomic load) and rebuilds its
//! buckets when it changed. A request that finds the buckets short stays in
//! the virtqueue (the worker steps the avail index back) and the worker
//! sleeps on a timer until enough tokens have accrued.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datapath::token_bucket::{Clock, MonotonicClock, TokenBucket};

use super::request::Op;
use crate::api::request::Qos;

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

/// The limits of an export, shared by its workers and the control thread.
#[derive(Debug, Default)]
pub(crate) struct QosShared {
    pub(crate) generation: AtomicU64,
    qos: Mutex<Qos>,
}

impl QosShared {
    /// Replaces the limits; workers pick them up at their next batch.
    pub(crate) fn set(&self, qos: Qos) {
        *self
            .qos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = qos;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current limits.
    pub(crate) fn get(&self) -> Qos {
        *self
            .qos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A worker's buckets.
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
