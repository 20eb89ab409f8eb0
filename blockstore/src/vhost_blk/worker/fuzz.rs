//! The body of the `blk_worker` fuzz target (blockstore/fuzz): one
//! [`QueueWorker`] on a small file, driven by a script the way
//! vhost-user-backend's queue thread and the frontend drive it (kicks,
//! busy-poll rounds, SET_VRING_BASE, SET_VRING_ADDR, GET_VRING_BASE) while
//! the guest rewrites its memory in between, as a running guest may.
//!
//! Unlike `blk_request`, this reaches the worker's notification loop
//! (disable, take what the index says waits, re-enable, go round again),
//! the broken-ring stop ([`super::super::broken`]), real io_uring reads
//! and writes into guest memory and their completion into the used ring.
//! A worker that spins on a ring the guest broke is a libFuzzer timeout.
//!
//! Input layout (missing bytes read as zero; integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | flags: bit 0 EVENT_IDX |
//! | 1 | script length (at most [`MAX_SCRIPT`]; 0: a default script) |
//! | n | script: opcodes (`OP_*`, low 3 bits) with their arguments |
//! | rest | image, written at the start of guest memory |
//!
//! The queue starts with its descriptor table at 0, its available ring at
//! [`AVAIL`] and its used ring at [`USED`] (the layout of the
//! `blk_request` target), ready, nothing taken.

use std::cell::RefCell;

use vm_memory::GuestMemoryMmap;

use super::*;

/// Guest memory size.
pub const MEM_LEN: usize = 0x1_0000;
/// Entries in the queue.
pub const QUEUE_SIZE: u16 = 16;
/// Where the available ring starts.
pub const AVAIL: u64 = 0x100;
/// Where the used ring starts.
pub const USED: u64 = 0x200;
/// The backing file's size: requests past it are refused.
const DISK_LEN: usize = 0x1_0000;
/// Most script bytes.
pub const MAX_SCRIPT: usize = 48;

/// A kick: `process_queue`, as the queue thread runs it on the eventfd.
pub const OP_KICK: u8 = 0;
/// One busy-poll round (`poll`).
pub const OP_POLL: u8 = 1;
/// The guest writes the next u16 of the script as its available index.
pub const OP_AVAIL_IDX: u8 = 2;
/// The guest writes a u16 (the script's next) at byte 2 × (the u16 after
/// it) of its memory.
pub const OP_POKE: u8 = 3;
/// SET_VRING_BASE: the next u16 is the next available index to take.
pub const OP_SET_BASE: u8 = 4;
/// SET_VRING_ADDR: descriptor table, available ring and used ring at
/// 16 × each of the next three u16s (anywhere in, or past, memory).
pub const OP_SET_ADDR: u8 = 5;
/// GET_VRING_BASE: the queue stops (in-flight I/O drained), then starts.
pub const OP_STOP: u8 = 6;
/// Wait for in-flight I/O and complete it into the used ring.
pub const OP_DRAIN: u8 = 7;

/// The script run when the input has none: kick, then poll twice.
const DEFAULT_SCRIPT: [u8; 3] = [OP_KICK, OP_POLL, OP_POLL];

/// A worker and its backing file, made once per fuzzing process: an
/// io_uring and a file per input would cost more than the input.
struct Rig {
    worker: QueueWorker,
    metrics: Arc<QueueMetrics>,
}

thread_local! {
    static RIG: RefCell<Option<Rig>> = const { RefCell::new(None) };
}

fn rig() -> Rig {
    // One rig per thread (unit tests run in parallel threads of one
    // process): the name carries both ids, or two threads would write,
    // open and remove the same file.
    static RIGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RIGS.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("sfera-blk-worker-fuzz-{}-{n}", std::process::id()));
    std::fs::write(&path, vec![0u8; DISK_LEN]).expect("the fuzz disk image can be written");
    let backing = Backing::open(&path, false).expect("the fuzz disk image opens");
    // The worker keeps its descriptors; the name is not needed any more.
    let _ = std::fs::remove_file(&path);
    let backing = Arc::new(backing);
    let mut ring = Ring::new(64).expect("io_uring is available");
    ring.register_files(&backing.fds())
        .expect("the disk's descriptors register");
    let metrics = Arc::new(QueueMetrics::default());
    let worker = QueueWorker::new(
        ring,
        backing,
        *b"sfera-fuzz-serial-01",
        (QUEUE_SIZE, 512),
        Arc::clone(&metrics),
        Arc::new(QosShared::default()),
        TimerFd::new().expect("a timerfd can be made"),
    );
    Rig { worker, metrics }
}

