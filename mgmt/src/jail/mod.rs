//! The VM sandbox (docs/sandbox.md): every VM process, sfera-vmm or QEMU,
//! is started by `sfera-jailer`, Firecracker's jailer model. mgmtd decides
//! what the jail holds ([`Jail`]); the jailer, a small single-threaded
//! program run as root, makes the VM's cgroup ([`cgroup`]), new mount, PID
//! and IPC namespaces, a root of bind mounts of exactly those files, drops
//! to the VM's own uid and gid with no capabilities, and execs the VM
//! process ([`setup`]). The work between fork and exec is done there, not
//! in mgmtd: mgmtd is a multithreaded tokio process, where only
//! async-signal-safe calls are allowed after a fork.

pub mod cgroup;
pub mod setup;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::db::Boot;
use crate::driver::VmPaths;
use crate::qemu::Launch;
use cgroup::{CPU_PERIOD_US, Hierarchy, Limits};

/// The first uid (and gid) of VM processes. Each VM gets one uid of
/// [`UID_COUNT`] from here, by a hash of its id: numeric ids with no
/// passwd entry, as Firecracker's jailer takes them, so no user database
/// is touched per VM; the range sits far above the uids of people
/// (1000...), of subordinate-id ranges for containers (100000 + 65536 per
/// user) and below `nobody`'s 4294967294.
pub const UID_BASE: u32 = 1_500_000_000;
/// How many VM uids there are.
pub const UID_COUNT: u32 = 1 << 20;

/// Memory a sfera-vmm process needs besides guest RAM: its binary,
/// thread stacks, virtqueue state, the API server and the console buffer
/// (measured well under 32 MiB; room is left for bursts).
pub const VMM_OVERHEAD_MIB: u64 = 64;
/// Memory QEMU needs besides guest RAM: under TCG the translated-code
/// cache (up to hundreds of MiB while a guest boots), firmware, device
/// models and I/O buffers; less under KVM.
pub const QEMU_OVERHEAD_MIB: u64 = 768;

/// The sandbox of one VM process, as mgmtd asks for it: the jailer's
/// command line (`sfera-jailer --help`).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "sfera-jailer",
    version,
    about = "Starts one VM process in its own sandbox (uid, namespaces, jail root, cgroup)"
)]
pub struct Jail {
    /// The VM's id: names its cgroup.
    #[arg(long)]
    pub id: String,
    /// The uid the VM process runs as (never 0).
    #[arg(long)]
    pub uid: u32,
    /// Its gid (never 0).
    #[arg(long)]
    pub gid: u32,
    /// An empty directory where the jail's root is built (a tmpfs mounted
    /// in the jail's own mount namespace).
    #[arg(long)]
    pub root: PathBuf,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory_bytes: u64,
    /// CPU time per 100 ms period, in microseconds.
    #[arg(long)]
    pub cpu_quota_us: u64,
    /// Tasks (threads) limit.
    #[arg(long)]
    pub pids_max: u64,
    /// Where the VM process's pid (as the host sees it) is written.
    #[arg(long)]
    pub pidfile: PathBuf,
    /// A file or directory visible read-only in the jail, at the same
    /// path (repeatable).
    #[arg(long = "read-only")]
    pub read_only: Vec<PathBuf>,
    /// A file, socket or directory visible writable in the jail, at the
    /// same path (repeatable).
    #[arg(long = "read-write")]
    pub read_write: Vec<PathBuf>,
    /// A device node made in the jail for the VM's uid alone, e.g.
    /// /dev/kvm (repeatable). /dev/null, /dev/zero, /dev/random and
    /// /dev/urandom are always there.
    #[arg(long = "device")]
    pub devices: Vec<PathBuf>,
    /// The program to run and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

impl Jail {
    /// The jailer's arguments for this jail.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |name: &str, value: OsString| {
            a.push(format!("--{name}").into());
            a.push(value);
        };
        push("id", self.id.clone().into());
        push("uid", self.uid.to_string().into());
        push("gid", self.gid.to_string().into());
        push("root", self.root.clone().into());
        push("memory-bytes", self.memory_bytes.to_string().into());
        push("cpu-quota-us", self.cpu_quota_us.to_string().into());
        push("pids-max", self.pids_max.to_string().into());
        push("pidfile", self.pidfile.clone().into());
        for p in &self.read_only {
            push("read-only", p.clone().into());
        }
        for p in &self.read_write {
            push("read-write", p.clone().into());
        }
        for p in &self.devices {
            push("device", p.clone().into());
        }
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes,
            cpu_quota_us: self.cpu_quota_us,
            pids_max: self.pids_max,
        }
    }
}

