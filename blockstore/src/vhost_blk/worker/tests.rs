//! The worker against a split virtqueue in fake guest memory, driven the
//! way vhost-user-backend's queue thread drives it.

use std::os::fd::RawFd;
use std::sync::mpsc;

use vm_memory::GuestRegionMmap;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::vhost_blk::broken::RingFault;
use crate::vhost_blk::fake_driver::{Data, FakeDriver, MEM_LEN, QUEUE_SIZE};
use crate::vhost_blk::inflight::InflightArea;
use crate::vhost_blk::metrics::MetricsSnapshot;

const DESC: u64 = crate::vhost_blk::fake_driver::DESC;
const USED: u64 = crate::vhost_blk::fake_driver::USED;
const T_OUT: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_OUT;
const T_IN: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN;
const T_GET_ID: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_GET_ID;
const T_FLUSH: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_FLUSH;
const T_DISCARD: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_DISCARD;
const T_WRITE_ZEROES: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES;
/// How long a handler may take before it counts as looping.
const DEADLINE: Duration = Duration::from_secs(10);

struct Fixture {
    worker: QueueWorker,
    metrics: Arc<QueueMetrics>,
    qos: Arc<QosShared>,
    vring: VringRwLock<GuestMemoryAtomic<Memory>>,
    mem: GuestMemoryAtomic<Memory>,
    driver: FakeDriver,
    _dir: Option<tempfile::TempDir>,
}

/// A worker on a 1 MiB image, and a ready queue of 16 entries with
/// nothing available yet.
fn fixture(event_idx: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let backing = Arc::new(Backing::open(&image(&dir), false).expect("backing"));
    let fds = backing.fds();
    let mut f = queue_of(&backing, fds, event_idx);
    f._dir = Some(dir);
    f
}

/// A 1 MiB image in `dir`.
fn image(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let image = dir.path().join("disk.img");
    if !image.exists() {
        std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
    }
    image
}

/// A worker for one queue of the volume `backing`, its io_uring doing
/// I/O on `fds` (direct, buffered: see [`Backing::fds`]).
fn queue_of(backing: &Arc<Backing>, fds: [RawFd; 2], event_idx: bool) -> Fixture {
    queue_with_qos(backing, fds, event_idx, Arc::new(QosShared::default()))
}

/// [`queue_of`] for a queue of an export whose limits are `qos`.
fn queue_with_qos(
    backing: &Arc<Backing>,
    fds: [RawFd; 2],
    event_idx: bool,
    qos: Arc<QosShared>,
) -> Fixture {
    let mut ring = Ring::new(64).expect("io_uring");
    ring.register_files(&fds).expect("fixed files");
    let metrics = Arc::new(QueueMetrics::default());
    let worker = QueueWorker::new(
        ring,
        Arc::clone(backing),
        [0; 20],
        (QUEUE_SIZE, 512),
        Arc::clone(&metrics),
        Arc::clone(&qos),
        TimerFd::new().expect("timerfd"),
    );
    let driver = FakeDriver::new(event_idx);
    Fixture {
        worker,
        metrics,
        qos,
        vring: driver.vring.clone(),
        mem: driver.mem.clone(),
        driver,
        _dir: None,
    }
}

impl Fixture {
    /// Writes the guest's available index.
    fn set_avail_idx(&self, idx: u16) {
        self.driver.set_avail_idx(idx);
    }

