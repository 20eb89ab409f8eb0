//! What `sfera-jailer` does, as root, between being started by mgmtd and
//! exec'ing the VM process: cgroup, namespaces, jail root, privileges.
//!
//! Order matters and follows Firecracker's jailer: the cgroup is joined
//! first (so the child is born in it), then new mount, PID and IPC
//! namespaces; a fork makes the VM process PID 1 of its PID namespace;
//! the child builds its root (a tmpfs holding bind mounts and device
//! nodes), pivots into it, drops every capability and becomes the VM's
//! uid and gid, and execs. A close-on-exec pipe tells the parent whether
//! the exec happened (end of file) or why not (a message); the parent
//! writes the child's pid to the pidfile and exits, leaving the VM
//! process to run on its own, as mgmtd's VM processes always have.

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use super::Jail;
use super::cgroup::{self, CgroupError, Hierarchy};

/// Device nodes every jail has, readable and writable by anyone.
const STANDARD_DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"];
/// Environment variables passed on to the VM process; the rest of
/// mgmtd's environment stays outside.
const KEPT_ENV: [&str; 2] = ["RUST_LOG", "RUST_BACKTRACE"];

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The child's own report of what failed in the jail.
    #[error("In the jail: {0}")]
    Child(String),
}

/// The last OS error, with what was being done.
fn sys(what: impl Into<String>) -> SetupError {
    SetupError::Sys {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

fn check(ret: libc::c_int, what: impl FnOnce() -> String) -> Result<(), SetupError> {
    if ret == 0 { Ok(()) } else { Err(sys(what())) }
}

fn cstr(p: impl AsRef<OsStr>) -> Result<CString, SetupError> {
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| SetupError::Invalid(format!("{:?} has a NUL byte", p.as_ref())))
}

/// Runs the jail: returns once the VM process has exec'd (its pid in the
/// pidfile), or with why it could not.
pub fn run(jail: &Jail) -> Result<u32, SetupError> {
    validate(jail)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&jail.root)
        .map_err(|source| SetupError::Sys {
            what: format!("Cannot create {}", jail.root.display()),
            source,
        })?;
    let dirs = Hierarchy::detect()?.create(&jail.id, jail.limits())?;
    cgroup::enter(&dirs, std::process::id())?;

    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given,
    // which has room for exactly two.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret, || "Cannot make a pipe".into())?;
    // SAFETY: pipe2 succeeded: both descriptors are new and ours alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // The mount namespace is the child's alone (below): pivot_root moves
    // the root of every process in a namespace, the parent's included.
    // SAFETY: unshare takes flags only. The jailer is single-threaded, so
    // no other thread shares the namespaces being left.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWIPC) };
    check(ret, || "Cannot make the PID and IPC namespaces".into())?;
    // SAFETY: the jailer is single-threaded (its main only parses
    // arguments and calls this), so the child may allocate and run any
    // code after the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("Cannot fork"));
    }
    if pid == 0 {
        drop(read_end);
        let err = build_and_exec(jail).expect_err("exec returns only on failure");
        let mut pipe = std::fs::File::from(write_end);
        let _ = pipe.write_all(err.to_string().as_bytes());
        // SAFETY: _exit ends this child at once, running no destructor or
        // atexit handler of the parent's.
        unsafe { libc::_exit(1) };
    }
    drop(write_end);
    let mut report = String::new();
    let _ = std::fs::File::from(read_end).read_to_string(&mut report);
    let reap = |kill: bool| {
        let mut status = 0;
        // SAFETY: signals and reaps our own child, which no one else
        // waits for.
        unsafe {
            if kill {
                libc::kill(pid, libc::SIGKILL);
            }
            libc::waitpid(pid, &mut status, 0);
        }
    };
    if !report.is_empty() {
        reap(false);
        return Err(SetupError::Child(report));
    }
    // A VM process nobody can find again is not left running.
    if let Err(source) = std::fs::write(&jail.pidfile, format!("{pid}\n")) {
        reap(true);
        return Err(SetupError::Sys {
            what: format!("Cannot write {}", jail.pidfile.display()),
            source,
        });
    }
    let pid = u32::try_from(pid).expect("fork returned a positive pid");
    Ok(pid)
}

/// Refuses what would make the sandbox pointless or the mounts ambiguous.
fn validate(jail: &Jail) -> Result<(), SetupError> {
    if jail.uid == 0 || jail.gid == 0 {
        return Err(SetupError::Invalid(
            "A VM process never runs as root: give a non-zero --uid and --gid".into(),
        ));
    }
    if jail.id.is_empty() || jail.id.contains('/') || jail.id.starts_with('.') {
        return Err(SetupError::Invalid(format!("Bad VM id {:?}", jail.id)));
    }
    let paths = jail
        .read_only
        .iter()
        .chain(&jail.read_write)
        .chain(&jail.devices);
    for p in paths.chain([&jail.root]) {
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(SetupError::Invalid(format!(
                "{} is not an absolute path without '..'",
                p.display()
            )));
        }
    }
    Ok(())
}

