//! DPDK's `dpdk-testpmd`, interactive, with `net_virtio_user` (a vhost-user
//! frontend, the independent client of a virtual switch) or `net_vhost` (a
//! vhost-user backend) ports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::console::Console;
use crate::hugepages::Hugepages;
use crate::process::Process;
use crate::testdir::TestDir;
use crate::{Error, Result, tools};

/// testpmd's prompt in interactive mode.
const PROMPT: &str = "testpmd> ";

/// One virtual port of testpmd.
#[derive(Debug, Clone)]
pub enum Vdev {
    /// `net_virtio_user`: testpmd is the guest side (vhost-user frontend).
    /// With `server`, testpmd listens on the socket and the backend connects.
    VirtioUser {
        socket: PathBuf,
        queues: u16,
        server: bool,
        mac: Option<String>,
    },
    /// `net_vhost`: testpmd is the backend side, listening on the socket.
    Vhost { socket: PathBuf, queues: u16 },
}

impl Vdev {
    fn arg(&self, index: usize) -> String {
        match self {
            Vdev::VirtioUser {
                socket,
                queues,
                server,
                mac,
            } => {
                let mut arg = format!(
                    "net_virtio_user{index},path={},queues={queues}",
                    socket.display()
                );
                if *server {
                    arg.push_str(",server=1");
                }
                if let Some(mac) = mac {
                    arg.push_str(&format!(",mac={mac}"));
                }
                arg
            }
            Vdev::Vhost { socket, queues } => format!(
                "net_vhost{index},iface={},queues={queues},client=0",
                socket.display()
            ),
        }
    }
}

/// Counters of one testpmd port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A running interactive testpmd.
#[derive(Debug)]
pub struct Testpmd {
    console: Console,
    process: Process,
}

impl Testpmd {
    /// Starts testpmd with `vdevs` on its hugepage reservation, with the main
    /// lcore and one forwarding lcore sharing one CPU, the `cpu`-th this
    /// process may run on ([`crate::cpus::nth`]), and waits for its prompt.
    pub fn start(
        dir: &TestDir,
        name: &str,
        hugepages: &Hugepages,
        vdevs: &[Vdev],
        cpu: u32,
    ) -> Result<Self> {
        Self::start_with_args(dir, name, hugepages, vdevs, cpu, &[])
    }

    /// [`Testpmd::start`] with more testpmd arguments (after `--`), e.g.
    /// `--rxq=2 --txq=2`.
    pub fn start_with_args(
        dir: &TestDir,
        name: &str,
        hugepages: &Hugepages,
        vdevs: &[Vdev],
        cpu: u32,
        args: &[&str],
    ) -> Result<Self> {
        let program = tools::require("dpdk-testpmd", "dpdk-dev")?;
        // testpmd prints through stdio, which a pipe makes block-buffered;
        // its prompt bypasses stdio. Unbuffered output keeps the two in order.
        let mut command = Command::new(tools::require("stdbuf", "coreutils")?);
        command.arg("--output=0").arg(program);
        let cpu = crate::cpus::nth(cpu as usize)?;
        command.args(["--lcores", &format!("0@{cpu},1@{cpu}")]);
        command.args(["--no-pci", "--single-file-segments"]);
        command.args(["--file-prefix", &super::dpdk_file_prefix("testpmd")]);
        command.arg("--huge-dir").arg(hugepages.dir());
        command.args(["-m", &hugepages.megabytes().to_string()]);
        for (i, vdev) in vdevs.iter().enumerate() {
            command.args(["--vdev", &vdev.arg(i)]);
        }
        // A small mbuf pool: the default one sizes for physical NICs and
        // would not fit a test's hugepage reservation.
        command.args(["--", "-i", "--no-lsc-interrupt", "--total-num-mbufs=16384"]);
        command.args(args);
        let log = dir.join(format!("{name}.testpmd.log"));
        let (process, pipes) =
            Process::spawn_interactive(&format!("testpmd {name}"), command, &log)?;
        let console = Console::new(
            name,
            pipes.stdout,
            pipes.stdin,
            &dir.join(format!("{name}.testpmd.console.log")),
        )?;
        let mut testpmd = Testpmd { console, process };
        if let Err(e) = testpmd
            .console
            .wait_for_text(PROMPT, Duration::from_secs(60))
        {
            testpmd.process.wait_timeout(Duration::from_millis(200))?;
            testpmd.process.ensure_running()?;
            return Err(e);
        }
        Ok(testpmd)
    }