    /// Makes one request available, kicks the worker and reaps its
    /// completions until the request has a status, which it returns.
    fn request(&mut self, kind: u32, sector: u64, data: Data<'_>) -> u8 {
        let head = self.driver.offer(kind, sector, data);
        let (vring, mem) = (self.vring.clone(), self.mem.clone());
        self.worker.process_queue(&vring, &mem, false);
        let deadline = Instant::now() + DEADLINE;
        while self.driver.status(head) == 0xff && Instant::now() < deadline {
            self.worker.process_completions();
            std::thread::yield_now();
        }
        self.driver.status(head)
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

#[test]
fn a_failed_flush_fails_every_later_flush_until_the_volume_is_reopened() {
    // Two queues of one volume. Queue `a` flushes an fd the kernel cannot
    // fdatasync (an eventfd: the io_uring fsync fails), standing in for a
    // disk whose write-back failed; queue `b` flushes the volume's file,
    // where fdatasync succeeds, as it does after the kernel dropped the
    // pages it could not write back. Before the fix `b` went on reporting
    // durable flushes.
    let dir = tempfile::tempdir().expect("temp dir");
    let backing = Arc::new(Backing::open(&image(&dir), false).expect("backing"));
    let unsyncable = EventFd::new(0).expect("eventfd");
    let mut a = queue_of(&backing, [backing.fds()[0], unsyncable.as_raw_fd()], false);
    let mut b = queue_of(&backing, backing.fds(), false);
    assert_eq!(b.request(T_FLUSH, 0, Data::None), VIRTIO_BLK_S_OK);

    assert_eq!(a.request(T_FLUSH, 0, Data::None), VIRTIO_BLK_S_IOERR);
    assert_eq!(a.metrics.io_errors.get(), 1, "the kernel's error");
    assert!(backing.write_back_failed());
    for _ in 0..2 {
        assert_eq!(b.request(T_FLUSH, 0, Data::None), VIRTIO_BLK_S_IOERR);
    }
    assert_eq!(
        b.metrics.faults[Fault::WriteBackError.index()].get(),
        2,
        "counted per refused flush"
    );
    assert_eq!(b.metrics.submitted.get(), 1, "not sent to the kernel");

    // Exported again (the daemon restarted or the export was re-created):
    // the file is opened anew and its flushes are trusted again.
    drop((a, b, backing));
    let reopened = Arc::new(Backing::open(&image(&dir), false).expect("backing"));
    let mut c = queue_of(&reopened, reopened.fds(), false);
    assert_eq!(c.request(T_FLUSH, 0, Data::None), VIRTIO_BLK_S_OK);
}

/// A discard / write-zeroes segment as the guest lays it out.
fn segment(sector: u64, num_sectors: u32, flags: u32) -> [u8; 16] {
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&sector.to_le_bytes());
    seg[8..12].copy_from_slice(&num_sectors.to_le_bytes());
    seg[12..16].copy_from_slice(&flags.to_le_bytes());
    seg
}

#[test]
fn discards_beyond_the_advertised_limits_fail_and_are_counted() {
    let mut f = fixture(false);
    let too_long = segment(0, request::MAX_DISCARD_SECTORS + 1, 0);
    assert_eq!(
        f.request(T_DISCARD, 0, Data::Out(&too_long)),
        VIRTIO_BLK_S_IOERR
    );
    let mut two = [0u8; 32];
    two[..16].copy_from_slice(&segment(0, 8, 0));
    two[16..].copy_from_slice(&segment(8, 8, 0));
    assert_eq!(
        f.request(T_WRITE_ZEROES, 0, Data::Out(&two)),
        VIRTIO_BLK_S_IOERR
    );
    assert_eq!(f.metrics.faults[Fault::TooLarge.index()].get(), 2);
    assert_eq!(f.metrics.submitted.get(), 0, "nothing reached the file");
    // Within the limits.
    assert_eq!(
        f.request(T_DISCARD, 0, Data::Out(&segment(0, 8, 0))),
        VIRTIO_BLK_S_OK
    );
}

#[test]
fn write_zeroes_pays_for_its_bytes_in_the_bandwidth_bucket() {
    // 4 KiB/s with a 4 KiB burst: a 4 KiB write-zeroes empties the bucket
    // and the read after it waits. Before, write-zeroes cost no bytes and
    // the read went through.
    let mut f = fixture(false);
    f.qos.set(crate::api::types::Qos {
        bytes_per_sec: Some(4096),
        bytes_burst: Some(4096),
        ..Default::default()
    });
    let zeroes = segment(0, 8, 0);
    assert_eq!(
        f.request(T_WRITE_ZEROES, 0, Data::Out(&zeroes)),
        VIRTIO_BLK_S_OK
    );
    let head = f.driver.offer(T_IN, 0, Data::In(512));
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    f.worker.process_queue(&vring, &mem, false);
    assert_eq!(f.metrics.throttled.get(), 1, "the read waits for tokens");
    assert_eq!(f.driver.status(head), 0xff);
}

#[test]
fn a_head_offered_again_while_in_flight_is_used_once() {
    // It used to go back at once (used length 0) and again when its I/O
    // completed: two used entries for one head.
    let mut f = fixture(false);
    let head = f.driver.offer(T_OUT, 0, Data::Out(&[7u8; 512]));
    f.driver.offer_again(head);
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    f.worker.process_queue(&vring, &mem, false);
    let deadline = Instant::now() + DEADLINE;
    while f.driver.status(head) == 0xff && Instant::now() < deadline {
        f.worker.process_completions();
        std::thread::yield_now();
    }
    assert_eq!(f.driver.status(head), VIRTIO_BLK_S_OK);
    assert_eq!(f.driver.used_idx(), 1, "one used entry for the head");
    assert_eq!(f.metrics.faults[Fault::MalformedChain.index()].get(), 1);
}

#[test]
fn the_queues_of_an_export_share_its_limits() {
    // Each queue's worker kept buckets of its own, so a guest that spread
    // its I/O over four queues got four times the export's limit.
    let dir = tempfile::tempdir().expect("temp dir");
    let backing = Arc::new(Backing::open(&image(&dir), false).expect("backing"));
    let mut a = queue_of(&backing, backing.fds(), false);
    let mut b = queue_with_qos(&backing, backing.fds(), false, Arc::clone(&a.qos));
    a.qos.set(crate::api::types::Qos {
        iops: Some(1),
        iops_burst: Some(2),
        ..Default::default()
    });
    assert_eq!(a.request(T_IN, 0, Data::In(512)), VIRTIO_BLK_S_OK);
    assert_eq!(b.request(T_IN, 0, Data::In(512)), VIRTIO_BLK_S_OK);
    // The burst of two is spent, whichever queue asks next.
    for f in [&mut a, &mut b] {
        let head = f.driver.offer(T_IN, 0, Data::In(512));
        let (vring, mem) = (f.vring.clone(), f.mem.clone());
        f.worker.process_queue(&vring, &mem, false);
        assert_eq!(f.metrics.throttled.get(), 1, "the read waits for tokens");
        assert_eq!(f.driver.status(head), 0xff);
    }
}

#[test]
fn discard_pays_one_iop() {
    let mut f = fixture(false);
    f.qos.set(crate::api::types::Qos {
        iops: Some(1),
        iops_burst: Some(1),
        ..Default::default()
    });
    let discard = segment(0, 8, 0);
    assert_eq!(
        f.request(T_DISCARD, 0, Data::Out(&discard)),
        VIRTIO_BLK_S_OK
    );
    let head = f.driver.offer(T_IN, 0, Data::In(512));
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    f.worker.process_queue(&vring, &mem, false);
    assert_eq!(f.metrics.throttled.get(), 1, "the IOP went to the discard");
    assert_eq!(f.driver.status(head), 0xff);
}

/// The id of the calling thread.
fn thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = link.file_name().expect("PID/task/TID").to_string_lossy();
    tid.parse().expect("a thread id")
}

