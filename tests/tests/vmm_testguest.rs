//! The test guest's own virtio driver drives sfera-vmm's devices (the CPL3 test guest, QEMU).
//!
//! sfera-vmm running the purpose-built CPL3 test guest (vmm/testguest)
//! with virtio-rng, a disk on sfera-blockd and a NIC on sfera-vswitchd:
//! the guest's own virtio driver finds the devices on PCI and drives them,
//! and its console report is checked line by line (memory map and command
//! line as configured, disk data in the image byte for byte, frames between
//! two VMs, pause/resume, power-off, guest faults).

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::daemons::blockd::Blockd;
use harness::daemons::vswitchd::Vswitchd;
use harness::peers::qsd::Export;
use harness::testdir::TestDir;
use harness::testguest::{self, Devices, Hypervisor, Report, TestGuestVm};

const MEMORY_MIB: u64 = 256;
const RUN: Duration = Duration::from_secs(45);

/// The memory map sfera-vmm's machine model gives a guest with 256 MiB
/// (vmm/README.md): RAM minus the first page, the MP table and BIOS hole
/// reserved, RAM from 1 MiB, the top of the 32-bit space reserved.
const MEMMAP_256M: &[(u64, u64, u32)] = &[
    (0x1000, 0x9_fc00, 1),
    (0x9_fc00, 0x10_0000, 2),
    (0x10_0000, 0x1000_0000, 1),
    (0xe000_0000, 0x1_0000_0000, 2),
];

/// A disk image on a sfera-blockd export.
fn disk(dir: &TestDir, name: &str) -> Result<(Blockd, PathBuf)> {
    let image = dir.join(format!("{name}.img"));
    File::create(&image)?.set_len(16 << 20)?;
    let blockd = Blockd::start(dir, name, &Export::new(&image))?;
    Ok((blockd, image))
}

fn ensure_ok(vm: &mut TestGuestVm, what: &str) -> Result<Report> {
    let (status, report) = vm.wait_exit(RUN)?;
    ensure!(
        report.done() == Some(true) && status.code() == Some(0),
        "{what}: sfera-vmm ended with {status:?}; report:\n{}\nlog:\n{}",
        report.text(),
        vm.log()
    );
    Ok(report)
}

#[test]
fn the_test_guest_drives_rng_disk_and_nic_and_powers_off() -> Result<()> {
    let dir = TestDir::new("vmm-tg-devices")?;
    let (mut blockd, image) = disk(&dir, "vda")?;
    let mut switch = Vswitchd::new(&dir);
    let mac = "52:54:00:00:01:01";
    let port = switch.add_port("a", mac, "default")?;
    let cmdline = "require=rng,blk,net blk.sector=2048 blk.count=256 blk.seed=7 \
                   net.role=send net.count=4 rng.bytes=128";
    let devices = Devices {
        rng: true,
        disk: Some(blockd.socket().to_path_buf()),
        nic: Some((port, mac.to_owned())),
    };
    let mut vm = TestGuestVm::start(
        &dir,
        "vm",
        Hypervisor::SferaVmm,
        MEMORY_MIB,
        cmdline,
        &devices,
    )?;
    let report = ensure_ok(&mut vm, "rng + blk + net")?;

    ensure!(
        report.memmap() == MEMMAP_256M,
        "memory map {:x?}",
        report.memmap()
    );
    ensure!(report.cmdline() == Some(cmdline), "{:?}", report.cmdline());
    let line = |prefix: &str| {
        report
            .line(prefix)
            .with_context(|| format!("no `{prefix}` in\n{}", report.text()))
    };
    ensure!(line("rng ok")?.starts_with("rng ok bytes=128 "));
    line("blk polled sectors 2048+128 written and verified")?;
    line("blk irq sectors 2176+128 written and verified")?;
    let blk = line("blk ok")?;
    ensure!(
        blk.starts_with("blk ok written=256 verified=512 ") && blk.ends_with("flush=ok"),
        "{blk}"
    );
    // The interrupt-driven half was woken by MSI-X interrupts.
    ensure!(!blk.contains("irqs=0 "), "{blk}");
    ensure!(
        line("blk capacity=")?
            .starts_with("blk capacity=32768 sectors blk_size=512 ro=0 flush=1 msix=1"),
        "{}",
        line("blk capacity=")?
    );
    ensure!(line("blk id=")? == "blk id=vda");
    ensure!(line("net mac=")?.starts_with(&format!("net mac={mac} link=up")));
    ensure!(line("net ok role=send sent=4 ")?.contains(" other="));
    // Three devices on bus 0 in the documented order, BARs as the VMM set them.
    for (slot, kind, bar) in [
        (1, "virtio-rng", 0xc000_0000u64),
        (2, "virtio-blk", 0xc000_4000),
        (3, "virtio-net", 0xc000_8000),
    ] {
        let dev = format!("pci 00:{slot:02x}.0 ");
        ensure!(
            report
                .lines
                .iter()
                .any(|l| l.starts_with(&dev) && l.ends_with(kind)),
            "no {kind} at {dev}:\n{}",
            report.text()
        );
        ensure!(
            report
                .lines
                .iter()
                .any(|l| l.starts_with(&format!("{dev}bar0 mem64 {bar:#x}"))),
            "{kind}'s BAR 0 is not at {bar:#x}:\n{}",
            report.text()
        );
    }
    ensure!(
        !report
            .lines
            .iter()
            .any(|l| l.contains("(assigned by the guest)")),
        "the guest had to assign BARs:\n{}",
        report.text()
    );
    // What the guest wrote is in the image, byte for byte.
    testguest::check_disk(&image, 7, 2048, 256)?;
    blockd.ensure_running()?;
    switch.ensure_running()?;
    Ok(())
}

