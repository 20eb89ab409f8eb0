//! sfera-vmm's vhost-user frontends work with Sfera's backends (a virtio driver in the test).
//!
//! sfera-vmm's vhost-user frontends against Sfera's own backends, with a
//! virtio driver in the test working the VMM's buses as a guest would (this
//! machine's KVM cannot run a guest kernel): a disk on sfera-blockd whose
//! writes land in the image byte for byte and survive a backend restart
//! (the VMM reconnects and replays the set-up), and two VMs whose NICs on
//! sfera-vswitchd exchange frames, before and after the switch restarts.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::daemons::blockd::Blockd;
use harness::daemons::vswitchd::Vswitchd;
use harness::peers::qsd::Export;
use harness::testdir::TestDir;
use harness::vm_config::VmConfigBuilder;
use harness::wait::wait_until;
use vm_memory::{Bytes, GuestAddress};
use vmm::config::VmConfig;
use vmm::machine::Machine;
use vmm::testing::{self, driver::PciDriver};

const WAIT: Duration = Duration::from_secs(30);
const BLK: u16 = 2;
const NET: u16 = 1;

/// The machine is built (devices connected) but its vCPUs never start:
/// the driver in the test plays the guest.
fn machine(config: &VmConfig) -> Result<Machine> {
    let source = testing::cpl3(testing::spin());
    Ok(Machine::build(config, source)?)
}

/// A virtio-blk request: header, data, status.
fn blk_request(
    drv: &PciDriver,
    dev: &mut testing::driver::Device,
    write: bool,
    sector: u64,
    len: u32,
) -> Result<u8> {
    let (hdr, data, status) = (0x20_0000u64, 0x20_1000u64, 0x21_0000u64);
    let mem = drv.mem();
    mem.write_obj(if write { 1u32 } else { 0 }, GuestAddress(hdr))?;
    mem.write_obj(0u32, GuestAddress(hdr + 4))?;
    mem.write_obj(sector, GuestAddress(hdr + 8))?;
    mem.write_obj(0xffu8, GuestAddress(status))?;
    drv.submit(
        dev,
        0,
        &[(hdr, 16, false), (data, len, !write), (status, 1, true)],
    )?;
    drv.wait_used(dev, 0, WAIT)?;
    Ok(mem.read_obj(GuestAddress(status))?)
}