/// Whether thread `tid` of this process is asleep (blocked on a lock).
fn sleeping(tid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'))
}

#[test]
fn a_request_is_served_with_the_memory_table_it_was_made_available_with() {
    // A frontend maps a buffer (ADD_MEM_REG, acknowledged) before it makes
    // a request that uses it available. A worker woken earlier that took
    // the memory table and then waited (for the vring lock here, for the
    // CPU under load) found the request when it read the available index,
    // and served it from the old table: outside_memory, IOERR. That was the
    // `libblkio write failed (errno 5)` of block_bad_guest under load.
    let mut f = fixture(false);
    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    let held = vring.get_mut();
    let (tid_tx, tid_rx) = mpsc::channel();
    let mut worker = f.worker;
    let (wvring, wmem) = (vring.clone(), mem.clone());
    let thread = std::thread::spawn(move || {
        tid_tx.send(thread_id()).expect("send the thread id");
        worker.process_queue(&wvring, &wmem, false);
        worker
    });
    let tid = tid_rx.recv().expect("the worker's thread id");
    let deadline = Instant::now() + DEADLINE;
    while !sleeping(tid) {
        assert!(Instant::now() < deadline, "the worker never waited");
        std::thread::yield_now();
    }

    // The frontend adds a region and makes a read into it available.
    let base = MEM_LEN as u64;
    let region = GuestRegionMmap::from_range(GuestAddress(base), 0x1_0000, None).expect("region");
    let grown = mem
        .memory()
        .insert_region(Arc::new(region))
        .expect("insert region");
    mem.lock().expect("memory lock").replace(grown);
    let head = f.driver.offer(T_IN, 0, Data::InAt(base, 4096));
    drop(held);

    f.worker = thread.join().expect("worker thread");
    let deadline = Instant::now() + DEADLINE;
    while f.driver.status(head) == 0xff && Instant::now() < deadline {
        f.worker.process_completions();
        std::thread::yield_now();
    }
    assert_eq!(f.driver.status(head), VIRTIO_BLK_S_OK);
    assert_eq!(f.metrics.faults[Fault::OutsideMemory.index()].get(), 0);
}

