//! The body of the `pci_transport` fuzz target (vmm/fuzz), also run by a
//! unit test so that `make test` exercises it.
//!
//! The input plays a guest driver poking at bus 0: a KVM VM, 2 MiB of RAM
//! and the machine's PCI wiring ([`PciRoot`] on the conf1 ports, a
//! virtio-rng [`VirtioPci`] in slot 1 with its BAR on the MMIO bus), then
//! a sequence of port and MMIO accesses of any size at any offset:
//! configuration space writes (BAR sizing and moves, the command
//! register, MSI-X enable and masks, the virtio PCI config window), the
//! common configuration (feature words, queue selection, sizes and
//! addresses, status including DRIVER_OK, which starts the device's queue
//! worker on the addresses the guest wrote, and reset), the ISR, the
//! device configuration, doorbells and the MSI-X table and PBA. A new VM
//! per input: every input starts from the machine as it boots.
//!
//! Input: a sequence of operations, each an opcode byte (`OP_*` in the
//! low 3 bits, the access size `1 << ((op >> 3) & 3)` bytes) and its
//! arguments (little-endian; missing bytes read as zero):
//!
//! | op | arguments |
//! |---|---|
//! | [`OP_CONF1_ADDR`] | u8 slot, u8 register (dword index) |
//! | [`OP_CONF1_WRITE`] | u8 byte offset in the data port, value |
//! | [`OP_CONF1_READ`] | u8 byte offset in the data port |
//! | [`OP_BAR_WRITE`] | u16 offset in the device's BAR (where it is now), value |
//! | [`OP_BAR_READ`] | u16 offset in the device's BAR |
//! | [`OP_MMIO_WRITE`] | u32 address (from the start of the PCI hole), value |
//! | [`OP_RAM_WRITE`] | u16 address (× 8, in the first 512 KiB of RAM), u64 value |
//! | [`OP_KICK`] | u8 queue: a doorbell written through its trapped path |

use std::cell::OnceCell;
use std::sync::{Arc, Mutex, PoisonError};

use vm_memory::{Bytes, GuestAddress};

use crate::bus::Bus;
use crate::layout;
use crate::pci::root::{CONF1_BASE, CONF1_LEN, PciRoot};
use crate::pci::slot_resources;
use crate::virtio::rng::Rng;
use crate::virtio::transport::{BAR_SIZE, NOTIFY_MULTIPLIER, NOTIFY_OFFSET, VirtioPci};
use crate::vm::Vm;

/// Select a function and register on conf1.
pub const OP_CONF1_ADDR: u8 = 0;
/// Write the conf1 data port.
pub const OP_CONF1_WRITE: u8 = 1;
/// Read the conf1 data port.
pub const OP_CONF1_READ: u8 = 2;
/// Write the device's BAR at its current address.
pub const OP_BAR_WRITE: u8 = 3;
/// Read the device's BAR at its current address.
pub const OP_BAR_READ: u8 = 4;
/// Write any MMIO address in the PCI hole.
pub const OP_MMIO_WRITE: u8 = 5;
/// Write guest RAM (descriptors and rings for the rng queue).
pub const OP_RAM_WRITE: u8 = 6;
/// Ring a queue's doorbell by a trapped write.
pub const OP_KICK: u8 = 7;

/// Most operations per input; more are ignored.
pub const MAX_OPS: usize = 256;
/// Guest RAM.
const RAM: u64 = 2 << 20;

thread_local! {
    /// The VM every input's devices are plugged into.
    static VM: OnceCell<Option<Arc<Vm>>> = const { OnceCell::new() };
}

/// What one run did, for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Operations run.
    pub ops: usize,
    /// The device's BAR address at the end.
    pub bar: u64,
}

