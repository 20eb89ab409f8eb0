//! A VM's cgroup: its memory, CPU and task limits.
//!
//! cgroup v2 is used when a cgroup2 hierarchy has the memory and cpu
//! controllers (the appliance: Debian 12 with systemd is pure v2); the v1
//! memory and cpu hierarchies otherwise (hosts in hybrid mode, like the
//! build machines, whose cgroup2 mount has no controllers). Neither is an
//! error: a VM is never started unlimited.
//!
//! Where a VM's cgroup is:
//! - v2: `<cgroup2 mount>/sfera-vms/<vm-id>`. Not under mgmtd's own cgroup:
//!   v2 lets a cgroup with processes (mgmtd's service) have no children
//!   with controllers, and VMs must outlive a restart of mgmtd's service.
//! - v1: `<controller mount>/<launcher's own cgroup>/sfera-vms/<vm-id>` for
//!   memory, cpu and (when mounted) pids, so whatever bounds mgmtd also
//!   bounds its VMs (v1 limits are hierarchical with `use_hierarchy`).
//!
//! Both the jailer (which makes the cgroup and enters it) and mgmtd (which
//! removes it when the VM has ended) find it the same way.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The parent of every VM's cgroup.
pub const PARENT: &str = "sfera-vms";

/// A VM's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hard memory limit, guest RAM included.
    pub memory_bytes: u64,
    /// CPU time per [`CPU_PERIOD_US`], in microseconds.
    pub cpu_quota_us: u64,
    /// Tasks (threads and processes).
    pub pids_max: u64,
}

/// The CPU accounting period (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "Cannot limit VMs: no cgroup2 hierarchy with the memory and cpu controllers, and no cgroup v1 memory and cpu hierarchies are mounted"
    )]
    NoController,
    #[error("Cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which cgroup hierarchy limits VMs on this host, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// `parent` is `<cgroup2 mount>/sfera-vms`.
    V2 { parent: PathBuf },
    /// The `sfera-vms` parent in each v1 hierarchy used.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: Option<PathBuf>,
    },
}

