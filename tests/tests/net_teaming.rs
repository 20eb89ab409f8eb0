//! Teams fail over and spread traffic over two AF_PACKET uplinks (raw virtio-net NICs).
//!
//! NIC teaming over two AF_PACKET uplinks. sfera-vswitchd runs inside a
//! network namespace the test creates, with its uplinks on one end of two
//! veth pairs there; the test reads the other ends (AF_PACKET sockets,
//! opened in the namespace) to see which uplink each frame left by. Raw
//! virtio-net NICs on three port groups send frames to an address outside:
//! - explicit failover order, active u1, standby u2: frames leave by u1;
//!   when u1's wire goes down they leave by u2 (the time it took is
//!   printed), and by u1 again once it is back up;
//! - originating port: two ports' frames each keep to one uplink, not the
//!   same one;
//! - source MAC (forged transmits allowed): frames from 16 source addresses
//!   each keep to one uplink, and both uplinks carry some.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::frames::{self, ETH_EXPERIMENTAL, Mac};
use harness::netns::{NetNs, unique_name};
use harness::raw_nic::RawNic;
use harness::testdir::TestDir;
use serde_json::json;
use vswitch::config::{UplinkConfig, UplinkType};
use vswitch::uplink::Uplink;

const WAIT: Duration = Duration::from_secs(10);
/// How long failover (and failback) may take before the test gives up: the
/// switch reads link states every 100 ms, and the time it took is printed;
/// the bound is generous so that a loaded or slow machine does not decide
/// the outcome.
const FAILOVER: Duration = Duration::from_secs(10);
/// An address outside the switch: frames to it go out by the team only.
const OUTSIDE: Mac = [2, 0xee, 0, 0, 0, 1];
const FO: Mac = [2, 0, 0, 0, 0xf0, 1];
const OP_A: Mac = [2, 0, 0, 0, 0x0a, 1];
const OP_B: Mac = [2, 0, 0, 0, 0x0b, 1];
const SM: Mac = [2, 0, 0, 0, 0x5a, 1];

/// Which uplink a frame left by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wire {
    U1,
    U2,
}

/// The far ends of the two uplinks' veth pairs.
struct Wires {
    u1: Uplink,
    u2: Uplink,
    buf: Vec<u8>,
}