/// Whether `fd` is readable now (as the queue thread's level-triggered
/// epoll would see it).
fn readable(fd: RawFd) -> bool {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let epoll = Epoll::new().expect("epoll");
    epoll
        .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
        .expect("epoll_ctl");
    let mut events = [EpollEvent::default()];
    epoll.wait(0, &mut events).expect("epoll_wait") > 0
}

#[test]
fn a_completion_event_without_a_vring_is_cleared() {
    // After a connection ends the worker forgets its vring; a completion
    // event left raised (a completion that came between clearing the
    // eventfd and reaping) woke the next connection's queue thread again
    // and again, level-triggered, until the guest's first kick, because
    // the event was cleared only when there was a vring to complete into.
    let mut f = fixture(false);
    f.worker.reset();
    let nop = io_uring::opcode::Nop::new().build().user_data(u64::MAX);
    // SAFETY: a NOP reads and writes no memory.
    unsafe { f.worker.ring.push(&nop) }.expect("push a NOP");
    f.worker.ring.submit_and_wait(1).expect("submit the NOP");
    assert!(
        readable(f.worker.eventfd()),
        "the completion raised the event"
    );

    f.worker.process_completions();
    assert!(!readable(f.worker.eventfd()), "the event is cleared");
}

/// An inflight area for the fixture's queue, as the frontend hands it
/// back, and the region a crashed backend left in it.
fn inflight_area() -> (Arc<InflightArea>, QueueInflight) {
    let max = (1, QUEUE_SIZE);
    let (file, message) = InflightArea::create(1, QUEUE_SIZE, max).expect("create");
    let area = InflightArea::open(&message, &file, max).expect("open");
    let previous = area.queue(0).expect("queue 0");
    (area, previous)
}

/// The head of the used ring's entry `index`.
fn used_head(f: &Fixture, index: u64) -> u32 {
    f.mem
        .memory()
        .read_obj(GuestAddress(USED + 4 + 8 * index))
        .expect("used element")
}

