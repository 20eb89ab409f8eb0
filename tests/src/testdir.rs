//! A private directory per test for sockets, logs, disk images and run
//! state, so tests never share a path and can run in parallel.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::{Error, Result};

/// Where test directories are made, unless `SFERA_TEST_TMPDIR` says otherwise.
/// Not `/tmp`, which may be a tmpfs without O_DIRECT; and short, because Unix
/// socket paths are limited to 107 bytes.
const DEFAULT_BASE: &str = "/var/tmp";

/// A test's private directory, removed when dropped (kept when
/// `SFERA_KEEP_TMP` is set, to look at its logs).
#[derive(Debug)]
pub struct TestDir {
    dir: Option<TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// Makes a new directory whose name starts with `sfera-<name>-`.
    pub fn new(name: &str) -> Result<Self> {
        let base = std::env::var_os("SFERA_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BASE));
        std::fs::create_dir_all(&base)
            .map_err(|e| Error::io("Cannot create test base directory", &base, e))?;
        let short: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("sfera-{short}-"))
            .tempdir_in(&base)
            .map_err(|e| Error::io("Cannot create test directory", &base, e))?;
        let path = dir.path().to_path_buf();
        Ok(TestDir {
            dir: Some(dir),
            path,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.join(name);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io("Cannot create directory", &path, e))?;
        Ok(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("SFERA_KEEP_TMP").is_some()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("test directory kept at {}", kept.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_private_and_removed() {
        let a = TestDir::new("same name").unwrap();
        let b = TestDir::new("same name").unwrap();
        assert_ne!(a.path(), b.path());
        let sub = a.subdir("x").unwrap();
        assert!(sub.is_dir());
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
    }
}
