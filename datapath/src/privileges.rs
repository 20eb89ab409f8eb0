//! Least privilege for the daemons: a daemon started as root with
//! `--user NAME` prepares what it must own (its state, its sockets'
//! directory), binds its API socket, and then becomes that user, keeping
//! only the capabilities it names (`docs/privileges.md` says which and
//! why). The switch happens before the daemon starts any thread: setuid
//! applies to the whole process, but capabilities belong to each thread,
//! so a thread started before would keep root's.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use caps::CapSet;
pub use caps::Capability;

/// Errors becoming the daemon's user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "User {name} does not exist; create it with \
         `useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {name}` \
         (sfera-mgmtd creates it when it starts the daemon)"
    )]
    NoSuchUser { name: String },
    #[error("Cannot look up user {name}")]
    Lookup {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "Cannot become user {name}: the process already runs {threads} threads, \
         which would keep root's capabilities"
    )]
    Threads { name: String, threads: usize },
    #[error("Cannot become user {name}: {step} failed")]
    Switch {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("Cannot set the capabilities: {step} failed: {message}")]
    Caps { step: &'static str, message: String },
    #[error("Cannot give {} to user {user}", path.display())]
    Chown {
        path: PathBuf,
        user: String,
        #[source]
        source: io::Error,
    },
}

/// A user account from the password database, with its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (e.g. `disk` for a block-device datastore).
    pub groups: Vec<u32>,
}

impl Account {
    /// Looks `name` up (getpwnam_r and getgrouplist, so NSS is honoured).
    pub fn lookup(name: &str) -> Result<Account, PrivilegeError> {
        let lookup_err = |source| PrivilegeError::Lookup {
            name: name.to_owned(),
            source,
        };
        let c_name = CString::new(name)
            .map_err(|_| lookup_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let Some((uid, gid)) = passwd_ids(&c_name).map_err(lookup_err)? else {
            return Err(PrivilegeError::NoSuchUser {
                name: name.to_owned(),
            });
        };
        let groups = group_list(&c_name, gid);
        Ok(Account {
            name: name.to_owned(),
            uid,
            gid,
            groups,
        })
    }
}

/// The uid and gid of the user named `name`, if there is one.
fn passwd_ids(name: &CString) -> io::Result<Option<(u32, u32)>> {
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: all-zero bytes are a valid `passwd` (null pointers and
        // zero ids); getpwnam_r fills it in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated, `pwd`, `buf` and `result`
        // outlive the call and `buf.len()` is the buffer's real size.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &raw mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &raw mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if !result.is_null() {
            return Ok(Some((pwd.pw_uid, pwd.pw_gid)));
        }
        return match rc {
            0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
}

/// The groups of `name` (its primary group `gid` among them).
fn group_list(name: &CString, gid: u32) -> Vec<u32> {
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `name` is NUL-terminated; `groups` holds `n` entries and
        // getgrouplist writes at most that many, setting `n` to the count.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &raw mut n) };
        let count = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(count);
            return groups;
        }
        if count <= groups.len() || count > 65536 {
            // A lookup failure: the primary group alone.
            return vec![gid];
        }
        groups.resize(count, 0);
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) reads this process's effective uid.
    unsafe { libc::geteuid() == 0 }
}

/// Sets the umask to 077, so everything the daemon creates (state files,
/// sockets, directories) is private to its user unless given a mode.
pub fn private_umask() {
    // SAFETY: umask(2) only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Threads of this process, from /proc/self/status.
fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads line in /proc/self/status"))
}

fn check(step: &'static str, name: &str, rc: libc::c_int) -> Result<(), PrivilegeError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(PrivilegeError::Switch {
            name: name.to_owned(),
            step,
            source: io::Error::last_os_error(),
        })
    }
}

fn caps_err(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    move |e| PrivilegeError::Caps {
        step,
        message: e.to_string(),
    }
}

/// Becomes `account` for good (real, effective and saved ids, its groups),
/// keeping exactly `keep` as the permitted and effective capabilities:
/// nothing inheritable or ambient, a bounding set of `keep` alone, and
/// no_new_privs, so no program the daemon runs can gain more. Must be
/// called while the process has one thread.
pub fn become_user(account: &Account, keep: &[Capability]) -> Result<(), PrivilegeError> {
    let name = account.name.as_str();
    let threads = thread_count().map_err(|source| PrivilegeError::Switch {
        name: name.to_owned(),
        step: "counting threads",
        source,
    })?;
    if threads != 1 {
        return Err(PrivilegeError::Threads {
            name: name.to_owned(),
            threads,
        });
    }
    let keep: HashSet<Capability> = keep.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with root.
    let bounding =
        caps::read(None, CapSet::Bounding).map_err(caps_err("reading the bounding set"))?;
    for cap in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(caps_err("dropping from the bounding set"))?;
    }
    // SAFETY: prctl(2) with integer arguments changes only this process's
    // flags.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    check("PR_SET_KEEPCAPS", name, rc)?;
    let groups: Vec<libc::gid_t> = account.groups.clone();
    // SAFETY: `groups` holds `groups.len()` gids for the call's duration.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    check("setgroups", name, rc)?;
    let (uid, gid) = (account.uid, account.gid);
    // SAFETY: setresgid(2) takes plain ids.
    let rc = unsafe { libc::setresgid(gid, gid, gid) };
    check("setresgid", name, rc)?;
    // SAFETY: setresuid(2) takes plain ids.
    let rc = unsafe { libc::setresuid(uid, uid, uid) };
    check("setresuid", name, rc)?;
    // SAFETY: as the first prctl.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    check("PR_SET_KEEPCAPS", name, rc)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("setting the permitted set"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err("setting the effective set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    // SAFETY: as the first prctl.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check("PR_SET_NO_NEW_PRIVS", name, rc)?;
    Ok(())
}

/// Creates (or truncates) `path` for writing, private to the process's
/// user (0600) whatever the umask, and whatever mode a file left there
/// had: the temporary file of an atomic state write.
pub fn create_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Sets `path`'s mode (e.g. a socket just bound, whose mode bind(2) takes
/// from the umask).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_a_missing_user_is_named_with_the_fix() {
        let root = Account::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        let e = Account::lookup("sfera-no-such-user").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("sfera-no-such-user") && text.contains("useradd --system"),
            "{text}"
        );
    }

    #[test]
    fn becoming_a_user_is_refused_once_threads_run() {
        // The test harness runs tests on threads of their own.
        let nobody = Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        };
        let e = become_user(&nobody, &[]).unwrap_err();
        assert!(matches!(e, PrivilegeError::Threads { .. }), "{e}");
        // SAFETY: getuid(2) reads this process's real uid.
        let uid = unsafe { libc::getuid() };
        assert_ne!(uid, 65534, "nothing changed");
    }
}
