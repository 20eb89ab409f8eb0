//! The control object of a vhost-user-blk export: what the device offers,
//! its guest memory, and its queue workers. `vhost-user-backend` drives it
//! from the socket's message thread and one epoll thread per queue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use std::fs::File;

use vhost::vhost_user::Listener;
use vhost::vhost_user::message::{VhostUserInflight, VhostUserProtocolFeatures};
use vhost_user_backend::{ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use vmm_sys_util::timerfd::TimerFd;

use datapath::reactor::{AdaptivePoll, pin_current_thread};
use datapath::uring::{Ring, UringError};

use super::config::{self, BlkGeometry, CONFIG_LEN};
use super::inflight::{InflightArea, InflightError};
use super::metrics::{MetricsSnapshot, QueueMetrics};
use super::qos::QosShared;
use super::relay::Relay;
use super::worker::QueueWorker;
use crate::api::types::Qos;
use crate::backing::{Backing, BackingError};

type Memory = GuestMemoryMmap<()>;

/// The largest virtqueue a frontend may set up.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// The most queues an export may have.
pub const MAX_QUEUES: u16 = 16;

/// Errors creating or serving an export.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Backing(#[from] BackingError),
    #[error("An export needs 1 to {MAX_QUEUES} queues, not {0}")]
    Queues(u16),
    #[error("Block size must be 512 or 4096, not {0}")]
    BlockSize(u32),
    #[error("Cannot set up io_uring for queue {queue}")]
    Uring {
        queue: u16,
        #[source]
        source: UringError,
    },
    #[error("vhost-user on {}: {message}", socket.display())]
    VhostUser { socket: PathBuf, message: String },
    #[error("Cannot create the QoS timer")]
    Timer(#[source] std::io::Error),
    #[error("Cannot register the io_uring eventfd of queue {queue}")]
    Register {
        queue: usize,
        #[source]
        source: std::io::Error,
    },
}

/// How a volume is exported.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub num_queues: u16,
    pub read_only: bool,
    pub blk_size: u32,
    /// The serial number GET_ID returns (at most 20 bytes are used).
    pub serial: String,
    /// Busy-poll budget in µs after each event (0: sleep on eventfds only).
    pub poll_us: u32,
    /// CPUs to pin the queue threads to (queue i on `cpus[i % len]`); empty:
    /// not pinned.
    pub cpus: Vec<usize>,
    /// How long to wait for another holder of the volume's lock to let go
    /// (see [`Backing::open_waiting`]): zero for a request, which is
    /// answered at once, [`RESTART_LOCK_WAIT`] for an export brought back
    /// when blockd starts.
    pub lock_wait: Duration,
}

/// How long an export brought back at start waits for the volume's lock:
/// the blockd it replaces, killed a moment ago, keeps the file open (and
/// locked) until the kernel has reaped its io_uring requests in flight.
pub const RESTART_LOCK_WAIT: Duration = Duration::from_secs(10);

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            num_queues: 1,
            read_only: false,
            blk_size: 512,
            serial: String::new(),
            poll_us: crate::api::types::DEFAULT_POLL_US,
            cpus: Vec::new(),
            lock_wait: Duration::ZERO,
        }
    }
}

struct Inner {
    geometry: BlkGeometry,
    config_space: [u8; CONFIG_LEN],
    event_idx: AtomicBool,
    mem: RwLock<GuestMemoryAtomic<Memory>>,
    workers: Vec<Mutex<QueueWorker>>,
    metrics: Vec<Arc<QueueMetrics>>,
    backing: Arc<Backing>,
    qos: Arc<QosShared>,
    poll: AdaptivePoll,
    cpus: Vec<usize>,
}

/// A vhost-user-blk device exporting one backing store.
#[derive(Clone)]
pub struct BlkDevice {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkDevice")
            .field("geometry", &self.inner.geometry)
            .finish_non_exhaustive()
    }
}

