//! A guest reaches a host through a TAP uplink (a Linux guest's virtio-net driver, iperf3).
//!
//! A Linux guest reaches a host through the switch's TAP uplink.
//!
//! sfera-vswitchd runs inside a network namespace the test creates, so the
//! TAP it creates for its uplink is that namespace's: the "host" is the
//! namespace's side of the TAP, with an address, and no frame ever reaches
//! the machine's own interfaces. The guest (QEMU TCG, its own virtio-net
//! driver) has one NIC on an untagged port group and one on a port group
//! with access VLAN 10:
//! - untagged: ping both ways and iperf3 TCP both ways with the host's
//!   kernel stack;
//! - VLAN 10: this host kernel has no 802.1Q support (CONFIG_VLAN_8021Q is
//!   off), so the host in VLAN 10 is played by the test on an AF_PACKET
//!   socket on the TAP: it answers ARP and ICMP echo only for frames tagged
//!   10. The guest's ping succeeding proves the switch tagged its frames
//!   on the way out and took the tag off the answers on the way in.

use std::collections::BTreeSet;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::frames::{self, Arp, ETH_ARP, ETH_IPV4, Mac};
use harness::guest::{Guest, GuestConfig, GuestImage, Nic, SocketRole};
use harness::netns::{NetNs, unique_name};
use harness::process::Process;
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::json;
use vswitch::config::{UplinkConfig, UplinkType};
use vswitch::uplink::Uplink;

const SHORT: Duration = Duration::from_secs(60);
const HOST_IP: &str = "10.78.0.1";
const GUEST_IP: &str = "10.78.0.2";
const VLAN_HOST_IP: [u8; 4] = [10, 78, 10, 1];
/// The address the test's VLAN 10 host answers from.
const VLAN_HOST_MAC: Mac = [0x02, 0x5f, 0, 0, 0x10, 0x01];

/// What the VLAN 10 host saw from the guest's VLAN 10 NIC.
#[derive(Debug, Default)]
struct Seen {
    vlans: BTreeSet<u16>,
    untagged: usize,
    arp_replies: usize,
    echo_replies: usize,
}

/// Plays the host at [`VLAN_HOST_IP`] in VLAN 10 on `wire` (an AF_PACKET
/// socket on the TAP: it reads what the switch writes to the TAP, and what
/// it sends goes to the switch) until `stop` is set.
fn vlan_host(wire: &mut Uplink, guest_mac: Mac, stop: &AtomicBool) -> Result<Seen> {
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Acquire) {
        let Some(len) = wire.recv(&mut buf)? else {
            let mut pfd = libc::pollfd {
                fd: wire.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one live, exclusively borrowed pollfd.
            unsafe { libc::poll(&mut pfd, 1, 50) };
            continue;
        };
        let Some(f) = frames::parse(&buf[..len.min(buf.len())]) else {
            continue;
        };
        if f.src != guest_mac {
            continue;
        }
        match f.vlan {
            None => {
                seen.untagged += 1;
                continue;
            }
            Some(vid) => {
                seen.vlans.insert(vid);
                if vid != 10 {
                    continue;
                }
            }
        }
        let answer = match f.ethertype {
            ETH_ARP => Arp::parse(f.payload)
                .filter(|a| a.op == 1 && a.target_ip == VLAN_HOST_IP)
                .map(|a| {
                    seen.arp_replies += 1;
                    let reply = Arp {
                        op: 2,
                        sender_mac: VLAN_HOST_MAC,
                        sender_ip: VLAN_HOST_IP,
                        target_mac: a.sender_mac,
                        target_ip: a.sender_ip,
                    };
                    frames::ethernet(f.src, VLAN_HOST_MAC, Some(10), ETH_ARP, &reply.bytes())
                }),
            ETH_IPV4 => frames::icmp_echo_reply(f.payload, VLAN_HOST_IP).map(|reply| {
                seen.echo_replies += 1;
                frames::ethernet(f.src, VLAN_HOST_MAC, Some(10), ETH_IPV4, &reply)
            }),
            _ => None,
        };
        if let Some(frame) = answer {
            wire.send(&[IoSlice::new(&frame)])
                .context("answer on the TAP")?;
        }
    }
    Ok(seen)
}

