//! The per-queue worker: takes requests off one virtqueue, turns them into
//! io_uring operations on the backing store, and completes them back into
//! the guest's used ring, one submission and one notification per batch.
//!
//! A worker is owned by one thread (vhost-user-backend runs one thread per
//! queue here); the control thread only touches it to drain it when the
//! queue stops.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use io_uring::{squeue, types};
use vhost_user_backend::{VringRwLock, VringState, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

use datapath::log_limit::LogLimit;
use datapath::uring::{Completion, Ring};
use vmm_sys_util::timerfd::TimerFd;

use super::broken::RingGuard;
use super::inflight::QueueInflight;
use super::metrics::QueueMetrics;
use super::qos::{self, QosShared};
use super::request::{self, DiskLimits, Fault, Op, Parsed, Segment};
use crate::backing::Backing;

type Memory = GuestMemoryMmap<()>;

/// Most iovecs one request may need: every data segment split at a memory
/// region boundary at most once more.
const MAX_IOVECS: usize = 2 * request::SEG_MAX;

/// Fixed-file indices registered with the ring (see [`Backing::fds`]).
const FD_DIRECT: types::Fixed = types::Fixed(0);
const FD_BUFFERED: types::Fixed = types::Fixed(1);

/// What an in-flight slot is doing, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    Discard,
}

/// iovecs pointing into guest memory.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the pointers refer to guest memory kept mapped by the slot's
// `mem` Arc; they are dereferenced only by the kernel, for an operation the
// owning worker submitted, and the worker moves between threads only as a
// whole, behind its mutex.
unsafe impl Send for IoVecs {}

/// One request in flight, indexed by its descriptor head.
struct Slot {
    busy: bool,
    kind: Kind,
    status_addr: u64,
    used_len: u32,
    bytes: u64,
    started: Instant,
    iovecs: IoVecs,
    /// Keeps the guest memory the iovecs point into mapped until the
    /// operation completes, even if the frontend replaces the memory table.
    mem: Option<Arc<Memory>>,
    /// The operation as submitted, to submit again while the backing store
    /// has no space for it (see [`no_space`]).
    entry: Option<squeue::Entry>,
    /// Whether the request is held for space (counted in the metrics).
    no_space: bool,
}

impl Slot {
    fn new() -> Self {
        Slot {
            busy: false,
            kind: Kind::Read,
            status_addr: 0,
            used_len: 0,
            bytes: 0,
            started: Instant::now(),
            iovecs: IoVecs(Vec::with_capacity(MAX_IOVECS)),
            mem: None,
            entry: None,
            no_space: false,
        }
    }
}

/// A request that finished without reaching the backing store.
struct Immediate {
    head: u16,
    used_len: u32,
}

/// The state of one queue's worker.
pub(crate) struct QueueWorker {
    ring: Ring,
    backing: Arc<Backing>,
    limits: DiskLimits,
    serial: [u8; 20],
    slots: Vec<Slot>,
    segments: Vec<Segment>,
    immediate: Vec<Immediate>,
    metrics: Arc<QueueMetrics>,
    /// The vring this worker serves, kept to complete requests when the
    /// queue is drained from the control thread.
    vring: Option<VringRwLock<GuestMemoryAtomic<Memory>>>,
    /// Refused requests are logged through this: one line a second per
    /// queue.
    fault_log: LogLimit,
    /// Whether the guest broke the ring (nothing is taken from it then).
    pub(crate) guard: RingGuard,
    qos: Arc<QosShared>,
    /// Wakes the worker when a throttled queue may go on.
    timer: TimerFd,
    /// Until when QoS holds the queue back (polling skips it meanwhile).
    throttled_until: Option<Instant>,
    /// Whether this worker's thread has been pinned.
    pub(crate) pinned: bool,
    /// The queue's inflight region, when the frontend set one up.
    inflight: Option<QueueInflight>,
    /// Whether the region is new and must be recovered when the ring
    /// starts.
    recover: bool,
    /// Heads the previous backend left in flight, latest first: they are
    /// served before anything new.
    resubmit: Vec<u16>,
    /// Writes the backing store had no space for, waiting to be submitted
    /// again (their slots stay busy; see [`no_space`]).
    held: Vec<u16>,
    /// When the held writes are next submitted again.
    retry_at: Option<Instant>,
    /// Holds are logged through this: one line a minute per queue.
    no_space_log: LogLimit,
}

