//! What sits between testpmd's two ports: sfera-vswitchd, Open vSwitch
//! with DPDK, or a second testpmd that forwards each port's frames to the
//! other unchanged (the wire: the generator's ceiling, no switching at all).

use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use bench::net_counters::{ovs_dpctl_drops, ovs_fdb_ports, ovs_int_map, testpmd_fwd_drops};
use harness::backend::{SwitchBackend, SwitchBackendKind};
use harness::hugepages::Hugepages;
use harness::peers::ovs::OvsDpdk;
use harness::peers::testpmd::{Testpmd, Vdev};
use harness::testdir::TestDir;

/// The MAC addresses of testpmd's ports 0 and 1. sfera-vswitchd's
/// harness gives its ports these (the first port ..:01, the second
/// ..:00), so every switch sees the same addresses; testpmd sends each
/// port's frames to the other's (`--eth-peer`).
pub(crate) const MACS: [&str; 2] = ["02:00:00:00:00:01", "02:00:00:00:00:00"];
/// The switch ports, in testpmd's port order.
const PORTS: [&str; 2] = ["pmd0", "pmd1"];
/// The harness's OVS bridge.
const OVS_BRIDGE: &str = "br0";

/// Which forwarder a measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    /// testpmd's ports looped through a second testpmd: the ceiling.
    Wire,
    Sfera,
    Ovs,
}

impl Target {
    pub(crate) const ALL: [Target; 3] = [Target::Wire, Target::Sfera, Target::Ovs];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Wire => "testpmd wire (ceiling)",
            Target::Sfera => "sfera-vswitchd",
            Target::Ovs => "Open vSwitch with DPDK",
        }
    }
}

/// Counters of the forwarder at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ForwarderCounters {
    /// Frames the forwarder dropped, every reason summed.
    pub(crate) drops: u64,
    /// Deliveries retried on a full ring (sfera's `rx_retries`, OVS's
    /// `tx_retries`).
    pub(crate) retries: u64,
    /// sfera-vswitchd's worker: (busy cycles, packets).
    pub(crate) worker: Option<(u64, u64)>,
}

/// A running forwarder on the second CPU.
#[derive(Debug)]
pub(crate) enum Forwarder {
    Switch(SwitchBackend),
    Wire {
        testpmd: Testpmd,
        // Dropped after the testpmd that uses them.
        _hugepages: Hugepages,
    },
}

impl Forwarder {
    /// Starts `target` on the second CPU this process may run on, with two
    /// ports, and returns the vdevs testpmd's ports 0 and 1 connect with.
    /// `wire_dir` holds the wire's own hugepage mount.
    pub(crate) fn start(
        target: Target,
        dir: &TestDir,
        wire_dir: &TestDir,
    ) -> Result<(Self, Vec<Vdev>)> {
        let kind = match target {
            Target::Wire => return Self::start_wire(dir, wire_dir),
            Target::Sfera => SwitchBackendKind::SferaVswitchd,
            Target::Ovs => SwitchBackendKind::OvsDpdk,
        };
        let mut switch = SwitchBackend::start_on(kind, dir, Some(1))?;
        if let Some(ovs) = switch.ovs() {
            configure_ovs(ovs)?;
        }
        let mut vdevs = Vec::new();
        for (port, want) in PORTS.iter().zip(MACS) {
            let mut vdev = switch.attach_virtio_user(dir, port)?;
            if let Vdev::VirtioUser { mac, .. } = &mut vdev {
                match mac {
                    // sfera-vswitchd's port has its MAC: it must be ours.
                    Some(m) => ensure!(m == want, "port {port} has MAC {m}, not {want}"),
                    None => *mac = Some(want.to_owned()),
                }
            }
            vdevs.push(vdev);
        }
        Ok((Forwarder::Switch(switch), vdevs))
    }