impl Hierarchy {
    /// Finds the hierarchy from this process's mounts and cgroups.
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| CgroupError::Read {
                path: p.into(),
                source,
            })
        };
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        let v2_ready = |mount: &Path| {
            std::fs::read_to_string(mount.join("cgroup.controllers"))
                .map(|c| {
                    let c: Vec<&str> = c.split_whitespace().collect();
                    c.contains(&"memory") && c.contains(&"cpu")
                })
                .unwrap_or(false)
        };
        Hierarchy::from_mounts(&mountinfo, &own, v2_ready)
    }

    /// [`Hierarchy::detect`] on given texts of `/proc/self/mountinfo` and
    /// `/proc/self/cgroup`; `v2_ready` says whether a cgroup2 mount has
    /// the memory and cpu controllers.
    pub fn from_mounts(
        mountinfo: &str,
        own_cgroups: &str,
        v2_ready: impl Fn(&Path) -> bool,
    ) -> Result<Hierarchy, CgroupError> {
        let mounts: Vec<(PathBuf, &str, Vec<&str>)> = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mount_point = left.split_whitespace().nth(4)?;
                let mut right = right.split_whitespace();
                let fstype = right.next()?;
                let options = right.nth(1).unwrap_or("").split(',').collect();
                Some((unescape(mount_point), fstype, options))
            })
            .collect();
        if let Some((mount, _, _)) = mounts
            .iter()
            .find(|(m, fstype, _)| *fstype == "cgroup2" && v2_ready(m))
        {
            return Ok(Hierarchy::V2 {
                parent: mount.join(PARENT),
            });
        }
        // v1: the hierarchy that has `controller`, under this process's
        // own cgroup in it.
        let v1 = |controller: &str| -> Option<PathBuf> {
            let (mount, _, _) = mounts
                .iter()
                .find(|(_, fstype, opts)| *fstype == "cgroup" && opts.contains(&controller))?;
            let own = own_cgroups.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let _ = parts.next()?;
                let controllers = parts.next()?;
                let path = parts.next()?;
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then_some(path)
            })?;
            Some(mount.join(own.trim_start_matches('/')).join(PARENT))
        };
        match (v1("memory"), v1("cpu")) {
            (Some(memory), Some(cpu)) => Ok(Hierarchy::V1 {
                memory,
                cpu,
                pids: v1("pids"),
            }),
            _ => Err(CgroupError::NoController),
        }
    }

    /// The VM's cgroup directories (one for v2, one per controller for v1).
    pub fn dirs(&self, vm_id: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 { parent } => vec![parent.join(vm_id)],
            Hierarchy::V1 { memory, cpu, pids } => [Some(memory), Some(cpu), pids.as_ref()]
                .into_iter()
                .flatten()
                .map(|p| p.join(vm_id))
                .collect(),
        }
    }

    /// Makes the VM's cgroup with its limits (a leftover of an earlier run
    /// of the same VM is reused); returns its directories.
    pub fn create(&self, vm_id: &str, limits: Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let dirs = self.dirs(vm_id);
        match self {
            Hierarchy::V2 { parent } => {
                // The controllers must be enabled from the root down to
                // the VM's parent.
                let root = parent.parent().unwrap_or(parent);
                write(&root.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
                mkdir(parent)?;
                write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
                mkdir(&dirs[0])?;
                write(
                    &dirs[0].join("memory.max"),
                    &limits.memory_bytes.to_string(),
                )?;
                // Guest memory is not swapped behind the guest's back.
                write_if_present(&dirs[0].join("memory.swap.max"), "0")?;
                write(
                    &dirs[0].join("cpu.max"),
                    &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
                )?;
                write(&dirs[0].join("pids.max"), &limits.pids_max.to_string())?;
            }
            Hierarchy::V1 { memory, cpu, pids } => {
                for (parent, dir) in [Some(memory), Some(cpu), pids.as_ref()]
                    .into_iter()
                    .flatten()
                    .zip(&dirs)
                {
                    mkdir(parent)?;
                    mkdir(dir)?;
                }
                write(
                    &dirs[0].join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                write(
                    &dirs[1].join("cpu.cfs_period_us"),
                    &CPU_PERIOD_US.to_string(),
                )?;
                write(
                    &dirs[1].join("cpu.cfs_quota_us"),
                    &limits.cpu_quota_us.to_string(),
                )?;
                if let Some(dir) = dirs.get(2) {
                    write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                }
            }
        }
        Ok(dirs)
    }

    /// Removes the VM's cgroup; nothing to do when there is none. Fails
    /// while a process is still in it.
    pub fn remove(&self, vm_id: &str) -> Result<(), CgroupError> {
        for dir in self.dirs(vm_id) {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CgroupError::Remove {
                        path: dir,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Moves process `pid` into each of `dirs`.
pub fn enter(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    for dir in dirs {
        write(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(CgroupError::Create {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Writes a limit the kernel may not have (swap accounting is optional).
fn write_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write(path, value)
    } else {
        Ok(())
    }
}

/// A mountinfo path: spaces and the like are octal escapes (`\040`).
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(out).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build machines: v1 controllers, a cgroup2 mount without any.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_OWN: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_hosts_use_v1_under_the_launchers_own_cgroup() {
        let h = Hierarchy::from_mounts(HYBRID, HYBRID_OWN, |_| false).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/abc/sfera-vms".into(),
                cpu: "/sys/fs/cgroup/cpu/sfera-vms".into(),
                pids: Some("/sys/fs/cgroup/pids/sfera-vms".into()),
            }
        );
        assert_eq!(
            h.dirs("vm-1")[0],
            Path::new("/sys/fs/cgroup/memory/process_api/abc/sfera-vms/vm-1")
        );
    }

    #[test]
    fn v2_with_controllers_wins() {
        let pure = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchy::from_mounts(pure, "0::/system.slice/sfera-mgmtd.service\n", |m| {
            m == Path::new("/sys/fs/cgroup")
        })
        .unwrap();
        assert_eq!(
            h.dirs("vm-1"),
            vec![PathBuf::from("/sys/fs/cgroup/sfera-vms/vm-1")]
        );
        // The same host with the controllers taken by v1 is v1.
        let both = format!("{HYBRID}{pure}");
        assert!(matches!(
            Hierarchy::from_mounts(&both, HYBRID_OWN, |_| false).unwrap(),
            Hierarchy::V1 { .. }
        ));
    }

    #[test]
    fn no_controller_is_an_error() {
        let none = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let e = Hierarchy::from_mounts(none, "0::/\n", |_| false).unwrap_err();
        assert!(e.to_string().contains("Cannot limit VMs"), "{e}");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/plain\\"), PathBuf::from("/plain\\"));
    }
}
