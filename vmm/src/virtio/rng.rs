//! virtio-rng in the VMM: one request queue whose writable buffers are
//! filled from getrandom(2) by a worker thread woken by the queue's
//! ioeventfd. A queue the driver breaks (an available index more than the
//! ring ahead, a ring outside its memory) is stopped, counted, and reported
//! with DEVICE_NEEDS_RESET, never spun on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datapath::log_limit::LogLimit;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::intx::Worker;
use super::{
    ActivateError, Activation, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, QueueSetup, VirtioDevice,
    device_type,
};
use crate::api::types::{BackendCounters, RngCounters};
use crate::memory::GuestMemory;

/// Queue size offered.
const QUEUE_SIZE: u16 = 256;
/// Largest chunk filled per descriptor.
const CHUNK: usize = 4096;

/// Why the queue was stopped; each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RingFault {
    /// The available index is more than the queue size ahead of the next
    /// entry to take (virtio 1.x 2.7.6).
    AvailIndex,
    /// The available ring's index or an entry is outside guest memory.
    AvailRing,
}

impl RingFault {
    const ALL: [RingFault; 2] = [RingFault::AvailIndex, RingFault::AvailRing];

    fn reason(self) -> &'static str {
        match self {
            RingFault::AvailIndex => "avail_index",
            RingFault::AvailRing => "avail_ring",
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    notifications: AtomicU64,
    interrupts: AtomicU64,
    bytes: AtomicU64,
    bad_requests: AtomicU64,
    /// Times the driver broke the queue, by [`RingFault`].
    broken_rings: [AtomicU64; RingFault::ALL.len()],
    /// Broken queues are logged through this, at most once a second.
    broken_log: LogLimit,
}

impl Counters {
    /// Counts a broken queue and logs it, at most once a second.
    fn broken(&self, fault: RingFault) {
        self.broken_rings[fault as usize].fetch_add(1, Ordering::Relaxed);
        datapath::log_limited!(
            warn,
            limit: &self.broken_log,
                device = "rng",
                reason = fault.reason(),
                "Stopped the queue the driver broke until it resets the device \
                 (further ones are counted, logged at most once a second)"
        );
    }
}

/// The entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    worker: Option<Worker>,
    counters: Arc<Counters>,
}

impl Rng {
    pub fn new() -> Rng {
        Rng::default()
    }
}

/// Fills `buf` from the kernel's random pool.
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes
        // that lives across the call; getrandom(2) writes at most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += n as usize;
        }
    }
    Ok(())
}

/// How many requests wait in `queue`: at most a ring's worth, or the
/// driver broke it.
fn waiting(queue: &Queue, mem: &GuestMemory) -> Result<u16, RingFault> {
    let idx = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(|_| RingFault::AvailRing)?;
    let waiting = idx.0.wrapping_sub(queue.next_avail());
    if waiting > queue.size() {
        return Err(RingFault::AvailIndex);
    }
    Ok(waiting)
}

/// What serving the queue came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// Done; whether the driver must be interrupted.
    Done { interrupt: bool },
    /// The driver broke the queue: nothing more may be taken from it.
    Broken(RingFault),
}

/// Serves the requests the available index says wait, until none is left.
/// A ring that hands out fewer than its index says is broken: taking
/// "until empty" from it would go round forever (with EVENT_IDX, enabling
/// notifications keeps saying more is waiting).
fn serve(queue: &mut Queue, mem: &GuestMemory, counters: &Counters) -> Served {
    let mut used_any = false;
    let mut buf = vec![0u8; CHUNK];
    loop {
        if queue.disable_notification(mem).is_err() {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return Served::Done { interrupt: false };
        }
        let count = match waiting(queue, mem) {
            Ok(n) => n,
            Err(fault) => return Served::Broken(fault),
        };
        for _ in 0..count {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                // The index moved since, or an entry is outside memory.
                return Served::Broken(waiting(queue, mem).err().unwrap_or(RingFault::AvailRing));
            };
            let head = chain.head_index();
            let mut written: u32 = 0;
            for desc in chain.writable() {
                let len = (desc.len() as usize).min(CHUNK);
                if fill_random(&mut buf[..len]).is_err()
                    || mem
                        .write_slice(&buf[..len], GuestAddress(desc.addr().0))
                        .is_err()
                {
                    counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                written += len as u32;
            }
            counters
                .bytes
                .fetch_add(u64::from(written), Ordering::Relaxed);
            if queue.add_used(mem, head, written).is_err() {
                counters.bad_requests.fetch_add(1, Ordering::Relaxed);
                return Served::Done {
                    interrupt: used_any,
                };
            }
            used_any = true;
        }
        // Re-check after enabling notifications, so nothing slips between.
        match queue.enable_notification(mem) {
            Ok(false) => break,
            Ok(true) => {}
            Err(_) => break,
        }
    }
    Served::Done {
        interrupt: used_any && queue.needs_notification(mem).unwrap_or(true),
    }
}

