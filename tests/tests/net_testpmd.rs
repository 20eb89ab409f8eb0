//! Two testpmd ports forward traffic to each other through a switch (DPDK's testpmd).
//!
//! DPDK's testpmd as the vhost-user-net client of a switch: two
//! `net_virtio_user` ports on one switch forward traffic to each other.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::backend::{SwitchBackend, SwitchBackendKind};
use harness::hugepages::Hugepages;
use harness::peers::testpmd::Testpmd;
use harness::testdir::TestDir;
use harness::wait::wait_until;

fn testpmd_loop(kind: SwitchBackendKind) -> Result<()> {
    let dir = TestDir::new("net-testpmd")?;
    let mut switch = SwitchBackend::start(kind, &dir)?;
    let port0 = switch.attach_virtio_user(&dir, "pmd0")?;
    let port1 = switch.attach_virtio_user(&dir, "pmd1")?;
    let hugepages = Hugepages::reserve(&dir, 128)?;
    let mut testpmd = Testpmd::start(&dir, "testpmd", &hugepages, &[port0, port1], 0)?;

    // io forwarding pairs port 0 with port 1; tx_first injects a burst on
    // each, and from then on every frame crosses the switch and comes back.
    testpmd.command("set fwd io")?;
    testpmd.command("start tx_first")?;
    let stats = wait_until("frames across the switch", Duration::from_secs(60), || {
        let p0 = testpmd.port_stats(0)?;
        let p1 = testpmd.port_stats(1)?;
        Ok((p0.rx_packets >= 1000 && p1.rx_packets >= 1000).then_some((p0, p1)))
    });
    testpmd.command("stop")?;
    let (p0, p1) = stats?;
    ensure!(
        p0.tx_packets > 0 && p1.tx_packets > 0,
        "no transmit counted: {p0:?} {p1:?}"
    );
    eprintln!("port 0: {p0:?}\nport 1: {p1:?}");
    switch.ensure_running()?;
    Ok(())
}

#[test]
fn testpmd_virtio_user_through_ovs_dpdk() {
    testpmd_loop(SwitchBackendKind::OvsDpdk)
        .context("testpmd net_virtio_user ports looping frames through OVS-DPDK")
        .unwrap();
}

#[test]
fn testpmd_virtio_user_through_sfera_vswitchd() {
    testpmd_loop(SwitchBackendKind::SferaVswitchd)
        .context("testpmd net_virtio_user ports looping frames through sfera-vswitchd")
        .unwrap();
}
