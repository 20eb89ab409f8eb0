//! The worker against a split virtqueue in fake guest memory, driven the
//! way vhost-user-backend's queue thread drives it.

use std::sync::mpsc;

use vm_memory::GuestMemoryMmap;

use super::*;
use crate::vhost_blk::broken::RingFault;

const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const MEM_LEN: usize = 0x10_0000;
/// How long a handler may take before it counts as looping.
const DEADLINE: Duration = Duration::from_secs(10);

struct Fixture {
    worker: QueueWorker,
    metrics: Arc<QueueMetrics>,
    vring: VringRwLock<GuestMemoryAtomic<Memory>>,
    mem: GuestMemoryAtomic<Memory>,
    _dir: tempfile::TempDir,
}

/// A worker on a 1 MiB image, and a ready queue of 16 entries with
/// nothing available yet.
fn fixture(event_idx: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
    let backing = Arc::new(Backing::open(&image, false).expect("backing"));
    let mut ring = Ring::new(64).expect("io_uring");
    ring.register_files(&backing.fds()).expect("fixed files");
    let metrics = Arc::new(QueueMetrics::default());
    let worker = QueueWorker::new(
        ring,
        backing,
        [0; 20],
        QUEUE_SIZE,
        Arc::clone(&metrics),
        Arc::new(QosShared::default()),
        TimerFd::new().expect("timerfd"),
    );
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_LEN)]).expect("mem");
    let mem = GuestMemoryAtomic::new(memory);
    let vring = VringRwLock::new(mem.clone(), QUEUE_SIZE).expect("vring");
    vring.set_queue_size(QUEUE_SIZE);
    vring
        .set_queue_info(DESC, AVAIL, USED)
        .expect("ring addresses");
    vring.set_queue_event_idx(event_idx);
    vring.set_queue_ready(true);
    Fixture {
        worker,
        metrics,
        vring,
        mem,
        _dir: dir,
    }
}

impl Fixture {
    /// Writes the guest's available index.
    fn set_avail_idx(&self, idx: u16) {
        self.mem
            .memory()
            .write_obj(idx, GuestAddress(AVAIL + 2))
            .expect("avail idx");
    }

    /// Runs `process_queue` on another thread and waits for it to return;
    /// fails when it does not within the deadline (it is looping).
    fn process_queue_within_deadline(self, event_idx: bool) -> Fixture {
        let (done, returned) = mpsc::channel();
        std::thread::spawn(move || {
            let mut f = self;
            let (vring, mem) = (f.vring.clone(), f.mem.clone());
            f.worker.process_queue(&vring, &mem, event_idx);
            let _ = done.send(f);
        });
        returned
            .recv_timeout(DEADLINE)
            .expect("process_queue did not return: it loops on the broken ring")
    }
}

#[test]
fn an_avail_index_more_than_a_ring_ahead_stops_the_queue() {
    // EVENT_IDX: the unchecked worker re-armed notifications, saw the index
    // still ahead and went round forever holding the vring lock.
    let f = fixture(true);
    f.set_avail_idx(QUEUE_SIZE + 1);
    let mut f = f.process_queue_within_deadline(true);
    assert!(f.worker.guard.is_broken(), "the queue is marked broken");
    assert_eq!(
        f.metrics.broken_rings[RingFault::AvailIndex.index()].get(),
        1
    );
    assert_eq!(f.vring.queue_next_avail(), 0, "nothing was taken");

    // Stopped: more kicks and polls take nothing, count nothing more and
    // report no work (a busy-polling thread goes back to sleep).
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    f.worker.process_queue(&vring, &mem, true);
    assert!(
        !f.worker.poll(&vring, &mem, true),
        "no work on a broken ring"
    );
    assert_eq!(
        f.metrics.broken_rings[RingFault::AvailIndex.index()].get(),
        1
    );
    assert_eq!(f.metrics.submitted.get(), 0);
}

#[test]
fn without_event_idx_a_broken_ring_is_not_polled_as_work() {
    let mut f = fixture(false);
    f.set_avail_idx(QUEUE_SIZE + 1);
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    // The first poll finds the index moved and stops the ring; the unchecked
    // worker found "work" on every poll and never went back to sleep.
    f.worker.poll(&vring, &mem, false);
    assert!(f.worker.guard.is_broken());
    assert!(
        !f.worker.poll(&vring, &mem, false),
        "no work on a broken ring"
    );
}

#[test]
fn a_broken_ring_is_served_again_once_set_up_again() {
    let mut f = fixture(true);
    f.set_avail_idx(QUEUE_SIZE + 1);
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    f.worker.process_queue(&vring, &mem, true);
    assert!(f.worker.guard.is_broken());

    // SET_VRING_BASE to where the guest's index now is: nothing waits, the
    // ring is good again.
    vring.set_queue_next_avail(QUEUE_SIZE + 1);
    f.worker.process_queue(&vring, &mem, true);
    assert!(!f.worker.guard.is_broken(), "set up again");

    // Broken again, then stopped (GET_VRING_BASE) and restarted as it was.
    f.set_avail_idx(3 * QUEUE_SIZE);
    f.worker.process_queue(&vring, &mem, true);
    assert!(f.worker.guard.is_broken());
    assert_eq!(
        f.metrics.broken_rings[RingFault::AvailIndex.index()].get(),
        2
    );
    f.worker.stop();
    assert!(!f.worker.guard.is_broken(), "a stopped ring starts clean");
}

#[test]
fn an_avail_ring_outside_guest_memory_stops_the_queue() {
    let f = fixture(true);
    // The ring's index is readable, its entries are past the end of
    // memory: virtio-queue hands out nothing while the index says one waits.
    let avail = MEM_LEN as u64 - 4;
    f.vring
        .set_queue_info(DESC, avail, USED)
        .expect("ring addresses");
    f.mem
        .memory()
        .write_obj(1u16, GuestAddress(avail + 2))
        .expect("avail idx");
    let f = f.process_queue_within_deadline(true);
    assert!(f.worker.guard.is_broken());
    assert_eq!(
        f.metrics.broken_rings[RingFault::AvailRing.index()].get(),
        1
    );
}
