//! Interrupts into a guest on this machine's KVM: a CPL3 guest with
//! RFLAGS.IF set and a CPL0 handler in its IDT (run emulated here) gets
//! an MSI-X interrupt of virtio-rng (irqfd on the vector's GSI, routed by
//! KVM_SET_GSI_ROUTING) and COM1's IRQ 4 (irqfd on GSI 4, through the
//! in-kernel IOAPIC).

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vmm::config::{ConsoleConfig, ConsoleHistory, VmConfig};
use vmm::cpu::VmEvent;
use vmm::machine::Machine;
use vmm::testing::driver::PciDriver;
use vmm::testing::{self, InterruptSource};

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

/// Reads the console until `n` bytes have come.
fn read_n(console: &mut UnixStream, n: usize) -> Vec<u8> {
    console
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < n && Instant::now() < deadline {
        if let Ok(k) = console.read(&mut buf) {
            got.extend_from_slice(&buf[..k]);
        }
    }
    got
}

#[test]
fn an_msix_interrupt_reaches_the_guest_handler() {
    let dir = tempfile::tempdir().unwrap();
    let source = testing::interrupt_guest(InterruptSource::Msi);
    let mut machine = Machine::build(&config(dir.path()), source).unwrap();
    let mut console = UnixStream::connect(dir.path().join("console.sock")).unwrap();
    // virtio-rng with MSI-X: queue 0 on vector 0 (APIC 0, vector 0x30).
    let drv = PciDriver::new(&machine);
    let mut dev = drv.init(drv.find(4, 0).unwrap(), 0, 16, true).unwrap();
    machine.start().unwrap();
    assert_eq!(read_n(&mut console, 1), b"r", "the guest did not get ready");
    // A request completes: the device writes its call eventfd, bound by
    // irqfd to the vector's GSI.
    drv.submit(&mut dev, 0, &[(0x30_0000, 16, true)]).unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(matches!(event, Some(VmEvent::PowerOff { .. })), "{event:?}");
    machine.stop();
    assert_eq!(read_n(&mut console, 1), b"I");
    assert_eq!(machine.device_counters()[0]["backend"]["interrupts"], 1);
}

#[test]
fn com1_receive_interrupt_reaches_the_guest_through_the_ioapic() {
    let dir = tempfile::tempdir().unwrap();
    let source = testing::interrupt_guest(InterruptSource::Serial);
    let mut machine = Machine::build(&config(dir.path()), source).unwrap();
    let mut console = UnixStream::connect(dir.path().join("console.sock")).unwrap();
    machine.start().unwrap();
    assert_eq!(read_n(&mut console, 1), b"r", "the guest did not get ready");
    console.write_all(b"z").unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(matches!(event, Some(VmEvent::PowerOff { .. })), "{event:?}");
    machine.stop();
    // The handler read the byte from the UART and echoed it.
    assert_eq!(read_n(&mut console, 1), b"z");
}