fn make_queue(q: &QueueSetup, features: u64) -> Result<Queue, String> {
    let mut queue = Queue::new(QUEUE_SIZE).map_err(|e| e.to_string())?;
    queue.set_size(q.size);
    queue.set_desc_table_address(Some(q.desc as u32), Some((q.desc >> 32) as u32));
    queue.set_avail_ring_address(Some(q.avail as u32), Some((q.avail >> 32) as u32));
    queue.set_used_ring_address(Some(q.used as u32), Some((q.used >> 32) as u32));
    queue.set_event_idx(features & F_EVENT_IDX != 0);
    queue.set_ready(true);
    Ok(queue)
}

impl VirtioDevice for Rng {
    fn name(&self) -> &str {
        "rng"
    }

    fn device_type(&self) -> u16 {
        device_type::RNG
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let err = |message: String| ActivateError {
            device: "rng".to_owned(),
            message,
        };
        let setup = activation
            .queues
            .first()
            .ok_or_else(|| err("the driver enabled no queue".to_owned()))?;
        let mut queue = make_queue(setup, activation.features).map_err(err)?;
        let mem = activation.ram.memory.clone();
        if !queue.is_valid(&mem) {
            return Err(err("the queue's rings are not in guest memory".to_owned()));
        }
        let call = Arc::clone(&setup.call);
        let counters = Arc::clone(&self.counters);
        let needs_reset = activation.needs_reset.clone();
        // Broken until the driver resets the device and sets the queue up
        // again (a new activation, a new worker).
        let mut broken = false;
        let worker = Worker::start("rng".to_owned(), vec![Arc::clone(&setup.kick)], move |_| {
            counters.notifications.fetch_add(1, Ordering::Relaxed);
            if broken {
                return;
            }
            match serve(&mut queue, &mem, &counters) {
                Served::Done { interrupt: true } => {
                    counters.interrupts.fetch_add(1, Ordering::Relaxed);
                    let _ = call.write(1);
                }
                Served::Done { interrupt: false } => {}
                Served::Broken(fault) => {
                    broken = true;
                    counters.broken(fault);
                    needs_reset.raise();
                }
            }
        })
        .map_err(|e| err(format!("cannot start the worker: {e}")))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }

