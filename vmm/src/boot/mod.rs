//! Direct kernel boot: an ELF with the Xen PVH note (32-bit entry with
//! `hvm_start_info`) or a bzImage (64-bit boot protocol with a zero page),
//! an optional initrd, the command line, and the MP table.

pub mod mptable;
mod pvh;
mod zero_page;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress};

use crate::cpu::EntryState;
use crate::layout;
use crate::memory::GuestMemory;

/// Errors loading the kernel and its boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot load kernel {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("Kernel {0} is an ELF without the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhNote(PathBuf),
    #[error("Kernel {0} is a bzImage without the 64-bit entry (XLF_KERNEL_64)")]
    No64BitEntry(PathBuf),
    #[error("Command line is {len} bytes; at most {max} fit")]
    CmdlineTooLong { len: usize, max: usize },
    #[error(
        "Initrd {path} ({size} bytes) does not fit between the kernel end {kernel_end:#x} and {limit:#x}"
    )]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("Cannot write {what} to guest memory")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn write_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> BootError {
    move |source| BootError::Write { what, source }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub mem_size: u64,
}

/// Where the kernel went and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booted {
    pub entry: EntryState,
    pub kernel_end: u64,
    pub initrd: Option<(u64, u64)>,
}

/// ELF magic.
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// Boot protocol flag: the kernel has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;

/// Loads the kernel, initrd and command line, and writes the boot
/// information the kernel's protocol expects.
pub fn load(mem: &GuestMemory, spec: &BootSpec<'_>) -> Result<Booted, BootError> {
    let read_err = |source| BootError::Read {
        path: spec.kernel.to_path_buf(),
        source,
    };
    let mut kernel = File::open(spec.kernel).map_err(read_err)?;
    let mut magic = [0u8; 4];
    kernel.read_exact(&mut magic).map_err(read_err)?;
    kernel.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let is_elf = magic == ELF_MAGIC;
    let loaded: KernelLoaderResult = if is_elf {
        Elf::load(mem, None, &mut kernel, himem)
    } else {
        BzImage::load(mem, None, &mut kernel, himem)
    }
    .map_err(|source| BootError::Load {
        path: spec.kernel.to_path_buf(),
        source,
    })?;

    let cmdline_max = match &loaded.setup_header {
        Some(h) if h.cmdline_size > 0 => (h.cmdline_size as usize + 1).min(layout::CMDLINE_MAX),
        _ => layout::CMDLINE_MAX,
    };
    if spec.cmdline.len() + 1 > cmdline_max {
        return Err(BootError::CmdlineTooLong {
            len: spec.cmdline.len(),
            max: cmdline_max - 1,
        });
    }
    let mut cmdline = spec.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(layout::CMDLINE))
        .map_err(write_err("the command line"))?;

    let initrd_limit = match &loaded.setup_header {
        Some(h) if h.initrd_addr_max > 0 => u64::from(h.initrd_addr_max) + 1,
        _ => u64::MAX,
    }
    .min(layout::low_ram_end(spec.mem_size));
    let initrd = match spec.initrd {
        Some(path) => Some(load_initrd(mem, path, loaded.kernel_end, initrd_limit)?),
        None => None,
    };

    let entry = if is_elf {
        let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
            return Err(BootError::NoPvhNote(spec.kernel.to_path_buf()));
        };
        pvh::write_start_info(mem, spec.mem_size, initrd)?;
        EntryState::Pvh {
            entry: entry.0,
            start_info: layout::PVH_INFO,
        }
    } else {
        let header = loaded
            .setup_header
            .expect("the bzImage loader returns the setup header");
        if header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BootError::No64BitEntry(spec.kernel.to_path_buf()));
        }
        zero_page::write(mem, header, spec.mem_size, cmdline.len(), initrd)?;
        EntryState::Linux64 {
            entry: loaded.kernel_load.0 + 0x200,
            zero_page: layout::ZERO_PAGE,
        }
    };
    Ok(Booted {
        entry,
        kernel_end: loaded.kernel_end,
        initrd,
    })
}

/// Writes the MP table for `cpus` CPUs and the PCI interrupt lines.
pub fn write_mptable(
    mem: &GuestMemory,
    cpus: u8,
    pci_irqs: &[mptable::PciIrq],
) -> Result<(), BootError> {
    let bytes = mptable::build(cpus, pci_irqs);
    mem.write_slice(&bytes, GuestAddress(layout::MPTABLE_START))
        .map_err(write_err("the MP table"))
}

/// Puts the initrd page-aligned as high as it goes below `limit`.
fn load_initrd(
    mem: &GuestMemory,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let read_err = |source| BootError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let too_large = || BootError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
        kernel_end,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_large)? & !0xfff;
    if addr < kernel_end.max(layout::HIMEM_START) {
        return Err(too_large());
    }
    let len = usize::try_from(size).map_err(|_| too_large())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(write_err("the initrd"))?;
    Ok((addr, size))
}
