//! A raw vhost-user frontend for protocol tests: it plays a guest that
//! writes whatever descriptors it likes, including malformed ones, into a
//! split virtqueue in shared memory, through the `vhost` crate's frontend
//! (the same protocol code a VMM uses).
//!
//! Memory: one memfd region at guest address 0; queue `q` has its
//! descriptor table at `q * 0x3000`, its available ring 0x1000 and its used
//! ring 0x2000 after that; from 0x10000 on, the memory is for buffers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result};

/// Size of the shared guest memory.
pub const MEM_SIZE: u64 = 1 << 20;
/// Ring size.
pub const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

/// Descriptor flags.
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// One descriptor to place.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    /// Index of the next descriptor, when `flags` has [`F_NEXT`].
    pub next: u16,
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::CommandFailed {
        command: format!("vhost-user frontend: {what}"),
        status: "failed".to_owned(),
        stderr: e.to_string(),
    }
}

/// What a frontend does with the inflight area while it connects.
pub type InflightSetup<'a> = &'a dyn Fn(&mut Frontend) -> Result<()>;

/// Where buffers may start (after the rings of up to four queues).
pub const BUFFERS: u64 = 0x1_0000;

struct QueueState {
    kick: EventFd,
    _call: EventFd,
    avail_idx: u16,
}

fn ring_base(queue: usize) -> u64 {
    queue as u64 * 0x3000
}

/// A connected frontend with its queues.
pub struct RawFrontend {
    frontend: Frontend,
    mem: *mut u8,
    memfd: OwnedFd,
    queues: Vec<QueueState>,
}

impl std::fmt::Debug for RawFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFrontend")
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

impl RawFrontend {
    /// Connects to a vhost-user-blk backend on `socket`, shares the memory
    /// and starts queue 0 (no EVENT_IDX, no indirect descriptors).
    pub fn connect(socket: &Path) -> Result<Self> {
        Self::connect_queues(socket, 1, 1 << 32)
    }

    /// Connects, acks `features` (and the protocol-features bit when the
    /// backend offers it) and starts queues `0..num_queues` (at most 4).
    pub fn connect_queues(socket: &Path, num_queues: usize, features: u64) -> Result<Self> {
        Self::open(socket, num_queues, features, None)
    }

    /// Connects one queue as [`RawFrontend::connect_queues`] does, with
    /// inflight I/O tracking (and REPLY_ACK) negotiated: `inflight` sets
    /// the area up (GET_INFLIGHT_FD, SET_INFLIGHT_FD, as it likes) before
    /// the memory table and the ring, where a VMM does.
    pub fn connect_inflight(
        socket: &Path,
        features: u64,
        inflight: InflightSetup<'_>,
    ) -> Result<Self> {
        Self::open(socket, 1, features, Some(inflight))
    }