/// Runs the script in `data` against the worker; returns how many
/// requests it served. Must never panic,
/// hang or touch memory outside the guest's.
pub fn queue_worker(data: &[u8]) -> u64 {
    RIG.with(|rig_cell| {
        let mut slot = rig_cell.borrow_mut();
        let rig = slot.get_or_insert_with(rig);
        let before = served(&rig.metrics);
        run(&mut rig.worker, data);
        // Nothing may stay in flight into memory about to be unmapped, and
        // the next input starts on a clean connection.
        rig.worker.reset();
        served(&rig.metrics) - before
    })
}

/// Requests served so far, of every kind.
fn served(m: &QueueMetrics) -> u64 {
    [
        &m.reads,
        &m.writes,
        &m.flushes,
        &m.discards,
        &m.write_zeroes,
        &m.get_ids,
    ]
    .iter()
    .map(|c| c.get())
    .sum()
}

fn run(worker: &mut QueueWorker, data: &[u8]) {
    let mut input = Reader(data);
    let flags = input.u8();
    let script_len = usize::from(input.u8()).min(MAX_SCRIPT);
    let script = input.take(script_len);
    let image = input.0;
    let script = if script.is_empty() {
        &DEFAULT_SCRIPT[..]
    } else {
        script
    };
    let event_idx = flags & 1 != 0;

    let Ok(memory) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_LEN)]) else {
        return;
    };
    let n = image.len().min(MEM_LEN);
    if memory.write_slice(&image[..n], GuestAddress(0)).is_err() {
        return;
    }
    let mem = GuestMemoryAtomic::new(memory);
    let Ok(vring) = VringRwLock::new(mem.clone(), QUEUE_SIZE) else {
        return;
    };
    vring.set_queue_size(QUEUE_SIZE);
    if vring.set_queue_info(0, AVAIL, USED).is_err() {
        return;
    }
    vring.set_queue_event_idx(event_idx);
    vring.set_queue_ready(true);

    let mut ops = Reader(script);
    while !ops.0.is_empty() {
        let op = ops.u8();
        match op & 7 {
            OP_KICK => worker.process_queue(&vring, &mem, event_idx),
            OP_POLL => {
                worker.poll(&vring, &mem, event_idx);
            }
            OP_AVAIL_IDX => {
                let idx = ops.u16();
                let _ = mem.memory().write_obj(idx, GuestAddress(AVAIL + 2));
            }
            OP_POKE => {
                let value = ops.u16();
                let at = u64::from(ops.u16()) * 2;
                let _ = mem.memory().write_obj(value, GuestAddress(at));
            }
            OP_SET_BASE => vring.set_queue_next_avail(ops.u16()),
            OP_SET_ADDR => {
                let (desc, avail, used) = (ops.u16(), ops.u16(), ops.u16());
                // The frontend stops the queue before it moves the rings.
                worker.stop();
                let _ = vring.set_queue_info(
                    u64::from(desc) * 16,
                    u64::from(avail) * 16,
                    u64::from(used) * 16,
                );
            }
            OP_STOP => worker.stop(),
            _ => worker.drain(),
        }
    }
}

/// Reads the input front to back; past its end, zeros.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
}