impl BlkDevice {
    /// Opens `path` and prepares one worker (with its io_uring) per queue.
    pub fn new(path: &Path, options: &ExportOptions) -> Result<Self, DeviceError> {
        if options.num_queues == 0 || options.num_queues > MAX_QUEUES {
            return Err(DeviceError::Queues(options.num_queues));
        }
        if options.blk_size != 512 && options.blk_size != 4096 {
            return Err(DeviceError::BlockSize(options.blk_size));
        }
        let backing = Arc::new(Backing::open_waiting(
            path,
            options.read_only,
            options.lock_wait,
        )?);
        let geometry = BlkGeometry {
            capacity_bytes: backing.capacity(),
            blk_size: options.blk_size,
            num_queues: options.num_queues,
            read_only: options.read_only,
        };
        let mut serial = [0u8; 20];
        let bytes = options.serial.as_bytes();
        let n = bytes.len().min(serial.len());
        serial[..n].copy_from_slice(&bytes[..n]);
        let mut workers = Vec::new();
        let mut metrics = Vec::new();
        let qos = Arc::new(QosShared::default());
        for queue in 0..options.num_queues {
            let mut ring = Ring::new(u32::from(MAX_QUEUE_SIZE))
                .map_err(|source| DeviceError::Uring { queue, source })?;
            ring.register_files(&backing.fds())
                .map_err(|source| DeviceError::Uring { queue, source })?;
            let m = Arc::new(QueueMetrics::default());
            let timer = TimerFd::new().map_err(|e| DeviceError::Timer(e.into()))?;
            workers.push(Mutex::new(QueueWorker::new(
                ring,
                Arc::clone(&backing),
                serial,
                (MAX_QUEUE_SIZE, options.blk_size),
                Arc::clone(&m),
                Arc::clone(&qos),
                timer,
            )));
            metrics.push(m);
        }
        Ok(BlkDevice {
            inner: Arc::new(Inner {
                config_space: config::config_space(&geometry),
                geometry,
                event_idx: AtomicBool::new(false),
                mem: RwLock::new(GuestMemoryAtomic::new(GuestMemoryMmap::new())),
                workers,
                metrics,
                backing,
                qos,
                poll: AdaptivePoll::from_micros(options.poll_us),
                cpus: options.cpus.clone(),
            }),
        })
    }

    /// Sets the export's limits; its workers apply them from their next
    /// batch on, while the guest runs.
    pub fn set_qos(&self, qos: Qos) {
        self.inner.qos.set(qos);
    }

    /// The exported file or block device.
    pub fn image(&self) -> &Path {
        self.inner.backing.path()
    }

    /// What the guest sees.
    pub fn geometry(&self) -> BlkGeometry {
        self.inner.geometry
    }