    fn open(
        socket: &Path,
        num_queues: usize,
        features: u64,
        inflight: Option<InflightSetup<'_>>,
    ) -> Result<Self> {
        assert!((1..=4).contains(&num_queues), "1 to 4 queues");
        // SAFETY: memfd_create with a NUL-terminated name; the result is
        // checked and owned below.
        let fd = unsafe { libc::memfd_create(c"sfera-raw-frontend".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(err("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by no
        // one else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on the memfd we own.
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), MEM_SIZE as libc::off_t) } != 0 {
            return Err(err("ftruncate", std::io::Error::last_os_error()));
        }
        // SAFETY: a new shared mapping of the whole memfd; it is unmapped in
        // Drop and only accessed within MEM_SIZE.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(err("mmap", std::io::Error::last_os_error()));
        }
        let mem = mem.cast::<u8>();
        let mut frontend =
            Frontend::connect(socket, num_queues as u64).map_err(|e| err("connect", e))?;
        frontend.set_owner().map_err(|e| err("SET_OWNER", e))?;
        let offered = frontend
            .get_features()
            .map_err(|e| err("GET_FEATURES", e))?;
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let has_protocol = offered & protocol_bit != 0;
        frontend
            .set_features(offered & (features | protocol_bit))
            .map_err(|e| err("SET_FEATURES", e))?;
        if has_protocol {
            let protocol = frontend
                .get_protocol_features()
                .map_err(|e| err("GET_PROTOCOL_FEATURES", e))?;
            let mut wanted = VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ;
            if inflight.is_some() {
                wanted |= VhostUserProtocolFeatures::INFLIGHT_SHMFD
                    | VhostUserProtocolFeatures::REPLY_ACK;
            }
            frontend
                .set_protocol_features(protocol & wanted)
                .map_err(|e| err("SET_PROTOCOL_FEATURES", e))?;
        }
        if let Some(inflight) = inflight {
            inflight(&mut frontend)?;
        }
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEM_SIZE,
            userspace_addr: mem as u64,
            mmap_offset: 0,
            mmap_handle: memfd.as_raw_fd(),
        };
        frontend
            .set_mem_table(&[region])
            .map_err(|e| err("SET_MEM_TABLE", e))?;
        let base = mem as u64;
        let mut queues = Vec::new();
        for q in 0..num_queues {
            let kick = EventFd::new(0).map_err(|e| err("eventfd", e))?;
            let call = EventFd::new(0).map_err(|e| err("eventfd", e))?;
            let rings = base + ring_base(q);
            frontend
                .set_vring_num(q, QUEUE_SIZE)
                .map_err(|e| err("SET_VRING_NUM", e))?;
            frontend
                .set_vring_addr(
                    q,
                    &VringConfigData {
                        queue_max_size: QUEUE_SIZE,
                        queue_size: QUEUE_SIZE,
                        flags: 0,
                        desc_table_addr: rings + DESC,
                        used_ring_addr: rings + USED,
                        avail_ring_addr: rings + AVAIL,
                        log_addr: None,
                    },
                )
                .map_err(|e| err("SET_VRING_ADDR", e))?;
            frontend
                .set_vring_base(q, 0)
                .map_err(|e| err("SET_VRING_BASE", e))?;
            frontend
                .set_vring_call(q, &call)
                .map_err(|e| err("SET_VRING_CALL", e))?;
            frontend
                .set_vring_kick(q, &kick)
                .map_err(|e| err("SET_VRING_KICK", e))?;
            if has_protocol {
                frontend
                    .set_vring_enable(q, true)
                    .map_err(|e| err("SET_VRING_ENABLE", e))?;
            }
            queues.push(QueueState {
                kick,
                _call: call,
                avail_idx: 0,
            });
        }
        // Messages without a reply are not acknowledged: a request with a
        // reply makes sure the backend has processed all of the above before
        // the first kick (a kick on a not yet enabled ring is dropped).
        frontend
            .get_features()
            .map_err(|e| err("GET_FEATURES", e))?;
        Ok(RawFrontend {
            frontend,
            mem,
            memfd,
            queues,
        })
    }

    /// Writes `bytes` at guest address `gpa`.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) {
        assert!(
            gpa + bytes.len() as u64 <= MEM_SIZE,
            "write outside the test memory"
        );
        // The backend may access the memory concurrently, as a device does
        // guest RAM: tests only touch buffers the backend does not own now.
        // SAFETY: the range is inside the live MEM_SIZE mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.add(gpa as usize), bytes.len());
        };
    }

    /// Reads `len` bytes at guest address `gpa`.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        assert!(gpa + len as u64 <= MEM_SIZE, "read outside the test memory");
        let mut out = vec![0u8; len];
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.mem.add(gpa as usize), out.as_mut_ptr(), len) };
        out
    }

    /// Writes descriptor `index` of queue 0.
    pub fn set_desc(&mut self, index: u16, d: Desc) {
        self.set_desc_q(0, index, d);
    }

    /// Writes descriptor `index` of queue `q`.
    pub fn set_desc_q(&mut self, q: usize, index: u16, d: Desc) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        self.write(ring_base(q) + DESC + u64::from(index) * 16, &b);
    }

    /// Offers the chain starting at `head` on queue 0 and kicks.
    pub fn offer(&mut self, head: u16) -> Result<()> {
        self.offer_q(0, head)
    }

    /// Offers the chain starting at `head` on queue `q` and kicks.
    pub fn offer_q(&mut self, q: usize, head: u16) -> Result<()> {
        let avail = ring_base(q) + AVAIL;
        let idx = self.queues[q].avail_idx;
        self.write(
            avail + 4 + u64::from(idx % QUEUE_SIZE) * 2,
            &head.to_le_bytes(),
        );
        let idx = idx.wrapping_add(1);
        self.queues[q].avail_idx = idx;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.write(avail + 2, &idx.to_le_bytes());
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.queues[q].kick.write(1).map_err(|e| err("kick", e))
    }

    /// Sets queue `q`'s available index to `idx` as it is, whatever the
    /// ring holds (a broken or hostile driver), and kicks.
    pub fn set_avail_idx_q(&mut self, q: usize, idx: u16) -> Result<()> {
        self.write(ring_base(q) + AVAIL + 2, &idx.to_le_bytes());
        self.queues[q].avail_idx = idx;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.queues[q].kick.write(1).map_err(|e| err("kick", e))
    }

    /// Queue 0's used index.
    pub fn used_idx(&self) -> u16 {
        self.used_idx_q(0)
    }

    /// Queue `q`'s used index.
    pub fn used_idx_q(&self, q: usize) -> u16 {
        let b = self.read(ring_base(q) + USED + 2, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    /// Used element `n` of queue 0: descriptor id and length.
    pub fn used_elem(&self, n: u16) -> (u32, u32) {
        self.used_elem_q(0, n)
    }

    /// Used element `n` (counting from 0) of queue `q`.
    pub fn used_elem_q(&self, q: usize, n: u16) -> (u32, u32) {
        let at = ring_base(q) + USED + 4 + u64::from(n % QUEUE_SIZE) * 8;
        let b = self.read(at, 8);
        (
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        )
    }

    /// Waits until queue 0's used index reaches `idx`.
    pub fn wait_used(&self, idx: u16, timeout: Duration) -> Result<()> {
        self.wait_used_q(0, idx, timeout)
    }

    /// Waits until queue `q`'s used index reaches `idx`.
    pub fn wait_used_q(&self, q: usize, idx: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.used_idx_q(q) != idx {
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("used index {idx} (at {})", self.used_idx_q(q)),
                    timeout,
                    context: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Stops queue `q` with GET_VRING_BASE (as a VMM does to stop, reset or
    /// migrate a VM) and returns the backend's next available index; fails
    /// when no answer comes within `timeout` (a wedged backend).
    pub fn get_vring_base_within(&self, q: usize, timeout: Duration) -> Result<u32> {
        let frontend = self.frontend.clone();
        let (answer, answered) = std::sync::mpsc::channel();
        // The protocol call blocks; a thread lets the test give up on it.
        std::thread::spawn(move || {
            let _ = answer.send(frontend.get_vring_base(q));
        });
        match answered.recv_timeout(timeout) {
            Ok(reply) => reply.map_err(|e| err("GET_VRING_BASE", e)),
            Err(_) => Err(Error::Timeout {
                what: format!("an answer to GET_VRING_BASE on queue {q}"),
                timeout,
                context: String::new(),
            }),
        }
    }

    /// The frontend, for further protocol messages.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    /// The guest memory mapped a second time, for another thread to write
    /// while this frontend goes on: a second vCPU of the guest.
    pub fn second_vcpu(&self) -> Result<SecondVcpu> {
        // The mapping keeps the memory alive; `SecondVcpu` unmaps it in
        // Drop and only accesses it within MEM_SIZE.
        // SAFETY: a new shared mapping of the memfd this frontend owns.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.memfd.as_raw_fd(),
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(err("mmap", std::io::Error::last_os_error()));
        }
        Ok(SecondVcpu {
            mem: mem.cast::<u8>(),
        })
    }
}

/// A frontend's guest memory as a second vCPU of the guest sees it: its
/// own mapping, written from any thread while the backend and the
/// frontend use the memory.
#[derive(Debug)]
pub struct SecondVcpu {
    mem: *mut u8,
}

// The memory is shared with other processes anyway: a thread that owns
// the value may write it.
// SAFETY: the mapping belongs to this value alone (unmapped in Drop).
unsafe impl Send for SecondVcpu {}

impl SecondVcpu {
    /// Writes `bytes` at guest address `gpa` one byte at a time, as plain
    /// stores of a CPU land: a reader meanwhile may see any mix of the old
    /// and new bytes.
    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        assert!(
            gpa + bytes.len() as u64 <= MEM_SIZE,
            "write outside the test memory"
        );
        for (i, b) in bytes.iter().enumerate() {
            // The backend reads these bytes concurrently, as a device
            // does guest RAM a vCPU writes: volatile, byte-sized stores.
            // SAFETY: inside the live MEM_SIZE mapping (checked above).
            unsafe { std::ptr::write_volatile(self.mem.add(gpa as usize + i), *b) };
        }
    }
}

impl Drop for SecondVcpu {
    fn drop(&mut self) {
        // Nothing uses the mapping after this.
        // SAFETY: unmapping the mapping made in `second_vcpu`.
        unsafe {
            libc::munmap(self.mem.cast(), MEM_SIZE as usize);
        }
    }
}

impl Drop for RawFrontend {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `connect`, which nothing
        // uses after this.
        unsafe {
            libc::munmap(self.mem.cast(), MEM_SIZE as usize);
        }
    }
}
