//! `sfera-blockd` exporting one image on a vhost-user-blk socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Result;
use crate::peers::qsd::Export;
use crate::process::Process;
use crate::testdir::TestDir;
use crate::wait::wait_until;

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
            .env("RUST_LOG", "info");
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

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}
