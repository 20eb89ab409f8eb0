//! The block and switch backends a test runs against, chosen by one
//! argument: the peers and Sfera's own daemons run the same tests.

use std::path::{Path, PathBuf};

use crate::Result;
use crate::daemons::blockd::Blockd;
use crate::daemons::vswitchd::Vswitchd;
use crate::guest::{Nic, SocketRole};
use crate::hugepages::Hugepages;
use crate::peers::ovs::{OvsDpdk, OvsOptions};
use crate::peers::qsd::{Export, QemuStorageDaemon};
use crate::peers::testpmd::Vdev;
use crate::testdir::TestDir;

/// Which vhost-user-blk server serves a test's disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockBackendKind {
    /// QEMU's `qemu-storage-daemon`.
    QemuStorageDaemon,
    /// Sfera's `sfera-blockd`.
    SferaBlockd,
}

/// A running vhost-user-blk server exporting one image.
#[derive(Debug)]
pub enum BlockBackend {
    QemuStorageDaemon(QemuStorageDaemon),
    SferaBlockd(Blockd),
}

impl BlockBackend {
    /// Starts a backend of `kind` exporting `export` under `name`.
    pub fn start(
        kind: BlockBackendKind,
        dir: &TestDir,
        name: &str,
        export: &Export,
    ) -> Result<Self> {
        match kind {
            BlockBackendKind::QemuStorageDaemon => Ok(BlockBackend::QemuStorageDaemon(
                QemuStorageDaemon::start(dir, name, export)?,
            )),
            BlockBackendKind::SferaBlockd => {
                Ok(BlockBackend::SferaBlockd(Blockd::start(dir, name, export)?))
            }
        }
    }

    /// The socket a guest's disk connects to.
    pub fn socket(&self) -> &Path {
        match self {
            BlockBackend::QemuStorageDaemon(qsd) => qsd.socket(),
            BlockBackend::SferaBlockd(blockd) => blockd.socket(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        match self {
            BlockBackend::QemuStorageDaemon(qsd) => qsd.pid(),
            BlockBackend::SferaBlockd(blockd) => blockd.pid(),
        }
    }

    /// Fails if the backend has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self {
            BlockBackend::QemuStorageDaemon(qsd) => qsd.ensure_running(),
            BlockBackend::SferaBlockd(blockd) => blockd.ensure_running(),
        }
    }
}

/// Which virtual switch connects a test's NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchBackendKind {
    /// Open vSwitch with DPDK.
    OvsDpdk,
    /// Sfera's `sfera-vswitchd`.
    SferaVswitchd,
}

/// A running virtual switch with one bridge that NICs attach to.
#[derive(Debug)]
pub enum SwitchBackend {
    // Fields drop in order: the switch before the hugepages it uses.
    OvsDpdk {
        ovs: OvsDpdk,
        bridge: String,
        hugepages: Hugepages,
    },
    SferaVswitchd(Vswitchd),
}

impl SwitchBackend {
    /// Hugepages (2 MiB) an OVS-DPDK switch reserves.
    const OVS_HUGEPAGES: u64 = 512;

    /// Starts a switch of `kind` with one bridge.
    pub fn start(kind: SwitchBackendKind, dir: &TestDir) -> Result<Self> {
        Self::start_on(kind, dir, None)
    }

    /// Starts a switch whose forwarding runs on one CPU, the `cpu`-th this
    /// process may run on ([`crate::cpus::nth`]), busy-polling
    /// (benchmarks), or shares the CPUs and sleeps when idle (`None`, tests).
    pub fn start_on(kind: SwitchBackendKind, dir: &TestDir, cpu: Option<usize>) -> Result<Self> {
        let cpu = cpu.map(crate::cpus::nth).transpose()?;
        match kind {
            SwitchBackendKind::OvsDpdk => {
                let hugepages = Hugepages::reserve(dir, Self::OVS_HUGEPAGES)?;
                let options = match cpu {
                    Some(cpu) => OvsOptions {
                        pmd_cpu_mask: crate::peers::ovs::pmd_mask(cpu),
                        pmd_max_sleep_us: 0,
                    },
                    None => OvsOptions::default(),
                };
                let mut ovs = OvsDpdk::start(dir, &hugepages, &options)?;
                let bridge = "br0".to_owned();
                ovs.add_bridge(&bridge)?;
                Ok(SwitchBackend::OvsDpdk {
                    ovs,
                    bridge,
                    hugepages,
                })
            }
            SwitchBackendKind::SferaVswitchd => {
                let mut vswitchd = Vswitchd::new(dir);
                vswitchd.pin_to(cpu);
                vswitchd.enable_api();
                Ok(SwitchBackend::SferaVswitchd(vswitchd))
            }
        }
    }