#[test]
fn guest_reaches_a_host_in_a_namespace_through_a_tap_uplink() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("net-uplink-guest")?;
    let ns = NetNs::new()?;
    let tap = unique_name("sfup");
    let lan =
        Nic::new(dir.join("lan.sock"), SocketRole::Client, 1).address(&format!("{GUEST_IP}/24"));
    let v10 = Nic::new(dir.join("v10.sock"), SocketRole::Client, 2).address("10.78.10.2/24");
    let v10_mac = frames::parse_mac(&v10.mac).context("NIC MAC")?;

    let mut sw = Vswitchd::new(&dir);
    sw.run_in_netns(ns.name());
    sw.set_config(json!({
        "switches": [{ "name": "sw0", "uplinks": [
            { "name": "up0", "type": "tap", "interface": tap },
        ]}],
        "port_groups": [
            { "name": "lan", "switch": "sw0", "vlan": { "mode": "none" } },
            { "name": "v10", "switch": "sw0", "vlan": { "mode": "access", "id": 10 } },
        ],
        "ports": [
            { "name": "g-lan", "socket": lan.socket, "mac": lan.mac, "port_group": "lan" },
            { "name": "g-v10", "socket": v10.socket, "mac": v10.mac, "port_group": "v10" },
        ],
    }))?;
    // The switch created its TAP in the namespace, not in the machine's.
    let link = ns.exec_ok(&["ip", "link", "show", &tap])?;
    ensure!(link.contains(",UP"), "the switch left {tap} down: {link}");
    ensure!(
        std::process::Command::new("ip")
            .args(["link", "show", &tap])
            .output()?
            .stdout
            .is_empty(),
        "{tap} exists outside the test's namespace"
    );
    ns.exec_ok(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", &tap])?;

    let mut g = Guest::boot(&dir, &image, &GuestConfig::new("g").nic(lan).nic(v10))?;

    // Untagged: ping both ways.
    let out = g.run_ok(&format!("ping -c 3 -w 30 {HOST_IP}"), SHORT)?;
    ensure!(out.contains(&format!("bytes from {HOST_IP}")), "{out}");
    let out = ns.exec_ok(&["ping", "-c", "3", "-w", "30", GUEST_IP])?;
    ensure!(out.contains(&format!("bytes from {GUEST_IP}")), "{out}");

    // TCP both ways with iperf3 against the host's stack.
    let mut server = ns.command("iperf3")?;
    server.args(["-s", "-B", HOST_IP]);
    let _server = Process::spawn("iperf3 server", server, &dir.join("iperf3-host.log"))?;
    wait_until("iperf3 to listen", Duration::from_secs(10), || {
        Ok(ns
            .exec_ok(&["ss", "-ltn"])?
            .contains(&format!("{HOST_IP}:5201"))
            .then_some(()))
    })?;
    for (direction, flag) in [("guest -> host", ""), ("host -> guest", " -R")] {
        let out = g.run_ok(
            &format!("iperf3 -c {HOST_IP} -t 3 -f m{flag}"),
            Duration::from_secs(90),
        )?;
        let summary: Vec<&str> = out.lines().filter(|l| l.contains("receiver")).collect();
        ensure!(!summary.is_empty(), "iperf3 {direction}:\n{out}");
        eprintln!("iperf3 {direction}: {}", summary[0].trim());
    }

    // VLAN 10: the test's host answers only frames tagged 10.
    let config = UplinkConfig {
        name: "wire".to_owned(),
        kind: UplinkType::AfPacket,
        interface: tap.clone(),
    };
    let mut wire = ns.run_in(|| Uplink::open(&config))??;
    let stop = AtomicBool::new(false);
    let (ping, seen) = std::thread::scope(|s| {
        let host = s.spawn(|| vlan_host(&mut wire, v10_mac, &stop));
        let ping = g.run("ping -c 3 -w 30 10.78.10.1", SHORT);
        stop.store(true, Ordering::Release);
        let seen = host.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (ping, seen)
    });
    let (ping, seen) = (ping?, seen?);
    eprintln!("VLAN 10 host saw {seen:?}");
    ensure!(
        ping.status == 0 && ping.output.contains("bytes from 10.78.10.1"),
        "no answer through VLAN 10 ({seen:?}):\n{}",
        ping.output
    );
    ensure!(
        seen.vlans == BTreeSet::from([10]) && seen.untagged == 0,
        "the VLAN 10 NIC's frames left the TAP as {seen:?}"
    );
    ensure!(seen.arp_replies >= 1 && seen.echo_replies >= 3, "{seen:?}");

    sw.ensure_running()?;
    g.poweroff(SHORT)?;
    Ok(())
}