#[test]
fn requests_left_in_flight_are_resubmitted_before_new_ones() {
    let mut f = fixture(false);
    let (area, mut previous) = inflight_area();
    // The previous backend took two requests, in this order, and died.
    // GET_ID requests complete as they are started, so the used ring
    // shows the order in which they were.
    let first = f.driver.offer(T_GET_ID, 0, Data::In(20));
    let second = f.driver.offer(T_GET_ID, 0, Data::In(20));
    previous.mark(second);
    previous.mark(first);
    // The frontend restarts the ring at its used index (0); the guest
    // makes a third request available meanwhile.
    let third = f.driver.offer(T_GET_ID, 0, Data::In(20));
    f.worker.set_inflight(area.queue(0));

    let (vring, mem) = (f.vring.clone(), f.mem.clone());
    f.worker.process_queue(&vring, &mem, false);
    let deadline = Instant::now() + DEADLINE;
    while f.driver.used_idx() < 3 && Instant::now() < deadline {
        f.worker.process_completions();
        std::thread::yield_now();
    }
    assert_eq!(f.driver.used_idx(), 3, "each request once, none twice");
    for head in [first, second, third] {
        assert_eq!(f.driver.status(head), VIRTIO_BLK_S_OK);
    }
    // The resubmitted ones go first, in the order the previous backend
    // took them.
    let order: Vec<u32> = (0..3).map(|i| used_head(&f, i)).collect();
    assert_eq!(
        order,
        [u32::from(second), u32::from(first), u32::from(third)]
    );
    // Nothing is left in flight for the next restart.
    let mut next = area.queue(0).expect("queue 0");
    let mut resubmit = Vec::new();
    assert_eq!(next.recover(QUEUE_SIZE, 3, &mut resubmit), Ok(3));
    assert!(resubmit.is_empty());
}

#[test]
fn a_garbled_inflight_region_stops_the_queue() {
    let mut f = fixture(false);
    let (area, previous) = inflight_area();
    // The frontend wrote 7 in head 5's inflight flag (0 or 1 are valid).
    previous.set_flag(5, 7);
    let head = f.driver.offer(T_IN, 0, Data::In(512));
    f.worker.set_inflight(area.queue(0));
    let f = f.process_queue_within_deadline(false);
    assert!(f.worker.guard.is_broken());
    assert_eq!(f.metrics.broken_rings[RingFault::Inflight.index()].get(), 1);
    assert_eq!(f.driver.status(head), 0xff, "nothing taken from the ring");
}

#[test]
fn a_head_outside_the_ring_is_not_marked_in_flight() {
    // The area is for 32-entry queues (the frontend's queue size), the
    // ring has 16 (what the guest set up). A guest's avail entry of 20
    // is refused without a used element; marked, it would stay in flight
    // for good and make the next recovery fail.
    let mut f = fixture(false);
    let max = (1, 2 * QUEUE_SIZE);
    let (file, message) = InflightArea::create(1, 2 * QUEUE_SIZE, max).expect("create");
    let area = InflightArea::open(&message, &file, max).expect("open");
    f.worker.set_inflight(area.queue(0));
    let avail = crate::vhost_blk::fake_driver::AVAIL;
    f.mem
        .memory()
        .write_obj(20u16, GuestAddress(avail + 4))
        .expect("avail entry");
    f.set_avail_idx(1);
    let mut f = f.process_queue_within_deadline(false);
    f.worker.drain();

    let mut next = area.queue(0).expect("queue 0");
    let mut resubmit = Vec::new();
    let used = f.driver.used_idx();
    assert_eq!(next.recover(QUEUE_SIZE, used, &mut resubmit), Ok(used));
    assert!(resubmit.is_empty());
}

