//! Broadcasts flood within their VLAN and unicast arrives unchanged (testpmd, raw virtio-net NICs).
//!
//! Flooding stays inside a VLAN, with DPDK's testpmd as the clients: four
//! `net_virtio_user` ports of one testpmd, three in access VLAN 10 and one
//! in access VLAN 20, each send one burst of broadcasts. Every VLAN 10 port
//! receives exactly the other two VLAN 10 ports' bursts; the VLAN 20 port
//! receives nothing. Two raw virtio-net NICs in VLAN 10 check frames byte
//! for byte: what they receive of the broadcasts, a learned unicast between
//! them (which no other port sees), a unicast to a testpmd port (which
//! only that port counts), and a unicast to an unknown address (which no
//! port receives: a port takes unicast for its own address only).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::daemons::vswitchd::Vswitchd;
use harness::frames::{self, BROADCAST, Mac};
use harness::hugepages::Hugepages;
use harness::peers::testpmd::{Testpmd, Vdev};
use harness::raw_nic::RawNic;
use harness::scenario::case;
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
/// testpmd's ports: 0, 1 and 2 in VLAN 10, 3 in VLAN 20.
const PMD: [Mac; 4] = [
    [2, 0, 0, 0, 0, 0x10],
    [2, 0, 0, 0, 0, 0x11],
    [2, 0, 0, 0, 0, 0x12],
    [2, 0, 0, 0, 0, 0x20],
];
const RAW_A: Mac = [2, 0, 0, 0, 0, 0xa1];
const RAW_B: Mac = [2, 0, 0, 0, 0, 0xb1];
/// Frames in testpmd's first burst per port (its default burst size).
const BURST: u64 = 32;

/// Received frames of testpmd's four ports.
fn rx_counts(t: &mut Testpmd) -> harness::Result<[u64; 4]> {
    let mut out = [0; 4];
    for (port, slot) in out.iter_mut().enumerate() {
        *slot = t.port_stats(port as u16)?.rx_packets;
    }
    Ok(out)
}

/// Waits until testpmd's ports have received `want` frames each, then
/// checks that none received more.
fn expect_rx(t: &mut Testpmd, want: [u64; 4], what: &str) -> Result<()> {
    let got = wait_until(what, WAIT, || {
        let got = rx_counts(t)?;
        Ok(got.iter().zip(&want).all(|(g, w)| g >= w).then_some(got))
    });
    let got = match got {
        Ok(got) => got,
        Err(e) => anyhow::bail!("{e}: counts {:?}, wanted {want:?}", rx_counts(t)?),
    };
    ensure!(
        got == want,
        "{what}: testpmd received {got:?}, wanted {want:?}"
    );
    Ok(())
}

/// The scenario's set-up: the switch with four testpmd ports (three in
/// VLAN 10, one in VLAN 20) and two raw NICs in VLAN 10, and what
/// testpmd's ports should have received so far. Fields drop in order:
/// testpmd before its hugepages, the NICs, the switch, the directory.
struct Site {
    t: Testpmd,
    /// Frames each testpmd port should have received so far.
    want: [u64; 4],
    _hugepages: Hugepages,
    b: RawNic,
    a: RawNic,
    sw: Vswitchd,
    _dir: TestDir,
}

impl Site {
    fn start() -> Result<Self> {
        let dir = TestDir::new("net-broadcast")?;
        let mut ports = Vec::new();
        let mut vdevs = Vec::new();
        for (i, mac) in PMD.iter().enumerate() {
            let socket = dir.join(format!("pmd{i}.sock"));
            let group = if i < 3 { "v10" } else { "v20" };
            ports.push(json!({ "name": format!("pmd{i}"), "socket": socket,
                               "mac": frames::mac_text(*mac), "port_group": group }));
            vdevs.push(Vdev::VirtioUser {
                socket,
                queues: 1,
                server: false,
                mac: Some(frames::mac_text(*mac)),
            });
        }
        for (name, mac) in [("raw-a", RAW_A), ("raw-b", RAW_B)] {
            ports.push(
                json!({ "name": name, "socket": dir.join(format!("{name}.sock")),
                               "mac": frames::mac_text(mac), "port_group": "v10" }),
            );
        }
        let mut sw = Vswitchd::new(&dir);
        sw.set_config(json!({
            "port_groups": [
                { "name": "v10", "vlan": { "mode": "access", "id": 10 } },
                { "name": "v20", "vlan": { "mode": "access", "id": 20 } },
            ],
            "ports": ports,
        }))?;
        let a = RawNic::connect(&dir.join("raw-a.sock"), RAW_A)?;
        let b = RawNic::connect(&dir.join("raw-b.sock"), RAW_B)?;
        let hugepages = Hugepages::reserve(&dir, 128)?;
        let t = Testpmd::start(&dir, "testpmd", &hugepages, &vdevs, 0)?;
        Ok(Site {
            t,
            want: [0; 4],
            _hugepages: hugepages,
            b,
            a,
            sw,
            _dir: dir,
        })
    }
}

#[test]
fn broadcasts_flood_within_their_vlan_and_unicast_arrives_unchanged() -> Result<()> {
    let mut site = Site::start()?;
    case("each_vlan_10_port_gets_the_other_twos_bursts", || {
        each_vlan_10_port_gets_the_other_twos_bursts(&mut site)
    })?;
    case("the_raw_nics_get_vlan_10s_broadcasts_untagged", || {
        the_raw_nics_get_vlan_10s_broadcasts_untagged(&mut site)
    })?;
    case(
        "a_learned_unicast_arrives_unchanged_at_its_port_only",
        || a_learned_unicast_arrives_unchanged_at_its_port_only(&mut site),
    )?;
    case("a_unicast_to_a_testpmd_port_reaches_that_port_only", || {
        a_unicast_to_a_testpmd_port_reaches_that_port_only(&mut site)
    })?;
    case("a_unicast_to_an_unknown_address_reaches_no_port", || {
        a_unicast_to_an_unknown_address_reaches_no_port(&mut site)
    })?;
    site.t.command("stop")?;
    site.sw.ensure_running()?;
    Ok(())
}