    /// Adds a switch port for a guest NIC named `port` and returns the NIC
    /// to give the guest (socket and which side listens). `id` makes the
    /// NIC's MAC address.
    pub fn attach_nic(&mut self, dir: &TestDir, port: &str, id: u8) -> Result<Nic> {
        match self {
            SwitchBackend::OvsDpdk { ovs, bridge, .. } => {
                let socket = dir.join(format!("{port}.vhu.sock"));
                ovs.add_vhost_user_client_port(bridge, port, &socket)?;
                Ok(Nic::new(socket, SocketRole::Server, id))
            }
            SwitchBackend::SferaVswitchd(vswitchd) => {
                let nic = Nic::new(PathBuf::new(), SocketRole::Client, id);
                let socket = vswitchd.add_port(port, &nic.mac, "default")?;
                Ok(Nic { socket, ..nic })
            }
        }
    }

    /// Adds a switch port for a `dpdk-testpmd` `net_virtio_user` device
    /// named `port` and returns that device.
    pub fn attach_virtio_user(&mut self, dir: &TestDir, port: &str) -> Result<Vdev> {
        match self {
            SwitchBackend::OvsDpdk { ovs, bridge, .. } => {
                let socket = dir.join(format!("{port}.vhu.sock"));
                ovs.add_vhost_user_client_port(bridge, port, &socket)?;
                Ok(Vdev::VirtioUser {
                    socket,
                    queues: 1,
                    server: true,
                    mac: None,
                })
            }
            SwitchBackend::SferaVswitchd(vswitchd) => {
                // testpmd's default peer addresses are 02:00:00:00:00:0N for
                // port N; giving the first port ..:01 and the second ..:00
                // makes each port's tx_first frames address the other.
                let n = vswitchd.port_count();
                let mac = format!("02:00:00:00:00:{:02x}", usize::from(n == 0));
                let socket = vswitchd.add_port(port, &mac, "default")?;
                Ok(Vdev::VirtioUser {
                    socket,
                    queues: 1,
                    server: false,
                    mac: Some(mac),
                })
            }
        }
    }

    /// The process doing the forwarding (for CPU accounting).
    pub fn forwarding_pid(&self) -> Option<u32> {
        match self {
            SwitchBackend::OvsDpdk { ovs, .. } => Some(ovs.vswitchd_pid()),
            SwitchBackend::SferaVswitchd(vswitchd) => vswitchd.pid(),
        }
    }

    /// sfera-vswitchd's counters (`GET /v1/stats`), for Sfera backends.
    pub fn sfera_stats(&self) -> Option<Result<serde_json::Value>> {
        match self {
            SwitchBackend::OvsDpdk { .. } => None,
            SwitchBackend::SferaVswitchd(vswitchd) => Some(vswitchd.stats()),
        }
    }

    /// Open vSwitch's own statistics command, for OVS backends.
    pub fn ovs(&mut self) -> Option<&mut OvsDpdk> {
        match self {
            SwitchBackend::OvsDpdk { ovs, .. } => Some(ovs),
            SwitchBackend::SferaVswitchd(_) => None,
        }
    }

    /// Fails if the switch has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self {
            SwitchBackend::OvsDpdk { ovs, .. } => ovs.ensure_running(),
            SwitchBackend::SferaVswitchd(vswitchd) => vswitchd.ensure_running(),
        }
    }
}