    fn start_wire(dir: &TestDir, wire_dir: &TestDir) -> Result<(Self, Vec<Vdev>)> {
        let hugepages = Hugepages::reserve(wire_dir, 256)?;
        let sockets: Vec<_> = PORTS
            .iter()
            .map(|p| dir.join(format!("{p}.wire.sock")))
            .collect();
        let listen: Vec<Vdev> = sockets
            .iter()
            .map(|s| Vdev::Vhost {
                socket: s.clone(),
                queues: 1,
            })
            .collect();
        let mut wire = Testpmd::start(wire_dir, "wire", &hugepages, &listen, 1)?;
        wire.command("set fwd io")?;
        wire.command("start")?;
        let vdevs = sockets
            .into_iter()
            .zip(MACS)
            .map(|(socket, mac)| Vdev::VirtioUser {
                socket,
                queues: 1,
                server: false,
                mac: Some(mac.to_owned()),
            })
            .collect();
        Ok((
            Forwarder::Wire {
                testpmd: wire,
                _hugepages: hugepages,
            },
            vdevs,
        ))
    }

    /// The process that forwards.
    pub(crate) fn pid(&self) -> Result<u32> {
        match self {
            Forwarder::Switch(s) => s.forwarding_pid().context("switch has no process"),
            Forwarder::Wire { testpmd: w, .. } => Ok(w.pid()),
        }
    }

    /// Puts every thread of OVS on the switch's CPU, as sfera-vswitchd
    /// runs whole under `taskset` there: the PMD is there already, and its
    /// other threads (main, handlers, revalidators, DPDK's) must not take
    /// the generator's CPU. Threads made later inherit the placement.
    pub(crate) fn place_threads(&mut self) -> Result<()> {
        let Forwarder::Switch(switch) = self else {
            return Ok(());
        };
        let Some(ovs) = switch.ovs() else {
            return Ok(());
        };
        let cpu = harness::cpus::nth(1)?;
        let pid = ovs.vswitchd_pid();
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .output()
            .context("cannot run taskset")?;
        ensure!(
            status.status.success(),
            "taskset on ovs-vswitchd failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        Ok(())
    }

    /// Fails unless the switch has learned each testpmd port's MAC on that
    /// port, so the measured frames are known unicast on both switches.
    pub(crate) fn check_learned(&mut self, dir: &TestDir) -> Result<()> {
        match self {
            Forwarder::Wire { .. } => Ok(()),
            Forwarder::Switch(switch) => match switch.ovs() {
                Some(ovs) => check_ovs_learned(ovs),
                None => check_sfera_learned(dir),
            },
        }
    }

    /// Clears what is measured over a window only (OVS's PMD statistics).
    pub(crate) fn clear_cycles(&mut self) -> Result<()> {
        if let Forwarder::Switch(switch) = self
            && let Some(ovs) = switch.ovs()
        {
            ovs.appctl(&["dpif-netdev/pmd-stats-clear"])?;
        }
        Ok(())
    }

    /// OVS's own cycles per packet since [`Forwarder::clear_cycles`].
    pub(crate) fn ovs_cycles_per_packet(&mut self) -> Result<Option<f64>> {
        if let Forwarder::Switch(switch) = self
            && let Some(ovs) = switch.ovs()
        {
            let stats = ovs.appctl(&["dpif-netdev/pmd-stats-show"])?;
            let cycles = bench::net_counters::ovs_cycles_per_packet(&stats)
                .with_context(|| format!("no cycles per packet in:\n{stats}"))?;
            return Ok(Some(cycles));
        }
        Ok(None)
    }

    /// The drop and retry counters now.
    pub(crate) fn counters(&mut self) -> Result<ForwarderCounters> {
        match self {
            Forwarder::Wire { testpmd: wire, .. } => {
                let text = wire.command("show fwd stats all")?;
                let (rx, tx) = testpmd_fwd_drops(&text)
                    .with_context(|| format!("no forward statistics in:\n{text}"))?;
                Ok(ForwarderCounters {
                    drops: rx + tx,
                    ..ForwarderCounters::default()
                })
            }
            Forwarder::Switch(switch) => match switch.sfera_stats() {
                Some(stats) => sfera_counters(&stats?),
                None => {
                    let ovs = switch.ovs().context("a switch is sfera or OVS")?;
                    ovs_counters(ovs)
                }
            },
        }
    }

    /// Fails if the forwarder has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self {
            Forwarder::Switch(s) => Ok(s.ensure_running()?),
            Forwarder::Wire { testpmd: w, .. } => {
                Ok(w.command("show port summary all").map(drop)?)
            }
        }
    }
}