/// A worker whose writes all fail with ENOSPC: its ring does I/O on
/// `/dev/full` (kept open in the returned file).
fn full_fixture() -> (Fixture, std::fs::File) {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().expect("temp dir");
    let backing = Arc::new(Backing::open(&image(&dir), false).expect("backing"));
    let full = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut f = queue_of(&backing, [full.as_raw_fd(); 2], false);
    f._dir = Some(dir);
    (f, full)
}

impl Fixture {
    /// Makes a 512-byte write available and reaps until the worker holds
    /// `held` requests for space; returns its head.
    fn write_until_held(&mut self, held: u64) -> u16 {
        let head = self.driver.offer(T_OUT, 0, Data::Out(&[0x5a; 512]));
        let (vring, mem) = (self.vring.clone(), self.mem.clone());
        self.worker.process_queue(&vring, &mem, false);
        let deadline = Instant::now() + DEADLINE;
        while self.metrics.no_space_held.load(Ordering::Relaxed) < held && Instant::now() < deadline
        {
            self.worker.process_completions();
            std::thread::yield_now();
        }
        assert_eq!(self.metrics.no_space_held.load(Ordering::Relaxed), held);
        head
    }
}

#[test]
fn a_write_without_space_is_held_and_retried_not_failed() {
    // Before the hold, the write completed at once with IOERR.
    let (mut f, _full) = full_fixture();
    let head = f.write_until_held(1);
    assert_eq!(f.driver.status(head), 0xff, "not completed");
    assert_eq!(f.driver.used_idx(), 0);
    assert_eq!(f.metrics.io_errors.get(), 0);
    assert_ne!(f.metrics.no_space_since.load(Ordering::Relaxed), 0);

    // The timer fires a second later; the retry fails again and the
    // write is held again, still not completed.
    let armed = Instant::now();
    f.worker.clear_timer();
    assert!(
        armed.elapsed() >= Duration::from_millis(500),
        "rate-limited"
    );
    f.worker.retry_held();
    let deadline = Instant::now() + DEADLINE;
    assert_eq!(f.metrics.no_space_retries.get(), 1, "retried once");
    while f.worker.ring.in_flight() > 0 && Instant::now() < deadline {
        f.worker.process_completions();
        std::thread::yield_now();
    }
    assert_eq!(f.worker.held, [head], "held again");
    assert_eq!(f.metrics.no_space_held.load(Ordering::Relaxed), 1);
    assert_eq!(f.metrics.no_space_holds.get(), 1, "one request held");
    assert_eq!(f.driver.status(head), 0xff);

    // The frontend stops the queue and tracks no inflight I/O: the write
    // fails rather than hanging GET_VRING_BASE.
    f.worker.stop();
    assert_eq!(f.driver.status(head), VIRTIO_BLK_S_IOERR);
    assert_eq!(f.driver.used_idx(), 1);
    assert_eq!(f.metrics.no_space_held.load(Ordering::Relaxed), 0);
    assert_eq!(f.metrics.no_space_since.load(Ordering::Relaxed), 0);
    let m = MetricsSnapshot::sum([&*f.metrics]);
    assert_eq!(m.in_flight, 0);
}

#[test]
fn held_writes_stay_in_flight_when_a_tracked_queue_stops() {
    let (mut f, _full) = full_fixture();
    let (area, _) = inflight_area();
    f.worker.set_inflight(area.queue(0));
    let head = f.write_until_held(1);

    // GET_VRING_BASE returns at once; the write is neither completed nor
    // forgotten: the region still has it in flight, for the frontend to
    // hand back when it starts the queue again.
    f.worker.stop();
    assert_eq!(f.driver.status(head), 0xff);
    assert_eq!(f.driver.used_idx(), 0);
    assert_eq!(f.metrics.no_space_held.load(Ordering::Relaxed), 0);
    let mut next = area.queue(0).expect("queue 0");
    let mut resubmit = Vec::new();
    assert_eq!(next.recover(QUEUE_SIZE, 0, &mut resubmit), Ok(1));
    assert_eq!(resubmit, [head]);
}