impl QueueWorker {
    /// A worker for a queue of up to `queue_size` entries of a disk of
    /// `blk_size`-byte blocks stored in `backing`.
    pub(crate) fn new(
        ring: Ring,
        backing: Arc<Backing>,
        serial: [u8; 20],
        (queue_size, blk_size): (u16, u32),
        metrics: Arc<QueueMetrics>,
        qos: Arc<QosShared>,
        timer: TimerFd,
    ) -> Self {
        let limits = DiskLimits {
            capacity_bytes: backing.capacity(),
            read_only: backing.read_only(),
            blk_size,
        };
        let guard = RingGuard::new(backing.path(), Arc::clone(&metrics));
        QueueWorker {
            ring,
            backing,
            limits,
            serial,
            slots: (0..queue_size).map(|_| Slot::new()).collect(),
            segments: Vec::with_capacity(request::SEG_MAX + 2),
            immediate: Vec::with_capacity(usize::from(queue_size)),
            metrics,
            vring: None,
            guard,
            fault_log: LogLimit::per_second(),
            qos,
            timer,
            throttled_until: None,
            pinned: false,
            inflight: None,
            recover: false,
            resubmit: Vec::new(),
            held: Vec::with_capacity(usize::from(queue_size)),
            retry_at: None,
            no_space_log: LogLimit::new(Duration::from_secs(60), 1),
        }
    }

    /// One busy-poll round: completions waiting in the ring, requests
    /// waiting in the virtqueue. Returns whether it found work.
    pub(crate) fn poll(
        &mut self,
        vring: &VringRwLock<GuestMemoryAtomic<Memory>>,
        mem: &GuestMemoryAtomic<Memory>,
        event_idx: bool,
    ) -> bool {
        let mut found = false;
        if self.ring.has_completions() {
            self.process_completions();
            found = true;
        }
        if self.throttled_until.is_some_and(|t| Instant::now() < t) {
            return found;
        }
        let pending = {
            let state = vring.get_ref();
            let queue = state.get_queue();
            let guard = mem.memory();
            queue.ready()
                && self.guard.serving(queue)
                && queue
                    .avail_idx(&*guard, Ordering::Acquire)
                    .is_ok_and(|idx| idx.0 != queue.next_avail())
        };
        if pending {
            self.process_queue(vring, mem, event_idx);
            found = true;
        }
        found
    }

    /// The QoS timer's fd to watch.
    pub(crate) fn timer_fd(&self) -> std::os::fd::RawFd {
        self.timer.as_raw_fd()
    }

    /// Clears the QoS timer after it fired.
    pub(crate) fn clear_timer(&mut self) {
        let _ = self.timer.wait();
    }

    /// The io_uring completion eventfd to watch.
    pub(crate) fn eventfd(&self) -> std::os::fd::RawFd {
        self.ring.eventfd()
    }

