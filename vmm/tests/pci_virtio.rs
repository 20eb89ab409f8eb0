//! PCI and virtio-pci on this machine's KVM: a CPL3 guest finds the device
//! through conf1 and reads its BAR 0 through MMIO; then a driver written
//! here (driving the buses exactly as a guest's accesses would) takes
//! virtio-rng through discovery, BAR re-programming, MSI-X, feature
//! negotiation, queue set-up, DRIVER_OK, a doorbell and a reset.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm::bus::Bus;
use vmm::config::{ConsoleConfig, ConsoleHistory, VmConfig};
use vmm::cpu::VmEvent;
use vmm::layout::PCI_MMIO_START;
use vmm::machine::{BootSource, Machine};
use vmm::testing;

fn config(dir: &Path) -> VmConfig {
    let kernel = dir.join("unused");
    std::fs::write(&kernel, b"").unwrap();
    VmConfig {
        vcpus: 1,
        memory_mib: 64,
        hugepages: false,
        kernel,
        initrd: None,
        cmdline: String::new(),
        console: ConsoleConfig {
            stdout: false,
            socket: Some(dir.join("console.sock")),
            history: ConsoleHistory::Replay,
        },
        disks: Vec::new(),
        nets: Vec::new(),
        rng: true,
    }
}

fn raw(code: Vec<u8>) -> BootSource {
    testing::cpl3(code)
}

#[test]
fn cpl3_guest_sees_the_device_through_conf1_and_mmio() {
    let dir = tempfile::tempdir().unwrap();
    let code = testing::read_pci_then_reset(PCI_MMIO_START as u32);
    let mut machine = Machine::build(&config(dir.path()), raw(code)).unwrap();
    let mut console = UnixStream::connect(dir.path().join("console.sock")).unwrap();
    machine.start().unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(matches!(event, Some(VmEvent::PowerOff { .. })), "{event:?}");
    machine.stop();
    let mut got = [0u8; 6];
    console
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    console.read_exact(&mut got).unwrap();
    // Vendor 0x1af4, device 0x1044 (virtio-rng), then num_queues = 1.
    assert_eq!(got, [0xf4, 0x1a, 0x44, 0x10, 1, 0]);
}

/// A guest's view of the buses.
struct Driver {
    io: Arc<Bus>,
    mmio: Arc<Bus>,
}

