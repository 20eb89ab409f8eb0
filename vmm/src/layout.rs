//! The machine's guest-physical address map (`vmm/README.md`, "Machine
//! model"): where RAM, boot structures, the MP table, the PCI window and the
//! interrupt controllers live, and the memory map handed to the guest.

/// Guest RAM below 4 GiB ends here at most (3 GiB); the rest goes above 4 GiB.
pub const LOW_RAM_END: u64 = 0xC000_0000;
/// RAM above the 32-bit hole starts here.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

/// The 32-bit MMIO window where PCI BARs are placed.
pub const PCI_MMIO_START: u64 = 0xC000_0000;
/// Size of the PCI MMIO window.
pub const PCI_MMIO_SIZE: u64 = 0x2000_0000;
/// From here to 4 GiB: reserved (IOAPIC, LAPIC, ...).
pub const RESERVED_HIGH_START: u64 = 0xE000_0000;
/// The in-kernel IOAPIC.
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// The local APICs.
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;

/// Start of the reserved low area: MP table, then the legacy VGA/BIOS hole.
pub const MPTABLE_START: u64 = 0x9_FC00;
/// End (exclusive) of the reserved low area.
pub const LOW_RESERVED_END: u64 = 0x10_0000;

/// Boot GDT (up to 10 entries of 8 bytes).
pub const BOOT_GDT: u64 = 0x500;
/// Boot IDT: empty (limit 0) for kernels; 256 gates for CPL3 guests.
pub const BOOT_IDT: u64 = 0x560;
/// Size of the 256-gate IDT.
pub const BOOT_IDT_SIZE: u64 = 256 * 16;
/// The PVH start info, followed by the module list and the memory map.
pub const PVH_INFO: u64 = 0x6000;
/// The PVH module list (one entry: the initrd).
pub const PVH_MODLIST: u64 = 0x6040;
/// The PVH memory map.
pub const PVH_MEMMAP: u64 = 0x6080;
/// Room for the PVH memory map entries (24 bytes each).
pub const PVH_MEMMAP_MAX_ENTRIES: usize = 16;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer for a 64-bit Linux entry.
pub const BOOT_STACK: u64 = 0x8FF0;
/// Identity page tables for a 64-bit entry: PML4, PDPT, then four PDs.
pub const PML4: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT: u64 = 0xA000;
/// First of four page directories (2 MiB pages, first 4 GiB).
pub const PD: u64 = 0xB000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Longest command line accepted, with its terminating NUL.
pub const CMDLINE_MAX: usize = 4096;
/// Kernels are loaded from here up (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;

/// Smallest guest RAM accepted.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest RAM accepted (the identity map and the model are sized for it).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// One range of guest RAM: where it sits and where it is in the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    pub guest_addr: u64,
    pub size: u64,
    pub file_offset: u64,
}

/// The RAM regions for `mem_size` bytes of guest RAM: from 0 up to 3 GiB,
/// the rest from 4 GiB up; both from one memfd, back to back.
pub fn ram_regions(mem_size: u64) -> Vec<RamRegion> {
    let low = mem_size.min(LOW_RAM_END);
    let mut regions = vec![RamRegion {
        guest_addr: 0,
        size: low,
        file_offset: 0,
    }];
    if mem_size > LOW_RAM_END {
        regions.push(RamRegion {
            guest_addr: HIGH_RAM_START,
            size: mem_size - LOW_RAM_END,
            file_offset: LOW_RAM_END,
        });
    }
    regions
}

/// Kind of a memory map entry (e820 numbering, which PVH shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    Ram = 1,
    Reserved = 2,
}

/// One entry of the memory map the guest is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: MemoryKind,
}

/// The guest's memory map, sorted by address: RAM minus the first page,
/// the low reserved area (MP table, VGA/BIOS hole), RAM from 1 MiB, the
/// reserved top of the 32-bit space, and RAM above 4 GiB.
pub fn memory_map(mem_size: u64) -> Vec<MemoryMapEntry> {
    let low_end = mem_size.min(LOW_RAM_END);
    let mut map = vec![
        MemoryMapEntry {
            addr: 0x1000,
            size: MPTABLE_START - 0x1000,
            kind: MemoryKind::Ram,
        },
        MemoryMapEntry {
            addr: MPTABLE_START,
            size: LOW_RESERVED_END - MPTABLE_START,
            kind: MemoryKind::Reserved,
        },
    ];
    if low_end > LOW_RESERVED_END {
        map.push(MemoryMapEntry {
            addr: LOW_RESERVED_END,
            size: low_end - LOW_RESERVED_END,
            kind: MemoryKind::Ram,
        });
    }
    map.push(MemoryMapEntry {
        addr: RESERVED_HIGH_START,
        size: HIGH_RAM_START - RESERVED_HIGH_START,
        kind: MemoryKind::Reserved,
    });
    if mem_size > LOW_RAM_END {
        map.push(MemoryMapEntry {
            addr: HIGH_RAM_START,
            size: mem_size - LOW_RAM_END,
            kind: MemoryKind::Ram,
        });
    }
    map
}

/// The highest address (exclusive) of RAM below 4 GiB.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(LOW_RAM_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_memory_is_one_region_below_the_hole() {
        assert_eq!(
            ram_regions(512 * MIB),
            vec![RamRegion {
                guest_addr: 0,
                size: 512 * MIB,
                file_offset: 0
            }]
        );
    }

    #[test]
    fn large_memory_skips_the_32bit_hole() {
        let r = ram_regions(8 * GIB);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].guest_addr, r[0].size), (0, 3 * GIB));
        assert_eq!(
            (r[1].guest_addr, r[1].size, r[1].file_offset),
            (4 * GIB, 5 * GIB, 3 * GIB)
        );
        // Exactly 3 GiB: no high region.
        assert_eq!(ram_regions(3 * GIB).len(), 1);
    }

    #[test]
    fn memory_map_is_sorted_disjoint_and_covers_ram() {
        for size in [16 * MIB, 3 * GIB, 5 * GIB] {
            let map = memory_map(size);
            for pair in map.windows(2) {
                assert!(pair[0].addr + pair[0].size <= pair[1].addr, "{map:?}");
            }
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == MemoryKind::Ram)
                .map(|e| e.size)
                .sum();
            // All RAM but the first page and the low reserved area.
            assert_eq!(ram, size - 0x1000 - (LOW_RESERVED_END - MPTABLE_START));
            // No RAM in the PCI window or the reserved top.
            assert!(map.iter().all(|e| e.kind != MemoryKind::Ram
                || e.addr + e.size <= PCI_MMIO_START
                || e.addr >= HIGH_RAM_START));
        }
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (BOOT_GDT, 80),
            (BOOT_IDT, BOOT_IDT_SIZE),
            (0x2000, 0x1000), // CPL3 guests' ring-0 stack
            (0x3000, 0x2069), // CPL3 guests' TSS and I/O bitmap
            (PVH_INFO, 56),
            (PVH_MODLIST, 32),
            (PVH_MEMMAP, 24 * PVH_MEMMAP_MAX_ENTRIES as u64),
            (ZERO_PAGE, 4096),
            (PML4, 4096),
            (PDPT, 4096),
            (PD, 4 * 4096),
            (CMDLINE, CMDLINE_MAX as u64),
        ];
        areas.sort_unstable();
        for pair in areas.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?}");
        }
        let last = areas[areas.len() - 1];
        assert!(last.0 + last.1 <= MPTABLE_START);
    }
}