/// A VM's limits: its RAM plus the driver's overhead; its vCPUs' worth
/// of CPU time plus a quarter CPU for the device and I/O threads; tasks
/// for its threads with room to spare (QEMU's thread pool grows to 64).
pub fn limits(memory_mib: u64, vcpus: u32, overhead_mib: u64) -> Limits {
    Limits {
        memory_bytes: (memory_mib + overhead_mib) << 20,
        cpu_quota_us: u64::from(vcpus) * CPU_PERIOD_US + CPU_PERIOD_US / 4,
        pids_max: 128 + 2 * u64::from(vcpus),
    }
}

/// The uid of a VM: a hash of its id into the range, moved on past any
/// uid a running process already has (another VM's, whose id hashed to
/// the same place). The caller holds [`UID_LOCK`] until the VM process
/// runs under it.
pub fn vm_uid(vm_id: &str) -> u32 {
    // FNV-1a: stable across builds and Rust versions, unlike the std
    // hasher; uniformity is all that is asked of it.
    let hash = vm_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let taken = uids_in_use();
    let start = (hash % u64::from(UID_COUNT)) as u32;
    (0..UID_COUNT)
        .map(|i| UID_BASE + (start + i) % UID_COUNT)
        .find(|uid| !taken.contains(uid))
        .unwrap_or(UID_BASE + start)
}

/// Held from picking a VM's uid until its process runs under it, so two
/// VMs starting at once cannot pick the same free uid.
pub static UID_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real uids of the processes running now.
fn uids_in_use() -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| process_uid(e.file_name().to_str()?.parse().ok()?))
        .collect()
}

/// What every VM process sees besides its own files: the shared
/// libraries and data under /usr (read-only) and the usr-merge links.
pub fn system_read_only() -> Vec<PathBuf> {
    ["/usr", "/lib", "/lib64"]
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// A VM process that could not be put in its sandbox.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("Cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("sfera-jailer failed ({status}): {log}")]
    Jailer {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("sfera-jailer succeeded but wrote no pid to {}", pidfile.display())]
    NoPid { pidfile: PathBuf },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JailError {
    let path = path.to_owned();
    move |source| JailError::Io { what, path, source }
}

/// Lets the VM's uid use its runtime directory: root owns it, the VM's
/// group may create its sockets there, and the sticky bit keeps the VM
/// from removing or replacing mgmtd's files (pidfile, config, logs).
/// `writable` are files there that the VM process opens for writing
/// (QEMU's console log).
pub fn prepare_vm_dir(
    p: &VmPaths,
    uid: u32,
    gid: u32,
    writable: &[PathBuf],
) -> Result<(), JailError> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(&p.dir, Some(0), Some(gid))
        .map_err(io_error("give the VM's group", &p.dir))?;
    std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o1770))
        .map_err(io_error("set the mode of", &p.dir))?;
    for f in writable {
        let file = open_vm_file(f, true)?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(io_error("give the VM's uid", f))?;
    }
    Ok(())
}

/// Opens a file of a VM's directory (created for appending when
/// `append`) the way a file the VM may have replaced must be: a symlink
/// (to a host file) is refused and so is anything but a regular file (a
/// FIFO would block mgmtd).
pub fn open_vm_file(path: &Path, append: bool) -> Result<std::fs::File, JailError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(!append)
        .create(append)
        .append(append)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_error("open", path))?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        _ => Err(JailError::NotAFile {
            path: path.to_owned(),
        }),
    }
}

/// Gives the vhost-user sockets of the VM's disks and NICs to its uid
/// alone (connecting needs write permission on the socket).
pub fn give_sockets(sockets: &[PathBuf], uid: u32, gid: u32) -> Result<(), JailError> {
    use std::os::unix::fs::PermissionsExt;
    for s in sockets {
        std::os::unix::fs::chown(s, Some(uid), Some(gid))
            .and_then(|()| std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o600)))
            .map_err(io_error("give the VM's uid the socket", s))?;
    }
    Ok(())
}

