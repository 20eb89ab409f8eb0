//! Writes the backing store has no space for (ENOSPC, EDQUOT: a thin
//! datastore filled up) are held, not failed: a guest that sees an I/O
//! error remounts its filesystem read-only or corrupts a database, while a
//! held write only waits, as QEMU's `werror=stop` and vSphere do. A held
//! request keeps its slot (so its guest memory stays mapped) and is
//! submitted again once a second until it succeeds or the queue stops.
//!
//! A guest cannot use this against others: it holds at most a queue's
//! worth of requests (one slot per descriptor head), retries cost one
//! submission per held request per second, and the log says so once a
//! minute per queue.
//!
//! When the frontend stops the queue (GET_VRING_BASE, on every VM pause),
//! nothing may wait: with inflight tracking the held heads stay marked in
//! the shared region and the frontend hands them back when it starts the
//! queue again (they are resubmitted, and so retried, then); without it
//! they fail with IOERR, as they would have without the hold.

use std::time::{Duration, Instant};

use vhost_user_backend::VringT;
use vm_memory::{Bytes, GuestAddress};

use super::{Kind, QueueWorker, VIRTIO_BLK_S_IOERR, add_used, notify};

/// How often held writes are submitted again.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a completion with `result` of a `kind` operation that should
/// have returned `expected` says the backing store is out of space: an
/// ENOSPC or EDQUOT, or a short write (a regular file's write stops short
/// when the filesystem fills, and the next one fails with ENOSPC).
pub(super) fn out_of_space(kind: Kind, result: i32, expected: i64) -> bool {
    match kind {
        Kind::Write | Kind::Discard if result == -libc::ENOSPC || result == -libc::EDQUOT => true,
        Kind::Write => result >= 0 && i64::from(result) < expected,
        Kind::Read | Kind::Flush | Kind::Discard => false,
    }
}

impl QueueWorker {
    /// After completions were reaped: if some were held, logs it and arms
    /// the retry (one interval after the hold, never sooner).
    pub(super) fn schedule_retry(&mut self) {
        if self.held.is_empty() || self.retry_at.is_some() {
            return;
        }
        datapath::log_limited!(
            warn,
            limit: &self.no_space_log,
            volume = %self.backing.path().display(),
            held = self.held.len(),
            "The datastore is out of space: writes are held and retried every second \
             until space is freed"
        );
        self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
        self.arm_timer();
    }

    /// The timer fired: submits the held writes again if their time has
    /// come (they complete, or are held again, through the usual path).
    pub(crate) fn retry_held(&mut self) {
        let Some(at) = self.retry_at else {
            return;
        };
        if Instant::now() < at {
            self.arm_timer();
            return;
        }
        self.retry_at = None;
        while let Some(head) = self.held.pop() {
            let slot = &self.slots[usize::from(head)];
            let Some(entry) = slot.entry.clone() else {
                continue;
            };
            // The slot is still busy and still holds the iovecs and, through
            // `mem`, the mapping of the guest buffers the entry points to;
            // only `complete()` and `release_held()` clear them.
            // SAFETY: so the buffers outlive the operation, as `push` requires.
            if let Err(e) = unsafe { self.ring.push(&entry) } {
                datapath::log_limited!(error, "io_uring push failed: {e}");
                self.held.push(head);
                break;
            }
            self.metrics.no_space_retries.inc();
        }
        if let Err(e) = self.ring.submit() {
            datapath::log_limited!(error, "io_uring submission failed: {e}");
        }
        self.schedule_retry();
    }

    /// Arms the timer for the earliest of the QoS wait and the retry.
    pub(super) fn arm_timer(&mut self) {
        let Some(at) = [self.throttled_until, self.retry_at]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        // A zero duration would disarm the timer.
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        if let Err(e) = self.timer.reset(wait, None) {
            tracing::error!("Cannot arm the queue's timer: {e}");
        }
    }

    /// The queue stops: lets go of the held writes. With inflight tracking
    /// they stay in flight in the shared region, for the frontend to hand
    /// back when it starts the queue again; without it they fail.
    pub(super) fn release_held(&mut self) {
        self.retry_at = None;
        if self.held.is_empty() {
            return;
        }
        let kept = self.inflight.is_some();
        if kept {
            tracing::info!(
                volume = %self.backing.path().display(),
                held = self.held.len(),
                "The queue stops with writes held for space: they stay in flight \
                 and are retried when the queue starts again"
            );
        } else {
            tracing::warn!(
                volume = %self.backing.path().display(),
                held = self.held.len(),
                "The queue stops with writes held for space and the frontend \
                 tracks no inflight I/O: they fail with an I/O error"
            );
        }
        let vring = self.vring.clone();
        let mut state = vring.as_ref().map(|v| v.get_mut());
        let mut used = false;
        for head in self.held.drain(..) {
            let slot = &mut self.slots[usize::from(head)];
            slot.busy = false;
            slot.entry = None;
            slot.no_space = false;
            let mem = slot.mem.take();
            self.metrics.unhold();
            self.metrics.completed.inc();
            if kept {
                continue;
            }
            self.metrics.io_errors.inc();
            let (Some(state), Some(mem)) = (state.as_mut(), mem) else {
                continue;
            };
            // The status address was checked when the request was parsed,
            // against the same memory.
            let _ = mem.write_obj(VIRTIO_BLK_S_IOERR, GuestAddress(slot.status_addr));
            match add_used(state, None, head, 1) {
                Ok(()) => used = true,
                Err(e) => datapath::log_limited!(warn, head, "Cannot add to the used ring: {e}"),
            }
        }
        if used && let Some(state) = state.as_mut() {
            notify(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_short_of_space_are_held() {
        let enospc = -libc::ENOSPC;
        assert!(out_of_space(Kind::Write, enospc, 4096));
        assert!(out_of_space(Kind::Write, -libc::EDQUOT, 4096));
        assert!(out_of_space(Kind::Discard, enospc, 0));
        assert!(out_of_space(Kind::Write, 512, 4096));
        assert!(!out_of_space(Kind::Write, 4096, 4096));
        assert!(!out_of_space(Kind::Write, -libc::EIO, 4096));
        assert!(!out_of_space(Kind::Read, enospc, 4096));
        assert!(!out_of_space(Kind::Read, 512, 4096));
        assert!(!out_of_space(Kind::Flush, enospc, 0));
    }
}
