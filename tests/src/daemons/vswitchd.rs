//! `sfera-vswitchd` with a configuration file the harness writes
//! ([`Vswitchd`]), or serving its API with saved state ([`VswitchdDaemon`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::netns::NetNs;
use crate::process::Process;
use crate::testdir::TestDir;
use crate::wait::wait_until;
use crate::{Error, Result};

/// The variable that sets vswitchd's log filter (`debug` to chase a flake).
const LOG_VAR: &str = "SFERA_VSWITCHD_LOG";

/// A switch whose ports are added before guests connect (each addition
/// restarts the daemon on the new configuration).
#[derive(Debug)]
pub struct Vswitchd {
    dir: PathBuf,
    port_groups: Vec<serde_json::Value>,
    ports: Vec<serde_json::Value>,
    sockets: Vec<PathBuf>,
    process: Option<Process>,
    cpu: Option<usize>,
    /// A whole configuration set by [`Vswitchd::set_config`], used instead
    /// of the port groups and ports added one by one.
    config: Option<serde_json::Value>,
    /// The network namespace the daemon runs in (its uplinks are there).
    netns: Option<String>,
    /// The API socket, when [`Vswitchd::enable_api`] asked for one.
    api: Option<PathBuf>,
}

impl Vswitchd {
    /// A switch with one port group, `default`, without VLANs.
    pub fn new(dir: &TestDir) -> Self {
        Vswitchd {
            dir: dir.path().to_owned(),
            port_groups: vec![serde_json::json!({ "name": "default", "vlan": { "mode": "none" } })],
            ports: Vec::new(),
            sockets: Vec::new(),
            process: None,
            cpu: None,
            api: None,
            config: None,
            netns: None,
        }
    }

    /// Runs the daemon on CPU `cpu` only (from its next start).
    pub fn pin_to(&mut self, cpu: Option<usize>) {
        self.cpu = cpu;
    }

    /// The daemon's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Adds a port group (`vlan` as the daemon's JSON, e.g.
    /// `{"mode":"access","id":10}`).
    pub fn add_port_group(&mut self, name: &str, vlan: serde_json::Value) {
        self.port_groups
            .push(serde_json::json!({ "name": name, "vlan": vlan }));
    }

    /// Adds a server-mode port and (re)starts the daemon; returns the
    /// port's socket.
    pub fn add_port(&mut self, name: &str, mac: &str, port_group: &str) -> Result<PathBuf> {
        let socket = self.dir.join(format!("{name}.vsw.sock"));
        self.ports.push(serde_json::json!({
            "name": name, "socket": socket, "mac": mac, "port_group": port_group,
        }));
        self.sockets.push(socket.clone());
        self.restart()?;
        Ok(socket)
    }

    /// (Re)starts the daemon on the current configuration and waits for its
    /// server-mode port sockets.
    pub fn restart(&mut self) -> Result<()> {
        self.process = None;
        for s in &self.server_sockets() {
            let _ = std::fs::remove_file(s);
        }
        let config = self.dir.join("vswitchd.json");
        let text = match &self.config {
            Some(doc) => doc.to_string(),
            None => serde_json::json!({ "port_groups": self.port_groups, "ports": self.ports })
                .to_string(),
        };
        std::fs::write(&config, text)
            .map_err(|e| Error::io("Cannot write switch config", &config, e))?;
        let binary = super::binary("sfera-vswitchd")?;
        let mut command = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new(crate::tools::require("taskset", "util-linux")?);
                c.arg("-c").arg(cpu.to_string()).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        if let Some(ns) = &self.netns {
            command = in_netns(ns, &command)?;
        }
        match &self.api {
            // `serve` on a fresh data directory starts from the file, and
            // answers the API (the configuration stays the file's).
            Some(api) => {
                let data = self.dir.join("vswitchd-data");
                let _ = std::fs::remove_dir_all(&data);
                let _ = std::fs::remove_file(api);
                command
                    .arg("--api")
                    .arg(api)
                    .arg("serve")
                    .arg("--data-dir")
                    .arg(&data)
                    .arg("--config")
                    .arg(&config);
            }
            None => {
                command.arg("--config").arg(&config);
            }
        }
        command.env("RUST_LOG", super::log_filter(LOG_VAR));
        let mut process =
            Process::spawn("sfera-vswitchd", command, &self.dir.join("vswitchd.log"))?;
        let mut sockets = self.server_sockets();
        sockets.extend(self.api.clone());
        wait_until(
            "sfera-vswitchd's port sockets",
            Duration::from_secs(30),
            || {
                process.ensure_running()?;
                Ok(sockets.iter().all(|s| s.exists()).then_some(()))
            },
        )?;
        self.process = Some(process);
        Ok(())
    }

    /// Serves the REST API on a socket in the test directory from the next
    /// (re)start on (the configuration still comes from the harness).
    pub fn enable_api(&mut self) {
        self.api = Some(self.dir.join("vswitchd-api.sock"));
    }

