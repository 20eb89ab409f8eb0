//! A guest's memory as the frontend shares it: file descriptors mapped
//! into this process, and translation of guest-physical (descriptor
//! buffers) and frontend-virtual (ring addresses) addresses to pointers
//! here, each checked against the region it falls in.
//!
//! Written here rather than through vm-memory's `GuestMemoryMmap`: the
//! worker translates two or three addresses per frame, and a lookup that
//! returns a raw span (checked once) instead of going through the
//! `Bytes` accessors per copy is what keeps a 64-byte frame near 100
//! cycles. The checks are the same: every span lies inside one mapping.

use std::fs::File;
use std::os::fd::AsRawFd;

use vhost::vhost_user::message::VhostUserMemoryRegion;

/// Most regions a frontend may share (vhost-user's limit for SET_MEM_TABLE).
pub const MAX_REGIONS: usize = 8;

/// Errors mapping a memory table.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    #[error("Memory table has {0} regions (most: {MAX_REGIONS})")]
    TooManyRegions(usize),
    #[error(
        "Memory region at guest address {gpa:#x} has an invalid size {size:#x} or offset {offset:#x}"
    )]
    BadRegion { gpa: u64, size: u64, offset: u64 },
    #[error("Memory regions at guest addresses {0:#x} and {1:#x} overlap")]
    Overlap(u64, u64),
    #[error("Cannot map memory region at guest address {gpa:#x}")]
    Map {
        gpa: u64,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Region {
    gpa: u64,
    uva: u64,
    size: u64,
    /// Where guest address `gpa` is mapped here.
    host: *mut u8,
    map_base: *mut libc::c_void,
    map_len: usize,
}

/// A guest's shared memory, mapped.
#[derive(Debug, Default)]
pub struct GuestMemory {
    regions: Vec<Region>,
}

// SAFETY: the mappings are owned by this value and live until Drop; the
// pointers are only turned into references by the ring code, which checks
// bounds with `translate` and accesses guest-shared bytes volatilely or by
// copy. Sharing the table between the control thread and the worker is
// what the vhost-user protocol requires.
unsafe impl Send for GuestMemory {}
// SAFETY: see `Send`; the table itself is immutable after `map`.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps the regions of a `SET_MEM_TABLE` message.
    pub fn map(table: &[VhostUserMemoryRegion], files: &[File]) -> Result<Self, MemError> {
        if table.len() > MAX_REGIONS || files.len() != table.len() {
            return Err(MemError::TooManyRegions(table.len()));
        }
        let mut mem = GuestMemory::default();
        for (r, file) in table.iter().zip(files) {
            let bad = || MemError::BadRegion {
                gpa: r.guest_phys_addr,
                size: r.memory_size,
                offset: r.mmap_offset,
            };
            let len = r.memory_size.checked_add(r.mmap_offset).ok_or_else(bad)?;
            if r.memory_size == 0
                || r.guest_phys_addr.checked_add(r.memory_size).is_none()
                || r.user_addr.checked_add(r.memory_size).is_none()
            {
                return Err(bad());
            }
            let map_len = usize::try_from(len).map_err(|_| bad())?;
            let offset = usize::try_from(r.mmap_offset).map_err(|_| bad())?;
            for other in &mem.regions {
                if r.guest_phys_addr < other.gpa + other.size
                    && other.gpa < r.guest_phys_addr + r.memory_size
                {
                    return Err(MemError::Overlap(other.gpa, r.guest_phys_addr));
                }
            }
            // The kernel checks the fd and length; the Region owns the
            // mapping and unmaps it in Drop.
            // SAFETY: a fresh shared mapping of the frontend's file.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_NORESERVE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(MemError::Map {
                    gpa: r.guest_phys_addr,
                    source: std::io::Error::last_os_error(),
                });
            }
            mem.regions.push(Region {
                gpa: r.guest_phys_addr,
                uva: r.user_addr,
                size: r.memory_size,
                // SAFETY: `offset < map_len` (memory_size > 0), so the
                // result stays inside the mapping.
                host: unsafe { base.cast::<u8>().add(offset) },
                map_base: base,
                map_len,
            });
        }
        Ok(mem)
    }

    /// A memory of `size` bytes at guest address `gpa` (frontend address
    /// `uva`), backed by a fresh memfd, as a frontend would share it. For
    /// tests and fuzzing, which play the frontend and the guest; the
    /// daemon maps what a frontend sends with [`GuestMemory::map`].
    pub fn anonymous(gpa: u64, uva: u64, size: u64) -> Result<Self, MemError> {
        let map_err = |source| MemError::Map { gpa, source };
        let file = memfd(size).map_err(map_err)?;
        let region = VhostUserMemoryRegion::new(gpa, size, uva, 0);
        // The mapping keeps the memfd alive once `file` is closed.
        GuestMemory::map(&[region], std::slice::from_ref(&file))
    }

    /// A pointer to `len` bytes at guest-physical `gpa`, when they lie in
    /// one region.
    #[inline]
    pub fn translate(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if off < r.size && len <= r.size - off {
                // SAFETY: `off + len <= size`: inside the region's mapping.
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }

    /// A pointer to `len` bytes at the frontend's virtual address `uva`
    /// (how vhost-user gives ring addresses), when they lie in one region.
    pub fn translate_uva(&self, uva: u64, len: u64) -> Option<*mut u8> {
        self.regions.iter().find_map(|r| {
            let off = uva.wrapping_sub(r.uva);
            (off < r.size && len <= r.size - off).then(|| {
                // SAFETY: `off + len <= size`: inside the region's mapping.
                unsafe { r.host.add(off as usize) }
            })
        })
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// An anonymous shared-memory file of `size` bytes.
fn memfd(size: u64) -> std::io::Result<File> {
    // SAFETY: plain syscall with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"sfera-guest".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for r in &self.regions {
            // Every user holds an `Arc<GuestMemory>`, so none is left when Drop runs.
            // SAFETY: the mapping was made in `map` with this base and length.
            unsafe {
                libc::munmap(r.map_base, r.map_len);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A memory of `size` bytes at guest address `gpa` (frontend address
    /// `uva`), backed by a memfd, for ring tests.
    pub(crate) fn memfd_memory(gpa: u64, uva: u64, size: u64) -> (GuestMemory, File) {
        let file = memfd(size).expect("memfd");
        let region = VhostUserMemoryRegion::new(gpa, size, uva, 0);
        let mem = GuestMemory::map(&[region], std::slice::from_ref(&file)).expect("map");
        (mem, file)
    }

    #[test]
    fn translation_is_bounded_by_the_region() {
        let (mem, _f) = memfd_memory(0x10000, 0x7f00_0000_0000, 0x4000);
        assert!(mem.translate(0x10000, 0x4000).is_some());
        assert!(mem.translate(0x13fff, 1).is_some());
        assert!(mem.translate(0x13fff, 2).is_none());
        assert!(mem.translate(0xffff, 1).is_none());
        assert!(mem.translate(u64::MAX, 2).is_none());
        assert!(mem.translate(0x14000, 0).is_none());
        assert_eq!(
            mem.translate(0x10010, 4),
            mem.translate_uva(0x7f00_0000_0010, 4)
        );
        assert!(mem.translate_uva(0x10010, 4).is_none());
    }

    #[test]
    fn anonymous_memory_is_one_region() {
        let mem = GuestMemory::anonymous(0x10000, 0x7f00_0000_0000, 0x4000).expect("map");
        assert!(mem.translate(0x10000, 0x4000).is_some());
        assert!(mem.translate(0x14000, 1).is_none());
        assert!(GuestMemory::anonymous(u64::MAX - 10, 0, 0x1000).is_err());
    }

    #[test]
    fn bad_tables_are_refused() {
        let (_m, f) = memfd_memory(0, 0, 0x1000);
        let zero = VhostUserMemoryRegion::new(0, 0, 0, 0);
        assert!(GuestMemory::map(&[zero], std::slice::from_ref(&f)).is_err());
        let wrap = VhostUserMemoryRegion::new(u64::MAX - 10, 0x1000, 0, 0);
        assert!(GuestMemory::map(&[wrap], std::slice::from_ref(&f)).is_err());
        let a = VhostUserMemoryRegion::new(0, 0x1000, 0, 0);
        let b = VhostUserMemoryRegion::new(0x800, 0x1000, 0x10000, 0);
        let f2 = f.try_clone().expect("dup");
        assert!(matches!(
            GuestMemory::map(&[a, b], &[f, f2]),
            Err(MemError::Overlap(..))
        ));
    }
}