/// Runs the accesses in `data`; must never panic or hang. `None` when
/// the machine cannot be made (no KVM).
pub fn pci_transport(data: &[u8]) -> Option<Outcome> {
    let vm = VM.with(|vm| vm.get_or_init(|| Vm::new().ok().map(Arc::new)).clone())?;
    vm.forget_msi_routes().ok()?;
    let ram = crate::memory::create(RAM, false).ok()?;
    let io = Bus::new();
    let mmio = Arc::new(Bus::new());
    let root = Arc::new(Mutex::new(PciRoot::new(Arc::clone(&mmio))));
    io.insert(root.clone(), CONF1_BASE, CONF1_LEN).ok()?;
    let (bar, pin) = slot_resources(1);
    let pci = VirtioPci::new(Box::new(Rng::new()), vm, ram.clone(), bar, pin).ok()?;
    mmio.insert(pci.clone(), bar, BAR_SIZE).ok()?;
    root.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(1, pci.clone());

    let mut input = Reader(data);
    let mut out = Outcome::default();
    while !input.0.is_empty() && out.ops < MAX_OPS {
        out.ops += 1;
        let op = input.u8();
        let len = 1usize << ((op >> 3) & 3);
        let mut buf = [0u8; 8];
        match op & 7 {
            OP_CONF1_ADDR => {
                let slot = u32::from(input.u8() & 0x1f);
                let reg = u32::from(input.u8() & 0x3f);
                let addr = 0x8000_0000 | (slot << 11) | (reg << 2);
                io.write(CONF1_BASE, &addr.to_le_bytes());
            }
            OP_CONF1_WRITE => {
                let at = u64::from(input.u8() & 3);
                let value = input.take(len);
                io.write(CONF1_BASE + 4 + at, value);
            }
            OP_CONF1_READ => {
                let at = u64::from(input.u8() & 3);
                io.read(CONF1_BASE + 4 + at, &mut buf[..len]);
            }
            OP_BAR_WRITE => {
                let at = current_bar(&pci) + u64::from(input.u16()) % BAR_SIZE;
                let value = input.take(len);
                mmio.write(at, value);
            }
            OP_BAR_READ => {
                let at = current_bar(&pci) + u64::from(input.u16()) % BAR_SIZE;
                mmio.read(at, &mut buf[..len]);
            }
            OP_MMIO_WRITE => {
                let at = layout::PCI_MMIO_START + u64::from(input.u32());
                let value = input.take(len);
                mmio.write(at, value);
            }
            OP_RAM_WRITE => {
                let at = u64::from(input.u16()) * 8;
                let value = input.u64();
                let _ = ram.memory.write_obj(value, GuestAddress(at));
            }
            _ => {
                let q = u64::from(input.u8() & 3);
                let at = current_bar(&pci) + NOTIFY_OFFSET + q * u64::from(NOTIFY_MULTIPLIER);
                // A 1-byte doorbell write is not an ioeventfd match: it traps.
                mmio.write(at, &[0]);
            }
        }
    }
    out.bar = current_bar(&pci);
    pci.lock().unwrap_or_else(PoisonError::into_inner).unplug();
    Some(out)
}

fn current_bar(pci: &Arc<Mutex<VirtioPci>>) -> u64 {
    pci.lock().unwrap_or_else(PoisonError::into_inner).bar()
}

/// Reads the input front to back; past its end, zeros.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

/// Seed inputs, and the unit tests that keep the body running.
#[cfg(test)]
mod tests {
    use super::*;

    /// Size bits of an opcode: 4-byte access.
    const W4: u8 = 2 << 3;
    const W2: u8 = 1 << 3;

    fn conf(reg: u8, value: u32) -> Vec<u8> {
        let mut v = vec![OP_CONF1_ADDR, 1, reg, OP_CONF1_WRITE | W4, 0];
        v.extend_from_slice(&value.to_le_bytes());
        v
    }

