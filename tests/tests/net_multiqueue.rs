//! Traffic uses both queue pairs of a two-queue port (testpmd, a Linux guest's virtio-net driver).
//!
//! Multi-queue ports: traffic on both queue pairs of a port with
//! `queues: 2`.
//! - Two testpmd `net_virtio_user` ports with two queue pairs each
//!   (`--rxq=2 --txq=2`) forward to each other: testpmd's per-queue
//!   counters show frames received and sent on both queues of both ports.
//! - A Linux guest with two vCPUs and a two-pair virtio-net NIC (QEMU's
//!   `mq=on`, still `vectors=0` under TCG) against a two-queue testpmd that
//!   bounces frames back (`5tswap`: addresses and ports swapped, on the
//!   queue they came in by): a ping pinned to each vCPU leaves by that
//!   vCPU's transmit queue (the driver maps them one to one), testpmd
//!   counts it on the same queue, and the answer comes back to the guest.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::guest::{Guest, GuestConfig, GuestImage, Nic, SocketRole};
use harness::hugepages::Hugepages;
use harness::peers::testpmd::{Testpmd, Vdev};
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_secs(60);

fn two_queue_vdev(socket: std::path::PathBuf, mac: &str) -> Vdev {
    Vdev::VirtioUser {
        socket,
        queues: 2,
        server: false,
        mac: Some(mac.to_owned()),
    }
}

/// Frames a port counted per queue: `[rx_q0, rx_q1, tx_q0, tx_q1]`.
fn per_queue(x: &BTreeMap<String, u64>) -> [u64; 4] {
    [
        "rx_q0_good_packets",
        "rx_q1_good_packets",
        "tx_q0_good_packets",
        "tx_q1_good_packets",
    ]
    .map(|k| x.get(k).copied().unwrap_or(0))
}

#[test]
fn testpmd_ports_use_both_queue_pairs() -> Result<()> {
    let dir = TestDir::new("net-mq-testpmd")?;
    let macs = ["02:00:00:00:4d:00", "02:00:00:00:4d:01"];
    let sockets = [dir.join("m0.sock"), dir.join("m1.sock")];
    let mut sw = Vswitchd::new(&dir);
    sw.set_config(json!({
        "port_groups": [{ "name": "lan" }],
        "ports": [
            { "name": "m0", "socket": sockets[0], "mac": macs[0], "port_group": "lan",
              "queues": 2 },
            { "name": "m1", "socket": sockets[1], "mac": macs[1], "port_group": "lan",
              "queues": 2 },
        ],
    }))?;
    let hugepages = Hugepages::reserve(&dir, 128)?;
    let vdevs = [
        two_queue_vdev(sockets[0].clone(), macs[0]),
        two_queue_vdev(sockets[1].clone(), macs[1]),
    ];
    let mut t = Testpmd::start_with_args(
        &dir,
        "testpmd",
        &hugepages,
        &vdevs,
        0,
        &["--rxq=2", "--txq=2"],
    )?;
    // io forwarding: port 0 queue q to port 1 queue q and back; the first
    // bursts go out on every queue of both ports.
    t.command("set fwd io")?;
    t.command(&format!("set eth-peer 0 {}", macs[1]))?;
    t.command(&format!("set eth-peer 1 {}", macs[0]))?;
    t.command("start tx_first")?;
    let counts = wait_until("frames on both queues of both ports", WAIT, || {
        let c = [per_queue(&t.xstats(0)?), per_queue(&t.xstats(1)?)];
        Ok(c.iter().flatten().all(|&n| n >= 1000).then_some(c))
    });
    t.command("stop")?;
    let counts = match counts {
        Ok(c) => c,
        Err(e) => {
            let c = [per_queue(&t.xstats(0)?), per_queue(&t.xstats(1)?)];
            anyhow::bail!("{e}: [rx_q0, rx_q1, tx_q0, tx_q1] per port: {c:?}");
        }
    };
    eprintln!("[rx_q0, rx_q1, tx_q0, tx_q1] per port: {counts:?}");
    sw.ensure_running()?;
    Ok(())
}

#[test]
fn a_linux_guest_uses_both_queue_pairs() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("net-mq-guest")?;
    let pmd_mac = "02:00:00:00:4d:10";
    let nic = Nic {
        queue_pairs: 2,
        ..Nic::new(dir.join("guest.sock"), SocketRole::Client, 1).address("10.80.0.1/24")
    };
    let pmd_socket = dir.join("pmd.sock");
    let mut sw = Vswitchd::new(&dir);
    sw.set_config(json!({
        "port_groups": [{ "name": "lan" }],
        "ports": [
            { "name": "guest", "socket": nic.socket, "mac": nic.mac, "port_group": "lan",
              "queues": 2 },
            { "name": "pmd", "socket": pmd_socket, "mac": pmd_mac, "port_group": "lan",
              "queues": 2 },
        ],
    }))?;
    let hugepages = Hugepages::reserve(&dir, 128)?;
    let mut t = Testpmd::start_with_args(
        &dir,
        "testpmd",
        &hugepages,
        &[two_queue_vdev(pmd_socket, pmd_mac)],
        0,
        &["--rxq=2", "--txq=2"],
    )?;
    t.command("set fwd 5tswap")?;
    t.command("start")?;

    let mut g = Guest::boot(&dir, &image, &GuestConfig::new("mq").vcpus(2).nic(nic))?;
    let queues = g.run_ok("ls /sys/class/net/eth0/queues", SHORT)?;
    ensure!(
        ["rx-0", "rx-1", "tx-0", "tx-1"]
            .iter()
            .all(|q| queues.contains(q)),
        "the guest's NIC runs these queues: {queues}"
    );
    // testpmd answers no ARP (5tswap would send it back from the broadcast
    // address): the guest knows its address.
    g.run_ok(&format!("arp -i eth0 -s 10.80.0.2 {pmd_mac}"), SHORT)?;
    for cpu in 0..2 {
        let before = per_queue(&t.xstats(0)?);
        let out = g
            .run_ok(
                &format!("taskset -c {cpu} ping -c 3 -w 20 10.80.0.2"),
                SHORT,
            )
            .with_context(|| format!("ping from vCPU {cpu}"))?;
        ensure!(out.contains("bytes from 10.80.0.2"), "{out}");
        let after = per_queue(&t.xstats(0)?);
        eprintln!("vCPU {cpu}: testpmd [rx_q0, rx_q1, tx_q0, tx_q1] {before:?} -> {after:?}");
        // The pings (and the guest's answers to the bounced requests) came
        // in on queue `cpu` and went back out on it.
        ensure!(
            after[cpu] >= before[cpu] + 3 && after[2 + cpu] >= before[2 + cpu] + 3,
            "vCPU {cpu}'s pings did not use queue pair {cpu}: {before:?} -> {after:?}"
        );
    }
    t.command("stop")?;
    sw.ensure_running()?;
    g.poweroff(SHORT)?;
    Ok(())
}
