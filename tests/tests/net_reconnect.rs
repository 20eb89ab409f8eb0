//! Either side of a vhost-user port can leave and come back (testpmd, Linux guests under QEMU).
//!
//! Either side of a vhost-user port can go away and come back:
//! - a VMM (DPDK's testpmd with a `net_virtio_user` port) leaves a
//!   server-mode port, cleanly or killed, and a new one takes the port:
//!   traffic flows again both ways, with the switch still the same process;
//! - the switch, killed with SIGKILL while two Linux guests ping each other
//!   over client-mode ports (QEMU listens, the switch connects), is started
//!   again: the pings resume, in the same guests.

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
const STABLE_MAC: &str = "02:00:00:00:c0:01";
const VMM_MAC: &str = "02:00:00:00:c0:02";
/// Frames in a testpmd first burst.
const BURST: u64 = 32;

fn virtio_user(socket: std::path::PathBuf, mac: &str) -> Vdev {
    Vdev::VirtioUser {
        socket,
        queues: 1,
        server: false,
        mac: Some(mac.to_owned()),
    }
}

/// Restarts `t`'s forwarding with one burst of broadcasts first.
fn send_burst(t: &mut Testpmd) -> Result<()> {
    t.command("stop")?;
    t.command("start tx_first")?;
    Ok(())
}

