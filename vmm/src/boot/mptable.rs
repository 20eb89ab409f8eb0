//! The Intel MultiProcessor Specification 1.4 table: a floating pointer at
//! 0x9fc00 (inside the last KiB of base memory, where Linux scans) and the
//! configuration table right after it, listing the CPUs, the buses (PCI 0,
//! ISA 1), the IOAPIC, the ISA and PCI interrupt lines and the local
//! interrupts. Linux boots SMP from it without ACPI.

use crate::layout;

/// The IOAPIC's id: after the CPUs' APIC ids.
fn ioapic_id(cpus: u8) -> u8 {
    cpus
}

const PCI_BUS: u8 = 0;
const ISA_BUS: u8 = 1;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// Processor signature of a family 6 CPU, and its FPU/APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// A PCI device's interrupt: `slot`'s INTA# on IOAPIC pin `irq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIrq {
    pub slot: u8,
    pub irq: u8,
}

/// Sum of bytes, mod 256.
fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// The floating pointer and configuration table for `cpus` CPUs, as the
/// bytes to write at [`layout::MPTABLE_START`].
pub fn build(cpus: u8, pci_irqs: &[PciIrq]) -> Vec<u8> {
    let table_addr = layout::MPTABLE_START + 16;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = if id == 0 { 0x3 } else { 0x1 }; // enabled (| BSP)
        entries.extend([0, id, APIC_VERSION, flags]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    for (id, name) in [(PCI_BUS, b"PCI   "), (ISA_BUS, b"ISA   ")] {
        entries.extend([1, id]);
        entries.extend(name);
        count += 1;
    }
    let ioapic = ioapic_id(cpus);
    entries.extend([2, ioapic, IOAPIC_VERSION, 1]);
    entries.extend((layout::IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    // I/O interrupts: type 3, interrupt type, flags, source bus, source
    // IRQ, destination IOAPIC, destination pin.
    let mut io_irq = |kind: u8, flags: u16, bus: u8, src: u8, pin: u8| {
        entries.extend([3, kind]);
        entries.extend(flags.to_le_bytes());
        entries.extend([bus, src, ioapic, pin]);
        count += 1;
    };
    // ISA IRQ n on pin n, as KVM's in-kernel IOAPIC routes GSI n,
    // conforming polarity and trigger.
    for irq in 0..16u8 {
        io_irq(0, 0, ISA_BUS, irq, irq);
    }
    // PCI INTA# of each slot: edge-triggered, active high (the VMM pulses
    // the line through an irqfd).
    for p in pci_irqs {
        io_irq(0, 0b0101, PCI_BUS, p.slot << 2, p.irq);
    }
    // Local interrupts: ExtINT on LINT0, NMI on LINT1, to every LAPIC.
    for (kind, lint) in [(3u8, 0u8), (1, 1)] {
        entries.extend([4, kind, 0, 0, ISA_BUS, 0, 0xff, lint]);
        count += 1;
    }

    let length = u16::try_from(44 + entries.len()).expect("a table of at most 64 CPUs");
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend(b"PCMP");
    table.extend(length.to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend(b"SFERA   ");
    table.extend(b"SFERA-VMM   ");
    table.extend(0u32.to_le_bytes()); // OEM table
    table.extend(0u16.to_le_bytes()); // OEM table size
    table.extend(count.to_le_bytes());
    table.extend((layout::LAPIC_ADDR as u32).to_le_bytes());
    table.extend(0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    table.extend(entries);
    table[7] = 0u8.wrapping_sub(sum(&table));

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend(b"_MP_");
    out.extend((table_addr as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4); // spec revision
    out.push(0); // checksum, below
    out.extend([0u8; 5]); // feature bytes: the configuration table is present
    out[10] = 0u8.wrapping_sub(sum(&out));
    out.extend(table);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }

    #[test]
    fn checksums_and_layout() {
        let irqs = [PciIrq { slot: 1, irq: 5 }, PciIrq { slot: 2, irq: 9 }];
        for cpus in [1u8, 2, 64] {
            let b = build(cpus, &irqs);
            assert_eq!(&b[..4], b"_MP_");
            assert_eq!(sum(&b[..16]), 0, "floating pointer checksum");
            let table_addr = u32::from_le_bytes(b[4..8].try_into().unwrap());
            assert_eq!(u64::from(table_addr), layout::MPTABLE_START + 16);
            let t = &b[16..];
            assert_eq!(&t[..4], b"PCMP");
            let len = usize::from(u16_at(t, 4));
            assert_eq!(len, t.len());
            assert_eq!(sum(t), 0, "table checksum");
            // Walk the entries by their sizes and count them by type.
            let mut off = 44;
            let mut kinds = [0usize; 5];
            while off < len {
                let kind = usize::from(t[off]);
                kinds[kind] += 1;
                off += if kind == 0 { 20 } else { 8 };
            }
            assert_eq!(off, len);
            assert_eq!(usize::from(u16_at(t, 34)), kinds.iter().sum::<usize>());
            assert_eq!(kinds, [usize::from(cpus), 2, 1, 16 + irqs.len(), 2]);
            // The table stays within the reserved low area.
            assert!(layout::MPTABLE_START + b.len() as u64 <= layout::LOW_RESERVED_END);
        }
    }

    #[test]
    fn only_the_first_cpu_is_the_bsp_and_pci_irqs_name_their_slot() {
        let b = build(2, &[PciIrq { slot: 3, irq: 10 }]);
        let t = &b[16..];
        assert_eq!(t[44 + 3], 0x3);
        assert_eq!(t[64 + 3], 0x1);
        assert_eq!(t[64 + 1], 1);
        // The last I/O interrupt entry before the two local ones.
        let pci = &t[t.len() - 24..t.len() - 16];
        assert_eq!(pci, &[3, 0, 5, 0, PCI_BUS, 3 << 2, 2, 10]);
    }
}