    /// The volume's counters, summed over its queues.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot::sum(self.inner.metrics.iter().map(|m| &**m))
    }

    /// Whether a flush of the volume failed since it was exported: every
    /// flush fails from then on, until it is exported again.
    pub fn write_back_failed(&self) -> bool {
        self.inner.backing.write_back_failed()
    }

    /// The current connection's guest memory.
    fn mem(&self) -> GuestMemoryAtomic<Memory> {
        self.inner
            .mem
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn worker(&self, index: usize) -> Option<MutexGuard<'_, QueueWorker>> {
        self.inner
            .workers
            .get(index)
            .map(|w| w.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// GET_INFLIGHT_FD: a new inflight area of the shape the frontend asks
    /// for, and its description.
    pub(crate) fn get_inflight(
        &self,
        asked: &VhostUserInflight,
    ) -> Result<(File, VhostUserInflight), InflightError> {
        InflightArea::create(asked.num_queues, asked.queue_size, self.inflight_limits())
    }

    /// SET_INFLIGHT_FD: maps the area the frontend hands back and gives
    /// each queue its region, recovered when the queue starts.
    pub(crate) fn set_inflight(
        &self,
        area: &VhostUserInflight,
        file: &File,
    ) -> Result<(), InflightError> {
        let area = InflightArea::open(area, file, self.inflight_limits())?;
        for index in 0..self.inner.workers.len() {
            if let Some(mut w) = self.worker(index) {
                w.set_inflight(u16::try_from(index).ok().and_then(|i| area.queue(i)));
            }
        }
        Ok(())
    }

    /// The largest inflight area a frontend may set up: (queues, queue size).
    fn inflight_limits(&self) -> (u16, u16) {
        (self.inner.geometry.num_queues, MAX_QUEUE_SIZE)
    }

    /// Accepts one frontend on `listener` and serves it until it
    /// disconnects or `stop` is set; then drains what is still in flight.
    /// `active` holds the connection's shutdown handle while it is served.
    pub fn serve_connection(
        &self,
        listener: &mut Listener,
        stop: &AtomicBool,
        active: &Mutex<Option<ShutdownHandle>>,
    ) -> Result<(), DeviceError> {
        let vhost_err = |e: vhost_user_backend::Error| DeviceError::VhostUser {
            socket: PathBuf::new(),
            message: e.to_string(),
        };
        // Each connection starts with empty guest memory: a frontend that
        // adds regions one by one (CONFIGURE_MEM_SLOTS) must not find the
        // previous connection's.
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        *self
            .inner
            .mem
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mem.clone();
        let mut daemon =
            VhostUserDaemon::new("sfera-blk".to_owned(), self.clone(), mem).map_err(vhost_err)?;
        let num_queues = self.inner.workers.len();
        for (thread, handler) in daemon.get_epoll_handlers().iter().enumerate() {
            let fds = self.worker(thread).map(|w| (w.eventfd(), w.timer_fd()));
            if let Some((uring, timer)) = fds {
                let register = |fd, id: usize| {
                    handler
                        .register_listener(fd, EventSet::IN, id as u64)
                        .map_err(|source| DeviceError::Register {
                            queue: thread,
                            source,
                        })
                };
                register(uring, num_queues + 1 + thread)?;
                register(timer, 2 * num_queues + 1 + thread)?;
            }
        }
        // The connection goes through a relay that answers the inflight
        // messages (see relay.rs).
        let frontend = loop {
            match listener.accept() {
                Ok(Some(stream)) => break stream,
                Ok(None) => continue,
                Err(e) => {
                    return Err(vhost_err(vhost_user_backend::Error::CreateBackendListener(
                        e,
                    )));
                }
            }
        };
        let relay =
            Relay::start(frontend, &mut daemon, self).map_err(|e| DeviceError::VhostUser {
                socket: PathBuf::new(),
                message: format!("Cannot relay the connection: {e}"),
            })?;
        let handle = daemon.shutdown_handle();
        if stop.load(Ordering::Acquire) {
            daemon.request_shutdown();
        }
        *active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = handle;
        // A stop that came between the check and the store above sees
        // the handle now.
        if stop.load(Ordering::Acquire) {
            daemon.request_shutdown();
        }
        let result = daemon.wait();
        *active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let result = result.map_err(vhost_err);
        relay.finish();
        // Dropping the daemon stops its worker threads.
        drop(daemon);
        self.drain_all();
        match result {
            Err(DeviceError::VhostUser { message, .. })
                if message.contains("Disconnected")
                    || message.contains("PartialMessage")
                    || stop.load(Ordering::Acquire) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Completes everything in flight on every queue and forgets the
    /// connection's vrings.
    fn drain_all(&self) {
        for index in 0..self.inner.workers.len() {
            if let Some(mut w) = self.worker(index) {
                w.reset();
            }
        }
    }
}

impl VhostUserBackend for BlkDevice {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMemoryAtomic<Memory>>;

    fn num_queues(&self) -> usize {
        self.inner.workers.len()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(MAX_QUEUE_SIZE)
    }

    fn features(&self) -> u64 {
        config::features(&self.inner.geometry)
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        config::protocol_features()
    }

    fn reset_device(&self) {
        for index in 0..self.inner.workers.len() {
            if let Some(mut w) = self.worker(index) {
                // The frontend sets the rings up anew before using them.
                w.guard.clear();
            }
        }
    }

    fn set_event_idx(&self, enabled: bool) {
        self.inner.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let start = offset as usize;
        let end = start.saturating_add(size as usize);
        match self.inner.config_space.get(start..end) {
            Some(bytes) => bytes.to_vec(),
            // Out-of-range reads get zeroes rather than an error, as QEMU
            // reads the whole config struct it knows.
            None => {
                let mut v = vec![0u8; size as usize];
                if let Some(part) = self.inner.config_space.get(start.min(CONFIG_LEN)..) {
                    v[..part.len()].copy_from_slice(part);
                }
                v
            }
        }
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<Memory>) -> std::io::Result<()> {
        *self
            .inner
            .mem
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mem;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Without one, a worker thread never leaves its epoll loop and the
        // connection's teardown (which joins the threads) hangs. Each
        // connection asks for a fresh pair.
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::error!("Cannot create a worker exit event: {e}");
                None
            }
        }
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.inner.workers.len()).map(|q| 1u64 << q).collect()
    }

    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        if let Some(mut w) = self.worker(queue_index as usize) {
            w.stop();
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        thread_id: usize,
    ) -> std::io::Result<()> {
        let num_queues = self.inner.workers.len();
        let event = usize::from(device_event);
        let Some(mut worker) = self.worker(thread_id) else {
            return Ok(());
        };
        if !worker.pinned && !self.inner.cpus.is_empty() {
            worker.pinned = true;
            let cpu = self.inner.cpus[thread_id % self.inner.cpus.len()];
            if let Err(e) = pin_current_thread(cpu) {
                tracing::warn!(queue = thread_id, cpu, "Cannot pin the queue's thread: {e}");
            }
        }
        // `vrings` are this thread's own: one, the queue's (see
        // `queues_per_thread`), whatever the queue's index. Kick events are
        // numbered within the thread too.
        let own = vrings.first();
        if event < num_queues {
            if let Some(vring) = vrings.get(event) {
                let mem = self.mem();
                worker.process_queue(vring, &mem, self.inner.event_idx.load(Ordering::Relaxed));
            }
        } else if event == num_queues + 1 + thread_id {
            worker.process_completions();
        } else if event == 2 * num_queues + 1 + thread_id {
            // The queue's timer: the throttled queue may go on, and writes
            // held for space are due to be retried.
            worker.clear_timer();
            worker.retry_held();
            if let Some(vring) = own {
                let mem = self.mem();
                worker.process_queue(vring, &mem, self.inner.event_idx.load(Ordering::Relaxed));
            }
        }
        if self.inner.poll.enabled()
            && let Some(vring) = own
        {
            let mem = self.mem();
            let event_idx = self.inner.event_idx.load(Ordering::Relaxed);
            self.inner.poll.spin(|| worker.poll(vring, &mem, event_idx));
        }
        // Guest misbehaviour is answered per request; an error here would
        // stop the queue's thread, so there is none.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::vhost_blk::fake_driver::{Data, FakeDriver};

    const T_IN: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN;
    const S_OK: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK as u8;
    const QUEUES: u16 = 2;
    /// The queue under test: not the first, whose thread's vring list
    /// (one vring) is indexed the same by queue and by thread.
    const QUEUE: usize = 1;

    /// A two-queue export of a 1 MiB image, with queue 1's guest driver.
    fn export(poll_us: u32) -> (BlkDevice, FakeDriver, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
        let options = ExportOptions {
            num_queues: QUEUES,
            poll_us,
            ..ExportOptions::default()
        };
        let device = BlkDevice::new(&image, &options).expect("device");
        let driver = FakeDriver::new(false);
        device
            .update_memory(driver.mem.clone())
            .expect("guest memory");
        (device, driver, dir)
    }

    /// Delivers event `event` to queue 1's thread, as vhost-user-backend
    /// does: the thread's own vrings, thread index 1.
    fn event(device: &BlkDevice, driver: &FakeDriver, event: usize) {
        let vrings = [driver.vring.clone()];
        device
            .handle_event(event as u16, EventSet::IN, &vrings, QUEUE)
            .expect("handle_event");
    }

    /// Reaps completions until request `head` has its status (or the
    /// deadline passes, and returns what it has then).
    fn wait_status(device: &BlkDevice, driver: &FakeDriver, head: u16) -> u8 {
        let completions = usize::from(QUEUES) + 1 + QUEUE;
        let deadline = Instant::now() + Duration::from_secs(10);
        while driver.status(head) == 0xff && Instant::now() < deadline {
            event(device, driver, completions);
            std::thread::yield_now();
        }
        driver.status(head)
    }

    #[test]
    fn the_qos_timer_resumes_a_throttled_queue_other_than_the_first() {
        // Before the fix the timer looked up vrings[thread_id], which is
        // out of range for every queue but 0: queue 1 stayed throttled.
        let (device, mut driver, _dir) = export(0);
        device.set_qos(Qos {
            iops: Some(20),
            iops_burst: Some(1),
            ..Qos::default()
        });
        let first = driver.offer(T_IN, 0, Data::In(512));
        let second = driver.offer(T_IN, 1, Data::In(512));
        event(&device, &driver, 0);
        assert_eq!(wait_status(&device, &driver, first), S_OK);
        assert_eq!(driver.status(second), 0xff, "held back by QoS");
        assert_eq!(device.metrics().throttled, 1);

        // The timer fires (clearing it waits for that) and the queue goes on.
        event(&device, &driver, 2 * usize::from(QUEUES) + 1 + QUEUE);
        assert_eq!(wait_status(&device, &driver, second), S_OK);
        assert_eq!(driver.used_idx(), 2);
    }

    #[test]
    fn busy_polling_serves_a_queue_other_than_the_first() {
        // A request made available without a kick is found by the busy
        // poll that follows any event of the queue's thread. Before the
        // fix the poll looked up vrings[thread_id] and never ran for
        // queue 1.
        // The spin lasts a whole budget after its last find, so the read
        // completes within it unless the machine stalls the io_uring for
        // that long: 1 s, not 50 ms, which a loaded 2-core CI machine did.
        let (device, mut driver, _dir) = export(1_000_000);
        let head = driver.offer(T_IN, 0, Data::In(512));
        event(&device, &driver, usize::from(QUEUES) + 1 + QUEUE);
        assert_ne!(driver.status(head), 0xff, "the poll took the request");
        assert_eq!(wait_status(&device, &driver, head), S_OK);
    }
}
