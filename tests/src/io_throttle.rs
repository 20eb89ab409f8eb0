//! A block device whose writes the kernel holds back: a loop device over a
//! file, and a cgroup that limits its writes per second for the processes
//! put in it. A backend serving that device keeps requests in flight for a
//! long time (its O_DIRECT writes wait in the kernel's throttle), which is
//! what a test of a crash with requests in flight needs.
//!
//! The cgroup is the blkio controller of cgroup v1 or the io controller of
//! cgroup v2, whichever the host mounts; with neither, the test fails.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;
use crate::{Error, Result, tools};

/// A loop device over a file, detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    losetup: PathBuf,
}

impl LoopDevice {
    /// Attaches `file` to a free loop device.
    pub fn attach(file: &Path) -> Result<Self> {
        let losetup = tools::require("losetup", "mount")?;
        let mut command = Command::new(&losetup);
        command.arg("--find").arg("--show").arg(file);
        let path = PathBuf::from(run(command)?.trim());
        Ok(LoopDevice { path, losetup })
    }

    /// The device node (`/dev/loopN`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `MAJOR:MINOR`, as cgroup files name devices.
    pub fn dev_numbers(&self) -> Result<String> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| Error::io("Cannot stat the loop device", &self.path, e))?;
        if !meta.file_type().is_block_device() {
            return Err(Error::io(
                "Not a block device",
                &self.path,
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        let rdev = meta.rdev();
        Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new(&self.losetup)
            .arg("--detach")
            .arg(&self.path)
            .status();
    }
}

/// A cgroup whose members may write to one device at most `iops` times a
/// second; removed when dropped (its members move back to the root).
#[derive(Debug)]
pub struct IoThrottle {
    dir: PathBuf,
    root: PathBuf,
}

impl IoThrottle {
    /// A new cgroup named after `name` limiting writes to `device`.
    pub fn new(name: &str, device: &LoopDevice, iops: u32) -> Result<Self> {
        let dev = device.dev_numbers()?;
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let v2 = Path::new("/sys/fs/cgroup");
        let unique = format!("sfera-test-{name}-{}", std::process::id());
        let (root, limit_file, limit) = if v1.join("blkio.throttle.write_iops_device").exists() {
            (
                v1,
                "blkio.throttle.write_iops_device",
                format!("{dev} {iops}"),
            )
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "io"))
        {
            // The io controller must be enabled for the root's children.
            write(&v2.join("cgroup.subtree_control"), "+io")?;
            (v2, "io.max", format!("{dev} wiops={iops}"))
        } else {
            return Err(Error::io(
                "Neither cgroup v1 blkio nor cgroup v2 io is available to throttle writes",
                v2,
                std::io::ErrorKind::Unsupported.into(),
            ));
        };
        let dir = root.join(unique);
        std::fs::create_dir(&dir).map_err(|e| Error::io("Cannot create a cgroup", &dir, e))?;
        let throttle = IoThrottle {
            dir,
            root: root.to_owned(),
        };
        write(&throttle.dir.join(limit_file), &limit)?;
        Ok(throttle)
    }

    /// Puts process `pid` (all its threads) in the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }
}

impl Drop for IoThrottle {
    fn drop(&mut self) {
        // A cgroup with members cannot be removed: move them out first.
        let members = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in members.lines() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(format!("Cannot write `{value}`"), path, e))
}
