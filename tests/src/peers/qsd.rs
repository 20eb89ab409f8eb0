//! `qemu-storage-daemon` exporting a file as a vhost-user-blk server: the
//! reference sfera-blockd is measured against.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Process;
use crate::testdir::TestDir;
use crate::wait::wait_until;
use crate::{Result, tools};

/// How an image is exported.
#[derive(Debug, Clone)]
pub struct Export {
    pub image: PathBuf,
    pub num_queues: u16,
    pub writable: bool,
    /// O_DIRECT with io_uring (`cache.direct=on,aio=io_uring`), as a
    /// datastore serves disks; otherwise the host page cache with threads.
    pub direct: bool,
    /// Run the export in its own I/O thread (QEMU's recommended set-up for
    /// performance) rather than the main loop.
    pub iothread: bool,
    /// sfera-blockd only: busy-poll budget in µs (0: event-driven).
    pub poll_us: u32,
}

impl Export {
    /// A writable single-queue export of `image` with O_DIRECT and io_uring.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Export {
            image: image.into(),
            num_queues: 1,
            writable: true,
            direct: true,
            iothread: false,
            poll_us: 50,
        }
    }

    /// The daemon's arguments for this export on `socket`.
    pub fn args(&self, socket: &Path) -> Vec<String> {
        let cache = if self.direct {
            "cache.direct=on,aio=io_uring"
        } else {
            "cache.direct=off,aio=threads"
        };
        let mut args = Vec::new();
        let mut iothread = String::new();
        if self.iothread {
            args.extend(["--object".to_owned(), "iothread,id=iothread0".to_owned()]);
            iothread = ",iothread=iothread0".to_owned();
        }
        args.extend([
            "--blockdev".into(),
            format!(
                "driver=file,node-name=file0,filename={},{cache}",
                self.image.display()
            ),
            "--blockdev".into(),
            "driver=raw,node-name=disk0,file=file0".into(),
            "--export".into(),
            format!(
                "type=vhost-user-blk,id=export0,node-name=disk0,addr.type=unix,addr.path={},writable={},num-queues={}{iothread}",
                socket.display(),
                if self.writable { "on" } else { "off" },
                self.num_queues
            ),
        ]);
        args
    }
}

/// A running `qemu-storage-daemon` with one vhost-user-blk export.
#[derive(Debug)]
pub struct QemuStorageDaemon {
    socket: PathBuf,
    process: Process,
}

impl QemuStorageDaemon {
    /// Starts the daemon and waits until its socket accepts connections.
    pub fn start(dir: &TestDir, name: &str, export: &Export) -> Result<Self> {
        let program = tools::require("qemu-storage-daemon", "qemu-system-common")?;
        let socket = dir.join(format!("{name}.qsd.sock"));
        let mut command = Command::new(program);
        command.args(export.args(&socket));
        let mut process = Process::spawn(
            &format!("qemu-storage-daemon {name}"),
            command,
            &dir.join(format!("{name}.qsd.log")),
        )?;
        wait_until(
            "qemu-storage-daemon's socket",
            Duration::from_secs(30),
            || {
                process.ensure_running()?;
                Ok(socket.exists().then_some(()))
            },
        )?;
        Ok(QemuStorageDaemon { socket, process })
    }

    /// The vhost-user-blk socket a guest's disk connects to.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_arguments() {
        let mut export = Export::new("/d/disk.img");
        export.num_queues = 2;
        export.writable = false;
        let args = export.args(Path::new("/d/s.sock")).join(" ");
        assert!(
            args.contains("filename=/d/disk.img,cache.direct=on,aio=io_uring"),
            "{args}"
        );
        assert!(
            args.contains("addr.path=/d/s.sock,writable=off,num-queues=2"),
            "{args}"
        );
    }
}