    /// Takes every available request off `vring`, submits them in one
    /// batch and completes those that needed no I/O.
    pub(crate) fn process_queue(
        &mut self,
        vring: &VringRwLock<GuestMemoryAtomic<Memory>>,
        mem: &GuestMemoryAtomic<Memory>,
        event_idx: bool,
    ) {
        if self.vring.is_none() {
            self.vring = Some(vring.clone());
        }
        self.throttled_until = None;
        let table = mem;
        let mut state = vring.get_mut();
        if !self.guard.serving(state.get_queue()) {
            return;
        }
        let resubmitted = self.resubmit(&mut state, table);
        'batch: loop {
            if !resubmitted {
                // New requests wait for the resubmitted ones.
                break;
            }
            if event_idx && let Err(e) = state.disable_notification() {
                datapath::log_limited!(warn, "Cannot disable queue notifications: {e}");
            }
            // Takes what the index says waits, no more: a ring that hands
            // out less is broken, and going round again would spin.
            let Some(waiting) = self.guard.waiting(state.get_queue(), &*table.memory()) else {
                break;
            };
            // The memory table is taken after the index that announced the
            // requests, never before: a frontend maps a buffer (and waits
            // for our acknowledgement) before it makes a request that uses
            // it available, so the table of any earlier moment may lack it.
            let mem = table.memory().into_inner();
            for _ in 0..waiting {
                let before = state.get_queue().next_avail();
                let Some(chain) = state.get_queue_mut().pop_descriptor_chain(&*mem) else {
                    self.guard.chain_missing(state.get_queue(), &*mem);
                    break 'batch;
                };
                let head = chain.head_index();
                let (first_writable, malformed) = request::collect(chain, &mut self.segments);
                if let Some(wait) = self.start(head, first_writable, malformed, &mem) {
                    // Over the limit: leave the request in the ring and
                    // come back when the buckets have refilled.
                    state.get_queue_mut().set_next_avail(before);
                    self.throttle(wait);
                    break 'batch;
                }
                // A head outside the ring never reaches the used ring (and
                // so would never be cleared): it is not marked.
                if let Some(inflight) = self.inflight.as_mut()
                    && head < state.get_queue().size()
                {
                    inflight.mark(head);
                }
            }
            if !event_idx {
                break;
            }
            match state.enable_notification() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    datapath::log_limited!(warn, "Cannot enable queue notifications: {e}");
                    break;
                }
            }
        }
        if let Err(e) = self.ring.submit() {
            datapath::log_limited!(error, "io_uring submission failed: {e}");
        }
        self.complete_immediate(&mut state);
        drop(state);
        // Operations the kernel finished during submission (page-cache
        // hits, memory-backed files) complete in this same round, without
        // waiting for the eventfd to come round through epoll.
        if self.ring.has_completions() {
            self.process_completions();
        }
    }

    /// Holds the queue back for `wait`, until QoS admits more.
    fn throttle(&mut self, wait: Duration) {
        self.metrics.throttled.inc();
        self.throttled_until = Some(Instant::now() + wait);
        self.arm_timer();
    }

    /// Starts one request: parses it, then submits its I/O or queues an
    /// immediate completion.
    /// Returns how long to wait when QoS holds the request back.
    fn start(
        &mut self,
        head: u16,
        first_writable: usize,
        malformed: bool,
        mem: &Arc<Memory>,
    ) -> Option<Duration> {
        match self.prepare(head, first_writable, malformed, mem) {
            Prepared::Dropped(fault) => {
                // No place for a status: the buffers go back untouched.
                self.fault(fault, head);
                self.immediate.push(Immediate { head, used_len: 0 });
            }
            Prepared::Ignored(fault) => self.fault(fault, head),
            Prepared::Failed { fault, status_addr } => {
                self.fault(fault, head);
                self.finish_now(mem, head, status_addr, status_of_fault(fault), 1);
            }
            Prepared::Done {
                status_addr,
                used_len,
            } => self.finish_now(mem, head, status_addr, VIRTIO_BLK_S_OK, used_len),
            Prepared::Io { op, status_addr } => {
                if let Err(wait) = self.qos.admit(qos::bytes_charged(&op)) {
                    return Some(wait);
                }
                self.submit_op(head, first_writable, op, status_addr, mem);
            }
        }
        None
    }

    /// Parses a request and does what needs no I/O (GET_ID).
    fn prepare(&self, head: u16, first_writable: usize, malformed: bool, mem: &Memory) -> Prepared {
        let (op, status_addr, writable) =
            match request::parse(mem, &self.segments, first_writable, malformed, &self.limits) {
                Parsed::Dropped(fault) => return Prepared::Dropped(fault),
                Parsed::Failed { fault, status_addr } => {
                    return Prepared::Failed { fault, status_addr };
                }
                Parsed::Request {
                    op,
                    status_addr,
                    writable,
                } => (op, status_addr, writable),
            };
        let failed = |fault| Prepared::Failed { fault, status_addr };
        if self.slots.get(usize::from(head)).is_none_or(|s| s.busy) {
            // The guest resubmitted a head that is still in flight: it does
            // not own those buffers, so nothing may be written to them, and
            // the head goes back to it once, when the first request is done.
            return Prepared::Ignored(Fault::MalformedChain);
        }
        match op {
            Op::GetId => {
                let mut written = 0usize;
                for seg in writable.iter() {
                    let n = (self.serial.len() - written).min(seg.len as usize);
                    if n == 0 {
                        break;
                    }
                    let bytes = &self.serial[written..written + n];
                    if mem.write_slice(bytes, GuestAddress(seg.addr)).is_err() {
                        return failed(Fault::OutsideMemory);
                    }
                    written += n;
                }
                self.metrics.get_ids.inc();
                Prepared::Done {
                    status_addr,
                    used_len: u32::try_from(written + 1).unwrap_or(u32::MAX),
                }
            }
            Op::Flush if self.limits.read_only => Prepared::Done {
                status_addr,
                used_len: 1,
            },
            Op::Flush if self.backing.write_back_failed() => failed(Fault::WriteBackError),
            Op::Read { len: 0, .. } | Op::Write { len: 0, .. } => Prepared::Done {
                status_addr,
                used_len: 1,
            },
            Op::Discard { len: 0, .. } | Op::WriteZeroes { len: 0, .. } => Prepared::Done {
                status_addr,
                used_len: 1,
            },
            op => Prepared::Io { op, status_addr },
        }
    }

    /// Writes the status byte of a request that needed no I/O and queues
    /// its used-ring entry.
    fn finish_now(&mut self, mem: &Memory, head: u16, status_addr: u64, status: u8, used_len: u32) {
        if mem.write_obj(status, GuestAddress(status_addr)).is_err() {
            self.fault(Fault::OutsideMemory, head);
        }
        self.immediate.push(Immediate { head, used_len });
    }

    /// Puts the immediate completions on the used ring and notifies once.
    fn complete_immediate(&mut self, state: &mut VringState<GuestMemoryAtomic<Memory>>) {
        if self.immediate.is_empty() {
            return;
        }
        for done in self.immediate.drain(..) {
            let inflight = self.inflight.as_ref();
            if let Err(e) = add_used(state, inflight, done.head, done.used_len) {
                datapath::log_limited!(warn, head = done.head, "Cannot add to the used ring: {e}");
            }
        }
        notify(state);
    }

    /// Reaps io_uring completions, completes their requests into the used
    /// ring and notifies the guest once.
    pub(crate) fn process_completions(&mut self) {
        // Cleared even without a vring: the queue thread's epoll is
        // level-triggered, and an event left raised would wake it again
        // and again until the guest's first kick.
        self.ring.clear_event();
        let Some(vring) = self.vring.clone() else {
            return;
        };
        let mut state = vring.get_mut();
        let QueueWorker {
            ring,
            slots,
            metrics,
            backing,
            inflight,
            held,
            ..
        } = self;
        let mut used = false;
        let inflight = inflight.as_ref();
        ring.reap(|c| {
            used |= complete(slots, (metrics, backing), inflight, held, &mut state, c);
        });
        if used {
            notify(&mut state);
        }
        drop(state);
        self.schedule_retry();
    }

    /// Waits for every in-flight request and completes it (the queue is
    /// stopping: the frontend will read the ring indices next).
    pub(crate) fn drain(&mut self) {
        while self.ring.in_flight() > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                datapath::log_limited!(error, "Cannot wait for in-flight I/O: {e}");
                return;
            }
            self.process_completions();
        }
    }

    /// The frontend stops the queue (GET_VRING_BASE): completes what is in
    /// flight, lets go of the writes held for space (see
    /// [`QueueWorker::release_held`]), and lifts a stop for a broken ring,
    /// as the frontend sets the ring up again before it starts it.
    pub(crate) fn stop(&mut self) {
        self.drain();
        self.release_held();
        self.guard.clear();
    }

    /// Forgets the connection's vring once everything in flight is done,
    /// so the next connection starts clean.
    pub(crate) fn reset(&mut self) {
        self.stop();
        self.vring = None;
        self.set_inflight(None);
    }

    /// Counts a refused request and logs it, at most once a second.
    fn fault(&mut self, fault: Fault, head: u16) {
        self.metrics.faults[fault.index()].inc();
        datapath::log_limited!(
            warn,
            limit: &self.fault_log,
            volume = %self.backing.path().display(),
            head,
            reason = fault.reason(),
            "Refused a guest request (further ones are counted, logged at most once a second)"
        );
    }
}