impl Driver {
    fn conf_read(&self, slot: u32, off: u32) -> u32 {
        let addr = 0x8000_0000 | (slot << 11) | (off & 0xfc);
        self.io.write(0xcf8, &addr.to_le_bytes());
        let mut d = [0u8; 4];
        self.io.read(0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    fn conf_write(&self, slot: u32, off: u32, v: u32) {
        let addr = 0x8000_0000 | (slot << 11) | (off & 0xfc);
        self.io.write(0xcf8, &addr.to_le_bytes());
        self.io.write(0xcfc, &v.to_le_bytes());
    }

    fn r32(&self, addr: u64) -> u32 {
        let mut d = [0u8; 4];
        assert!(self.mmio.read(addr, &mut d), "nothing at {addr:#x}");
        u32::from_le_bytes(d)
    }

    fn w32(&self, addr: u64, v: u32) {
        assert!(self.mmio.write(addr, &v.to_le_bytes()));
    }

    fn w16(&self, addr: u64, v: u16) {
        assert!(self.mmio.write(addr, &v.to_le_bytes()));
    }

    fn w8(&self, addr: u64, v: u8) {
        assert!(self.mmio.write(addr, &[v]));
    }
}

#[test]
fn a_driver_takes_virtio_rng_through_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::build(&config(dir.path()), raw(testing::spin())).unwrap();
    let d = Driver {
        io: machine.io_bus().clone(),
        mmio: machine.mmio_bus().clone(),
    };
    let mem = machine.ram().memory.clone();

    // Discovery.
    assert_eq!(d.conf_read(0, 0), 0x0d57_8086, "host bridge");
    assert_eq!(d.conf_read(1, 0), 0x1044_1af4, "virtio-rng in slot 1");
    assert_eq!(d.conf_read(2, 0), 0xffff_ffff, "nothing in slot 2");
    let bar = u64::from(d.conf_read(1, 0x10) & !0xf) | (u64::from(d.conf_read(1, 0x14)) << 32);
    assert_eq!(bar, PCI_MMIO_START);
    // Size BAR 0 with decoding off, then move it.
    d.conf_write(1, 0x04, 0);
    d.conf_write(1, 0x10, 0xffff_ffff);
    assert_eq!(!(d.conf_read(1, 0x10) & !0xf) + 1, 0x4000);
    let bar = PCI_MMIO_START + 0x10_0000;
    d.conf_write(1, 0x10, bar as u32);
    d.conf_write(1, 0x14, 0);
    d.conf_write(1, 0x04, 0x6); // memory decode, bus master
    let mut probe = [0u8; 4];
    assert!(!d.mmio.read(PCI_MMIO_START, &mut probe), "old address left");

    // Capabilities: find common, notify, and MSI-X.
    let mut caps = std::collections::HashMap::new();
    let mut off = d.conf_read(1, 0x34) & 0xff;
    while off != 0 {
        let head = d.conf_read(1, off);
        let (id, next) = (head & 0xff, (head >> 8) & 0xff);
        let kind = if id == 0x09 {
            (head >> 24) & 0xff
        } else {
            0x100 | id
        };
        caps.insert(kind, off);
        off = next;
    }
    let common = bar + u64::from(d.conf_read(1, caps[&1] + 8));
    let notify = bar + u64::from(d.conf_read(1, caps[&2] + 8));
    let msix = caps[&0x111];
    let table = bar + u64::from(d.conf_read(1, msix + 4) & !7);

    // MSI-X: enable, vector 0 to APIC 0 vector 0x30, unmasked.
    let control = d.conf_read(1, msix) | (1 << 31);
    d.conf_write(1, msix, control);
    d.w32(table, 0xfee0_0000);
    d.w32(table + 4, 0);
    d.w32(table + 8, 0x30);
    d.w32(table + 12, 0);

    // Negotiate: VERSION_1 only.
    d.w8(common + 0x14, 1 | 2);
    d.w32(common, 1);
    assert_eq!(d.r32(common + 4) & 1, 1, "VERSION_1 offered");
    d.w32(common + 8, 0);
    d.w32(common + 0xc, 0);
    d.w32(common + 8, 1);
    d.w32(common + 0xc, 1);
    d.w8(common + 0x14, 1 | 2 | 8);
    assert_eq!(d.r32(common + 0x14) & 0xff, 1 | 2 | 8, "FEATURES_OK kept");

    // Queue 0: 16 entries, rings at 0x10000/0x11000/0x12000, vector 0.
    d.w16(common + 0x16, 0);
    d.w16(common + 0x18, 16);
    d.w16(common + 0x1a, 0);
    d.w32(common + 0x20, 0x1_0000);
    d.w32(common + 0x24, 0);
    d.w32(common + 0x28, 0x1_1000);
    d.w32(common + 0x2c, 0);
    d.w32(common + 0x30, 0x1_2000);
    d.w32(common + 0x34, 0);
    d.w16(common + 0x1c, 1);
    d.w8(common + 0x14, 1 | 2 | 8 | 4);

    // One 128-byte writable buffer at 0x20000.
    mem.write_obj(0x2_0000u64, GuestAddress(0x1_0000)).unwrap();
    mem.write_obj(128u32, GuestAddress(0x1_0008)).unwrap();
    mem.write_obj(2u16, GuestAddress(0x1_000c)).unwrap();
    mem.write_obj(0u16, GuestAddress(0x1_1004)).unwrap();
    mem.write_obj(1u16, GuestAddress(0x1_1002)).unwrap();
    d.w16(notify, 0);

    let deadline = Instant::now() + Duration::from_secs(10);
    while mem.read_obj::<u16>(GuestAddress(0x1_2002)).unwrap() != 1 {
        assert!(Instant::now() < deadline, "the request was never completed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1_2008)).unwrap(), 128);
    let mut buf = [0u8; 128];
    mem.read_slice(&mut buf, GuestAddress(0x2_0000)).unwrap();
    assert_ne!(buf, [0u8; 128]);

    let counters = machine.device_counters();
    let rng = &counters[0];
    assert_eq!(rng["device"], "rng", "{counters}");
    assert_eq!(rng["msix"], true, "{counters}");
    assert_eq!(rng["activations"], 1, "{counters}");
    assert_eq!(rng["backend"]["notifications"], 1, "{counters}");
    assert_eq!(rng["backend"]["interrupts"], 1, "{counters}");
    assert_eq!(rng["backend"]["bytes"], 128, "{counters}");

    // Reset.
    d.w8(common + 0x14, 0);
    assert_eq!(d.r32(common + 0x14) & 0xff, 0);
    assert_eq!(machine.device_counters()[0]["resets"], 1);
}

#[test]
fn without_msix_virtio_rng_interrupts_through_intx_and_isr() {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::build(&config(dir.path()), raw(testing::spin())).unwrap();
    let drv = testing::driver::PciDriver::new(&machine);
    let slot = drv.find(4, 0).unwrap();
    // The INTx line is the IOAPIC pin in the interrupt line register.
    assert_eq!(drv.conf_read(slot, 0x3c) & 0xffff, 0x0110);
    let mut dev = drv.init(slot, 0, 16, false).unwrap();
    drv.submit(&mut dev, 0, &[(0x30_0000, 32, true)]).unwrap();
    assert_eq!(drv.wait_used(&dev, 0, Duration::from_secs(10)).unwrap(), 32);
    let counters = machine.device_counters();
    let deadline = Instant::now() + Duration::from_secs(10);
    while machine.device_counters()[0]["intx_interrupts"] != 1 {
        assert!(Instant::now() < deadline, "{counters}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // ISR bit 0 is set, and reading it clears it.
    let isr = dev.bar + 0x800;
    let mut v = [0u8];
    drv.read(isr, &mut v).unwrap();
    assert_eq!(v, [1]);
    drv.read(isr, &mut v).unwrap();
    assert_eq!(v, [0]);
    assert_eq!(machine.device_counters()[0]["msix"], false);
}

#[test]
fn the_pci_cfg_capability_is_a_window_into_bar0() {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::build(&config(dir.path()), raw(testing::spin())).unwrap();
    let drv = testing::driver::PciDriver::new(&machine);
    let slot = drv.find(4, 0).unwrap();
    // Find VIRTIO_PCI_CAP_PCI_CFG (vendor capability, cfg_type 5).
    let mut off = drv.conf_read(slot, 0x34) & 0xff;
    let cap = loop {
        assert_ne!(off, 0, "no PCI_CFG capability");
        let head = drv.conf_read(slot, off);
        if head & 0xff == 0x09 && (head >> 24) == 5 {
            break off;
        }
        off = (head >> 8) & 0xff;
    };
    // Read num_queues (common config + 0x12, 2 bytes) through the window.
    drv.conf_write(slot, cap + 4, 0); // BAR 0
    drv.conf_write(slot, cap + 8, 0x12);
    drv.conf_write(slot, cap + 12, 2);
    assert_eq!(drv.conf_read(slot, cap + 16) & 0xffff, 1);
    // Write device_status (0x14, 1 byte) through it and see it over MMIO.
    drv.conf_write(slot, cap + 8, 0x14);
    drv.conf_write(slot, cap + 12, 1);
    drv.conf_write(slot, cap + 16, 1);
    let bar = u64::from(drv.conf_read(slot, 0x10) & !0xf);
    drv.conf_write(slot, 0x04, 0x2);
    let mut status = [0u8];
    drv.read(bar + 0x14, &mut status).unwrap();
    assert_eq!(status, [1]);
}

#[test]
fn a_guest_doorbell_reaches_the_device_through_the_ioeventfd() {
    let dir = tempfile::tempdir().unwrap();
    let bar = PCI_MMIO_START;
    let code = testing::ring_doorbell_then_reset((bar + 0x2000) as u32);
    let mut machine = Machine::build(&config(dir.path()), raw(code)).unwrap();
    // The driver side (in the test) sets virtio-rng up with one buffer
    // posted but does not ring; the guest rings.
    let drv = testing::driver::PciDriver::new(&machine);
    let slot = drv.find(4, 0).unwrap();
    let mut dev = drv.init(slot, 0, 16, false).unwrap();
    assert_eq!(dev.bar, bar);
    let ring = dev.rings[0].clone();
    let mem = drv.mem().clone();
    mem.write_obj(0x30_0000u64, GuestAddress(ring.desc))
        .unwrap();
    mem.write_obj(64u32, GuestAddress(ring.desc + 8)).unwrap();
    mem.write_obj(2u16, GuestAddress(ring.desc + 12)).unwrap();
    mem.write_obj(0u16, GuestAddress(ring.avail + 4)).unwrap();
    mem.write_obj(1u16, GuestAddress(ring.avail + 2)).unwrap();
    dev.rings.clear();

    machine.start().unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(matches!(event, Some(VmEvent::PowerOff { .. })), "{event:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while mem.read_obj::<u16>(GuestAddress(ring.used + 2)).unwrap() != 1 {
        assert!(
            Instant::now() < deadline,
            "the doorbell never reached the device"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let counters = machine.device_counters();
    assert_eq!(counters[0]["backend"]["notifications"], 1, "{counters}");
    // KVM signalled the eventfd: the write never came to the VMM.
    assert_eq!(counters[0]["notifications_trapped"], 0, "{counters}");
    let mmio_writes = machine
        .exit_counters()
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == "mmio_write")
        .unwrap()
        .1;
    assert_eq!(mmio_writes, 0);
}
