//! The VMM on this machine's KVM without a real guest: tiny hand-assembled
//! programs prove the vCPU loop, the PVH entry, the serial port, the reset
//! line, fault reporting, and pause/resume/stop.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vmm::config::{ConsoleConfig, ConsoleHistory, VmConfig};
use vmm::cpu::VmEvent;
use vmm::machine::{BootSource, Machine, MachineState};
use vmm::testing;

fn config(dir: &Path, kernel: &Path) -> VmConfig {
    VmConfig {
        vcpus: 1,
        memory_mib: 64,
        hugepages: false,
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: "console=ttyS0".to_owned(),
        console: ConsoleConfig {
            stdout: false,
            socket: Some(dir.join("console.sock")),
            history: ConsoleHistory::Replay,
        },
        disks: Vec::new(),
        nets: Vec::new(),
        rng: false,
    }
}

/// Reads from the console socket until `want` has been seen.
fn read_until(console: &mut UnixStream, want: &str) -> String {
    console
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a positive timeout is accepted");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&got).contains(want) {
            break;
        }
        match console.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn pvh_guest_prints_and_resets_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("hello.elf");
    std::fs::write(
        &kernel,
        testing::pvh_elf(&testing::hello_then_reset(b"hello\n")),
    )
    .unwrap();
    let config = config(dir.path(), &kernel);
    let mut machine = Machine::build(&config, BootSource::Kernel).unwrap();
    let mut console = UnixStream::connect(dir.path().join("console.sock")).unwrap();
    machine.start().unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(
        matches!(&event, Some(VmEvent::PowerOff { reason }) if reason.contains("i8042")),
        "{event:?}"
    );
    machine.stop();
    assert_eq!(read_until(&mut console, "hello\n"), "hello\n");
    let io_out = machine
        .exit_counters()
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == "io_out")
        .unwrap()
        .1;
    assert!(io_out >= 7, "{io_out}");
}

#[test]
fn triple_fault_is_an_error_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("fault.elf");
    std::fs::write(
        &kernel,
        testing::pvh_elf(&testing::hello_then_fault(b"bye")),
    )
    .unwrap();
    let config = config(dir.path(), &kernel);
    let mut machine = Machine::build(&config, BootSource::Kernel).unwrap();
    machine.start().unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    match event {
        Some(VmEvent::Fault { cpu: 0, reason }) => {
            assert!(reason.contains("triple fault"), "{reason}");
        }
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn cpl3_guest_runs_natively_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("unused");
    std::fs::write(&kernel, b"").unwrap();
    let mut config = config(dir.path(), &kernel);
    config.vcpus = 2;
    let source = testing::cpl3(testing::hello_then_reset(b"ring3\n"));
    let mut machine = Machine::build(&config, source).unwrap();
    let mut console = UnixStream::connect(dir.path().join("console.sock")).unwrap();
    machine.start().unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(matches!(event, Some(VmEvent::PowerOff { .. })), "{event:?}");
    machine.stop();
    assert_eq!(read_until(&mut console, "ring3\n"), "ring3\n");
}

#[test]
fn spinning_cpl3_guest_pauses_resumes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("unused");
    std::fs::write(&kernel, b"").unwrap();
    let mut config = config(dir.path(), &kernel);
    config.vcpus = 2;
    let source = testing::cpl3(testing::spin());
    let mut machine = Machine::build(&config, source).unwrap();
    machine.start().unwrap();
    assert_eq!(machine.wait_event(Duration::from_millis(300)), None);
    machine.pause();
    assert_eq!(machine.state(), MachineState::Paused);
    machine.resume();
    assert_eq!(machine.state(), MachineState::Running);
    machine.stop();
    assert_eq!(machine.state(), MachineState::Stopped);
}

#[test]
fn console_socket_input_reaches_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("unused");
    std::fs::write(&kernel, b"").unwrap();
    let config = config(dir.path(), &kernel);
    let source = testing::cpl3(testing::echo_until_q());
    let mut machine = Machine::build(&config, source).unwrap();
    let mut console = UnixStream::connect(dir.path().join("console.sock")).unwrap();
    machine.start().unwrap();
    std::io::Write::write_all(&mut console, b"typed at the console, q").unwrap();
    let event = machine.wait_event(Duration::from_secs(60));
    assert!(matches!(event, Some(VmEvent::PowerOff { .. })), "{event:?}");
    machine.stop();
    assert_eq!(
        read_until(&mut console, "console, q"),
        "typed at the console, q"
    );
}