    fn counters(&self) -> BackendCounters {
        let c = &self.counters;
        BackendCounters::Rng(RngCounters {
            notifications: c.notifications.load(Ordering::Relaxed),
            interrupts: c.interrupts.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            bad_requests: c.bad_requests.load(Ordering::Relaxed),
            broken_queues: RingFault::ALL
                .iter()
                .map(|f| {
                    let n = c.broken_rings[*f as usize].load(Ordering::Relaxed);
                    (f.reason().to_owned(), n)
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EventFd;

    use std::time::{Duration, Instant};

    use super::*;
    use crate::memory;
    use crate::virtio::NeedsReset;

    /// The device's counters as their JSON.
    fn counters(rng: &Rng) -> serde_json::Value {
        serde_json::to_value(rng.counters()).unwrap()
    }

    /// Puts a one-descriptor chain (writable, `len` bytes at `buf`) in a
    /// split ring at 0x1000 (descriptors), 0x2000 (avail), 0x3000 (used).
    fn post(mem: &GuestMemory, slot: u16, buf: u64, len: u32) {
        let d = 0x1000 + u64::from(slot) * 16;
        mem.write_obj(buf, GuestAddress(d)).unwrap();
        mem.write_obj(len, GuestAddress(d + 8)).unwrap();
        mem.write_obj(2u16, GuestAddress(d + 12)).unwrap(); // WRITE
        mem.write_obj(slot, GuestAddress(0x2004 + u64::from(slot) * 2))
            .unwrap();
        mem.write_obj(slot + 1, GuestAddress(0x2002)).unwrap();
    }

    /// How long the worker may take to answer a kick.
    const DEADLINE: Duration = Duration::from_secs(10);

    struct Started {
        rng: Rng,
        ram: memory::GuestRam,
        mem: GuestMemory,
        kick: Arc<EventFd>,
        call: Arc<EventFd>,
        needs_reset: NeedsReset,
    }

    /// An rng whose driver accepted `features` and set up a 16-entry queue
    /// with nothing available yet.
    fn started(features: u64) -> Started {
        let ram = memory::create(16 << 20, false).unwrap();
        let mem = ram.memory.clone();
        let kick = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let call = Arc::new(EventFd::new(0).unwrap());
        let needs_reset = NeedsReset::new(Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let mut rng = Rng::new();
        rng.activate(Activation {
            ram: ram.clone(),
            features,
            queues: vec![QueueSetup {
                index: 0,
                size: 16,
                desc: 0x1000,
                avail: 0x2000,
                used: 0x3000,
                kick: kick.clone(),
                call: call.clone(),
            }],
            needs_reset: needs_reset.clone(),
        })
        .unwrap();
        Started {
            rng,
            ram,
            mem,
            kick,
            call,
            needs_reset,
        }
    }

    /// Polls `done` until it holds; panics after the deadline.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn requests_are_filled_and_interrupt() {
        let Started {
            mut rng,
            mem,
            kick,
            call,
            ..
        } = started(F_VERSION_1);
        post(&mem, 0, 0x10_0000, 64);
        kick.write(1).unwrap();
        assert_eq!(call.read().unwrap(), 1);
        let used_idx: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap();
        let used_len: u32 = mem.read_obj(GuestAddress(0x3008)).unwrap();
        assert_eq!((used_idx, used_len), (1, 64));
        let mut got = [0u8; 64];
        mem.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_ne!(got, [0u8; 64]);
        assert_eq!(counters(&rng)["bytes"], 64);
        rng.reset();
    }

    #[test]
    fn an_avail_index_more_than_a_ring_ahead_stops_the_queue_and_asks_for_a_reset() {
        // EVENT_IDX: the unchecked worker saw the index still ahead after
        // enabling notifications and went round forever, so the driver's
        // reset (which joins the worker) never returned.
        let Started {
            mut rng,
            mem,
            kick,
            needs_reset,
            ..
        } = started(F_VERSION_1 | F_EVENT_IDX);
        mem.write_obj(17u16, GuestAddress(0x2002)).unwrap();
        kick.write(1).unwrap();
        wait_for("DEVICE_NEEDS_RESET", || needs_reset.is_raised());
        assert_eq!(
            needs_reset.config_call().read().unwrap(),
            1,
            "one configuration change interrupt"
        );
        assert_eq!(counters(&rng)["broken_queues"]["avail_index"], 1);

        // More kicks take nothing and interrupt no more.
        kick.write(1).unwrap();
        wait_for("the second kick", || counters(&rng)["notifications"] == 2);
        assert_eq!(counters(&rng)["broken_queues"]["avail_index"], 1);
        assert!(
            needs_reset.config_call().read().is_err(),
            "no second interrupt"
        );
        assert_eq!(counters(&rng)["bytes"], 0);

        // The driver resets the device: the worker stops at once.
        let (done, stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            rng.reset();
            let _ = done.send(());
        });
        stopped
            .recv_timeout(DEADLINE)
            .expect("the reset did not return: the worker spins");
    }

    #[test]
    fn a_reset_device_serves_a_good_ring_again() {
        let mut s = started(F_VERSION_1 | F_EVENT_IDX);
        s.mem.write_obj(17u16, GuestAddress(0x2002)).unwrap();
        s.kick.write(1).unwrap();
        wait_for("DEVICE_NEEDS_RESET", || s.needs_reset.is_raised());
        s.rng.reset();
        s.needs_reset.clear();

        // The driver sets the ring up again (a clean one) and restarts it.
        s.mem.write_obj(0u16, GuestAddress(0x2002)).unwrap();
        s.rng
            .activate(Activation {
                ram: s.ram.clone(),
                features: F_VERSION_1 | F_EVENT_IDX,
                queues: vec![QueueSetup {
                    index: 0,
                    size: 16,
                    desc: 0x1000,
                    avail: 0x2000,
                    used: 0x3000,
                    kick: s.kick.clone(),
                    call: s.call.clone(),
                }],
                needs_reset: s.needs_reset.clone(),
            })
            .unwrap();
        post(&s.mem, 0, 0x10_0000, 32);
        s.kick.write(1).unwrap();
        wait_for("the request", || counters(&s.rng)["bytes"] == 32);
        assert!(!s.needs_reset.is_raised());
        s.rng.reset();
    }
}