/// Seed inputs for the fuzz target, and the unit tests that keep the body
/// running in `make test`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A guest image with `n` well-formed requests of `kind` (0 read,
    /// 1 write, 4 flush, 8 get-id) available, 512 bytes each from sector
    /// `i`.
    pub(crate) fn image_with_requests(kind: u32, n: u16) -> Vec<u8> {
        let mut image = vec![0u8; 0x4000];
        let desc = |image: &mut Vec<u8>, i: u16, addr: u64, len: u32, flags: u16, next: u16| {
            let at = usize::from(i) * 16;
            image[at..at + 8].copy_from_slice(&addr.to_le_bytes());
            image[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
            image[at + 12..at + 14].copy_from_slice(&flags.to_le_bytes());
            image[at + 14..at + 16].copy_from_slice(&next.to_le_bytes());
        };
        for r in 0..n {
            let (d, hdr, data, status) = (
                r * 3,
                0x800 + u64::from(r) * 16,
                0x1000 + u64::from(r) * 512,
                0x3000 + u64::from(r),
            );
            // Reads and GET_ID write into the data buffer.
            let data_flags = if kind == 1 { 1 } else { 3 };
            desc(&mut image, d, hdr, 16, 1, d + 1);
            desc(&mut image, d + 1, data, 512, data_flags, d + 2);
            desc(&mut image, d + 2, status, 1, 2, 0);
            let h = usize::try_from(hdr).expect("small");
            image[h..h + 4].copy_from_slice(&kind.to_le_bytes());
            image[h + 8..h + 16].copy_from_slice(&u64::from(r).to_le_bytes());
            let ring = usize::try_from(AVAIL).expect("small") + 4 + usize::from(r) * 2;
            image[ring..ring + 2].copy_from_slice(&d.to_le_bytes());
        }
        let idx = usize::try_from(AVAIL).expect("small") + 2;
        image[idx..idx + 2].copy_from_slice(&n.to_le_bytes());
        image
    }

    pub(crate) fn input(flags: u8, script: &[u8], image: &[u8]) -> Vec<u8> {
        let mut input = vec![flags, u8::try_from(script.len()).expect("short script")];
        input.extend_from_slice(script);
        input.extend_from_slice(image);
        input
    }

    /// The seeds written to blockstore/fuzz/corpus/blk_worker.
    pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("reads_event_idx", input(1, &[], &image_with_requests(0, 4))),
            ("writes", input(0, &[], &image_with_requests(1, 4))),
            (
                "flush_get_id",
                input(1, &[OP_KICK, OP_DRAIN], &image_with_requests(8, 2)),
            ),
            (
                "avail_index_broken_then_reset",
                input(
                    1,
                    &[
                        OP_AVAIL_IDX,
                        17,
                        0,
                        OP_KICK,
                        OP_SET_BASE,
                        17,
                        0,
                        OP_KICK,
                        OP_STOP,
                        OP_POLL,
                    ],
                    &image_with_requests(0, 2),
                ),
            ),
            (
                "rings_moved",
                input(
                    1,
                    &[OP_SET_ADDR, 0, 0, 0x10, 0, 0x20, 0, OP_KICK, OP_POLL],
                    &image_with_requests(1, 3),
                ),
            ),
        ]
    }

    #[test]
    fn well_formed_requests_are_served() {
        for (kind, event_idx) in [(0, 1), (1, 0), (8, 1)] {
            let done = queue_worker(&input(
                event_idx,
                &[OP_KICK, OP_DRAIN],
                &image_with_requests(kind, 4),
            ));
            assert!(done >= 4, "kind {kind}: {done} requests went through");
        }
    }

    #[test]
    fn seeds_and_their_mutations_run() {
        for (_, seed) in seeds() {
            let _ = queue_worker(&seed);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = seeds();
        for i in 0..400 {
            let mut input = seeds[i % seeds.len()].1.clone();
            for _ in 0..(next() % 6 + 1) {
                let at = usize::try_from(next() % 0x3400).expect("small") % input.len();
                input[at] = next() as u8;
            }
            let _ = queue_worker(&input);
        }
    }

    /// What the fuzzer found in seconds, from an empty corpus, against the
    /// worker before the broken-ring stop (5901cdd): SET_VRING_BASE 0x801
    /// with the guest's index at 0, then a kick with EVENT_IDX. The old
    /// loop took nothing, re-enabled notifications, saw work waiting and
    /// went round forever.
    #[test]
    fn next_avail_far_from_the_index_does_not_spin() {
        let input = include_bytes!(
            "../../../fuzz/artifacts/blk_worker/timeout-spin-before-broken-ring-stop"
        );
        let (done, returned) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(queue_worker(input));
        });
        let served = returned
            .recv_timeout(Duration::from_secs(10))
            .expect("the worker returns on a broken ring");
        assert_eq!(served, 0);
    }

    /// The committed seed corpora of blk_worker and blk_request are the
    /// ones this code makes (`make fuzz-seeds` writes them).
    #[test]
    fn committed_seeds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        datapath::seed_corpus::check(&dir.join("blk_worker"), seeds());
        // blk_request reads the same ring layout after one flags byte
        // (bits 2-7: the disk's size in 512 KiB units).
        let requests =
            [("read", 0), ("write", 1), ("flush", 4), ("get_id", 8)].map(|(name, kind)| {
                let mut seed = vec![0xfc];
                seed.extend(image_with_requests(kind, 3));
                (name, seed)
            });
        datapath::seed_corpus::check(&dir.join("blk_request"), requests);
    }
}
