//! `sfera-blockd` exporting one image on a vhost-user-blk socket.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Result;
use crate::peers::qsd::Export;
use crate::process::Process;
use crate::testdir::TestDir;
use crate::wait::wait_until;

/// The variable that sets blockd's log filter (`debug` to chase a flake).
const LOG_VAR: &str = "SFERA_BLOCKD_LOG";

/// A running `sfera-blockd export`.
#[derive(Debug)]
pub struct Blockd {
    socket: PathBuf,
    process: Process,
}

impl Blockd {
    /// Starts the daemon and waits for its socket.
    pub fn start(dir: &TestDir, name: &str, export: &Export) -> Result<Self> {
        let socket = dir.join(format!("{name}.blockd.sock"));
        let mut command = Command::new(super::binary("sfera-blockd")?);
        command
            .arg("export")
            .arg("--image")
            .arg(&export.image)
            .arg("--socket")
            .arg(&socket)
            .arg("--queues")
            .arg(export.num_queues.to_string())
            .arg("--serial")
            .arg(name)
            .arg("--poll-us")
            .arg(export.poll_us.to_string())
            .env("RUST_LOG", super::log_filter(LOG_VAR));
        if !export.writable {
            command.arg("--read-only");
        }
        let mut process = Process::spawn(
            &format!("sfera-blockd {name}"),
            command,
            &dir.join(format!("{name}.blockd.log")),
        )?;
        wait_until("sfera-blockd's socket", Duration::from_secs(30), || {
            process.ensure_running()?;
            Ok(socket.exists().then_some(()))
        })?;
        Ok(Blockd { socket, process })
    }

    /// The vhost-user-blk socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Fails if the daemon has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill().map(|_| ())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}

/// A running `sfera-blockd serve`: the daemon with its API.
#[derive(Debug)]
pub struct BlockdDaemon {
    binary: PathBuf,
    api: PathBuf,
    data_dir: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

impl BlockdDaemon {
    /// Starts the daemon with its state under `dir` and waits for its API.
    pub fn start(dir: &TestDir) -> Result<Self> {
        Self::start_in(dir.path())
    }

    /// Starts the daemon with its state, sockets and log under `root`
    /// (`blockd-api.sock`, `blockd-data/`, `blk/`, `blockd.log`).
    pub fn start_in(root: &Path) -> Result<Self> {
        Self::start_binary_in(&super::binary("sfera-blockd")?, root)
    }

    /// Like [`BlockdDaemon::start_in`] with another build of the daemon
    /// (a mutant that a test must catch).
    pub fn start_binary_in(binary: &Path, root: &Path) -> Result<Self> {
        let mut daemon = BlockdDaemon {
            binary: binary.to_owned(),
            api: root.join("blockd-api.sock"),
            data_dir: root.join("blockd-data"),
            run_dir: root.join("blk"),
            log: root.join("blockd.log"),
            process: None,
        };
        daemon.restart()?;
        Ok(daemon)
    }

    /// Starts the daemon again (after [`BlockdDaemon::kill`]) on the same
    /// state.
    pub fn restart(&mut self) -> Result<()> {
        self.process = Some(super::serve(
            "sfera-blockd",
            Command::new(&self.binary),
            &self.api,
            &self.data_dir,
            &[OsStr::new("--run-dir"), self.run_dir.as_os_str()],
            &self.log,
            LOG_VAR,
        )?);
        Ok(())
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        super::crash(self.process.take());
    }

    /// The API socket.
    pub fn api(&self) -> &Path {
        &self.api
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The socket of export `id`.
    pub fn export_socket(&self, id: &str) -> PathBuf {
        self.run_dir.join(format!("{id}.sock"))
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