#[test]
fn two_test_guests_ping_pong_through_the_switch() -> Result<()> {
    let dir = TestDir::new("vmm-tg-pingpong")?;
    let mut switch = Vswitchd::new(&dir);
    let macs = ["52:54:00:00:02:01", "52:54:00:00:02:02"];
    let ports = [
        switch.add_port("a", macs[0], "default")?,
        switch.add_port("b", macs[1], "default")?,
    ];
    let mut vms = Vec::new();
    for (i, role) in ["pong", "ping"].into_iter().enumerate() {
        let devices = Devices {
            nic: Some((ports[i].clone(), macs[i].to_owned())),
            ..Devices::default()
        };
        vms.push(TestGuestVm::start(
            &dir,
            role,
            Hypervisor::SferaVmm,
            64,
            &format!("require=net net.role={role} net.count=32 net.len=1000 net.timeout=30"),
            &devices,
        )?);
    }
    for (vm, role) in vms.iter_mut().zip(["pong", "ping"]) {
        let report = ensure_ok(vm, role)?;
        let net = report
            .line("net ok")
            .with_context(|| format!("{role}: no `net ok`:\n{}", report.text()))?;
        ensure!(
            net.starts_with(&format!("net ok role={role} sent=32 received=32 ")),
            "{net}"
        );
    }
    switch.ensure_running()?;
    Ok(())
}

