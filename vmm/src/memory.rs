//! Guest RAM: one memfd (optionally 2 MiB hugetlb) mapped shared, so
//! vhost-user backends can map the same pages, and a vm-memory view of it
//! laid out per [`crate::layout::ram_regions`].

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::layout;

/// Guest memory as every part of the VMM sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors making guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("Cannot create the guest memory file (hugepages: {hugepages})")]
    Memfd {
        hugepages: bool,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot size the guest memory file to {size} bytes")]
    Truncate {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot map guest memory at {addr:#x} ({size} bytes)")]
    Map {
        addr: u64,
        size: u64,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("Guest memory regions are invalid")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    #[error("Memory size {0} bytes does not fit this host's address space")]
    TooLarge(u64),
}

/// Guest RAM and the file behind it.
#[derive(Debug, Clone)]
pub struct GuestRam {
    pub memory: GuestMemory,
    pub file: Arc<File>,
    pub size: u64,
    pub hugepages: bool,
}

/// Creates the memfd for `size` bytes of guest RAM.
pub fn create_memfd(size: u64, hugepages: bool) -> Result<File, MemoryError> {
    let name = CString::new("sfera-guest-ram").expect("no NUL in a literal");
    let mut flags = libc::MFD_CLOEXEC;
    if hugepages {
        // MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT.
        flags |= libc::MFD_HUGETLB | (21 << libc::MFD_HUGE_SHIFT);
    }
    // SAFETY: `name` is a valid NUL-terminated string that outlives the
    // call; memfd_create(2) has no other memory-safety requirements.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd {
            hugepages,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by no one
    // else; the File takes ownership and closes it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|source| MemoryError::Truncate { size, source })?;
    Ok(file)
}

/// Makes `size` bytes of guest RAM.
pub fn create(size: u64, hugepages: bool) -> Result<GuestRam, MemoryError> {
    let file = Arc::new(create_memfd(size, hugepages)?);
    // Hugepages are reserved at mmap time, so a pool too small fails here
    // rather than as SIGBUS when the guest touches the page.
    let flags = if hugepages {
        libc::MAP_SHARED
    } else {
        libc::MAP_SHARED | libc::MAP_NORESERVE
    };
    let mut regions = Vec::new();
    for r in layout::ram_regions(size) {
        let len = usize::try_from(r.size).map_err(|_| MemoryError::TooLarge(size))?;
        let mapping = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::from_arc(Arc::clone(&file), r.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(hugepages)
            .build()
            .map_err(|source| MemoryError::Map {
                addr: r.guest_addr,
                size: r.size,
                source,
            })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
            .ok_or(MemoryError::TooLarge(size))?;
        regions.push(region);
    }
    let memory = GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)?;
    Ok(GuestRam {
        memory,
        file,
        size,
        hugepages,
    })
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    #[test]
    fn regions_follow_the_layout_and_share_one_file() {
        let ram = create(64 << 20, false).unwrap();
        assert_eq!(ram.memory.num_regions(), 1);
        let region = ram.memory.iter().next().unwrap();
        assert_eq!(region.start_addr(), GuestAddress(0));
        assert_eq!(region.len(), 64 << 20);
        ram.memory
            .write_obj(0xabcd_u32, GuestAddress(0x1000))
            .unwrap();
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&*ram.file, &mut buf, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xabcd);
    }
}
