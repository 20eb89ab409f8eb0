//! The device side of a split virtqueue (virtio 1.2, 2.7), run by the
//! forwarding worker on rings in guest memory mapped by [`GuestMemory`].
//!
//! Everything the guest wrote is untrusted: the available index may claim
//! more than the ring holds, a descriptor may point outside memory, loop,
//! or have the wrong direction. Each such fault is a [`ChainError`] for the
//! chain at hand; the ring itself never trusts an index without masking it
//! and never forms a Rust reference into guest memory (bytes are read and
//! written by volatile access or raw copy).

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use super::mem::GuestMemory;

/// Most descriptors in one chain that the switch follows.
pub const MAX_SEGS: usize = 64;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// Where a ring's three parts are, in the frontend's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
}

/// Errors setting up a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("Queue size {0} is not a power of two in 1..=32768")]
    BadSize(u16),
    #[error("Ring part {0} is outside guest memory or misaligned")]
    BadAddress(&'static str),
}

/// Why a descriptor chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// A descriptor index beyond the ring, or a chain longer than the ring.
    BadIndex,
    /// A buffer outside guest memory.
    OutsideMemory,
    /// A buffer of the wrong direction (device-writable on transmit, or
    /// readable on receive).
    WrongDirection,
    /// Indirect descriptors were not offered.
    Indirect,
    /// More than [`MAX_SEGS`] buffers.
    TooLong,
}

/// One guest buffer, translated.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    pub ptr: *mut u8,
    pub len: u32,
}

impl Default for Seg {
    fn default() -> Self {
        Seg {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }
}

/// A descriptor chain, translated into buffers.
#[derive(Debug)]
pub struct Chain {
    pub head: u16,
    pub segs: [Seg; MAX_SEGS],
    pub n: usize,
    pub len: u64,
}

// SAFETY: a chain's pointers are only followed while the ring it came
// from (and with it the guest memory) is held by the same worker thread;
// between bursts the chain is scratch space whose old values are never
// read.
unsafe impl Send for Chain {}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            head: 0,
            segs: [Seg::default(); MAX_SEGS],
            n: 0,
            len: 0,
        }
    }
}

impl Chain {
    /// The translated buffers.
    pub fn segs(&self) -> &[Seg] {
        &self.segs[..self.n]
    }
}

/// A running split ring, as the worker holds it.
#[derive(Debug)]
pub struct SplitRing {
    mem: Arc<GuestMemory>,
    desc: *const u8,
    avail: *mut u8,
    used: *mut u8,
    size: u16,
    /// Next available entry to take.
    pub last_avail: u16,
    /// The guest's available index when last read.
    avail_seen: u16,
    /// Next used entry to fill (published by [`SplitRing::flush_used`]).
    used_idx: u16,
    /// Used index when the guest was last considered for a notification.
    signalled_used: u16,
    event_idx: bool,
    call: Option<Arc<File>>,
    /// The guest claimed more available entries than the ring holds.
    pub broken: bool,
}