#[test]
fn pause_and_resume_keep_the_guest_state() -> Result<()> {
    let dir = TestDir::new("vmm-tg-pause")?;
    let (mut blockd, image) = disk(&dir, "vda")?;
    // A long polled run (8192 sectors, a few seconds here) to pause inside.
    let cmdline = "require=blk blk.sector=0 blk.count=16384 blk.seed=11 blk.req=8 blk.depth=4";
    let devices = Devices {
        disk: Some(blockd.socket().to_path_buf()),
        ..Devices::default()
    };
    let mut vm = TestGuestVm::start(&dir, "vm", Hypervisor::SferaVmm, 64, cmdline, &devices)?;
    vm.wait_for_line("blk capacity=", RUN)?;
    let mut paused_mid_run = 0;
    for _ in 0..3 {
        if vm.report().done().is_some() {
            break;
        }
        // How long the run takes is the machine's: the guest may finish
        // between the check above and the pause (then the VM is stopped
        // and says so), which ends the loop, not the test.
        if let Err(e) = vm.put("pause") {
            if vm.info()?["state"] == "stopped" && vm.report().done().is_some() {
                break;
            }
            return Err(e.into());
        }
        let state = vm.info()?["state"].clone();
        ensure!(state == "paused", "state after pause: {state}");
        let before = vm.console();
        std::thread::sleep(Duration::from_millis(300));
        ensure!(
            vm.console() == before,
            "the console moved while the VM was paused"
        );
        if Report::parse(&before).done().is_none() {
            paused_mid_run += 1;
        }
        vm.put("resume")?;
        // Resumed on its last sectors, the guest may power off before we ask.
        let state = vm.info()?["state"].clone();
        ensure!(
            state == "running" || (state == "stopped" && vm.report().done().is_some()),
            "state after resume: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(paused_mid_run > 0, "the guest finished before any pause");
    let report = ensure_ok(&mut vm, "paused blk run")?;
    ensure!(
        report.line("blk ok written=16384 verified=32768").is_some(),
        "{}",
        report.text()
    );
    testguest::check_disk(&image, 11, 0, 16384)?;
    blockd.ensure_running()?;
    Ok(())
}

fn faulting_guest(fault: &str) -> Result<()> {
    let dir = TestDir::new(&format!("vmm-tg-fault-{fault}"))?;
    let mut vm = TestGuestVm::start(
        &dir,
        "vm",
        Hypervisor::SferaVmm,
        64,
        &format!("fault={fault}"),
        &Devices::default(),
    )?;
    let (status, report) = vm.wait_exit(RUN)?;
    let log = vm.log();
    if status.signal().is_some() {
        bail!("sfera-vmm was killed ({status:?}):\n{log}");
    }
    ensure!(
        status.code() == Some(1),
        "fault={fault}: sfera-vmm ended with {status:?}\n{log}"
    );
    ensure!(
        report.line("fault vector=").is_some() && report.done() == Some(false),
        "no fault report:\n{}",
        report.text()
    );
    ensure!(
        log.contains("the VM failed") && log.contains("triple fault"),
        "no clear error on stderr:\n{log}"
    );
    Ok(())
}

#[test]
fn a_page_fault_in_the_guest_ends_the_vmm_with_an_error() -> Result<()> {
    faulting_guest("pf")
}

#[test]
fn an_invalid_opcode_in_the_guest_ends_the_vmm_with_an_error() -> Result<()> {
    faulting_guest("ud")
}

/// What the driver negotiated with each device: accepted features and the
/// queues it set up (the device's own maximum and addresses aside).
fn negotiated(report: &Report) -> Vec<String> {
    report
        .lines
        .iter()
        .filter_map(|l| {
            if let Some((dev, rest)) = l.split_once(" features offered=") {
                let accepted = rest.split_once(" accepted=")?.1;
                Some(format!("{dev} features accepted={accepted}"))
            } else if l.contains(" queue ") && l.contains(" size=") {
                let words: Vec<&str> = l.split_whitespace().collect();
                let msix = words.iter().find(|w| w.starts_with("msix="))?;
                Some(format!("{} {}", words[..4].join(" "), msix))
            } else {
                None
            }
        })
        .collect()
}

/// The test guest under sfera-vmm and under QEMU (-M pc, KVM) with the
/// same kind of devices on the same daemons: sfera-vmm's guest answers
/// the pings of QEMU's through one port group, both write their pattern
/// through sfera-blockd, and apart from the role of each in the ping/pong
/// their device results and what their drivers negotiated are the same.
#[test]
fn sfera_vmm_and_qemu_give_the_same_report() -> Result<()> {
    let dir = TestDir::new("vmm-tg-vs-qemu")?;
    let mut switch = Vswitchd::new(&dir);
    let macs = ["52:54:00:00:04:01", "52:54:00:00:04:02"];
    let ports = [
        switch.add_port("ours", macs[0], "default")?,
        switch.add_port("qemu", macs[1], "default")?,
    ];
    // One export per VM, both with the serial `vda` (each in its own
    // directory), so GET_ID answers the same.
    let disk_dirs = [
        TestDir::new("vmm-tg-vs-qemu-d0")?,
        TestDir::new("vmm-tg-vs-qemu-d1")?,
    ];
    let mut runs = Vec::new();
    for (i, (hypervisor, role, seed)) in [
        (Hypervisor::SferaVmm, "pong", 21),
        (Hypervisor::QemuPc, "ping", 22),
    ]
    .into_iter()
    .enumerate()
    {
        let (blockd, image) = disk(&disk_dirs[i], "vda")?;
        let devices = Devices {
            rng: true,
            disk: Some(blockd.socket().to_path_buf()),
            nic: Some((ports[i].clone(), macs[i].to_owned())),
        };
        // QEMU's SeaBIOS runs at emulated speed here (5-20 s before the
        // guest's first line): the pong waits up to 55 s for the pings.
        let cmdline = format!(
            "require=rng,blk,net blk.sector=1024 blk.count=128 blk.seed={seed} \
             net.role={role} net.count=16 net.timeout=55"
        );
        let vm = TestGuestVm::start(&dir, role, hypervisor, MEMORY_MIB, &cmdline, &devices)?;
        runs.push((vm, blockd, image, seed));
    }
    let mut reports = Vec::new();
    for (vm, blockd, image, seed) in &mut runs {
        let (status, report) = vm.wait_exit(Duration::from_secs(90))?;
        ensure!(
            report.done() == Some(true) && status.code() == Some(0),
            "ended with {status:?}:\n{}\n{}",
            report.text(),
            vm.log()
        );
        testguest::check_disk(image, *seed, 1024, 128)?;
        blockd.ensure_running()?;
        reports.push(report);
    }
    let (ours, qemu) = (&reports[0], &reports[1]);
    // The ping/pong lines differ by role only: each side sent and received
    // all 16 frames.
    ensure!(
        ours.line("net ok role=pong sent=16 received=16 ").is_some()
            && qemu.line("net ok role=ping sent=16 received=16 ").is_some(),
        "net:\n{}\n---\n{}",
        ours.text(),
        qemu.text()
    );
    let without_net_ok = |r: &Report| -> Vec<String> {
        r.device_results()
            .into_iter()
            .filter(|l| !l.starts_with("net ok") && !l.starts_with("net mac="))
            .collect()
    };
    ensure!(
        without_net_ok(ours) == without_net_ok(qemu),
        "device results differ:\nsfera-vmm: {:#?}\nqemu: {:#?}",
        without_net_ok(ours),
        without_net_ok(qemu)
    );
    ensure!(
        negotiated(ours) == negotiated(qemu),
        "negotiation differs:\nsfera-vmm: {:#?}\nqemu: {:#?}",
        negotiated(ours),
        negotiated(qemu)
    );
    // Same TSC source: both give KVM's pvclock leaves.
    ensure!(
        ours.line("tsc ") == qemu.line("tsc "),
        "{:?} vs {:?}",
        ours.line("tsc "),
        qemu.line("tsc ")
    );
    switch.ensure_running()?;
    Ok(())
}
