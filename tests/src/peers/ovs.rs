//! Open vSwitch with DPDK (Debian's `openvswitch-switch-dpdk`), run by hand
//! with its database, sockets and logs in the test's directory and its
//! datapath inside a network namespace of the test, so its bridge ports never
//! touch the host's interfaces. VM NICs attach as `dpdkvhostuserclient`
//! ports: OVS connects to sockets on which QEMU listens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::hugepages::Hugepages;
use crate::netns::NetNs;
use crate::process::{Process, run};
use crate::testdir::TestDir;
use crate::wait::wait_until;
use crate::{Result, tools};

const VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// CPU placement of OVS's DPDK threads.
#[derive(Debug, Clone)]
pub struct OvsOptions {
    /// Hex mask of the CPUs for PMD (forwarding) threads.
    pub pmd_cpu_mask: String,
    /// Longest sleep of an idle PMD thread, in microseconds (OVS 3.1's
    /// `pmd-maxsleep`; 0 busy-polls). Tests that share two cores with TCG
    /// guests let PMDs sleep; benchmarks busy-poll.
    pub pmd_max_sleep_us: u32,
}

impl Default for OvsOptions {
    /// One sleeping PMD thread on the second CPU this process may run on
    /// (the only one, where there is one).
    fn default() -> Self {
        OvsOptions {
            pmd_cpu_mask: pmd_mask(crate::cpus::nth(1).unwrap_or(0)),
            pmd_max_sleep_us: 1000,
        }
    }
}

/// OVS's hex CPU mask with CPU `cpu` alone.
pub fn pmd_mask(cpu: usize) -> String {
    // Hex digit `cpu / 4` from the right holds the bit.
    format!("0x{:x}{}", 1u8 << (cpu % 4), "0".repeat(cpu / 4))
}

/// A running OVS-DPDK: `ovsdb-server` and `ovs-vswitchd-dpdk`.
#[derive(Debug)]
pub struct OvsDpdk {
    run_dir: PathBuf,
    db_socket: PathBuf,
    // Dropped in this order: the switch, then its database, then the
    // namespace it ran in.
    vswitchd: Process,
    ovsdb: Process,
    netns: NetNs,
}

