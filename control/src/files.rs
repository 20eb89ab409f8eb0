//! State files replaced atomically: a reader (or the daemon after a crash
//! or a power cut) sees the old file or the new one, never a mix.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A state file that could not be written; the old one is intact.
#[derive(Debug, thiserror::Error)]
#[error("Cannot {step} {}", path.display())]
pub struct WriteError {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The temporary file `path` is written through.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` through a synced temporary file beside it
/// (mode 0600 whatever the umask, created afresh: a symlink planted in its
/// place is not followed) and a rename, then syncs the directory so the
/// rename itself survives a power cut.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |step, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { step, path, source }
    };
    let tmp = temporary_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove the old temporary file", &tmp)(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(err("create", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(err("replace", path))?;
    if let Some(dir) = path.parent() {
        // A directory that cannot be synced (some FUSE file systems) still
        // holds the renamed file; only its durability is weaker.
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::debug!(dir = %dir.display(), "Cannot sync the directory: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_the_whole_file_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old and longer").unwrap();
        // A leftover of a crash in the middle of a write.
        std::fs::write(temporary_path(&path), "{garbage").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temporary_path(&path).exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        // The temporary file's place is a directory: it cannot be created.
        std::fs::create_dir(temporary_path(&path)).unwrap();
        assert!(write_atomically(&path, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
