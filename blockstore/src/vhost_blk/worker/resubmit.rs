//! The worker's side of inflight I/O tracking after a restart: recovering
//! the region the frontend handed back and resubmitting what a previous
//! backend left in flight (marking and clearing are in the worker's take
//! and complete paths; see [`crate::vhost_blk::inflight`] for the order).

use std::sync::atomic::Ordering;

use vhost_user_backend::VringState;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};

use super::{Memory, QueueWorker};
use crate::vhost_blk::head_chain::HeadChain;
use crate::vhost_blk::inflight::QueueInflight;
use crate::vhost_blk::request;

impl QueueWorker {
    /// Sets up (or, with None, forgets) the queue's inflight region; a new
    /// one is recovered when the ring starts.
    pub(crate) fn set_inflight(&mut self, inflight: Option<QueueInflight>) {
        self.recover = inflight.is_some();
        self.inflight = inflight;
        self.resubmit.clear();
    }

    /// Starts again the requests a previous backend left in flight, in the
    /// order it took them, recovering the inflight region first if it is
    /// new. Returns whether new requests may be taken from the ring: not
    /// while QoS holds a resubmission back, nor when the region is broken.
    pub(super) fn resubmit(
        &mut self,
        state: &mut VringState<GuestMemoryAtomic<Memory>>,
        table: &GuestMemoryAtomic<Memory>,
    ) -> bool {
        let recover = self.recover && state.get_queue().ready();
        if !recover && self.resubmit.is_empty() {
            return true;
        }
        let mem = table.memory().into_inner();
        if recover {
            self.recover = false;
            if !self.recover_region(state, &mem) {
                return false;
            }
        }
        while let Some(&head) = self.resubmit.last() {
            let queue = state.get_queue();
            let chain = HeadChain::new(&*mem, queue.desc_table(), queue.size(), head);
            let (first_writable, malformed) = request::collect(chain, &mut self.segments);
            if let Some(wait) = self.start(head, first_writable, malformed, &mem) {
                self.throttle(wait);
                return false;
            }
            self.resubmit.pop();
        }
        true
    }

    /// Reads a new inflight region against the ring: where to resume in
    /// the available ring, and what to resubmit. A region that does not
    /// add up stops the queue and is dropped.
    fn recover_region(
        &mut self,
        state: &mut VringState<GuestMemoryAtomic<Memory>>,
        mem: &Memory,
    ) -> bool {
        let Some(inflight) = self.inflight.as_mut() else {
            return true;
        };
        let queue = state.get_queue();
        let recovered = queue
            .used_idx(mem, Ordering::Acquire)
            .map_err(|_| None)
            .and_then(|used| {
                inflight
                    .recover(queue.size(), used.0, &mut self.resubmit)
                    .map(|next_avail| (used.0, next_avail))
                    .map_err(Some)
            });
        match recovered {
            Ok((used, next_avail)) => {
                self.resubmit.reverse();
                if !self.resubmit.is_empty() {
                    tracing::info!(
                        volume = %self.backing.path().display(),
                        requests = self.resubmit.len(),
                        "Resubmitting the requests a previous backend left in flight"
                    );
                }
                let queue = state.get_queue_mut();
                queue.set_next_used(used);
                queue.set_next_avail(next_avail);
                true
            }
            Err(fault) => {
                datapath::log_limited!(
                    warn,
                    volume = %self.backing.path().display(),
                    ?fault,
                    "The inflight region does not match the ring; stopping the queue"
                );
                self.guard.inflight_broken(state.get_queue());
                self.inflight = None;
                false
            }
        }
    }
}