/// In the child: builds the jail, enters it, drops privileges and execs.
/// Returns only on failure.
fn build_and_exec(jail: &Jail) -> Result<std::convert::Infallible, SetupError> {
    // SAFETY: unshare takes flags only; this child is single-threaded.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, || {
        "Cannot make the mount namespace".into()
    })?;
    // SAFETY: umask only sets this process's file creation mask.
    unsafe { libc::umask(0o022) };
    // Nothing mounted from here on propagates back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let root = &jail.root;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID,
        Some("mode=0755,size=1m"),
    )?;
    for p in &jail.read_only {
        bind(p, root, true)?;
    }
    for p in &jail.read_write {
        bind(p, root, false)?;
    }
    make_devices(jail)?;
    let proc = root.join("proc");
    mkdir(&proc)?;
    // A proc of the jail's own PID namespace: the VM process sees itself.
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some("proc"), &proc, Some("proc"), hardened, None)?;
    pivot_into(root)?;
    drop_privileges(jail)?;
    check_readable(&jail.read_only)?;
    exec(&jail.command)
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), SetupError> {
    let source = source.map(cstr).transpose()?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives
    // until the call returns.
    let ret = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    check(ret, || format!("Cannot mount on {}", target.display()))
}

fn mkdir(p: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(p).map_err(|source| SetupError::Sys {
        what: format!("Cannot create {}", p.display()),
        source,
    })
}

/// Makes host path `p` visible at the same path under `root`: a symlink
/// is copied as a symlink (the usr-merge links /lib -> usr/lib), anything
/// else bind-mounted, never set-uid or device-bearing, read-only or not
/// executable.
fn bind(p: &Path, root: &Path, read_only: bool) -> Result<(), SetupError> {
    let at = root.join(p.strip_prefix("/").unwrap_or(p));
    let meta = std::fs::symlink_metadata(p).map_err(|source| SetupError::Sys {
        what: format!("Cannot find {}", p.display()),
        source,
    })?;
    if let Some(parent) = at.parent() {
        mkdir(parent)?;
    }
    let io = |what: String| move |source| SetupError::Sys { what, source };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(p).map_err(io(format!("Cannot read {}", p.display())))?;
        return std::os::unix::fs::symlink(target, &at)
            .map_err(io(format!("Cannot link {}", at.display())));
    }
    if meta.is_dir() {
        mkdir(&at)?;
    } else if !at.exists() {
        std::fs::File::create(&at).map_err(io(format!("Cannot create {}", at.display())))?;
    }
    let source = p.as_os_str().to_string_lossy();
    mount(Some(&source), &at, None, libc::MS_BIND | libc::MS_REC, None)?;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    flags |= if read_only {
        libc::MS_RDONLY
    } else {
        libc::MS_NOEXEC
    };
    mount(None, &at, None, flags, None)
}

/// The standard character devices (for anyone) and the jail's own (for
/// the VM's uid alone), as nodes with the host's device numbers.
fn make_devices(jail: &Jail) -> Result<(), SetupError> {
    let standard = STANDARD_DEVICES.iter().map(|d| (Path::new(*d), false));
    let own = jail.devices.iter().map(|d| (d.as_path(), true));
    for (dev, own) in standard.chain(own) {
        let meta = std::fs::metadata(dev).map_err(|source| SetupError::Sys {
            what: format!("Cannot find {}", dev.display()),
            source,
        })?;
        let at = jail.root.join(dev.strip_prefix("/").unwrap_or(dev));
        if let Some(parent) = at.parent() {
            mkdir(parent)?;
        }
        let at_c = cstr(&at)?;
        // SAFETY: mknod reads the NUL-terminated path, which outlives it.
        let ret = unsafe { libc::mknod(at_c.as_ptr(), libc::S_IFCHR | 0o600, meta.rdev()) };
        check(ret, || format!("Cannot make device {}", at.display()))?;
        let (mode, owner) = if own {
            (0o600, Some((jail.uid, jail.gid)))
        } else {
            (0o666, None)
        };
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode)).map_err(|source| {
            SetupError::Sys {
                what: format!("Cannot set the mode of {}", at.display()),
                source,
            }
        })?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&at, Some(uid), Some(gid)).map_err(|source| {
                SetupError::Sys {
                    what: format!("Cannot give {} to uid {uid}", at.display()),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Makes `root` the root of this mount namespace, the host's tree
/// unmounted from it, and the jail's own tmpfs read-only.
fn pivot_into(root: &Path) -> Result<(), SetupError> {
    let old = root.join(".old-root");
    mkdir(&old)?;
    let (root_c, old_c) = (cstr(root)?, cstr(&old)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, root_c.as_ptr(), old_c.as_ptr()) };
    check(ret as libc::c_int, || {
        format!("Cannot pivot_root into {}", root.display())
    })?;
    std::env::set_current_dir("/").map_err(|source| SetupError::Sys {
        what: "Cannot chdir to the jail's root".into(),
        source,
    })?;
    let old_in = cstr("/.old-root")?;
    // SAFETY: a NUL-terminated path that outlives the call.
    let ret = unsafe { libc::umount2(old_in.as_ptr(), libc::MNT_DETACH) };
    check(ret, || {
        "Cannot unmount the host's root from the jail".into()
    })?;
    let _ = std::fs::remove_dir("/.old-root");
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID;
    mount(None, Path::new("/"), None, flags, None)
}

/// Empties the capability bounding set, becomes the VM's uid and gid
/// (which clears the permitted and effective capabilities) with no
/// supplementary groups, and forbids gaining privileges by exec.
fn drop_privileges(jail: &Jail) -> Result<(), SetupError> {
    let last: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        // EINVAL: a capability this kernel does not have.
        if ret != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(sys(format!("Cannot drop capability {cap}")));
        }
    }
    // SAFETY: setgroups with a zero count reads no memory.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }, || {
        "Cannot drop the supplementary groups".into()
    })?;
    let (uid, gid) = (jail.uid, jail.gid);
    // SAFETY: plain integer arguments.
    check(unsafe { libc::setresgid(gid, gid, gid) }, || {
        format!("Cannot become gid {gid}")
    })?;
    // SAFETY: plain integer arguments.
    check(unsafe { libc::setresuid(uid, uid, uid) }, || {
        format!("Cannot become uid {uid}")
    })?;
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret, || "Cannot set no_new_privs".into())?;
    // SAFETY: getuid and geteuid cannot fail.
    if unsafe { libc::getuid() != uid || libc::geteuid() != uid } {
        return Err(SetupError::Invalid(format!("Still not uid {uid}")));
    }
    Ok(())
}