impl OvsDpdk {
    /// Creates a database, starts both daemons with DPDK on `hugepages`, and
    /// waits until DPDK has initialised.
    pub fn start(dir: &TestDir, hugepages: &Hugepages, options: &OvsOptions) -> Result<Self> {
        let ovsdb_tool = tools::require("ovsdb-tool", "openvswitch-common")?;
        let ovsdb_server = tools::require("ovsdb-server", "openvswitch-switch")?;
        let vswitchd = tools::require(VSWITCHD_DPDK, "openvswitch-switch-dpdk")?;
        tools::require("ovs-vsctl", "openvswitch-switch")?;

        let run_dir = dir.subdir("ovs")?;
        let db = run_dir.join("conf.db");
        let db_socket = run_dir.join("db.sock");
        let mut create = Command::new(ovsdb_tool);
        create.arg("create").arg(&db).arg(SCHEMA);
        run(create)?;

        let mut command = Command::new(ovsdb_server);
        command
            .arg(&db)
            .arg(format!("--remote=punix:{}", db_socket.display()));
        daemon_options(&mut command, &run_dir, "ovsdb-server");
        let mut ovsdb = Process::spawn("ovsdb-server", command, &run_dir.join("ovsdb-server.log"))?;
        wait_until("ovsdb-server's socket", Duration::from_secs(30), || {
            ovsdb.ensure_running()?;
            Ok(db_socket.exists().then_some(()))
        })?;

        let netns = NetNs::new()?;
        let mut ovs = PartialOvs {
            run_dir: &run_dir,
            db_socket: &db_socket,
        };
        ovs.vsctl(&["--no-wait", "init"])?;
        let dpdk_extra = format!(
            "--no-pci --single-file-segments --file-prefix={} --huge-dir={}",
            super::dpdk_file_prefix("ovs"),
            hugepages.dir().display()
        );
        ovs.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &format!("other_config:dpdk-socket-mem={}", hugepages.megabytes()),
            &format!("other_config:dpdk-extra=\"{dpdk_extra}\""),
            "other_config:dpdk-lcore-mask=0x1",
            &format!("other_config:pmd-cpu-mask={}", options.pmd_cpu_mask),
            &format!("other_config:pmd-maxsleep={}", options.pmd_max_sleep_us),
        ])?;

        let mut command = netns.command(&vswitchd.to_string_lossy())?;
        command.arg(format!("unix:{}", db_socket.display()));
        daemon_options(&mut command, &run_dir, "ovs-vswitchd");
        let vswitchd = Process::spawn(
            "ovs-vswitchd-dpdk",
            command,
            &run_dir.join("ovs-vswitchd.log"),
        )?;
        let mut ovs = OvsDpdk {
            run_dir,
            db_socket,
            vswitchd,
            ovsdb,
            netns,
        };
        ovs.vsctl(&[
            "--timeout=120",
            "wait-until",
            "Open_vSwitch",
            ".",
            "dpdk_initialized=true",
        ])
        .or_else(|e| {
            ovs.vswitchd.ensure_running()?;
            Err(e)
        })?;
        Ok(ovs)
    }

    /// Runs `ovs-vsctl` against this instance's database.
    pub fn vsctl(&mut self, args: &[&str]) -> Result<String> {
        self.vswitchd.ensure_running()?;
        PartialOvs {
            run_dir: &self.run_dir,
            db_socket: &self.db_socket,
        }
        .vsctl(args)
    }

    /// Runs `ovs-appctl` against this instance's ovs-vswitchd.
    pub fn appctl(&mut self, args: &[&str]) -> Result<String> {
        self.vswitchd.ensure_running()?;
        let mut command = Command::new(tools::require("ovs-appctl", "openvswitch-common")?);
        command
            .arg("-t")
            .arg(self.run_dir.join("ovs-vswitchd.ctl"))
            .args(args);
        run(command)
    }

    /// Adds a userspace (netdev) bridge; with no flows it is a MAC-learning
    /// switch (the NORMAL action).
    pub fn add_bridge(&mut self, bridge: &str) -> Result<()> {
        self.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
        ])?;
        Ok(())
    }

    /// Adds a `dpdkvhostuserclient` port that connects to `socket`, where a
    /// VMM (or testpmd with `server=1`) listens.
    pub fn add_vhost_user_client_port(
        &mut self,
        bridge: &str,
        port: &str,
        socket: &Path,
    ) -> Result<()> {
        self.vsctl(&[
            "add-port",
            bridge,
            port,
            "--",
            "set",
            "Interface",
            port,
            "type=dpdkvhostuserclient",
            &format!("options:vhost-server-path={}", socket.display()),
        ])?;
        Ok(())
    }

    /// Adds a VLAN access tag to a port.
    pub fn set_port_vlan(&mut self, port: &str, tag: u16) -> Result<()> {
        self.vsctl(&["set", "Port", port, &format!("tag={tag}")])?;
        Ok(())
    }

    /// ovs-vswitchd's process id.
    pub fn vswitchd_pid(&self) -> u32 {
        self.vswitchd.pid()
    }

    /// The namespace the datapath runs in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Fails if either daemon has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.ovsdb.ensure_running()?;
        self.vswitchd.ensure_running()
    }
}

/// The pieces `ovs-vsctl` needs, usable before ovs-vswitchd runs.
struct PartialOvs<'a> {
    run_dir: &'a Path,
    db_socket: &'a Path,
}

impl PartialOvs<'_> {
    fn vsctl(&mut self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(tools::require("ovs-vsctl", "openvswitch-switch")?);
        command
            .arg(format!("--db=unix:{}", self.db_socket.display()))
            .args(args);
        set_ovs_env(&mut command, self.run_dir);
        run(command)
    }
}

/// The control socket, pid file, log level and paths of daemon `name`, all in
/// the private run directory.
fn daemon_options(command: &mut Command, run_dir: &Path, name: &str) {
    command
        .arg(format!(
            "--unixctl={}",
            run_dir.join(format!("{name}.ctl")).display()
        ))
        .arg(format!(
            "--pidfile={}",
            run_dir.join(format!("{name}.pid")).display()
        ))
        .arg("-vconsole:info");
    set_ovs_env(command, run_dir);
}

/// Points every OVS path default at the private run directory.
fn set_ovs_env(command: &mut Command, run_dir: &Path) {
    for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
        command.env(var, run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmd_masks_name_one_cpu() {
        assert_eq!(pmd_mask(0), "0x1");
        assert_eq!(pmd_mask(1), "0x2");
        assert_eq!(pmd_mask(5), "0x20");
        assert_eq!(pmd_mask(67), "0x80000000000000000");
    }
}
