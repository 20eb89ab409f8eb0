//! A virtqueue the guest broke. virtio-queue hands out nothing from a ring
//! whose available index is more than the queue size ahead of the next
//! entry, or whose entries it cannot read, while the index still says work
//! is waiting: a worker that takes "until empty" and re-checks after
//! enabling notifications would go round forever, holding the vring lock
//! that GET_VRING_BASE needs. Such a ring is stopped instead, counted and
//! logged, until the frontend sets it up again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use datapath::log_limit::LogLimit;

use super::metrics::QueueMetrics;

/// Why a queue was stopped; each is a counter in the volume's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFault {
    /// The available index is more than the queue size ahead of the next
    /// entry to take (virtio 1.x 2.7.6: the driver can have at most a
    /// ring's worth of entries outstanding).
    AvailIndex,
    /// The available ring's index or one of its entries is outside guest
    /// memory.
    AvailRing,
    /// The inflight region the frontend handed back after a reconnect
    /// does not add up (see [`super::inflight::RegionFault`]), or the used
    /// index it is checked against is outside guest memory.
    Inflight,
}

impl RingFault {
    /// Every fault, in the order of [`RingFault::index`].
    pub const ALL: [RingFault; 3] = [
        RingFault::AvailIndex,
        RingFault::AvailRing,
        RingFault::Inflight,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason's name in metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            RingFault::AvailIndex => "avail_index",
            RingFault::AvailRing => "avail_ring",
            RingFault::Inflight => "inflight_region",
        }
    }
}

/// How a ring was set up (and where the worker stood in it) when it broke.
/// The frontend setting it up again (SET_VRING_ADDR, SET_VRING_NUM,
/// SET_VRING_BASE) changes one of these, which lifts the stop; stopping
/// the ring (GET_VRING_BASE), a device reset and a new connection lift it
/// explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingSetup {
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    size: u16,
    next_avail: u16,
}

impl RingSetup {
    pub(crate) fn of(queue: &Queue) -> Self {
        RingSetup {
            desc_table: queue.desc_table(),
            avail_ring: queue.avail_ring(),
            used_ring: queue.used_ring(),
            size: queue.size(),
            next_avail: queue.next_avail(),
        }
    }
}

/// Whether a queue's ring is broken, kept by the queue's worker.
#[derive(Debug)]
pub(crate) struct RingGuard {
    /// How the ring was set up when the guest broke it.
    broken: Option<RingSetup>,
    log: LogLimit,
    volume: PathBuf,
    metrics: Arc<QueueMetrics>,
}

impl RingGuard {
    /// A guard for a queue of `volume`, counting into `metrics`.
    pub(crate) fn new(volume: &Path, metrics: Arc<QueueMetrics>) -> Self {
        RingGuard {
            broken: None,
            log: LogLimit::per_second(),
            volume: volume.to_owned(),
            metrics,
        }
    }

    /// Whether `queue` may be served: not while it is stopped as broken
    /// and set up as it was when it broke.
    pub(crate) fn serving(&mut self, queue: &Queue) -> bool {
        match self.broken {
            None => true,
            Some(setup) if setup == RingSetup::of(queue) => false,
            Some(_) => {
                self.broken = None;
                tracing::debug!(
                    volume = %self.volume.display(),
                    "The frontend set a broken queue up again; serving it"
                );
                true
            }
        }
    }

    /// How many requests wait in `queue`; None when it is not ready, or
    /// when the guest broke it (which stops it).
    pub(crate) fn waiting<M: GuestMemory>(&mut self, queue: &Queue, mem: &M) -> Option<u16> {
        if !queue.ready() {
            return None;
        }
        let fault = match queue.avail_idx(mem, Ordering::Acquire) {
            Ok(idx) => match pending(queue, idx.0) {
                Ok(waiting) => return Some(waiting),
                Err(fault) => fault,
            },
            Err(_) => RingFault::AvailRing,
        };
        self.stop(fault, queue);
        None
    }

    /// A chain [`RingGuard::waiting`] counted could not be taken: the guest
    /// moved the index since, or the entry is outside its memory.
    pub(crate) fn chain_missing<M: GuestMemory>(&mut self, queue: &Queue, mem: &M) {
        let fault = match queue.avail_idx(mem, Ordering::Acquire) {
            Ok(idx) if pending(queue, idx.0).is_err() => RingFault::AvailIndex,
            _ => RingFault::AvailRing,
        };
        self.stop(fault, queue);
    }

    /// The queue's inflight region cannot be recovered: nothing is taken
    /// from the ring, as where to resume in it is unknown.
    pub(crate) fn inflight_broken(&mut self, queue: &Queue) {
        self.stop(RingFault::Inflight, queue);
    }

    /// Stops taking from `queue` until the frontend sets it up again;
    /// counts it and logs it, at most once a second.
    fn stop(&mut self, fault: RingFault, queue: &Queue) {
        self.broken = Some(RingSetup::of(queue));
        self.metrics.broken_rings[fault.index()].inc();
        datapath::log_limited!(
            warn,
            limit: &self.log,
            volume = %self.volume.display(),
            reason = fault.reason(),
            next_avail = queue.next_avail(),
            size = queue.size(),
            "Stopped a queue the guest broke until the frontend sets it up again \
             (further ones are counted, logged at most once a second)"
        );
    }

    /// The frontend stopped the ring, or reset the device: it sets the
    /// ring up again before it starts it.
    pub(crate) fn clear(&mut self) {
        self.broken = None;
    }

    /// Whether the ring is stopped as broken.
    #[cfg(test)]
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }
}

/// How many entries wait in the ring, given the guest's available index:
/// the fault when that is more than the ring holds.
fn pending(queue: &Queue, avail_idx: u16) -> Result<u16, RingFault> {
    let pending = avail_idx.wrapping_sub(queue.next_avail());
    if pending > queue.size() {
        return Err(RingFault::AvailIndex);
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_counts_at_most_a_ring() {
        let mut q = Queue::new(16).unwrap();
        q.set_next_avail(65530);
        assert_eq!(pending(&q, 65530), Ok(0));
        assert_eq!(pending(&q, 4), Ok(10), "wraps");
        assert_eq!(pending(&q, 10), Ok(16), "a full ring");
        assert_eq!(pending(&q, 11), Err(RingFault::AvailIndex));
        assert_eq!(pending(&q, 65529), Err(RingFault::AvailIndex));
    }

    #[test]
    fn setting_the_ring_up_again_changes_its_setup() {
        let mut q = Queue::new(16).unwrap();
        let before = RingSetup::of(&q);
        assert_eq!(RingSetup::of(&q), before);
        q.set_next_avail(3);
        assert_ne!(RingSetup::of(&q), before, "SET_VRING_BASE");
        q.set_next_avail(0);
        q.set_avail_ring_address(Some(0x1000), Some(0));
        assert_ne!(RingSetup::of(&q), before, "SET_VRING_ADDR");
    }

    #[test]
    fn reasons_are_distinct_and_indexed_in_order() {
        for (i, f) in RingFault::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        let mut reasons: Vec<_> = RingFault::ALL.iter().map(|f| f.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), RingFault::ALL.len());
    }
}