fn file_bytes(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    File::open(path)?.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[test]
fn disk_writes_land_in_the_image_and_survive_a_backend_restart() -> Result<()> {
    let dir = TestDir::new("vmm-vhost-blk")?;
    let image = dir.join("disk.img");
    File::create(&image)?.set_len(8 << 20)?;
    let export = Export::new(&image);
    let blockd = Blockd::start(&dir, "vda", &export)?;
    let config = VmConfigBuilder::unbooted(&dir)?
        .disk(blockd.socket())
        .build();
    let machine = machine(&config)?;
    let drv = PciDriver::new(&machine);
    let slot = drv.find(BLK, 0).context("no virtio-blk on bus 0")?;
    let mut dev = drv.init(slot, 0, 128, true)?;
    // Capacity from the backend's configuration space (512-byte sectors).
    let mut cap = [0u8; 8];
    drv.read(dev.device_cfg, &mut cap)?;
    ensure!(u64::from_le_bytes(cap) == 16384, "capacity {cap:?}");

    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    drv.mem().write_slice(&pattern, GuestAddress(0x20_1000))?;
    ensure!(
        blk_request(&drv, &mut dev, true, 8, 4096)? == 0,
        "write failed"
    );
    ensure!(
        file_bytes(&image, 8 * 512, 4096)? == pattern,
        "image differs"
    );
    drv.mem()
        .write_slice(&[0u8; 4096], GuestAddress(0x20_1000))?;
    ensure!(
        blk_request(&drv, &mut dev, false, 8, 4096)? == 0,
        "read failed"
    );
    let mut back = vec![0u8; 4096];
    drv.mem().read_slice(&mut back, GuestAddress(0x20_1000))?;
    ensure!(back == pattern, "read back differs");

    // Restart the backend: the VMM reconnects and replays the set-up.
    drop(blockd);
    let blockd = Blockd::start(&dir, "vda", &export)?;
    wait_until("the VMM to reconnect", WAIT, || {
        let c = &machine.device_counters()[0]["backend"];
        Ok((c["reconnects"] == 1 && c["connected"] == true).then_some(()))
    })?;
    let second: Vec<u8> = pattern.iter().rev().copied().collect();
    drv.mem().write_slice(&second, GuestAddress(0x20_1000))?;
    ensure!(
        blk_request(&drv, &mut dev, true, 64, 4096)? == 0,
        "write after restart failed"
    );
    ensure!(
        file_bytes(&image, 64 * 512, 4096)? == second,
        "image differs after restart"
    );
    drv.reset(&dev)?;
    drop(blockd);
    Ok(())
}

/// B posts a receive buffer; A sends a frame to B (12-byte virtio-net
/// header, then Ethernet) until B has one, as a sender retries when the
/// switch saw no buffer yet (the switch may look at B's ring before it has
/// handled B's doorbell); B gets it intact.
fn send_frame(
    drv_a: &PciDriver,
    a: &mut testing::driver::Device,
    drv_b: &PciDriver,
    b: &mut testing::driver::Device,
    payload: &[u8],
) -> Result<()> {
    drv_b.submit(b, 0, &[(0x30_0000, 2048, true)])?;
    let mut frame = vec![0u8; 12];
    frame.extend([0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x88, 0xb5]);
    frame.extend(payload);
    frame.resize(12 + 64, 0);
    drv_a.mem().write_slice(&frame, GuestAddress(0x30_0000))?;
    let mut received = None;
    for _ in 0..20 {
        drv_a.submit(a, 1, &[(0x30_0000, frame.len() as u32, false)])?;
        drv_a.wait_used(a, 1, WAIT)?;
        if let Ok(len) = drv_b.wait_used(b, 0, Duration::from_millis(500)) {
            received = Some(len as usize);
            break;
        }
    }
    let len = received.context("B received none of 20 frames")?;
    ensure!(len >= frame.len(), "received {len} bytes");
    let mut got = vec![0u8; frame.len() - 12];
    drv_b
        .mem()
        .read_slice(&mut got, GuestAddress(0x30_0000 + 12))?;
    ensure!(got == frame[12..], "frame differs");
    Ok(())
}

#[test]
fn two_vms_exchange_a_frame_through_the_switch() -> Result<()> {
    let dir = TestDir::new("vmm-vhost-net")?;
    let mut switch = Vswitchd::new(&dir);
    let macs = ["52:54:00:00:00:01", "52:54:00:00:00:02"];
    let sock_a = switch.add_port("a", macs[0], "default")?;
    let sock_b = switch.add_port("b", macs[1], "default")?;
    let mut machines = Vec::new();
    for (sock, mac) in [(&sock_a, macs[0]), (&sock_b, macs[1])] {
        let config = VmConfigBuilder::unbooted(&dir)?.nic(sock, mac).build();
        machines.push(machine(&config)?);
    }
    let drv_a = PciDriver::new(&machines[0]);
    let drv_b = PciDriver::new(&machines[1]);
    let mut a = drv_a.init(drv_a.find(NET, 0).context("no NIC in A")?, 0, 128, true)?;
    let mut b = drv_b.init(drv_b.find(NET, 0).context("no NIC in B")?, 0, 128, true)?;
    let mut mac = [0u8; 6];
    drv_b.read(b.device_cfg, &mut mac)?;
    ensure!(mac == [0x52, 0x54, 0, 0, 0, 2], "B's MAC {mac:x?}");

    send_frame(&drv_a, &mut a, &drv_b, &mut b, b"first frame")?;

    // Restart the switch (adding a port restarts it): both VMMs reconnect,
    // replay the set-up, and frames flow again.
    switch.add_port("c", "52:54:00:00:00:03", "default")?;
    for (i, m) in machines.iter().enumerate() {
        wait_until("the VMM to reconnect to the switch", WAIT, || {
            let c = &m.device_counters()[0]["backend"];
            Ok((c["reconnects"] == 1 && c["connected"] == true).then_some(()))
        })
        .with_context(|| format!("VM {i}"))?;
    }
    send_frame(&drv_a, &mut a, &drv_b, &mut b, b"after the restart")?;
    switch.ensure_running()?;
    Ok(())
}