/// The outcome of parsing a request.
enum Prepared {
    /// No status byte can be written.
    Dropped(Fault),
    /// Not a request of its own (its head is in flight): counted, nothing
    /// goes on the used ring for it.
    Ignored(Fault),
    Failed {
        fault: Fault,
        status_addr: u64,
    },
    Done {
        status_addr: u64,
        used_len: u32,
    },
    Io {
        op: Op,
        status_addr: u64,
    },
}

const VIRTIO_BLK_S_OK: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK as u8;
const VIRTIO_BLK_S_IOERR: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_IOERR as u8;
const VIRTIO_BLK_S_UNSUPP: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// The status a refused request completes with.
fn status_of_fault(fault: Fault) -> u8 {
    match fault {
        Fault::Unsupported => VIRTIO_BLK_S_UNSUPP,
        _ => VIRTIO_BLK_S_IOERR,
    }
}

/// Completes the request of one io_uring completion; true if a used-ring
/// entry was added.
fn complete(
    slots: &mut [Slot],
    (metrics, backing): (&QueueMetrics, &Backing),
    inflight: Option<&QueueInflight>,
    held: &mut Vec<u16>,
    state: &mut VringState<GuestMemoryAtomic<Memory>>,
    c: Completion,
) -> bool {
    let Some(slot) = u16::try_from(c.user_data)
        .ok()
        .and_then(|head| slots.get_mut(usize::from(head)))
    else {
        return false;
    };
    let head = c.user_data as u16;
    if !slot.busy {
        return false;
    }
    let expected = match slot.kind {
        Kind::Read | Kind::Write => i64::try_from(slot.bytes).unwrap_or(i64::MAX),
        Kind::Flush | Kind::Discard => 0,
    };
    // Only a request that can be submitted again (its entry and memory are
    // kept) is held.
    let retriable = slot.mem.is_some() && slot.entry.is_some();
    if retriable && no_space::out_of_space(slot.kind, c.result, expected) {
        // Not completed: the slot stays busy, its memory mapped, until a
        // retry succeeds or the queue stops.
        if !slot.no_space {
            slot.no_space = true;
            metrics.hold();
        }
        held.push(head);
        return false;
    }
    if slot.no_space {
        slot.no_space = false;
        metrics.unhold();
    }
    slot.busy = false;
    slot.entry = None;
    let Some(mem) = slot.mem.take() else {
        return false;
    };
    metrics.completed.inc();
    let mut ok = i64::from(c.result) == expected;
    if slot.kind == Kind::Flush {
        ok = flush_durable(backing, metrics, ok, c.result);
    }
    if ok {
        match slot.kind {
            Kind::Read => metrics.read_bytes.add(slot.bytes),
            Kind::Write => metrics.write_bytes.add(slot.bytes),
            Kind::Flush | Kind::Discard => {}
        }
        if matches!(slot.kind, Kind::Read | Kind::Write) {
            let us = u64::try_from(slot.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            metrics.latency.observe_us(us);
        }
    } else {
        metrics.io_errors.inc();
        tracing::debug!(
            head,
            result = c.result,
            "Backing store I/O failed or was short"
        );
    }
    let status = if ok {
        VIRTIO_BLK_S_OK
    } else {
        VIRTIO_BLK_S_IOERR
    };
    let used_len = if ok { slot.used_len } else { 1 };
    // The status address was checked when the request was parsed, against
    // the same memory.
    let _ = mem.write_obj(status, GuestAddress(slot.status_addr));
    if let Err(e) = add_used(state, inflight, head, used_len) {
        datapath::log_limited!(warn, head, "Cannot add to the used ring: {e}");
        return false;
    }
    true
}

/// Whether a flush that the kernel answered with `result` made the volume
/// durable: not if it failed, nor if any earlier flush of the volume failed
/// (on this queue or another, even one that completed meanwhile).
fn flush_durable(backing: &Backing, metrics: &QueueMetrics, ok: bool, result: i32) -> bool {
    if !ok {
        if backing.note_write_back_error() {
            tracing::error!(
                volume = %backing.path().display(),
                errno = -result,
                "A flush failed: every later flush of the volume fails until it is \
                 exported again, as written data may be lost"
            );
        }
        return false;
    }
    if backing.write_back_failed() {
        metrics.faults[Fault::WriteBackError.index()].inc();
        return false;
    }
    true
}

/// Publishes `head`'s used element, noting it in the queue's inflight
/// region before and after, in the order that lets a restarted backend
/// tell whether it completed (see [`super::inflight`]).
fn add_used(
    state: &mut VringState<GuestMemoryAtomic<Memory>>,
    inflight: Option<&QueueInflight>,
    head: u16,
    used_len: u32,
) -> Result<(), virtio_queue::Error> {
    if let Some(inflight) = inflight {
        inflight.before_used(head);
    }
    state.add_used(head, used_len)?;
    if let Some(inflight) = inflight {
        inflight.after_used(head, state.get_queue().next_used());
    }
    Ok(())
}

/// Signals the guest if the used ring's notification rules ask for it.
fn notify(state: &mut VringState<GuestMemoryAtomic<Memory>>) {
    let needed = state.needs_notification().unwrap_or(true);
    if needed && let Err(e) = state.signal_used_queue() {
        datapath::log_limited!(warn, "Cannot signal the guest: {e}");
    }
}

#[cfg(any(test, fuzzing))]
pub mod fuzz;
mod no_space;
mod resubmit;
mod submit;
#[cfg(test)]
mod tests;
