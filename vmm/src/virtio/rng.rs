//! virtio-rng in the VMM: one request queue whose writable buffers are
//! filled from getrandom(2) by a worker thread woken by the queue's
//! ioeventfd.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::intx::Worker;
use super::{
    ActivateError, Activation, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, QueueSetup, VirtioDevice,
    device_type,
};
use crate::memory::GuestMemory;

/// Queue size offered.
const QUEUE_SIZE: u16 = 256;
/// Largest chunk filled per descriptor.
const CHUNK: usize = 4096;

#[derive(Debug, Default)]
struct Counters {
    notifications: AtomicU64,
    interrupts: AtomicU64,
    bytes: AtomicU64,
    bad_requests: AtomicU64,
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

/// Serves every available request; returns whether the driver must be
/// interrupted.
fn serve(queue: &mut Queue, mem: &GuestMemory, counters: &Counters) -> bool {
    let mut used_any = false;
    let mut buf = vec![0u8; CHUNK];
    loop {
        if queue.disable_notification(mem).is_err() {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
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
                return used_any;
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
    used_any && queue.needs_notification(mem).unwrap_or(true)
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
        let worker = Worker::start("rng".to_owned(), vec![Arc::clone(&setup.kick)], move |_| {
            counters.notifications.fetch_add(1, Ordering::Relaxed);
            if serve(&mut queue, &mem, &counters) {
                counters.interrupts.fetch_add(1, Ordering::Relaxed);
                let _ = call.write(1);
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

    fn counters(&self) -> serde_json::Value {
        let c = &self.counters;
        json!({
            "notifications": c.notifications.load(Ordering::Relaxed),
            "interrupts": c.interrupts.load(Ordering::Relaxed),
            "bytes": c.bytes.load(Ordering::Relaxed),
            "bad_requests": c.bad_requests.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::memory;

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

    #[test]
    fn requests_are_filled_and_interrupt() {
        let ram = memory::create(16 << 20, false).unwrap();
        let mem = ram.memory.clone();
        let kick = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let call = Arc::new(EventFd::new(0).unwrap());
        let mut rng = Rng::new();
        rng.activate(Activation {
            ram,
            features: F_VERSION_1,
            queues: vec![QueueSetup {
                index: 0,
                size: 16,
                desc: 0x1000,
                avail: 0x2000,
                used: 0x3000,
                kick: kick.clone(),
                call: call.clone(),
            }],
        })
        .unwrap();
        post(&mem, 0, 0x10_0000, 64);
        kick.write(1).unwrap();
        assert_eq!(call.read().unwrap(), 1);
        let used_idx: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap();
        let used_len: u32 = mem.read_obj(GuestAddress(0x3008)).unwrap();
        assert_eq!((used_idx, used_len), (1, 64));
        let mut got = [0u8; 64];
        mem.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_ne!(got, [0u8; 64]);
        assert_eq!(rng.counters()["bytes"], 64);
        rng.reset();
    }
}