// SAFETY: the raw pointers point into `mem`, which the ring keeps alive
// through its Arc; only the one worker thread that owns the ring uses it.
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// A ring at `addrs` in `mem`, resuming at index `base`.
    pub fn new(
        mem: Arc<GuestMemory>,
        addrs: RingAddrs,
        base: u16,
        event_idx: bool,
        call: Option<Arc<File>>,
    ) -> Result<Self, RingError> {
        let size = addrs.size;
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(RingError::BadSize(size));
        }
        let n = u64::from(size);
        let part = |uva: u64, len: u64, align: u64, what: &'static str| {
            if !uva.is_multiple_of(align) {
                return Err(RingError::BadAddress(what));
            }
            // The part is accessed by aligned loads and stores where it is
            // mapped here, which the frontend's address does not settle: a
            // region's `user_addr` or `mmap_offset` may be unaligned.
            mem.translate_uva(uva, len)
                .filter(|p| (*p as usize).is_multiple_of(align as usize))
                .ok_or(RingError::BadAddress(what))
        };
        let desc = part(addrs.desc, 16 * n, 16, "descriptor table")?;
        let avail = part(addrs.avail, 6 + 2 * n, 2, "available ring")?;
        let used = part(addrs.used, 6 + 8 * n, 4, "used ring")?;
        Ok(SplitRing {
            mem,
            desc,
            avail,
            used,
            size,
            last_avail: base,
            avail_seen: base,
            used_idx: base,
            signalled_used: base,
            event_idx,
            call,
            broken: false,
        })
    }

    /// The ring's size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The memory the ring's buffers live in.
    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    #[inline]
    fn read_u16(base: *const u8, off: usize) -> u16 {
        // Callers pass header fields, or ring entries with a masked index.
        // SAFETY: such offsets lie in the part translated in `new`, 2-aligned.
        u16::from_le(unsafe { std::ptr::read_volatile(base.add(off).cast::<u16>()) })
    }

    #[inline]
    fn write_u16(base: *mut u8, off: usize, v: u16) {
        // SAFETY: as in `read_u16`.
        unsafe { std::ptr::write_volatile(base.add(off).cast::<u16>(), v.to_le()) }
    }

    /// Reads the guest's available index; returns how many entries wait
    /// (none once the ring is [`broken`](SplitRing::broken)).
    #[inline]
    pub fn refresh(&mut self) -> u16 {
        if self.broken {
            // Whatever the guest writes now: `pop` takes nothing more, and
            // a caller that refreshes until `pop` yields must not spin.
            return 0;
        }
        let idx = Self::read_u16(self.avail, 2);
        // The entries and descriptors behind the index are read after it.
        fence(Ordering::Acquire);
        let pending = idx.wrapping_sub(self.last_avail);
        if pending > self.size {
            // A guest bug or an attack: stop taking from this ring.
            self.broken = true;
            return 0;
        }
        self.avail_seen = idx;
        pending
    }

    /// Entries known to wait without reading the guest's index again.
    #[inline]
    pub fn pending(&self) -> u16 {
        self.avail_seen.wrapping_sub(self.last_avail)
    }

    /// Takes the next available chain into `chain`, translating each
    /// buffer; `writable` is the direction the device needs. Returns None
    /// when none is known to wait (call [`SplitRing::refresh`]). A chain
    /// that fails is consumed all the same: its head is in `chain.head`,
    /// and the caller returns it as used.
    #[inline]
    pub fn pop(&mut self, chain: &mut Chain, writable: bool) -> Option<Result<(), ChainError>> {
        if self.broken || self.avail_seen == self.last_avail {
            return None;
        }
        let mask = usize::from(self.size - 1);
        let head = Self::read_u16(self.avail, 4 + 2 * (usize::from(self.last_avail) & mask));
        self.last_avail = self.last_avail.wrapping_add(1);
        chain.head = head;
        chain.n = 0;
        chain.len = 0;
        Some(self.walk(head, chain, writable))
    }

    /// Asks the CPU to start fetching the first two cache lines of the
    /// first buffer of the chain `ahead` entries after the next one
    /// [`SplitRing::pop`] takes, if the guest has made it available. The
    /// guest wrote those bytes on another core: fetched a few frames ahead,
    /// their cache misses overlap the work on the frames before them
    /// instead of stalling the copy of each frame's head in turn.
    ///
    /// Only a hint: it reads the ring as `pop` would, without taking
    /// anything, and a bad index or address is simply not prefetched
    /// (`pop` reports it when it gets there).
    #[inline]
    pub fn prefetch(&self, ahead: u16) {
        if self.broken || self.pending() <= ahead {
            return;
        }
        let mask = usize::from(self.size - 1);
        let at = usize::from(self.last_avail.wrapping_add(ahead)) & mask;
        let head = Self::read_u16(self.avail, 4 + 2 * at);
        if head >= self.size {
            return;
        }
        // SAFETY: `head < size`: the descriptor lies in the table
        // translated in `new` (16-aligned).
        let (addr, len) = unsafe {
            let d = self.desc.add(16 * usize::from(head));
            (
                u64::from_le(std::ptr::read_volatile(d.cast::<u64>())),
                u32::from_le(std::ptr::read_volatile(d.add(8).cast::<u32>())),
            )
        };
        let len = u64::from(len).min(PREFETCH_BYTES);
        if len == 0 {
            return;
        }
        if let Some(ptr) = self.mem.translate(addr, len) {
            prefetch_lines(ptr, len as usize);
        }
    }

    fn walk(&self, head: u16, chain: &mut Chain, writable: bool) -> Result<(), ChainError> {
        let mut idx = head;
        let mut count = 0u32;
        loop {
            if idx >= self.size {
                return Err(ChainError::BadIndex);
            }
            count += 1;
            if count > u32::from(self.size) {
                return Err(ChainError::BadIndex);
            }
            // Empty descriptors count too: a chain of thousands would
            // cost every other port on the worker its share of time.
            if count > 2 * MAX_SEGS as u32 {
                return Err(ChainError::TooLong);
            }
            let at = 16 * usize::from(idx);
            // SAFETY: `idx < size`, so the 16-byte descriptor lies in the
            // table translated in `new` (16-aligned).
            let (addr, len, flags, next) = unsafe {
                let d = self.desc.add(at);
                (
                    u64::from_le(std::ptr::read_volatile(d.cast::<u64>())),
                    u32::from_le(std::ptr::read_volatile(d.add(8).cast::<u32>())),
                    u16::from_le(std::ptr::read_volatile(d.add(12).cast::<u16>())),
                    u16::from_le(std::ptr::read_volatile(d.add(14).cast::<u16>())),
                )
            };
            if flags & DESC_F_INDIRECT != 0 {
                return Err(ChainError::Indirect);
            }
            if (flags & DESC_F_WRITE != 0) != writable {
                return Err(ChainError::WrongDirection);
            }
            if len > 0 {
                let ptr = self
                    .mem
                    .translate(addr, u64::from(len))
                    .ok_or(ChainError::OutsideMemory)?;
                if chain.n == MAX_SEGS {
                    return Err(ChainError::TooLong);
                }
                chain.segs[chain.n] = Seg { ptr, len };
                chain.n += 1;
                chain.len += u64::from(len);
            }
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            idx = next;
        }
    }

    /// Gives back the last `n` chains taken (not yet returned as used).
    pub fn unpop(&mut self, n: u16) {
        self.last_avail = self.last_avail.wrapping_sub(n);
    }

    /// Returns a chain to the guest with `len` bytes written.
    #[inline]
    pub fn push_used(&mut self, head: u16, len: u32) {
        let mask = usize::from(self.size - 1);
        let at = 4 + 8 * (usize::from(self.used_idx) & mask);
        // SAFETY: the masked entry lies in the used ring translated in
        // `new` (4-aligned, 8-byte entries).
        unsafe {
            let e = self.used.add(at);
            std::ptr::write_volatile(e.cast::<u32>(), u32::from(head).to_le());
            std::ptr::write_volatile(e.add(4).cast::<u32>(), len.to_le());
        }
        self.used_idx = self.used_idx.wrapping_add(1);
    }

    /// Publishes the used entries pushed since the last flush.
    #[inline]
    pub fn flush_used(&mut self) {
        // Entries (and the buffers they describe) before the index.
        fence(Ordering::Release);
        Self::write_u16(self.used, 2, self.used_idx);
    }

    /// Signals the guest if used entries were published since the last
    /// call and its notification rules ask for it.
    pub fn notify(&mut self) {
        if self.used_idx == self.signalled_used {
            return;
        }
        // The used index is visible before the guest's suppression
        // fields are read.
        fence(Ordering::SeqCst);
        let old = self.signalled_used;
        let new = self.used_idx;
        self.signalled_used = new;
        let needed = if self.event_idx {
            let event = Self::read_u16(self.avail, 4 + 2 * usize::from(self.size));
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            Self::read_u16(self.avail, 0) & AVAIL_F_NO_INTERRUPT == 0
        };
        if needed && let Some(call) = &self.call {
            let _ = (&**call).write(&1u64.to_ne_bytes());
        }
    }

    /// Asks the guest not to kick: the worker is polling.
    pub fn suppress_kicks(&mut self) {
        if self.event_idx {
            // An index behind anything the guest will publish.
            let at = 4 + 8 * usize::from(self.size);
            Self::write_u16(self.used, at, self.last_avail.wrapping_sub(1));
        } else {
            Self::write_u16(self.used, 0, USED_F_NO_NOTIFY);
        }
    }

    /// Asks the guest to kick for its next entry; returns whether entries
    /// arrived meanwhile (then the worker must not sleep).
    pub fn enable_kicks(&mut self) -> bool {
        if self.event_idx {
            let at = 4 + 8 * usize::from(self.size);
            Self::write_u16(self.used, at, self.last_avail);
        } else {
            Self::write_u16(self.used, 0, 0);
        }
        // The request is visible before the index is read again.
        fence(Ordering::SeqCst);
        self.refresh() > 0
    }
}