/// Waits until `t`'s port 0 has received `frames`.
fn wait_rx(t: &mut Testpmd, frames: u64, what: &str) -> Result<()> {
    wait_until(what, WAIT, || {
        Ok((t.port_stats(0)?.rx_packets >= frames).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_new_vmm_takes_over_a_server_port_after_the_old_one_left() -> Result<()> {
    let dir = TestDir::new("net-reconnect-vmm")?;
    let stable_socket = dir.join("stable.sock");
    let vmm_socket = dir.join("vmm.sock");
    let mut sw = Vswitchd::new(&dir);
    sw.set_config(json!({
        "port_groups": [{ "name": "lan" }],
        "ports": [
            { "name": "stable", "socket": stable_socket, "mac": STABLE_MAC, "port_group": "lan" },
            { "name": "vmm", "socket": vmm_socket, "mac": VMM_MAC, "port_group": "lan" },
        ],
    }))?;
    let switch_pid = sw.pid();

    // The peer that stays: receives everything, sends a burst on demand.
    let stable_pages = Hugepages::reserve(&dir, 64)?;
    let mut stable = Testpmd::start(
        &dir,
        "stable",
        &stable_pages,
        &[virtio_user(stable_socket, STABLE_MAC)],
        0,
    )?;
    stable.command("set fwd rxonly")?;
    stable.command("set eth-peer 0 ff:ff:ff:ff:ff:ff")?;
    stable.command("start")?;

    // Three VMMs in turn on the same port: the first quits, the second is
    // killed, the third is just there at the end.
    let mut received = 0;
    for (round, how) in ["quits", "is killed", "stays"].iter().enumerate() {
        // Each testpmd gets its own hugepage mount (a killed one leaves its
        // files behind).
        let vmm_dir = TestDir::new(&format!("net-reconnect-vmm{round}"))?;
        let pages = Hugepages::reserve(&vmm_dir, 64)?;
        let mut vmm = Testpmd::start(
            &vmm_dir,
            "vmm",
            &pages,
            &[virtio_user(vmm_socket.clone(), VMM_MAC)],
            1,
        )
        .with_context(|| format!("VMM {round}"))?;
        vmm.command("set fwd rxonly")?;
        vmm.command("set eth-peer 0 ff:ff:ff:ff:ff:ff")?;
        vmm.command("start tx_first")?;
        received += BURST;
        wait_rx(&mut stable, received, &format!("VMM {round}'s burst"))?;
        send_burst(&mut stable)?;
        wait_rx(&mut vmm, BURST, &format!("a burst to VMM {round}"))?;
        eprintln!("VMM {round} exchanged frames; it {how}");
        match round {
            0 => drop(vmm),
            1 => vmm.kill()?,
            _ => vmm.command("stop").map(drop)?,
        }
        drop(pages);
    }
    stable.command("stop")?;
    sw.ensure_running()?;
    ensure!(sw.pid() == switch_pid, "the switch was restarted");
    Ok(())
}

/// A guest NIC on a client-mode port: QEMU listens on the socket.
fn listening_nic(dir: &TestDir, name: &str, id: u8, address: &str) -> (Nic, serde_json::Value) {
    let nic = Nic::new(dir.join(format!("{name}.sock")), SocketRole::Server, id).address(address);
    let port = json!({ "name": name, "socket": nic.socket, "mode": "client", "mac": nic.mac,
                       "port_group": "lan" });
    (nic, port)
}

/// Replies in the guest's background ping log.
fn replies(g: &mut Guest) -> Result<usize> {
    let out = g.run_ok("cat /tmp/ping.log", SHORT)?;
    Ok(out.matches("bytes from").count())
}

#[test]
fn guests_keep_their_connection_across_a_switch_crash() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("net-reconnect-switch")?;
    let (nic_a, port_a) = listening_nic(&dir, "a", 1, "10.79.0.1/24");
    let (nic_b, port_b) = listening_nic(&dir, "b", 2, "10.79.0.2/24");
    let mut sw = Vswitchd::new(&dir);
    sw.set_config(json!({
        "port_groups": [{ "name": "lan" }],
        "ports": [port_a, port_b],
    }))?;
    // QEMU waits for the switch to connect before it starts the guest.
    let mut a = Guest::start(&dir, &image, &GuestConfig::new("a").nic(nic_a))?;
    let mut b = Guest::start(&dir, &image, &GuestConfig::new("b").nic(nic_b))?;
    a.wait_ready(harness::guest::DEFAULT_BOOT_TIMEOUT)?;
    b.wait_ready(harness::guest::DEFAULT_BOOT_TIMEOUT)?;
    a.run_ok("ping -c 2 -w 30 10.79.0.2", SHORT)?;

    // a pings b five times a second for the rest of the test.
    a.run_ok(
        "ping -i 0.2 10.79.0.2 > /tmp/ping.log 2>&1 & echo $! > /tmp/ping.pid",
        SHORT,
    )?;
    wait_until("background pings", WAIT, || {
        Ok((replies(&mut a).map_err(|e| harness::Error::Parse {
            what: "ping log".into(),
            text: e.to_string(),
        })? >= 3)
            .then_some(()))
    })?;

    sw.kill()?;
    // Nothing gets through while the switch is gone.
    let down = b.run("ping -c 2 -W 1 10.79.0.1", SHORT)?;
    ensure!(
        down.status != 0,
        "b reached a with the switch dead:\n{}",
        down.output
    );
    let before = replies(&mut a)?;

    sw.restart()?;
    wait_until("b to reach a again", Duration::from_secs(60), || {
        Ok((b.run("ping -c 1 -W 2 10.79.0.1", SHORT)?.status == 0).then_some(()))
    })?;
    wait_until("a's background pings to resume", WAIT, || {
        let now = replies(&mut a).map_err(|e| harness::Error::Parse {
            what: "ping log".into(),
            text: e.to_string(),
        })?;
        Ok((now >= before + 5).then_some(now))
    })?;
    // Interrupted, ping prints its summary; `wait` lets it finish.
    a.run(
        "kill -INT $(cat /tmp/ping.pid); wait $(cat /tmp/ping.pid)",
        SHORT,
    )?;
    let log = a.run_ok("cat /tmp/ping.log", SHORT)?;
    let summary = log.lines().find(|l| l.contains("transmitted"));
    eprintln!("a's pings across the crash: {}", summary.unwrap_or("?"));
    sw.ensure_running()?;
    a.poweroff(SHORT)?;
    b.poweroff(SHORT)?;
    Ok(())
}
