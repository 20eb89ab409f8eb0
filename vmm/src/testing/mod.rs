//! Test and bring-up support: tiny hand-assembled guests, a minimal ELF
//! writer that gives them the Xen PVH note (so the vCPU loop, serial port
//! and reset line can be proven without a real kernel), and [`driver`], a
//! virtio-pci driver that works the buses as a guest's accesses would.

pub mod counting;
pub mod driver;

use crate::cpu::EntryState;
use crate::machine::BootSource;

/// Where the tiny guests are loaded (and the PVH entry).
pub const LOAD_ADDR: u64 = 0x10_0000;
/// Their stack (CPL3).
pub const STACK: u64 = 0x20_0000;

/// Boots `code` at CPL3 (no interrupts).
pub fn cpl3(code: Vec<u8>) -> BootSource {
    BootSource::Raw {
        image: code,
        load_addr: LOAD_ADDR,
        entry: EntryState::User64 {
            entry: LOAD_ADDR,
            stack: STACK,
            interrupts: false,
        },
        interrupt_gates: Vec::new(),
    }
}

/// Which interrupt [`interrupt_guest`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptSource {
    /// An MSI to vector 0x30 (virtio queue 0 with MSI-X as
    /// [`driver::PciDriver::init`] programs it).
    Msi,
    /// COM1's receive interrupt, IRQ 4 through the IOAPIC to vector 0x31.
    Serial,
}