/// How much of a buffer [`SplitRing::prefetch`] asks for: the virtio-net
/// header and the head the switch copies out (`frames::HEAD_COPY`) end
/// within the first two cache lines.
const PREFETCH_BYTES: u64 = 128;

/// Prefetches the cache lines of `ptr..ptr + len` into every cache level.
#[inline]
fn prefetch_lines(ptr: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let mut off = 0;
        while off < len {
            // SAFETY: SSE is part of x86-64; a prefetch never faults and
            // changes nothing the program can see, and `wrapping_add`
            // keeps the address arithmetic defined.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(off).cast::<i8>()) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, len);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dataplane::vhost::mem::tests::memfd_memory;

    pub(crate) const DESC: u64 = 0x1000;
    pub(crate) const AVAIL: u64 = 0x2000;
    pub(crate) const USED: u64 = 0x3000;
    pub(crate) const BUFS: u64 = 0x10000;
    pub(crate) const UVA: u64 = 0x7000_0000;

    /// A fake driver: writes descriptors and the available ring, reads
    /// the used ring, all through the same memory the device maps.
    pub(crate) struct Driver {
        pub mem: Arc<GuestMemory>,
        pub size: u16,
        pub avail_idx: u16,
        _file: File,
    }

    impl Driver {
        pub(crate) fn new(size: u16) -> Self {
            let (mem, file) = memfd_memory(0, UVA, 0x100000);
            Driver {
                mem: Arc::new(mem),
                size,
                avail_idx: 0,
                _file: file,
            }
        }

        pub(crate) fn ring(&self, event_idx: bool) -> SplitRing {
            let addrs = RingAddrs {
                desc: UVA + DESC,
                avail: UVA + AVAIL,
                used: UVA + USED,
                size: self.size,
            };
            SplitRing::new(Arc::clone(&self.mem), addrs, 0, event_idx, None).expect("ring")
        }

        pub(crate) fn write(&self, gpa: u64, bytes: &[u8]) {
            let p = self
                .mem
                .translate(gpa, bytes.len() as u64)
                .expect("in memory");
            // SAFETY: test memory, translated above.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) }
        }

        pub(crate) fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
            let p = self.mem.translate(gpa, len as u64).expect("in memory");
            let mut out = vec![0u8; len];
            // SAFETY: test memory, translated above.
            unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), len) }
            out
        }

        pub(crate) fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = Vec::new();
            d.extend_from_slice(&addr.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.to_le_bytes());
            self.write(DESC + 16 * u64::from(i), &d);
        }

        pub(crate) fn offer(&mut self, head: u16) {
            let slot = u64::from(self.avail_idx % self.size);
            self.write(AVAIL + 4 + 2 * slot, &head.to_le_bytes());
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.write(AVAIL + 2, &self.avail_idx.to_le_bytes());
        }

        pub(crate) fn used_idx(&self) -> u16 {
            u16::from_le_bytes(self.read(USED + 2, 2).try_into().expect("2 bytes"))
        }

        pub(crate) fn used(&self, i: u16) -> (u32, u32) {
            let e = self.read(USED + 4 + 8 * u64::from(i % self.size), 8);
            (
                u32::from_le_bytes(e[..4].try_into().expect("4")),
                u32::from_le_bytes(e[4..].try_into().expect("4")),
            )
        }
    }

    #[test]
    fn chains_are_translated_and_returned() {
        let mut d = Driver::new(8);
        d.desc(0, BUFS, 12, DESC_F_NEXT, 1);
        d.desc(1, BUFS + 0x100, 60, 0, 0);
        d.offer(0);
        let mut r = d.ring(true);
        assert_eq!(r.refresh(), 1);
        let mut c = Chain::default();
        assert_eq!(r.pop(&mut c, false), Some(Ok(())));
        assert_eq!((c.head, c.n, c.len), (0, 2, 72));
        assert!(r.pop(&mut c, false).is_none());
        r.push_used(c.head, 0);
        assert_eq!(d.used_idx(), 0);
        r.flush_used();
        assert_eq!(d.used_idx(), 1);
        assert_eq!(d.used(0), (0, 0));
    }

    #[test]
    fn bad_chains_are_refused() {
        let mut d = Driver::new(8);
        let mut r = d.ring(false);
        let mut c = Chain::default();
        let mut check = |d: &mut Driver, r: &mut SplitRing, want: ChainError| {
            d.offer(0);
            assert_eq!(r.refresh(), 1);
            assert_eq!(r.pop(&mut c, false), Some(Err(want)));
        };
        d.desc(0, BUFS, 12, DESC_F_WRITE, 0);
        check(&mut d, &mut r, ChainError::WrongDirection);
        d.desc(0, 0xffff_0000, 12, 0, 0);
        check(&mut d, &mut r, ChainError::OutsideMemory);
        d.desc(0, BUFS, 12, DESC_F_NEXT, 0); // loops on itself
        check(&mut d, &mut r, ChainError::BadIndex);
        d.desc(0, BUFS, 12, DESC_F_NEXT, 9); // beyond the ring
        check(&mut d, &mut r, ChainError::BadIndex);
        d.desc(0, BUFS, 16, DESC_F_INDIRECT, 0);
        check(&mut d, &mut r, ChainError::Indirect);
        // An available index too far ahead stops the ring.
        d.avail_idx = d.avail_idx.wrapping_add(100);
        d.offer(0);
        assert_eq!(r.refresh(), 0);
        assert!(r.broken);
        // A plausible index afterwards does not revive it.
        d.avail_idx = d.avail_idx.wrapping_sub(100);
        d.offer(0);
        assert_eq!(r.refresh(), 0);
        assert!(!r.enable_kicks());
        assert!(r.pop(&mut Chain::default(), false).is_none());
    }

    /// A prefetch takes nothing and trips on nothing a hostile driver
    /// offers: a head index past the table, a buffer outside memory, an
    /// empty one, entries not (yet) available; `pop` then sees each chain
    /// as it would have without the prefetch.
    #[test]
    fn prefetch_is_only_a_hint() {
        let mut d = Driver::new(8);
        let mut r = d.ring(false);
        r.prefetch(0);
        d.desc(0, BUFS, 64, 0, 0);
        d.desc(1, 0xdead_0000_0000, 64, 0, 0);
        d.desc(2, BUFS + 0x100, 0, 0, 0);
        d.offer(0);
        d.offer(9);
        d.offer(1);
        d.offer(2);
        assert_eq!(r.refresh(), 4);
        for k in 0..8 {
            r.prefetch(k);
        }
        assert_eq!(r.pending(), 4, "a prefetch takes nothing");
        let mut c = Chain::default();
        assert!(matches!(r.pop(&mut c, false), Some(Ok(()))));
        assert_eq!((c.head, c.len), (0, 64));
        r.prefetch(u16::MAX);
        assert!(matches!(
            r.pop(&mut c, false),
            Some(Err(ChainError::BadIndex))
        ));
        assert!(matches!(
            r.pop(&mut c, false),
            Some(Err(ChainError::OutsideMemory))
        ));
        assert!(matches!(r.pop(&mut c, false), Some(Ok(()))));
        assert_eq!(c.len, 0);
        r.prefetch(0);
        assert!(r.pop(&mut c, false).is_none());
    }

    #[test]
    fn bad_ring_addresses_are_refused() {
        let d = Driver::new(8);
        let addrs = RingAddrs {
            desc: UVA + DESC + 8,
            avail: UVA + AVAIL,
            used: UVA + USED,
            size: 8,
        };
        let mem = Arc::clone(&d.mem);
        assert!(SplitRing::new(Arc::clone(&mem), addrs, 0, false, None).is_err());
        let addrs = RingAddrs {
            desc: DESC,
            ..addrs
        };
        assert!(SplitRing::new(Arc::clone(&mem), addrs, 0, false, None).is_err());
        let addrs = RingAddrs {
            desc: UVA + DESC,
            size: 6,
            ..addrs
        };
        assert_eq!(
            SplitRing::new(mem, addrs, 0, false, None).err(),
            Some(RingError::BadSize(6))
        );
        // Aligned as the frontend gives them, misaligned where mapped.
        let (odd, _f) = memfd_memory(0, UVA + 1, 0x10000);
        let addrs = RingAddrs {
            desc: UVA + DESC + 16,
            avail: UVA + AVAIL,
            used: UVA + USED,
            size: 8,
        };
        assert_eq!(
            SplitRing::new(Arc::new(odd), addrs, 0, false, None).err(),
            Some(RingError::BadAddress("descriptor table"))
        );
    }

    #[test]
    fn event_index_decides_notifications() {
        let mut d = Driver::new(8);
        let (r_fd, w_fd) = {
            let mut fds = [0; 2];
            // SAFETY: plain pipe creation into a local array.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
            assert_eq!(rc, 0);
            // SAFETY: both fds were just created and are owned here.
            unsafe {
                (
                    <File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
                    <File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
                )
            }
        };
        let addrs = RingAddrs {
            desc: UVA + DESC,
            avail: UVA + AVAIL,
            used: UVA + USED,
            size: 8,
        };
        let mut r =
            SplitRing::new(Arc::clone(&d.mem), addrs, 0, true, Some(Arc::new(w_fd))).expect("ring");
        let signals = |f: &File| {
            let mut buf = [0u8; 64];
            std::io::Read::read(&mut &*f, &mut buf).unwrap_or(0) / 8
        };
        // used_event = 0: the first used entry is signalled.
        d.desc(0, BUFS, 64, 0, 0);
        d.offer(0);
        d.offer(0);
        r.refresh();
        let mut c = Chain::default();
        let _ = r.pop(&mut c, false);
        r.push_used(0, 0);
        r.flush_used();
        r.notify();
        assert_eq!(signals(&r_fd), 1);
        // used_event stays 0: the second is not.
        let _ = r.pop(&mut c, false);
        r.push_used(0, 0);
        r.flush_used();
        r.notify();
        assert_eq!(signals(&r_fd), 0);
        // Kick suppression writes avail_event behind the guest.
        r.suppress_kicks();
        let ev = d.read(USED + 4 + 8 * 8, 2);
        assert_eq!(u16::from_le_bytes([ev[0], ev[1]]), 1);
        assert!(!r.enable_kicks());
        let ev = d.read(USED + 4 + 8 * 8, 2);
        assert_eq!(u16::from_le_bytes([ev[0], ev[1]]), 2);
        d.offer(0);
        assert!(r.enable_kicks());
    }
}
