//! Handing a tree of files to a daemon's user, as root, without being led
//! out of it. The tree may already belong to that user in part (a datastore
//! registered again, a take-over that stopped half-way), who could swap a
//! directory for a symlink while the walk runs, or plant a hard link: so
//! every entry is opened with `O_PATH | O_NOFOLLOW` relative to its
//! directory's descriptor, its type and link count are read from that
//! descriptor, and it is chowned through it. A symlink is chowned itself
//! and never followed; device nodes keep their owner (a block-device
//! datastore is reached through the device's group); a regular file with
//! more than one link that is not the user's yet is refused, as it may be
//! another file's name.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::privileges::{Account, PrivilegeError};

/// Gives `path` and, for a directory, everything under it to `account`
/// (entries it already owns are left alone). Children go first, so a
/// top directory that is the user's says the walk once finished.
pub fn give_tree(path: &Path, account: &Account) -> Result<(), PrivilegeError> {
    let err = |p: &Path| {
        let path = p.to_owned();
        let user = account.name.clone();
        move |source| PrivilegeError::Chown { path, user, source }
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(path)(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let top = open_path(libc::AT_FDCWD, &c_path).map_err(err(path))?;
    give(&top, path, account)
}

/// Gives the entry open as `fd` (named `path` in errors), and what it holds.
fn give(fd: &OwnedFd, path: &Path, account: &Account) -> Result<(), PrivilegeError> {
    let err = |p: &Path| {
        let path = p.to_owned();
        let user = account.name.clone();
        move |source| PrivilegeError::Chown { path, user, source }
    };
    let st = fstat(fd).map_err(err(path))?;
    let owned = st.st_uid == account.uid && st.st_gid == account.gid;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR | libc::S_IFBLK => return Ok(()),
        libc::S_IFDIR => {
            let dir = open_at(fd.as_raw_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(err(path))?;
            // The directory's entries, through the descriptor just opened.
            let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
            for entry in std::fs::read_dir(listing).map_err(err(path))? {
                let name = entry.map_err(err(path))?.file_name();
                let child_path = path.join(&name);
                let child = open_path(dir.as_raw_fd(), &c_name(&name)).map_err(err(&child_path))?;
                give(&child, &child_path, account)?;
            }
        }
        libc::S_IFREG if st.st_nlink > 1 && !owned => {
            return Err(err(path)(io::Error::other(format!(
                "it has {} hard links: it may be another file's name; \
                 copy it instead of linking it",
                st.st_nlink
            ))));
        }
        _ => {}
    }
    if !owned {
        chown_fd(fd, account).map_err(err(path))?;
    }
    Ok(())
}

fn c_name(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).expect("directory entries hold no NUL")
}

/// `name` under `dirfd`, itself (a symlink is not followed), as an O_PATH
/// descriptor.
fn open_path(dirfd: libc::c_int, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dirfd, name, libc::O_PATH | libc::O_NOFOLLOW)
}

fn open_at(dirfd: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; the returned
    // descriptor is new and owned by the OwnedFd alone.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor this call just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: all-zero bytes are a valid `stat`; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is writable for the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Chowns what `fd` (an O_PATH descriptor) names, a symlink itself.
fn chown_fd(fd: &OwnedFd, account: &Account) -> io::Result<()> {
    // SAFETY: the empty path with AT_EMPTY_PATH names `fd` itself, which is
    // open; no memory is written.
    let rc = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            account.uid,
            account.gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn nobody() -> Account {
        Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![],
        }
    }

    #[test]
    fn a_tree_is_given_and_symlinks_are_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        let tree = base.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/volume"), b"data").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("sub/link")).unwrap();
        std::os::unix::fs::symlink(base.path(), tree.join("dirlink")).unwrap();
        give_tree(&tree, &nobody()).unwrap();
        for p in ["", "sub", "sub/volume", "sub/link", "dirlink"] {
            let meta = std::fs::symlink_metadata(tree.join(p)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{p}");
        }
        // What the links name stays root's.
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        assert_eq!(std::fs::metadata(base.path()).unwrap().uid(), 0);
    }

    #[test]
    fn a_hard_link_to_another_file_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let precious = base.path().join("precious");
        std::fs::write(&precious, b"secret").unwrap();
        let tree = base.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::hard_link(&precious, tree.join("alias")).unwrap();
        let e = give_tree(&tree, &nobody()).unwrap_err();
        assert!(e.to_string().contains("alias"), "{e}");
        assert_eq!(std::fs::metadata(&precious).unwrap().uid(), 0);
    }
}
