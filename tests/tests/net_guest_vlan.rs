//! VLANs isolate guests and a trunk carries tagged TCP (Linux guests' virtio-net drivers, iperf3).
//!
//! Linux guests on sfera-vswitchd: VLANs isolate, a trunk port carries
//! tagged frames of the right VLAN, and iperf3 TCP runs both ways.

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::guest::{Guest, GuestConfig, GuestImage, Nic, SocketRole};
use harness::testdir::TestDir;

const SHORT: Duration = Duration::from_secs(60);

fn nic(sw: &mut Vswitchd, name: &str, id: u8, group: &str, address: Option<&str>) -> Result<Nic> {
    let template = Nic::new(std::path::PathBuf::new(), SocketRole::Client, id);
    let socket = sw.add_port(name, &template.mac, group)?;
    let nic = Nic { socket, ..template };
    Ok(match address {
        Some(a) => nic.address(a),
        None => nic,
    })
}

#[test]
fn vlans_isolate_trunks_tag_and_tcp_flows_both_ways() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("net-vlan")?;
    let mut sw = Vswitchd::new(&dir);
    sw.add_port_group("v10", serde_json::json!({ "mode": "access", "id": 10 }));
    sw.add_port_group("v20", serde_json::json!({ "mode": "access", "id": 20 }));
    sw.add_port_group(
        "trunk",
        serde_json::json!({ "mode": "trunk", "allowed": [10, 20] }),
    );
    let na = nic(&mut sw, "a", 1, "v10", Some("10.77.0.1/24"))?;
    let nb = nic(&mut sw, "b", 2, "v10", Some("10.77.0.2/24"))?;
    let nc = nic(&mut sw, "c", 3, "v20", Some("10.77.0.3/24"))?;
    let nt = nic(&mut sw, "t", 4, "trunk", None)?;
    let mut a = Guest::start(&dir, &image, &GuestConfig::new("a").nic(na))?;
    let mut b = Guest::start(&dir, &image, &GuestConfig::new("b").nic(nb))?;
    let mut c = Guest::start(&dir, &image, &GuestConfig::new("c").nic(nc))?;
    let mut t = Guest::start(&dir, &image, &GuestConfig::new("t").nic(nt))?;
    for g in [&mut a, &mut b, &mut c, &mut t] {
        g.wait_ready(harness::guest::DEFAULT_BOOT_TIMEOUT)?;
    }

    // Same VLAN: reachable. Other VLAN (same subnet on purpose): not.
    a.run_ok("ping -c 3 -w 30 10.77.0.2", SHORT)?;
    let cross = a.run("ping -c 3 -w 6 10.77.0.3", SHORT)?;
    ensure!(
        cross.status != 0,
        "VLAN 10 reached VLAN 20:\n{}",
        cross.output
    );

    // The trunk guest talks VLAN 10 through a tagged sub-interface.
    t.run_ok(
        "modprobe 8021q && ip link set eth0 up && \
         ip link add link eth0 name eth0.10 type vlan id 10 && \
         ip addr add 10.77.0.4/24 dev eth0.10 && ip link set eth0.10 up",
        SHORT,
    )?;
    t.run_ok("ping -c 3 -w 30 10.77.0.1", SHORT)?;
    // ... and VLAN 20 through another.
    t.run_ok(
        "ip link add link eth0 name eth0.20 type vlan id 20 && \
         ip addr add 10.77.20.4/24 dev eth0.20 && ip link set eth0.20 up",
        SHORT,
    )?;
    c.run_ok("ip addr add 10.77.20.3/24 dev eth0", SHORT)?;
    c.run_ok("ping -c 3 -w 30 10.77.20.4", SHORT)?;

    // TCP both ways between a and b.
    b.run_ok("iperf3 -s -D -1 && sleep 1", SHORT)?;
    let out = a.run_ok("iperf3 -c 10.77.0.2 -t 3 -f m", Duration::from_secs(90))?;
    ensure!(out.contains("receiver"), "iperf3 a -> b:\n{out}");
    b.run_ok("iperf3 -s -D -1 && sleep 1", SHORT)?;
    let out = a.run_ok("iperf3 -c 10.77.0.2 -t 3 -f m -R", Duration::from_secs(90))?;
    ensure!(out.contains("receiver"), "iperf3 b -> a:\n{out}");
    eprintln!("{out}");

    sw.ensure_running()?;
    for g in [a, b, c, t] {
        g.poweroff(SHORT)?;
    }
    Ok(())
}