    fn common(offset: u16, op_size: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![OP_BAR_WRITE | op_size];
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    /// The seeds written to vmm/fuzz/corpus/pci_transport.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        // A driver's bring-up: memory decoding on, MSI-X enabled, status
        // ACK|DRIVER, features, queue 0 at 0x1000/0x2000/0x3000, enabled,
        // FEATURES_OK, DRIVER_OK, a kick, a reset.
        let mut bringup = conf(1, 0x0000_0006);
        for (off, size, value) in [
            (0x14u16, 0u8, &[3u8][..]),
            (0x08, W4, &[0, 0, 0, 0][..]),
            (0x0c, W4, &[0, 0, 0, 0][..]),
            (0x08, W4, &[1, 0, 0, 0][..]),
            (0x0c, W4, &[1, 0, 0, 0][..]),
            (0x16, W2, &[0, 0][..]),
            (0x20, W4, &[0, 0x10, 0, 0][..]),
            (0x28, W4, &[0, 0x20, 0, 0][..]),
            (0x30, W4, &[0, 0x30, 0, 0][..]),
            (0x1c, W2, &[1, 0][..]),
            (0x14, 0, &[0x0b][..]),
            (0x14, 0, &[0x0f][..]),
        ] {
            bringup.extend(common(off, size, value));
        }
        bringup.extend([OP_KICK, 0, OP_BAR_READ | W4, 0x14, 0]);
        bringup.extend(common(0x14, 0, &[0]));

        // BAR sizing then a move, then a read at the new place.
        let mut bar_move = conf(4, 0xffff_ffff);
        bar_move.extend([OP_CONF1_READ | W4, 0]);
        bar_move.extend(conf(4, 0xe100_0000));
        bar_move.extend(conf(1, 0x0000_0006));
        bar_move.extend([OP_BAR_READ | W4, 0, 0]);

        // MSI-X: table entry 0 programmed and unmasked, then enabled.
        let mut msix = Vec::new();
        msix.extend(common(0x3000, 3 << 3, &0xfee0_0000u64.to_le_bytes()));
        msix.extend(common(0x3008, W4, &0x41u32.to_le_bytes()));
        msix.extend(common(0x300c, W4, &0u32.to_le_bytes()));
        msix.extend(conf(0x10, 0x8000_0000));
        msix.extend(conf(0x11, 0xc000_0000));

        // Reads across every window.
        let mut reads = Vec::new();
        for off in [0u16, 0x800, 0x1000, 0x2000, 0x3000, 0x3800, 0x3ffe] {
            reads.push(OP_BAR_READ | W4);
            reads.extend_from_slice(&off.to_le_bytes());
        }
        for reg in 0..24 {
            reads.extend([OP_CONF1_ADDR, 1, reg, OP_CONF1_READ | W4, 0]);
        }
        vec![
            ("bringup", bringup),
            ("bar_move", bar_move),
            ("msix", msix),
            ("reads", reads),
        ]
    }

    #[test]
    fn seeds_and_their_mutations_run() {
        let Some(out) = pci_transport(&[]) else {
            eprintln!("No KVM here: the PCI transport body is not run");
            return;
        };
        assert_eq!(out.ops, 0);
        for (name, seed) in seeds() {
            let out = pci_transport(&seed).expect("the machine can be made");
            assert!(out.ops > 3, "{name}");
        }
        let bar = pci_transport(&seeds()[1].1).expect("machine").bar;
        assert_eq!(bar, 0xe100_0000, "the BAR moved where the guest put it");

        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = seeds();
        for i in 0..200 {
            let mut input = seeds[i % seeds.len()].1.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = usize::try_from(next()).expect("64-bit") % input.len();
                input[at] = next() as u8;
            }
            let _ = pci_transport(&input);
        }
    }

    /// The committed seed corpus of pci_transport is the one this code
    /// makes (`make fuzz-seeds` writes it).
    #[test]
    fn committed_seeds_are_current() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pci_transport");
        datapath::seed_corpus::check(&dir, seeds());
    }
}
