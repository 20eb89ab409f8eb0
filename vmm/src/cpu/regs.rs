//! The register state a vCPU starts in, per boot protocol: the GDT (and
//! for 64-bit entries the identity page tables) written to guest memory,
//! and the segment, control and general registers that match them.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::layout;
use crate::memory::GuestMemory;

/// Where the first vCPU starts and in which mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// PVH: 32-bit protected mode, paging off, `%ebx` = start info.
    Pvh { entry: u64, start_info: u64 },
    /// Linux 64-bit boot protocol: long mode on identity page tables,
    /// `%rsi` = zero page.
    Linux64 { entry: u64, zero_page: u64 },
    /// Long mode at CPL3 with I/O ports open through the TSS bitmap: the
    /// set-up `shared/PVM.md` measured, for guests that run at CPL3 only.
    /// A 256-entry IDT is in place (gates are the caller's to write);
    /// `interrupts` starts with RFLAGS.IF set.
    User64 {
        entry: u64,
        stack: u64,
        interrupts: bool,
    },
}

/// A TSS with a full I/O permission bitmap, for [`EntryState::User64`].
pub const USER_TSS: u64 = 0x3000;
/// TSS size with the bitmap (104 bytes, 8 KiB of bitmap, one 0xff byte).
const USER_TSS_LIMIT: u32 = 0x68 + 0x2000;
/// Stack for ring-0 entries (exceptions) in [`EntryState::User64`].
const USER_RSP0: u64 = 0x2FF0;

/// A GDT descriptor from its flags (the access byte and the granularity
/// nibble, as `0xG0AA`), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The KVM segment a descriptor describes, loaded from GDT slot `index`.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let dpl = ((entry >> 45) & 3) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: (index * 8) | u16::from(dpl),
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

const NULL: u64 = 0;
const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
const TSS32: u64 = gdt_entry(0x008b, 0, 0x67);
const USER_DATA: u64 = gdt_entry(0xc0f3, 0, 0xfffff);
const USER_CODE64: u64 = gdt_entry(0xa0fb, 0, 0xfffff);
const USER_TSS64: u64 = gdt_entry(0x008b, USER_TSS as u32, USER_TSS_LIMIT);

/// The GDT for a mode: code at 0x10 and data at 0x18 (Linux's `__BOOT_CS`
/// and `__BOOT_DS`), the TSS at 0x20; the CPL3 mode adds user data at
/// 0x2b, user code at 0x33 and its 16-byte TSS at 0x40.
fn gdt(state: &EntryState) -> Vec<u64> {
    match state {
        EntryState::Pvh { .. } => vec![NULL, NULL, CODE32, DATA, TSS32],
        EntryState::Linux64 { .. } => vec![NULL, NULL, CODE64, DATA, TSS32],
        EntryState::User64 { .. } => vec![
            NULL,
            NULL,
            CODE64,
            DATA,
            NULL,
            USER_DATA,
            USER_CODE64,
            NULL,
            USER_TSS64,
            0, // high half of the 16-byte TSS descriptor (base < 4 GiB)
        ],
    }
}

/// Errors writing boot structures.
#[derive(Debug, thiserror::Error)]
#[error("Cannot write {what} to guest memory")]
pub struct SetupError {
    pub what: &'static str,
    #[source]
    pub source: vm_memory::GuestMemoryError,
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemory,
    what: &'static str,
    value: T,
    addr: u64,
) -> Result<(), SetupError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| SetupError { what, source })
}

/// Identity-maps the first 4 GiB with 2 MiB pages; `user` sets U/S.
fn write_page_tables(mem: &GuestMemory, user: bool) -> Result<(), SetupError> {
    let us = if user { 0x4 } else { 0 };
    write(mem, "PML4", layout::PDPT | 0x3 | us, layout::PML4)?;
    for i in 0..4u64 {
        let pd = layout::PD + i * 0x1000;
        write(mem, "PDPT", pd | 0x3 | us, layout::PDPT + i * 8)?;
        for j in 0..512u64 {
            let addr = (i << 30) | (j << 21);
            write(mem, "page directory", addr | 0x83 | us, pd + j * 8)?;
        }
    }
    Ok(())
}