/// OVS-DPDK as its documentation recommends for throughput, beyond what
/// the harness sets at start (one PMD on the switch's CPU that busy-polls,
/// `pmd-maxsleep=0`): the EMC and SMC at their defaults (EMC insertion 1
/// in 100, SMC off), vHost post-copy off. Written out, so the run's
/// configuration (read back into the results) shows each of them.
fn configure_ovs(ovs: &mut OvsDpdk) -> Result<()> {
    ovs.vsctl(&[
        "set",
        "Open_vSwitch",
        ".",
        "other_config:emc-insert-inv-prob=100",
        "other_config:smc-enable=false",
        // Read at DPDK's initialisation only; false is what runs.
        "other_config:vhost-postcopy-support=false",
    ])?;
    Ok(())
}

/// OVS's `other_config`, as the results record it.
pub(crate) fn ovs_config(forwarder: &mut Forwarder) -> Result<Option<String>> {
    if let Forwarder::Switch(switch) = forwarder
        && let Some(ovs) = switch.ovs()
    {
        let text = ovs.vsctl(&["get", "Open_vSwitch", ".", "other_config"])?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(None)
}

fn check_ovs_learned(ovs: &mut OvsDpdk) -> Result<()> {
    let table = ovs.appctl(&["fdb/show", OVS_BRIDGE])?;
    for (port, mac) in PORTS.iter().zip(MACS) {
        let ofport: u32 = ovs
            .vsctl(&["get", "Interface", port, "ofport"])?
            .trim()
            .parse()
            .with_context(|| format!("no OpenFlow port number for {port}"))?;
        let found = ovs_fdb_ports(&table, mac);
        ensure!(
            found == [ofport],
            "OVS has not learned {mac} on {port} (port {ofport}); its table:\n{table}"
        );
    }
    Ok(())
}

fn check_sfera_learned(dir: &TestDir) -> Result<()> {
    let api = dir.join("vswitchd-api.sock");
    let switches =
        harness::http::call(&api, "GET", "/v1/switches", None)?.expect(200, "switches")?;
    let mut learned = Vec::new();
    for sw in switches.as_array().context("switches are a list")? {
        let name = sw["name"].as_str().context("a switch has a name")?;
        let path = format!("/v1/switches/{name}/mac-table");
        let table = harness::http::call(&api, "GET", &path, None)?.expect(200, "MAC table")?;
        for e in table.as_array().context("a MAC table is a list")? {
            if let (Some(mac), Some(port)) = (e["mac"].as_str(), e["port"].as_str()) {
                learned.push((mac.to_ascii_lowercase(), port.to_owned()));
            }
        }
    }
    for (port, mac) in PORTS.iter().zip(MACS) {
        if !learned.iter().any(|(m, p)| m == mac && p == port) {
            bail!("sfera-vswitchd has not learned {mac} on {port}: {learned:?}");
        }
    }
    Ok(())
}

fn sfera_counters(stats: &serde_json::Value) -> Result<ForwarderCounters> {
    let get = |k: &str| {
        stats[k]
            .as_u64()
            .with_context(|| format!("no {k} in the stats: {stats}"))
    };
    let mut c = ForwarderCounters {
        worker: Some((get("worker_busy_cycles")?, get("worker_packets")?)),
        ..ForwarderCounters::default()
    };
    for port in stats["ports"].as_array().context("ports are a list")? {
        if let Some(drops) = port["drops"].as_object() {
            c.drops += drops
                .values()
                .filter_map(serde_json::Value::as_u64)
                .sum::<u64>();
        }
        // Absent from switches before retries were counted.
        c.retries += port["rx_retries"].as_u64().unwrap_or(0);
    }
    Ok(c)
}

fn ovs_counters(ovs: &mut OvsDpdk) -> Result<ForwarderCounters> {
    // TX dropped counts every frame OVS could not send on the port (its
    // ring full after the retries, QoS, MTU); RX dropped those it could
    // not take. Read live from the ports.
    let mut c = ForwarderCounters {
        drops: ovs_dpctl_drops(&ovs.appctl(&["dpctl/show", "-s"])?, &PORTS),
        ..ForwarderCounters::default()
    };
    for port in PORTS {
        // The database's copy, refreshed every 5 s: over a window of a
        // few seconds this is approximate.
        let stats = ovs_int_map(&ovs.vsctl(&["get", "Interface", port, "statistics"])?);
        c.retries += stats.get("tx_retries").copied().unwrap_or(0);
    }
    Ok(c)
}
