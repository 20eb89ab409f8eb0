//! Binding a daemon's API socket, and keeping a second daemon off it.
//!
//! A socket file outlives the daemon that made it (a crash, a kill), so a
//! starting daemon must tell a stale socket from a live one before it
//! replaces it. As Cloud Hypervisor does, the answer is a lock: each
//! daemon holds an exclusive `flock` on `<socket>.lock` for as long as it
//! serves, the kernel drops it when the process dies, and the socket is
//! replaced only by whoever holds the lock. A daemon from before the lock
//! existed (an upgrade) holds none: a socket that still accepts a
//! connection is live too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Errors binding an API socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} is in use: another daemon serves on it", path.display())]
    InUse { path: PathBuf },
    #[error("Cannot {step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A bound API socket and the lock that makes it this process's.
#[derive(Debug)]
pub struct ApiSocket {
    /// Non-blocking, ready for `tokio::net::UnixListener::from_std`.
    pub listener: UnixListener,
    pub lock: SocketLock,
}

/// The lock on an API socket: held until dropped (or the process ends).
#[derive(Debug)]
pub struct SocketLock {
    _file: File,
    socket: PathBuf,
}

impl SocketLock {
    /// Removes the socket file at a clean shutdown (the lock file stays:
    /// removing it could let two daemons lock two different files).
    pub fn remove_socket(self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The lock file of the socket at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Binds the API socket at `path` (creating its directory), mode 0600
/// whatever the umask, after taking its lock; a stale socket is replaced,
/// a live one is [`BindError::InUse`].
pub fn bind(path: &Path) -> Result<ApiSocket, BindError> {
    let err = |step| {
        move |source| BindError::Io {
            step,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("create the directory of"))?;
    }
    let lock = lock(path)?;
    if UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse {
            path: path.to_owned(),
        });
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "Replacing a stale API socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove the stale socket")(e)),
    }
    let listener = UnixListener::bind(path).map_err(err("listen on"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(err("set the mode of"))?;
    listener
        .set_nonblocking(true)
        .map_err(err("make non-blocking"))?;
    Ok(ApiSocket {
        listener,
        lock: SocketLock {
            _file: lock,
            socket: path.to_owned(),
        },
    })
}

/// Takes the exclusive lock of the socket at `path`, without waiting.
fn lock(path: &Path) -> Result<File, BindError> {
    let lock_path = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|source| BindError::Io {
            step: "open the lock file",
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is
    // passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(BindError::InUse {
            path: path.to_owned(),
        })
    } else {
        Err(BindError::Io {
            step: "lock",
            path: lock_path,
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_a_locked_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/api.sock");
        let first = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(BindError::InUse { .. })));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The first daemon dies: its lock goes with it, its socket stays.
        drop(first);
        assert!(path.exists());
        let second = bind(&path).unwrap();
        second.lock.remove_socket();
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_without_a_lock_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // A daemon from before the lock: it listens, it holds no lock.
        let _old = UnixListener::bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(BindError::InUse { .. })));
    }
}