/// Writes the GDT, an empty IDT and (for 64-bit entries) the page tables;
/// returns the special registers matching them.
pub fn setup_memory(
    mem: &GuestMemory,
    state: &EntryState,
    base: kvm_sregs,
) -> Result<kvm_sregs, SetupError> {
    let table = gdt(state);
    for (i, e) in table.iter().enumerate() {
        write(mem, "GDT", *e, layout::BOOT_GDT + 8 * i as u64)?;
    }
    write(mem, "IDT", 0u64, layout::BOOT_IDT)?;
    let mut sregs = base;
    sregs.gdt.base = layout::BOOT_GDT;
    sregs.gdt.limit = u16::try_from(table.len() * 8 - 1).expect("a short GDT");
    sregs.idt.base = layout::BOOT_IDT;
    sregs.idt.limit = match state {
        EntryState::User64 { .. } => (layout::BOOT_IDT_SIZE - 1) as u16,
        _ => 0,
    };
    let (code, data, tr) = match state {
        EntryState::Pvh { .. } => {
            sregs.cr0 = 0x11; // PE, ET
            sregs.cr4 = 0;
            sregs.efer = 0;
            (segment(CODE32, 2), segment(DATA, 3), segment(TSS32, 4))
        }
        EntryState::Linux64 { .. } => {
            write_page_tables(mem, false)?;
            sregs.cr3 = layout::PML4;
            sregs.cr0 = 0x8005_0033;
            sregs.cr4 = 0x620;
            sregs.efer = 0x500;
            (segment(CODE64, 2), segment(DATA, 3), segment(TSS32, 4))
        }
        EntryState::User64 { .. } => {
            write_page_tables(mem, true)?;
            // TSS: RSP0 at offset 4, I/O bitmap offset at 0x66; the bitmap
            // (all zero: every port allowed) ends with an 0xff byte.
            write(mem, "TSS", USER_RSP0, USER_TSS + 4)?;
            write(mem, "TSS", 0x68u16, USER_TSS + 0x66)?;
            write(mem, "TSS", 0xffu8, USER_TSS + u64::from(USER_TSS_LIMIT))?;
            sregs.cr3 = layout::PML4;
            sregs.cr0 = 0x8005_0033;
            sregs.cr4 = 0x620;
            sregs.efer = 0x500;
            (
                segment(USER_CODE64, 6),
                segment(USER_DATA, 5),
                segment(USER_TSS64, 8),
            )
        }
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tr;
    Ok(sregs)
}

/// The general registers for `state`.
pub fn regs(state: &EntryState) -> kvm_regs {
    match *state {
        EntryState::Pvh { entry, start_info } => kvm_regs {
            rip: entry,
            rbx: start_info,
            rflags: 0x2,
            ..Default::default()
        },
        EntryState::Linux64 { entry, zero_page } => kvm_regs {
            rip: entry,
            rsi: zero_page,
            rsp: layout::BOOT_STACK,
            rbp: layout::BOOT_STACK,
            rflags: 0x2,
            ..Default::default()
        },
        EntryState::User64 {
            entry,
            stack,
            interrupts,
        } => kvm_regs {
            rip: entry,
            rsp: stack,
            rflags: if interrupts { 0x202 } else { 0x2 },
            ..Default::default()
        },
    }
}

/// x87 and SSE state as after FNINIT, with MXCSR's reset value.
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs every vCPU starts with: SYSENTER/SYSCALL zeroed, the TSC at 0,
/// fast strings on, and write-back as the default memory type.
pub fn boot_msrs() -> Msrs {
    let entries: Vec<kvm_msr_entry> = [
        (0x174, 0),               // IA32_SYSENTER_CS
        (0x175, 0),               // IA32_SYSENTER_ESP
        (0x176, 0),               // IA32_SYSENTER_EIP
        (0xc000_0081, 0),         // STAR
        (0xc000_0082, 0),         // LSTAR
        (0xc000_0083, 0),         // CSTAR
        (0xc000_0084, 0),         // SYSCALL_MASK
        (0xc000_0102, 0),         // KERNEL_GS_BASE
        (0x10, 0),                // IA32_TSC
        (0x1a0, 1),               // IA32_MISC_ENABLE: fast strings
        (0x2ff, (1 << 11) | 0x6), // MTRRdefType: enabled, write-back
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    Msrs::from_entries(&entries).expect("fewer entries than KVM's limit")
}

/// Index of the MSR at position `i` of [`boot_msrs`], for messages.
pub fn boot_msr_index(i: usize) -> u32 {
    boot_msrs().as_slice().get(i).map_or(0, |e| e.index)
}

/// A 64-bit interrupt gate to the CPL0 handler at `handler` (kernel code
/// segment 0x10), for [`EntryState::User64`] guests.
pub fn interrupt_gate(handler: u64) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&0x10u16.to_le_bytes());
    g[5] = 0x8e; // present, DPL 0, 64-bit interrupt gate
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_to_segments() {
        let cs = segment(CODE64, 2);
        assert_eq!(
            (cs.selector, cs.type_, cs.l, cs.db, cs.dpl),
            (0x10, 0xb, 1, 0, 0)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ucs = segment(USER_CODE64, 6);
        assert_eq!((ucs.selector, ucs.dpl, ucs.l), (0x33, 3, 1));
        let uds = segment(USER_DATA, 5);
        assert_eq!((uds.selector, uds.type_, uds.db), (0x2b, 3, 1));
        let tss = segment(USER_TSS64, 8);
        assert_eq!(
            (tss.selector, tss.base, tss.limit),
            (0x40, USER_TSS, USER_TSS_LIMIT)
        );
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn page_tables_map_identity_with_user_bit() {
        let mem = crate::memory::create(16 << 20, false).unwrap().memory;
        let sregs = setup_memory(
            &mem,
            &EntryState::User64 {
                entry: 0x10_0000,
                stack: 0x20_0000,
                interrupts: false,
            },
            kvm_sregs::default(),
        )
        .unwrap();
        assert_eq!(sregs.cr3, layout::PML4);
        let pde: u64 = mem
            .read_obj(GuestAddress(layout::PD + 3 * 0x1000 + 8))
            .unwrap();
        assert_eq!(pde, (3 << 30) | (1 << 21) | 0x87);
        assert_eq!(sregs.cs.selector, 0x33);
        assert_eq!(sregs.ss.selector, 0x2b);
        assert_eq!(usize::from(sregs.idt.limit) + 1, 256 * 16);
    }
}