    /// `GET /v1/stats` of the running daemon (needs [`Vswitchd::enable_api`]).
    pub fn stats(&self) -> Result<serde_json::Value> {
        let api = self.api.as_ref().ok_or_else(|| Error::Parse {
            what: "sfera-vswitchd stats (started without its API)".to_owned(),
            text: String::new(),
        })?;
        let answer = crate::http::call(api, "GET", "/v1/stats", None)?;
        if answer.status != 200 {
            return Err(Error::Parse {
                what: format!("GET /v1/stats (HTTP {})", answer.status),
                text: answer.body,
            });
        }
        answer.json()
    }

    /// Ports added so far.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// Fails if the daemon has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.process.as_mut() {
            Some(p) => p.ensure_running(),
            None => Ok(()),
        }
    }
}

/// A running `sfera-vswitchd serve`: the switch with its API on a Unix
/// socket and its configuration saved in a data directory.
#[derive(Debug)]
pub struct VswitchdDaemon {
    api: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    /// The network namespace it runs in (its uplinks' TAPs are made there).
    netns: Option<String>,
    process: Option<Process>,
}

impl VswitchdDaemon {
    /// Starts the daemon with its state under `dir`, inside `netns` if
    /// given, and waits for its API.
    pub fn start(dir: &TestDir, netns: Option<&NetNs>) -> Result<Self> {
        Self::start_in(dir.path(), netns)
    }

    /// Starts the daemon with its API socket, state and log under `root`
    /// (`vswitchd-api.sock`, `vswitchd-data/`, `vswitchd.log`).
    pub fn start_in(root: &Path, netns: Option<&NetNs>) -> Result<Self> {
        let mut daemon = VswitchdDaemon {
            api: root.join("vswitchd-api.sock"),
            data_dir: root.join("vswitchd-data"),
            log: root.join("vswitchd.log"),
            netns: netns.map(|n| n.name().to_owned()),
            process: None,
        };
        daemon.restart()?;
        Ok(daemon)
    }

    /// Starts the daemon again (after [`VswitchdDaemon::kill`] or
    /// [`VswitchdDaemon::stop`]) on the same state. Fails with
    /// [`Error::Exited`], whose text ends with the daemon's last output, if
    /// it exits before its API is up.
    pub fn restart(&mut self) -> Result<()> {
        self.process = None;
        let binary = super::binary("sfera-vswitchd")?;
        let command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(crate::tools::require("ip", "iproute2")?);
                c.args(["netns", "exec", ns.as_str()]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        self.process = Some(super::serve(
            "sfera-vswitchd",
            command,
            &self.api,
            &self.data_dir,
            &[],
            &self.log,
            LOG_VAR,
        )?);
        Ok(())
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        super::crash(self.process.take());
    }

    /// Stops the daemon with SIGTERM (SIGKILL after a grace period) and
    /// returns its exit status.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        match self.process.take() {
            Some(mut p) => p.stop().map(Some),
            None => Ok(None),
        }
    }

    /// Runs the daemon's CLI against its API (`--api` is added) and returns
    /// its output; a non-zero exit is an error carrying its stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(super::binary("sfera-vswitchd")?);
        command.arg("--api").arg(&self.api).args(args);
        crate::process::run(command)
    }

    /// The API socket.
    pub fn api(&self) -> &Path {
        &self.api
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The state file in the data directory.
    pub fn state_file(&self) -> PathBuf {
        self.data_dir.join("vswitch-state.json")
    }

    /// The daemon's log so far (every run's).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Fails if the daemon has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.process.as_mut() {
            Some(p) => p.ensure_running(),
            None => Ok(()),
        }
    }
}

impl Vswitchd {
    /// Replaces the whole configuration (the daemon's JSON: `switches`,
    /// `port_groups`, `ports`, with uplinks, shaping, teaming, client-mode
    /// ports and queues) and (re)starts the daemon on it. Port groups and
    /// ports added one by one are no longer used.
    pub fn set_config(&mut self, config: serde_json::Value) -> Result<()> {
        self.config = Some(config);
        self.restart()
    }

    /// Runs the daemon inside network namespace `ns` from its next start,
    /// so that the uplinks it creates or binds to are that namespace's.
    pub fn run_in_netns(&mut self, ns: &str) {
        self.netns = Some(ns.to_owned());
    }

    /// Kills the daemon with `SIGKILL`, as a crash would: nothing is
    /// cleaned up. [`Vswitchd::restart`] starts it again.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("vswitchd.log")
    }

    /// The sockets the daemon listens on: those of ports in server mode
    /// (client-mode sockets belong to the VMM).
    fn server_sockets(&self) -> Vec<PathBuf> {
        let Some(doc) = &self.config else {
            return self.sockets.clone();
        };
        doc["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["mode"].as_str() != Some("client"))
            .filter_map(|p| p["socket"].as_str().map(PathBuf::from))
            .collect()
    }
}

/// `command` run inside network namespace `ns` (`ip netns exec`, which
/// execs the program: the process is the command itself).
fn in_netns(ns: &str, command: &Command) -> Result<Command> {
    let mut c = Command::new(crate::tools::require("ip", "iproute2")?);
    c.args(["netns", "exec", ns]).arg(command.get_program());
    c.args(command.get_args());
    Ok(c)
}
