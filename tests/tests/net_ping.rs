//! Two guests ping each other through a vhost-user switch (Linux guests' virtio-net drivers).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::backend::{SwitchBackend, SwitchBackendKind};
use harness::guest::{Guest, GuestConfig, GuestImage};
use harness::testdir::TestDir;

fn ping_between_guests(kind: SwitchBackendKind) -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("net-ping")?;
    let mut switch = SwitchBackend::start(kind, &dir)?;

    let nic_a = switch.attach_nic(&dir, "vm-a", 1)?.address("10.77.0.1/24");
    let nic_b = switch.attach_nic(&dir, "vm-b", 2)?.address("10.77.0.2/24");
    // Both boot at once: with OVS, QEMU waits for the switch to connect to
    // its socket before it starts the guest.
    let mut a = Guest::start(&dir, &image, &GuestConfig::new("vm-a").nic(nic_a))?;
    let mut b = Guest::start(&dir, &image, &GuestConfig::new("vm-b").nic(nic_b))?;
    a.wait_ready(harness::guest::DEFAULT_BOOT_TIMEOUT)?;
    b.wait_ready(harness::guest::DEFAULT_BOOT_TIMEOUT)?;

    let out = a.run_ok("ping -c 5 -w 60 10.77.0.2", Duration::from_secs(90))?;
    ensure!(
        out.contains("bytes from 10.77.0.2"),
        "no reply from vm-b:\n{out}"
    );
    let out = b.run_ok("ping -c 5 -w 60 10.77.0.1", Duration::from_secs(90))?;
    ensure!(
        out.contains("bytes from 10.77.0.1"),
        "no reply from vm-a:\n{out}"
    );
    // Each guest learned the other's MAC through the switch.
    let neigh = a.run_ok("ip neigh show 10.77.0.2", Duration::from_secs(30))?;
    ensure!(
        neigh.contains("52:54:00:5f:e4:02"),
        "vm-a's neighbour table:\n{neigh}"
    );

    switch.ensure_running()?;
    a.poweroff(Duration::from_secs(60))?;
    b.poweroff(Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn guests_ping_through_ovs_dpdk() {
    ping_between_guests(SwitchBackendKind::OvsDpdk)
        .context("two guests pinging through Open vSwitch with DPDK")
        .unwrap();
}

#[test]
fn guests_ping_through_sfera_vswitchd() {
    ping_between_guests(SwitchBackendKind::SferaVswitchd)
        .context("two guests pinging through sfera-vswitchd")
        .unwrap();
}