/// A CPL3 guest with RFLAGS.IF set that enables its LAPIC (and for
/// [`InterruptSource::Serial`] masks the PICs, routes IOAPIC pin 4 to
/// vector 0x31 and enables the UART's receive interrupt), prints `r`, and
/// spins. Its CPL0
/// handler prints `I` (MSI) or echoes the received byte (serial) and
/// resets.
pub fn interrupt_guest(source: InterruptSource) -> BootSource {
    let mut code = vec![
        0xbb, 0xf0, 0x00, 0xe0, 0xfe, // mov ebx, 0xfee000f0 (LAPIC SVR)
        0xc7, 0x03, 0xff, 0x01, 0x00, 0x00, // mov dword [rbx], 0x1ff
    ];
    if source == InterruptSource::Serial {
        code.extend([
            // Mask the PICs: GSI 4 reaches them too, and through LINT0
            // (ExtINT) they would deliver a vector this IDT lacks.
            0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1, // mov al, 0xff; out 0x21/0xa1
            0xbb, 0x00, 0x00, 0xc0, 0xfe, // mov ebx, 0xfec00000 (IOAPIC)
            0xc7, 0x03, 0x18, 0x00, 0x00, 0x00, // IOREGSEL = pin 4 low
            0xc7, 0x43, 0x10, 0x31, 0x00, 0x00, 0x00, // IOWIN = vector 0x31
            0xc7, 0x03, 0x19, 0x00, 0x00, 0x00, // IOREGSEL = pin 4 high
            0xc7, 0x43, 0x10, 0x00, 0x00, 0x00, 0x00, // IOWIN = APIC 0
            0x66, 0xba, 0xf9, 0x03, 0xb0, 0x01, 0xee, // IER = received data
        ]);
    }
    code.extend([0x66, 0xba, 0xf8, 0x03, 0xb0, b'r', 0xee]); // print 'r'
    code.extend([0xeb, 0xfe]); // spin
    let handler_at = 0x100;
    code.resize(handler_at, 0x90);
    code.extend([0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    match source {
        InterruptSource::Msi => code.extend([0xb0, b'I', 0xee]),
        InterruptSource::Serial => code.extend([0xec, 0xee]), // in, out: echo
    }
    code.extend([0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]); // reset, spin
    let vector = match source {
        InterruptSource::Msi => 0x30,
        InterruptSource::Serial => 0x31,
    };
    BootSource::Raw {
        image: code,
        load_addr: LOAD_ADDR,
        entry: EntryState::User64 {
            entry: LOAD_ADDR,
            stack: STACK,
            interrupts: true,
        },
        interrupt_gates: vec![(vector, LOAD_ADDR + handler_at as u64)],
    }
}

/// Code that writes `msg` to COM1 byte by byte and then asks the i8042
/// for a CPU reset, then spins. Valid as 32-bit and as 64-bit code.
pub fn hello_then_reset(msg: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in msg {
        code.extend([0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    code.extend([0xb0, 0xfe, 0xe6, 0x64]); // mov al, 0xfe; out 0x64, al
    code.extend([0xeb, 0xfe]); // jmp $
    code
}

/// Code that writes `msg` to COM1 and then executes `ud2` with no IDT:
/// the exception cannot be delivered, which is a triple fault.
pub fn hello_then_fault(msg: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for b in msg {
        code.extend([0xb0, *b, 0xee]);
    }
    code.extend([0x0f, 0x0b]); // ud2
    code
}

/// Code that spins forever (to prove pause, resume and stop).
pub fn spin() -> Vec<u8> {
    vec![0xeb, 0xfe]
}

/// An ELF64 executable with `code` in one PT_LOAD segment at
/// [`LOAD_ADDR`] and a PT_NOTE with `XEN_ELFNOTE_PHYS32_ENTRY` pointing
/// at it.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    note.extend(4u32.to_le_bytes()); // namesz
    note.extend(4u32.to_le_bytes()); // descsz
    note.extend(18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend(b"Xen\0");
    note.extend((LOAD_ADDR as u32).to_le_bytes());
    let code_off = (note_off + note.len()).next_multiple_of(16);

    let mut elf = Vec::new();
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // 64-bit, LSB, v1
    elf.extend([0u8; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // x86-64
    elf.extend(1u32.to_le_bytes());
    elf.extend(LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend((EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend(0u64.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    elf.extend((EHDR as u16).to_le_bytes());
    elf.extend((PHDR as u16).to_le_bytes());
    elf.extend(2u16.to_le_bytes()); // e_phnum
    elf.extend(64u16.to_le_bytes()); // e_shentsize
    elf.extend(0u16.to_le_bytes()); // e_shnum
    elf.extend(0u16.to_le_bytes()); // e_shstrndx
    let phdr = |elf: &mut Vec<u8>, kind: u32, flags: u32, off: usize, addr: u64, len: usize| {
        elf.extend(kind.to_le_bytes());
        elf.extend(flags.to_le_bytes());
        elf.extend((off as u64).to_le_bytes());
        elf.extend(addr.to_le_bytes()); // vaddr
        elf.extend(addr.to_le_bytes()); // paddr
        elf.extend((len as u64).to_le_bytes()); // filesz
        elf.extend((len as u64).to_le_bytes()); // memsz
        elf.extend(16u64.to_le_bytes()); // align
    };
    phdr(&mut elf, 1, 5, code_off, LOAD_ADDR, code.len()); // PT_LOAD, R+X
    phdr(&mut elf, 4, 4, note_off, 0, note.len()); // PT_NOTE
    elf.extend(&note);
    elf.resize(code_off, 0);
    elf.extend(code);
    elf
}

/// CPL3 code (64-bit) that reads slot 1's vendor/device dword through
/// conf1 and the 16-bit `num_queues` register of a virtio device whose
/// BAR 0 is at `bar` (below 4 GiB) through MMIO, writes those six bytes
/// raw to COM1, and resets.
pub fn read_pci_then_reset(bar: u32) -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x0c, // mov dx, 0xcf8
        0xb8, 0x00, 0x08, 0x00, 0x80, // mov eax, 0x80000800 (slot 1, reg 0)
        0xef, // out dx, eax
        0x66, 0xba, 0xfc, 0x0c, // mov dx, 0xcfc
        0xed, // in eax, dx
        0x89, 0xc1, // mov ecx, eax
        0xbb, // mov ebx, bar
    ];
    code.extend(bar.to_le_bytes());
    code.extend([
        0x66, 0x8b, 0x43, 0x12, // mov ax, [rbx + 0x12]
        0x89, 0xc6, // mov esi, eax
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    ]);
    for _ in 0..4 {
        code.extend([0x88, 0xc8, 0xee, 0xc1, 0xe9, 0x08]); // mov al, cl; out; shr ecx, 8
    }
    for _ in 0..2 {
        code.extend([0x89, 0xf0, 0xee, 0xc1, 0xee, 0x08]); // mov eax, esi; out; shr esi, 8
    }
    code.extend([0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]); // reset, spin
    code
}

/// CPL3 code that echoes COM1 input back to COM1 (polling the line status
/// register, no interrupts) until it has echoed a `q`, then resets.
pub fn echo_until_q() -> Vec<u8> {
    vec![
        0x66, 0xba, 0xfd, 0x03, // 0: mov dx, 0x3fd (line status)
        0xec, // 4: in al, dx
        0xa8, 0x01, // 5: test al, 1 (data ready)
        0x74, 0xfb, // 7: jz 4
        0x66, 0xba, 0xf8, 0x03, // 9: mov dx, 0x3f8
        0xec, // 13: in al, dx
        0xee, // 14: out dx, al
        0x3c, b'q', // 15: cmp al, 'q'
        0x75, 0xed, // 17: jne 0
        0xb0, 0xfe, 0xe6, 0x64, // 19: reset
        0xeb, 0xfe,
    ]
}

/// CPL3 code that writes queue 0's index to the doorbell at `notify`
/// (below 4 GiB; a 16-bit store, as Linux's virtio-pci driver does) and
/// resets.
pub fn ring_doorbell_then_reset(notify: u32) -> Vec<u8> {
    let mut code = vec![0xbb]; // mov ebx, notify
    code.extend(notify.to_le_bytes());
    code.extend([0x66, 0xc7, 0x03, 0x00, 0x00]); // mov word [rbx], 0
    code.extend([0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]); // reset, spin
    code
}