/// A VM process to start in its jail.
#[derive(Debug)]
pub struct VmProcess<'a> {
    pub launch: &'a Launch<'a>,
    pub jailer: &'a Path,
    /// The program (absolute) and its arguments.
    pub command: Vec<OsString>,
    pub pidfile: PathBuf,
    /// Memory it needs besides guest RAM.
    pub overhead_mib: u64,
    /// Whether it uses /dev/kvm.
    pub kvm: bool,
    /// Files in the VM directory it opens for writing.
    pub writable: Vec<PathBuf>,
    /// Where its output and its errors (and the jailer's) go.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// The files a VM boots from (kernel, initrd, ISO): read-only in its jail.
fn boot_files(boot: &Boot) -> Vec<PathBuf> {
    match boot {
        Boot::Kernel { kernel, initrd, .. } => std::iter::once(kernel)
            .chain(initrd)
            .map(PathBuf::from)
            .collect(),
        Boot::Iso { iso } => vec![iso.into()],
        Boot::Disk => Vec::new(),
    }
}

/// Starts a VM process in its sandbox: picks its uid, gives it its
/// directory and sockets, and runs the jailer, which returns once the
/// process has been exec'd. Returns its pid.
pub async fn start(v: VmProcess<'_>) -> Result<u32, JailError> {
    let l = v.launch;
    let sockets: Vec<PathBuf> = l
        .disk_sockets
        .iter()
        .chain(l.nic_sockets)
        .cloned()
        .collect();
    let mut read_only = system_read_only();
    read_only.push(v.command.first().map(PathBuf::from).unwrap_or_default());
    read_only.extend(boot_files(&l.vm.boot));
    let mut read_write = vec![l.paths.dir.clone()];
    read_write.extend(sockets.iter().cloned());
    let limits = limits(u64::from(l.vm.memory_mib), l.vm.vcpus, v.overhead_mib);
    let _uid_lock = UID_LOCK.lock().await;
    let uid = vm_uid(&l.vm.id);
    prepare_vm_dir(l.paths, uid, uid, &v.writable)?;
    give_sockets(&sockets, uid, uid)?;
    record_sockets(l.paths, &sockets)?;
    let jail = Jail {
        id: l.vm.id.clone(),
        uid,
        gid: uid,
        root: l.paths.jail_root.clone(),
        memory_bytes: limits.memory_bytes,
        cpu_quota_us: limits.cpu_quota_us,
        pids_max: limits.pids_max,
        pidfile: v.pidfile.clone(),
        read_only,
        read_write,
        devices: if v.kvm {
            vec!["/dev/kvm".into()]
        } else {
            Vec::new()
        },
        command: v.command,
    };
    let append = |path: &Path| open_vm_file(path, true);
    let status = tokio::process::Command::new(v.jailer)
        .args(jail.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(append(&v.stdout)?)
        .stderr(append(&v.stderr)?)
        // Its own process group, which the VM process keeps: a Ctrl-C on
        // mgmtd's terminal is not for it.
        .process_group(0)
        .status()
        .await
        .map_err(io_error("run", v.jailer))?;
    if !status.success() {
        return Err(JailError::Jailer {
            status,
            log: log_tail(&v.stderr, 1),
        });
    }
    crate::pid::read_pidfile(&jail.pidfile).ok_or(JailError::NoPid {
        pidfile: jail.pidfile,
    })
}

/// Writes the list [`refresh_sockets`] works from, as a new file of
/// root's (one the VM left there is removed first).
fn record_sockets(p: &VmPaths, sockets: &[PathBuf]) -> Result<(), JailError> {
    use std::io::Write;
    let file = p.jail_sockets();
    let _ = std::fs::remove_file(&file);
    let mut text = Vec::new();
    for s in sockets {
        text.extend_from_slice(s.as_os_str().as_encoded_bytes());
        text.push(b'\n');
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .and_then(|mut f| f.write_all(&text))
        .map_err(io_error("write", &file))
}

/// Shows a running VM's jail each of its sockets that its daemon has made
/// anew since the jail was built (sfera-blockd and sfera-vswitchd
/// recreate their sockets when they restart; the jail's bind mount still
/// shows the old one, which refuses connections): gives the new socket to
/// the VM's uid and has the jailer mount it in the jail, where the VM's
/// vhost-user reconnect finds it.
pub async fn refresh_sockets(jailer: &Path, p: &VmPaths, pid: u32) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let list = p.jail_sockets();
    let Ok(meta) = std::fs::symlink_metadata(&list) else {
        return;
    };
    // Only root's list is trusted: it names files to give to the VM.
    if meta.uid() != 0 || !meta.is_file() {
        return;
    }
    let Ok(text) = std::fs::read_to_string(&list) else {
        return;
    };
    for host in text.lines().map(Path::new) {
        let Ok(now) = std::fs::symlink_metadata(host) else {
            continue; // The daemon has not made it again yet.
        };
        if !now.file_type().is_socket() {
            continue;
        }
        let inside =
            PathBuf::from(format!("/proc/{pid}/root")).join(host.strip_prefix("/").unwrap_or(host));
        let seen = std::fs::symlink_metadata(&inside).map(|m| (m.dev(), m.ino()));
        if seen.ok() == Some((now.dev(), now.ino())) {
            continue;
        }
        let Some(uid) = process_uid(pid) else { return };
        if let Err(e) = give_sockets(&[host.to_owned()], uid, uid) {
            tracing::warn!(vm = p.id, "{e}");
            continue;
        }
        let out = tokio::process::Command::new(jailer)
            .arg("rebind")
            .arg(pid.to_string())
            .arg(host)
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                tracing::info!(vm = p.id, socket = %host.display(), "Socket made anew: shown in the VM's jail");
            }
            Ok(o) => tracing::warn!(vm = p.id, "{}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => tracing::warn!(vm = p.id, "Cannot run {}: {e}", jailer.display()),
        }
    }
}