    /// Runs one testpmd command and returns what it printed before the next
    /// prompt.
    pub fn command(&mut self, line: &str) -> Result<String> {
        self.console.send_line(line)?;
        match self.console.wait_for_text(PROMPT, Duration::from_secs(30)) {
            Ok(out) => Ok(out),
            Err(e) => {
                self.process.ensure_running()?;
                Err(e)
            }
        }
    }

    /// The extended counters of port `port` (`show port xstats`), by name:
    /// per queue ones such as `rx_q1_packets` among them.
    pub fn xstats(&mut self, port: u16) -> Result<std::collections::BTreeMap<String, u64>> {
        let text = self.command(&format!("show port xstats {port}"))?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// The counters of port `port`.
    pub fn port_stats(&mut self, port: u16) -> Result<PortStats> {
        let text = self.command(&format!("show port stats {port}"))?;
        parse_port_stats(&text)
    }

    /// testpmd's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The file testpmd's stderr goes to.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Kills testpmd with `SIGKILL`, as a crashing VMM dies: its vhost-user
    /// connections close without any request.
    pub fn kill(mut self) -> Result<()> {
        self.process.kill().map(drop)
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        // A clean quit lets DPDK release its vhost-user sockets; the process
        // guard kills it anyway if it does not.
        let _ = self.console.send_line("quit");
        let _ = self.process.wait_timeout(Duration::from_secs(5));
    }
}

/// Parses the output of `show port stats N`.
pub fn parse_port_stats(text: &str) -> Result<PortStats> {
    let field = |line_key: &str, name: &str| -> Result<u64> {
        text.lines()
            .filter(|l| l.contains(line_key))
            .find_map(|l| {
                let after = l.split(name).nth(1)?;
                after.split_whitespace().next()?.parse().ok()
            })
            .ok_or_else(|| Error::Parse {
                what: format!("testpmd port stats ({name})"),
                text: text.to_owned(),
            })
    };
    Ok(PortStats {
        rx_packets: field("RX-packets:", "RX-packets:")?,
        rx_bytes: field("RX-bytes:", "RX-bytes:")?,
        tx_packets: field("TX-packets:", "TX-packets:")?,
        tx_bytes: field("TX-bytes:", "TX-bytes:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_stats() {
        let text = "
  ######################## NIC statistics for port 0  ########################
  RX-packets: 1234       RX-missed: 0          RX-bytes:  79000
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 99         TX-errors: 0          TX-bytes:  6336

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  ############################################################################
";
        let stats = parse_port_stats(text).unwrap();
        assert_eq!(
            stats,
            PortStats {
                rx_packets: 1234,
                tx_packets: 99,
                rx_bytes: 79000,
                tx_bytes: 6336
            }
        );
        assert!(parse_port_stats("garbage").is_err());
    }

    #[test]
    fn vdev_arguments() {
        let user = Vdev::VirtioUser {
            socket: "/s/a.sock".into(),
            queues: 2,
            server: true,
            mac: Some("02:00:00:00:00:01".into()),
        };
        assert_eq!(
            user.arg(0),
            "net_virtio_user0,path=/s/a.sock,queues=2,server=1,mac=02:00:00:00:00:01"
        );
        let vhost = Vdev::Vhost {
            socket: "/s/b.sock".into(),
            queues: 1,
        };
        assert_eq!(vhost.arg(1), "net_vhost1,iface=/s/b.sock,queues=1,client=0");
    }
}