/// A file the VM needs (its kernel, initrd, ISO) must be readable by its
/// uid; say so now rather than let the VM process fail on it.
fn check_readable(paths: &[PathBuf]) -> Result<(), SetupError> {
    for p in paths.iter().filter(|p| p.is_file()) {
        let c = cstr(p)?;
        // SAFETY: a NUL-terminated path that outlives the call.
        if unsafe { libc::access(c.as_ptr(), libc::R_OK) } != 0 {
            let mode = std::fs::metadata(p).map(|m| m.mode() & 0o7777).unwrap_or(0);
            return Err(SetupError::Invalid(format!(
                "{} (mode {mode:o}) is not readable by the VM's uid: make it readable by others (chmod o+r)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Execs the VM process with only the environment it needs.
fn exec(command: &[OsString]) -> Result<std::convert::Infallible, SetupError> {
    let args: Vec<CString> = command.iter().map(cstr).collect::<Result<_, _>>()?;
    let env: Vec<CString> = KEPT_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k, v)))
        .map(|(k, v)| {
            let mut kv = OsString::from(k);
            kv.push("=");
            kv.push(v);
            cstr(kv)
        })
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are null-terminated arrays of NUL-terminated
    // strings, all alive until execve returns (which it does on failure
    // only).
    unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
    Err(sys(format!("Cannot run {:?}", command[0])))
}

/// Makes the jail of process `pid` see the socket at `path` again after
/// its daemon made it anew (a restart of sfera-blockd or sfera-vswitchd
/// unlinks the old socket and binds a new one, while the jail's bind
/// mount still shows the old one): the old bind mount is replaced by a
/// detached copy of the host's new socket file. The copy is taken in the
/// host's mount namespace, then the jailer enters the jail's (which a
/// multithreaded mgmtd could not) to mount it there.
pub fn rebind(pid: u32, path: &Path) -> Result<(), SetupError> {
    if !path.is_absolute() {
        return Err(SetupError::Invalid(format!(
            "{} is not absolute",
            path.display()
        )));
    }
    let path_c = cstr(path)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path, which outlives the
    // call; it returns a new descriptor or -1.
    let tree =
        unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path_c.as_ptr(), flags) };
    if tree < 0 {
        return Err(sys(format!("Cannot copy the mount of {}", path.display())));
    }
    // SAFETY: open_tree returned a new descriptor, ours alone.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    let ns =
        std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|source| SetupError::Sys {
            what: format!("Cannot open the mount namespace of {pid}"),
            source,
        })?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace descriptor we hold; the jailer is
    // single-threaded, as entering a mount namespace requires.
    let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) };
    check(ret, || format!("Cannot enter the mount namespace of {pid}"))?;
    // Nothing can be mounted on the old socket (its file is unlinked):
    // its bind mount goes, the jail's placeholder file is mounted on.
    // SAFETY: a NUL-terminated path that outlives the call.
    let ret = unsafe { libc::umount2(path_c.as_ptr(), libc::MNT_DETACH) };
    check(ret, || {
        format!(
            "Cannot unmount the old {} in the jail of {pid}",
            path.display()
        )
    })?;
    let empty = cstr("")?;
    // SAFETY: the descriptor is a detached mount we hold; both paths are
    // NUL-terminated and outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            path_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret as libc::c_int, || {
        format!("Cannot mount {} in the jail of {pid}", path.display())
    })
}