/// The real uid of a process.
fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last `n` lines of a log, for an error message.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// Removes what a VM's sandbox leaves on the host once its process has
/// ended: its (empty) jail root directory and its cgroup. Err while the
/// cgroup still holds a process: one that has ended stays in it until
/// its parent (init: the jailer has exited) reaps it.
pub fn try_clean_up(p: &VmPaths) -> Result<(), cgroup::CgroupError> {
    let _ = std::fs::remove_dir(&p.jail_root);
    Hierarchy::detect()?.remove(&p.id)
}

/// [`try_clean_up`], tried again for up to two seconds; false (and a
/// warning) if the cgroup is still there.
pub async fn clean_up(p: &VmPaths) -> bool {
    let mut tries = 0;
    loop {
        match try_clean_up(p) {
            Ok(()) => return true,
            Err(e) if tries == 20 => {
                let why = std::error::Error::source(&e).map(ToString::to_string);
                tracing::warn!(vm = p.id, "{e}: {}", why.unwrap_or_default());
                return false;
            }
            Err(_) => tries += 1,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_round_trips() {
        let jail = Jail {
            id: "vm-1".into(),
            uid: UID_BASE + 7,
            gid: UID_BASE + 7,
            root: "/r/jail/vm-1".into(),
            memory_bytes: 192 << 20,
            cpu_quota_us: 125_000,
            pids_max: 130,
            pidfile: "/r/vms/vm-1/vmm.pid".into(),
            read_only: vec!["/usr".into(), "/g/testguest.elf".into()],
            read_write: vec!["/r/vms/vm-1".into(), "/r/blk/d.sock".into()],
            devices: vec!["/dev/kvm".into()],
            command: vec!["/bin/sfera-vmm".into(), "--config".into(), "x".into()],
        };
        let mut argv = vec![OsString::from("sfera-jailer")];
        argv.extend(jail.to_args());
        assert_eq!(Jail::try_parse_from(argv).unwrap(), jail);
    }

    #[test]
    fn limits_follow_the_vm() {
        let l = limits(128, 1, VMM_OVERHEAD_MIB);
        assert_eq!(l.memory_bytes, 192 << 20);
        assert_eq!(l.cpu_quota_us, 125_000);
        assert_eq!(limits(256, 2, 0).cpu_quota_us, 225_000);
    }

    #[test]
    fn vm_uids_are_in_the_range_and_stable() {
        let a = vm_uid("vm-0123456789ab");
        assert!((UID_BASE..UID_BASE + UID_COUNT).contains(&a));
        assert_eq!(a, vm_uid("vm-0123456789ab"));
        assert_ne!(a, vm_uid("vm-0123456789ac"));
    }
}
