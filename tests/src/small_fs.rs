//! A small filesystem for a datastore that runs out of space: a tmpfs of a
//! few MiB mounted for one test (unmounted when dropped), and a filler file
//! that takes all its free space until the test deletes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;
use crate::{Error, Result};

/// A tmpfs mounted at a test's path.
#[derive(Debug)]
pub struct SmallFs(PathBuf);

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB at `path` (made if missing).
    pub fn mount(path: PathBuf, mib: u64) -> Result<Self> {
        std::fs::create_dir_all(&path).map_err(|e| Error::io("Cannot create", &path, e))?;
        let mut command = Command::new("mount");
        command.args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"]);
        command.arg(&path);
        run(command)?;
        Ok(SmallFs(path))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Fills the filesystem with the file `name` until a write fails for
    /// want of space; returns the file's path.
    pub fn fill(&self, name: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        let mut file =
            std::fs::File::create(&path).map_err(|e| Error::io("Cannot create", &path, e))?;
        for chunk in [1 << 20, 4096] {
            let block = vec![0xa5u8; chunk];
            loop {
                match file.write_all(&block) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(Error::io("Cannot fill", &path, e)),
                }
            }
        }
        Ok(path)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let mut command = Command::new("umount");
        command.arg("--lazy").arg(&self.0);
        if let Err(e) = run(command) {
            eprintln!("cannot unmount {}: {e}", self.0.display());
        }
    }
}