impl Wires {
    /// Frames that arrived so far, with the wire each came by.
    fn take(&mut self) -> Result<Vec<(Wire, Vec<u8>)>> {
        let mut out = Vec::new();
        for (wire, up) in [(Wire::U1, &mut self.u1), (Wire::U2, &mut self.u2)] {
            loop {
                match up.recv(&mut self.buf) {
                    Ok(Some(n)) => out.push((wire, self.buf[..n.min(self.buf.len())].to_vec())),
                    Ok(None) => break,
                    // A wire that is down has nothing to read.
                    Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    /// Waits for `frame` on either wire and returns the wires it came by.
    fn find(&mut self, frame: &[u8]) -> Result<BTreeSet<Wire>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen: BTreeSet<Wire> = self
                .take()?
                .into_iter()
                .filter(|(_, f)| f == frame)
                .map(|(w, _)| w)
                .collect();
            if !seen.is_empty() {
                // A copy on the other wire would have been written in the
                // same call: look once more.
                let again = self.take()?;
                return Ok(seen
                    .into_iter()
                    .chain(
                        again
                            .into_iter()
                            .filter(|(_, f)| f == frame)
                            .map(|(w, _)| w),
                    )
                    .collect());
            }
            if Instant::now() >= deadline {
                bail!("a frame never left the switch by either uplink");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A numbered frame from `src` to the outside.
fn numbered(src: Mac, n: u32) -> Vec<u8> {
    let mut payload = b"sfera-teaming".to_vec();
    payload.extend(n.to_be_bytes());
    payload.resize(50, 0);
    frames::ethernet(OUTSIDE, src, None, ETH_EXPERIMENTAL, &payload)
}

/// Sends one frame and returns the one wire it left by.
fn sent_by(nic: &mut RawNic, wires: &mut Wires, frame: &[u8]) -> Result<Wire> {
    nic.send(frame)?;
    let seen = wires.find(frame)?;
    ensure!(seen.len() == 1, "one frame left by both uplinks");
    Ok(*seen.first().expect("one wire"))
}

/// Sends numbered frames every few milliseconds until one leaves by `want`;
/// returns how long that took.
fn until_by(nic: &mut RawNic, wires: &mut Wires, want: Wire, n: &mut u32) -> Result<Duration> {
    let start = Instant::now();
    loop {
        *n += 1;
        let frame = numbered(nic.mac, *n);
        nic.send(&frame)?;
        std::thread::sleep(Duration::from_millis(5));
        if wires.take()?.iter().any(|(w, f)| *w == want && *f == frame) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > FAILOVER {
            bail!("frames did not move to {want:?} within {FAILOVER:?}");
        }
    }
}

fn veth(ns: &NetNs) -> Result<(String, String)> {
    let (a, b) = (unique_name("sfta"), unique_name("sftb"));
    ns.exec_ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
    for dev in [&a, &b] {
        ns.exec_ok(&["ip", "link", "set", dev, "up"])?;
    }
    Ok((a, b))
}

fn capture(ns: &NetNs, interface: &str) -> Result<Uplink> {
    let config = UplinkConfig {
        name: format!("capture-{interface}"),
        kind: UplinkType::AfPacket,
        interface: interface.to_owned(),
    };
    Ok(ns.run_in(|| Uplink::open(&config))??)
}

fn port(dir: &Path, name: &str, mac: Mac, group: &str) -> serde_json::Value {
    json!({ "name": name, "socket": dir.join(format!("{name}.sock")),
            "mac": frames::mac_text(mac), "port_group": group })
}

#[test]
fn teams_fail_over_and_spread_traffic_over_two_uplinks() -> Result<()> {
    let dir = TestDir::new("net-teaming")?;
    let ns = NetNs::new()?;
    // The namespace's own stack stays silent on the wires.
    ns.exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ])?;
    let (u1, wire1) = veth(&ns)?;
    let (u2, wire2) = veth(&ns)?;
    let mut sw = Vswitchd::new(&dir);
    sw.run_in_netns(ns.name());
    sw.set_config(json!({
        "switches": [{ "name": "sw0", "uplinks": [
            { "name": "u1", "type": "af_packet", "interface": u1 },
            { "name": "u2", "type": "af_packet", "interface": u2 },
        ]}],
        "port_groups": [
            { "name": "fo", "switch": "sw0",
              "teaming": { "policy": "failover_order", "active": ["u1"], "standby": ["u2"] } },
            { "name": "op", "switch": "sw0", "teaming": { "policy": "originating_port" } },
            { "name": "sm", "switch": "sw0", "teaming": { "policy": "source_mac" },
              "security": { "forged_transmits": true } },
        ],
        "ports": [
            port(dir.path(), "fo", FO, "fo"),
            port(dir.path(), "op-a", OP_A, "op"),
            port(dir.path(), "op-b", OP_B, "op"),
            port(dir.path(), "sm", SM, "sm"),
        ],
    }))?;
    let mut wires = Wires {
        u1: capture(&ns, &wire1)?,
        u2: capture(&ns, &wire2)?,
        buf: vec![0u8; 2048],
    };
    let mut fo = RawNic::connect(&dir.join("fo.sock"), FO)?;
    let mut op_a = RawNic::connect(&dir.join("op-a.sock"), OP_A)?;
    let mut op_b = RawNic::connect(&dir.join("op-b.sock"), OP_B)?;
    let mut sm = RawNic::connect(&dir.join("sm.sock"), SM)?;

    // Failover order: u1 while it has link.
    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        ensure!(sent_by(&mut fo, &mut wires, &numbered(FO, n))? == Wire::U1);
    }
    // u1's wire goes down: the standby takes over.
    ns.exec_ok(&["ip", "link", "set", &wire1, "down"])?;
    let took = until_by(&mut fo, &mut wires, Wire::U2, &mut n).context("failover to u2")?;
    eprintln!("failover to u2 took {took:?}");
    for _ in 0..5 {
        n += 1;
        ensure!(sent_by(&mut fo, &mut wires, &numbered(FO, n))? == Wire::U2);
    }
    // Back up: the active uplink again.
    ns.exec_ok(&["ip", "link", "set", &wire1, "up"])?;
    let took = until_by(&mut fo, &mut wires, Wire::U1, &mut n).context("failback to u1")?;
    eprintln!("failback to u1 took {took:?}");
    for _ in 0..5 {
        n += 1;
        ensure!(sent_by(&mut fo, &mut wires, &numbered(FO, n))? == Wire::U1);
    }

    // Originating port: each port keeps to one uplink; two ports, two
    // uplinks.
    let mut by_port = Vec::new();
    for (nic, mac) in [(&mut op_a, OP_A), (&mut op_b, OP_B)] {
        let mut used = BTreeSet::new();
        for i in 0..6 {
            used.insert(sent_by(nic, &mut wires, &numbered(mac, i))?);
        }
        ensure!(
            used.len() == 1,
            "port {} used {used:?}",
            frames::mac_text(mac)
        );
        by_port.extend(used);
    }
    ensure!(
        by_port[0] != by_port[1],
        "both ports' frames left by {:?}",
        by_port[0]
    );

    // Source MAC: each address keeps to one uplink; 16 addresses use both.
    let mut used_by_all = BTreeSet::new();
    for last in 0..16u8 {
        let src: Mac = [2, 0, 0, 0x5a, 0x10, last];
        let mut used = BTreeSet::new();
        for i in 0..3 {
            used.insert(sent_by(&mut sm, &mut wires, &numbered(src, i))?);
        }
        ensure!(
            used.len() == 1,
            "source {} used {used:?}",
            frames::mac_text(src)
        );
        used_by_all.extend(used);
    }
    ensure!(
        used_by_all.len() == 2,
        "16 source addresses all left by {used_by_all:?}"
    );

    sw.ensure_running()?;
    Ok(())
}
