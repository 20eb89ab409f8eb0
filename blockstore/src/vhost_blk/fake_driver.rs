//! A guest driver for tests: a split virtqueue in fake guest memory, set up
//! the way vhost-user-backend sets up a vring, and requests laid out the way
//! Linux's virtio-blk driver lays them out (header, data, status byte).

use vhost_user_backend::{VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

type Memory = GuestMemoryMmap<()>;

pub(crate) const QUEUE_SIZE: u16 = 16;
pub(crate) const DESC: u64 = 0x0;
pub(crate) const AVAIL: u64 = 0x1000;
pub(crate) const USED: u64 = 0x2000;
pub(crate) const MEM_LEN: usize = 0x10_0000;
/// Where the buffers of request `n` start; each request has `REQ_STRIDE`
/// bytes: header at 0, data at `DATA`, status byte at `STATUS`.
const REQ_BASE: u64 = 0x1_0000;
const REQ_STRIDE: u64 = 0x4000;
const DATA: u64 = 0x1000;
const STATUS: u64 = 0x3000;
/// Requests in flight at most (three descriptors each).
const SLOTS: u16 = QUEUE_SIZE / 3;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The data part of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Data<'a> {
    /// Nothing between header and status (FLUSH).
    None,
    /// Bytes the device reads (a write's data, discard segments).
    Out(&'a [u8]),
    /// Bytes the device writes (a read's data).
    In(u32),
    /// Bytes the device writes, in a buffer at a guest address of the
    /// caller's choosing.
    InAt(u64, u32),
}

/// A guest driver on one ready split virtqueue.
pub(crate) struct FakeDriver {
    pub(crate) mem: GuestMemoryAtomic<Memory>,
    pub(crate) vring: VringRwLock<GuestMemoryAtomic<Memory>>,
    avail_idx: u16,
}

impl FakeDriver {
    /// A ready queue of [`QUEUE_SIZE`] entries with nothing available yet.
    pub(crate) fn new(event_idx: bool) -> Self {
        let memory = Memory::from_ranges(&[(GuestAddress(0), MEM_LEN)]).expect("guest memory");
        let mem = GuestMemoryAtomic::new(memory);
        let vring = VringRwLock::new(mem.clone(), QUEUE_SIZE).expect("vring");
        vring.set_queue_size(QUEUE_SIZE);
        vring
            .set_queue_info(DESC, AVAIL, USED)
            .expect("ring addresses");
        vring.set_queue_event_idx(event_idx);
        vring.set_queue_ready(true);
        FakeDriver {
            mem,
            vring,
            avail_idx: 0,
        }
    }

    /// Writes the available index the device reads.
    pub(crate) fn set_avail_idx(&self, idx: u16) {
        self.mem
            .memory()
            .write_obj(idx, GuestAddress(AVAIL + 2))
            .expect("avail idx");
    }

    /// Makes a request of type `kind` at `sector` available and returns
    /// its head descriptor. The status byte starts at 0xff (none yet).
    pub(crate) fn offer(&mut self, kind: u32, sector: u64, data: Data<'_>) -> u16 {
        let n = self.avail_idx % SLOTS;
        let head = n * 3;
        let base = REQ_BASE + u64::from(n) * REQ_STRIDE;
        let mem = self.mem.memory();
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&header, GuestAddress(base))
            .expect("header");
        mem.write_obj(0xffu8, GuestAddress(base + STATUS))
            .expect("status");
        let mut descs = vec![(base, 16u32, 0u16)];
        match data {
            Data::None => {}
            Data::Out(bytes) => {
                mem.write_slice(bytes, GuestAddress(base + DATA))
                    .expect("data");
                descs.push((base + DATA, bytes.len() as u32, 0));
            }
            Data::In(len) => descs.push((base + DATA, len, F_WRITE)),
            Data::InAt(addr, len) => descs.push((addr, len, F_WRITE)),
        }
        descs.push((base + STATUS, 1, F_WRITE));
        let last = descs.len() - 1;
        for (i, (addr, len, flags)) in descs.into_iter().enumerate() {
            let index = head + i as u16;
            let (flags, next) = if i == last {
                (flags, 0)
            } else {
                (flags | F_NEXT, index + 1)
            };
            let at = DESC + u64::from(index) * 16;
            mem.write_obj(addr, GuestAddress(at)).expect("desc addr");
            mem.write_obj(len, GuestAddress(at + 8)).expect("desc len");
            mem.write_obj(flags, GuestAddress(at + 12))
                .expect("desc flags");
            mem.write_obj(next, GuestAddress(at + 14))
                .expect("desc next");
        }
        let slot = AVAIL + 4 + u64::from(self.avail_idx % QUEUE_SIZE) * 2;
        mem.write_obj(head, GuestAddress(slot)).expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
        head
    }

    /// Makes the chain at `head` available once more (a driver that
    /// reuses a head still in flight).
    pub(crate) fn offer_again(&mut self, head: u16) {
        let mem = self.mem.memory();
        let slot = AVAIL + 4 + u64::from(self.avail_idx % QUEUE_SIZE) * 2;
        mem.write_obj(head, GuestAddress(slot)).expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// The status byte of the request whose head is `head` (0xff: not
    /// completed).
    pub(crate) fn status(&self, head: u16) -> u8 {
        let base = REQ_BASE + u64::from(head / 3) * REQ_STRIDE;
        self.mem
            .memory()
            .read_obj(GuestAddress(base + STATUS))
            .expect("status")
    }

    /// The device's used index.
    pub(crate) fn used_idx(&self) -> u16 {
        self.mem
            .memory()
            .read_obj(GuestAddress(USED + 2))
            .expect("used idx")
    }
}