/// Each testpmd port sends one burst of broadcasts, then only receives.
fn each_vlan_10_port_gets_the_other_twos_bursts(s: &mut Site) -> Result<()> {
    s.t.command("set fwd rxonly")?;
    for port in 0..4 {
        s.t.command(&format!("set eth-peer {port} ff:ff:ff:ff:ff:ff"))?;
    }
    s.t.command("start tx_first")?;
    for port in 0..4 {
        let tx = s.t.port_stats(port)?.tx_packets;
        ensure!(tx == BURST, "testpmd port {port} sent {tx} frames");
    }
    s.want = [2 * BURST, 2 * BURST, 2 * BURST, 0];
    expect_rx(
        &mut s.t,
        s.want,
        "each VLAN 10 port to get the other two's bursts",
    )?;
    Ok(())
}

/// The raw NICs (8 receive buffers each) got the first of the VLAN 10
/// broadcasts, untagged, and none of VLAN 20's.
fn the_raw_nics_get_vlan_10s_broadcasts_untagged(s: &mut Site) -> Result<()> {
    for nic in [&mut s.a, &mut s.b] {
        let got = nic
            .receive_some(WAIT)
            .with_context(|| format!("broadcasts at {}", frames::mac_text(nic.mac)))?;
        eprintln!("{} got {} broadcasts", frames::mac_text(nic.mac), got.len());
        for f in &got {
            let p = frames::parse(f).ok_or_else(|| anyhow::anyhow!("runt {f:02x?}"))?;
            ensure!(
                p.dst == BROADCAST && PMD[..3].contains(&p.src) && p.vlan.is_none(),
                "{} received {f:02x?}",
                frames::mac_text(nic.mac)
            );
            ensure!(
                f.len() == 64,
                "testpmd's 64-byte frame arrived as {}",
                f.len()
            );
        }
    }
    Ok(())
}

/// b announces itself; a's unicast to b then arrives byte for byte at
/// b only (a marker broadcast shows testpmd's ports saw nothing else).
fn a_learned_unicast_arrives_unchanged_at_its_port_only(s: &mut Site) -> Result<()> {
    let hello = frames::patterned(BROADCAST, RAW_B, None, 46, 1);
    s.b.send(&hello)?;
    s.a.receive_until(WAIT, |f| f == hello)
        .context("b's broadcast at a")?;
    s.want = s.want.map(|n| n + 1);
    s.want[3] = 0;
    expect_rx(&mut s.t, s.want, "b's broadcast")?;
    for (len, seed) in [(46, 7), (1500, 9), (777, 200)] {
        let unicast = frames::patterned(RAW_B, RAW_A, None, len, seed);
        s.a.send(&unicast)?;
        let (before, got) =
            s.b.receive_until(WAIT, |f| f[..12] == unicast[..12])
                .with_context(|| format!("a's {len}-byte unicast at b"))?;
        ensure!(
            got == unicast,
            "the unicast changed on the way: sent {} bytes, got {}",
            unicast.len(),
            got.len()
        );
        ensure!(before.is_empty(), "b got other frames first: {before:02x?}");
    }
    s.a.send(&frames::patterned(BROADCAST, RAW_A, None, 46, 3))?;
    s.want = [s.want[0] + 1, s.want[1] + 1, s.want[2] + 1, 0];
    expect_rx(&mut s.t, s.want, "a's marker (and not its unicasts)")?;
    Ok(())
}

/// A unicast to testpmd's port 1, whose address the switch learned from
/// its burst: only port 1 counts it.
fn a_unicast_to_a_testpmd_port_reaches_that_port_only(s: &mut Site) -> Result<()> {
    s.a.send(&frames::patterned(PMD[1], RAW_A, None, 100, 5))?;
    s.a.send(&frames::patterned(BROADCAST, RAW_A, None, 46, 4))?;
    s.want = [s.want[0] + 1, s.want[1] + 2, s.want[2] + 1, 0];
    expect_rx(&mut s.t, s.want, "a unicast to port 1 and a marker")?;
    Ok(())
}

/// A unicast to an address no port has reaches no VM port (ports
/// receive unicast for their own address only, as vSphere's ports do
/// while "MAC address changes" is rejected): b gets a's earlier markers
/// and then this one, nothing else.
fn a_unicast_to_an_unknown_address_reaches_no_port(s: &mut Site) -> Result<()> {
    s.a.send(&frames::patterned(
        [2, 0, 0, 0, 0, 0x99],
        RAW_A,
        None,
        64,
        6,
    ))?;
    let marker = frames::patterned(BROADCAST, RAW_A, None, 46, 8);
    s.a.send(&marker)?;
    let (before, _) =
        s.b.receive_until(WAIT, |f| f == marker)
            .context("a's last marker at b")?;
    ensure!(
        before.iter().all(|f| f[..12] == marker[..12]),
        "b got {before:02x?}"
    );
    s.want = [s.want[0] + 1, s.want[1] + 1, s.want[2] + 1, 0];
    expect_rx(&mut s.t, s.want, "the unknown unicast and a marker")?;
    Ok(())
}
