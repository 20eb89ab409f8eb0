//! The PVH start of day: `hvm_start_info` (version 1) with the memory map,
//! the command line and the initrd as the one module.

use vm_memory::{Bytes, GuestAddress};

use super::{BootError, write_err};
use crate::layout;
use crate::memory::GuestMemory;

/// `hvm_start_info.magic`.
pub(crate) const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// The start info's 56 bytes.
pub(crate) fn start_info_bytes(nr_modules: u32, memmap_entries: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(56);
    b.extend(XEN_HVM_START_MAGIC.to_le_bytes());
    b.extend(1u32.to_le_bytes()); // version
    b.extend(0u32.to_le_bytes()); // flags
    b.extend(nr_modules.to_le_bytes());
    let modlist = if nr_modules > 0 {
        layout::PVH_MODLIST
    } else {
        0
    };
    b.extend(modlist.to_le_bytes());
    b.extend(layout::CMDLINE.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // rsdp_paddr: no ACPI
    b.extend(layout::PVH_MEMMAP.to_le_bytes());
    b.extend(memmap_entries.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b
}

/// Writes the start info, the memory map and the module list.
pub(crate) fn write_start_info(
    mem: &GuestMemory,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let map = layout::memory_map(mem_size);
    debug_assert!(map.len() <= layout::PVH_MEMMAP_MAX_ENTRIES);
    let mut table = Vec::with_capacity(map.len() * 24);
    for e in &map {
        table.extend(e.addr.to_le_bytes());
        table.extend(e.size.to_le_bytes());
        table.extend((e.kind as u32).to_le_bytes());
        table.extend(0u32.to_le_bytes());
    }
    mem.write_slice(&table, GuestAddress(layout::PVH_MEMMAP))
        .map_err(write_err("the PVH memory map"))?;
    let mut nr_modules = 0;
    if let Some((addr, size)) = initrd {
        let mut m = Vec::with_capacity(32);
        m.extend(addr.to_le_bytes());
        m.extend(size.to_le_bytes());
        m.extend(0u64.to_le_bytes()); // no module command line
        m.extend(0u64.to_le_bytes());
        mem.write_slice(&m, GuestAddress(layout::PVH_MODLIST))
            .map_err(write_err("the PVH module list"))?;
        nr_modules = 1;
    }
    let info = start_info_bytes(nr_modules, map.len() as u32);
    mem.write_slice(&info, GuestAddress(layout::PVH_INFO))
        .map_err(write_err("the PVH start info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_matches_the_xen_layout() {
        let mem = crate::memory::create(32 << 20, false).unwrap().memory;
        write_start_info(&mem, 32 << 20, Some((0x100_0000, 0x1234))).unwrap();
        let r32 = |a: u64| mem.read_obj::<u32>(GuestAddress(a)).unwrap();
        let r64 = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let i = layout::PVH_INFO;
        assert_eq!(r32(i), XEN_HVM_START_MAGIC);
        assert_eq!(r32(i + 4), 1);
        assert_eq!(r32(i + 12), 1);
        assert_eq!(r64(i + 16), layout::PVH_MODLIST);
        assert_eq!(r64(i + 24), layout::CMDLINE);
        assert_eq!(r64(i + 40), layout::PVH_MEMMAP);
        let n = r32(i + 48);
        assert_eq!(n as usize, layout::memory_map(32 << 20).len());
        // First entry: RAM from the second page.
        assert_eq!(r64(layout::PVH_MEMMAP), 0x1000);
        assert_eq!(r32(layout::PVH_MEMMAP + 16), 1);
        assert_eq!(r64(layout::PVH_MODLIST), 0x100_0000);
        assert_eq!(r64(layout::PVH_MODLIST + 8), 0x1234);
    }
}
