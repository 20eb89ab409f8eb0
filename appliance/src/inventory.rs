//! What the installer can see of the machine: its disks and NICs, and which
//! disks it must not touch (the one it booted from, the one holding the
//! answer file). Read from `/sys` and `/proc/self/mountinfo`; tests build an
//! [`Inventory`] by hand.

use std::path::{Path, PathBuf};

/// A whole disk (never a partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name: `vda`, `sda`, `nvme0n1`.
    pub name: String,
    pub size_bytes: u64,
    /// Vendor and model as the kernel reports them, if it does.
    pub model: String,
    pub read_only: bool,
    /// The kernel names of its partitions.
    pub partitions: Vec<String>,
    /// Mount points of the disk or its partitions.
    pub mounts: Vec<String>,
}

impl Disk {
    /// `/dev/NAME`.
    pub fn dev(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    /// The device of partition `number` (1-based): `vda3`, `nvme0n1p3`.
    pub fn partition_name(&self, number: u32) -> String {
        if self.name.ends_with(|c: char| c.is_ascii_digit()) {
            format!("{}p{number}", self.name)
        } else {
            format!("{}{number}", self.name)
        }
    }
}

/// A network interface with a device behind it (not `lo`, not virtual).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// The link is up (a cable, a switch port).
    pub carrier: bool,
}

/// The machine as the installer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// Disks the installer must not write: the live medium's and the answer
    /// file's.
    pub protected: Vec<(String, &'static str)>,
}

impl Inventory {
    /// Reads the running system. `protect` names mount points whose disks
    /// are off limits, with the reason (`/run/live/medium`, "the installer
    /// was booted from it").
    pub fn read(protect: &[(&Path, &'static str)]) -> Self {
        let mounts = mount_sources();
        let mut disks = Vec::new();
        for name in dir_names(Path::new("/sys/block")) {
            if !is_installable_kind(&name) {
                continue;
            }
            let sys = Path::new("/sys/block").join(&name);
            let sectors: u64 = read_trim(&sys.join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let model = [sys.join("device/vendor"), sys.join("device/model")]
                .iter()
                .filter_map(|p| read_trim(p))
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let partitions: Vec<String> = dir_names(&sys)
                .into_iter()
                .filter(|p| p.starts_with(&name) && sys.join(p).join("partition").exists())
                .collect();
            let disk_mounts = mounts
                .iter()
                .filter(|(dev, _)| *dev == name || partitions.contains(dev))
                .map(|(_, at)| at.clone())
                .collect();
            disks.push(Disk {
                size_bytes: sectors * 512,
                model,
                read_only: read_trim(&sys.join("ro")).as_deref() == Some("1"),
                partitions,
                mounts: disk_mounts,
                name,
            });
        }
        disks.sort_by(|a, b| a.name.cmp(&b.name));
        let mut nics = Vec::new();
        for name in dir_names(Path::new("/sys/class/net")) {
            let sys = Path::new("/sys/class/net").join(&name);
            // Physical NICs have a device; lo, bridges, TAPs do not.
            if !sys.join("device").exists() {
                continue;
            }
            nics.push(Nic {
                mac: read_trim(&sys.join("address")).unwrap_or_default(),
                carrier: read_trim(&sys.join("carrier")).as_deref() == Some("1"),
                name,
            });
        }
        nics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut protected = Vec::new();
        for (mount_point, why) in protect {
            if let Some(dev) = mounts
                .iter()
                .find(|(_, at)| Path::new(at) == *mount_point)
                .map(|(dev, _)| dev)
                && let Some(disk) = disk_of(dev)
            {
                protected.push((disk, *why));
            }
        }
        Inventory {
            disks,
            nics,
            protected,
        }
    }

    /// The disk a path names: `/dev/vda`, or a link to it such as
    /// `/dev/disk/by-id/...`. `Err` says why it is not one.
    pub fn resolve_disk(&self, path: &str) -> Result<&Disk, String> {
        let name = if let Some(name) = path.strip_prefix("/dev/")
            && !name.contains('/')
        {
            name.to_owned()
        } else if path.starts_with("/dev/") {
            let target = std::fs::canonicalize(path).map_err(|_| "does not exist".to_owned())?;
            target
                .strip_prefix("/dev")
                .ok()
                .and_then(|p| p.to_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("is a link to {}, not to a disk", target.display()))?
        } else {
            return Err("is not a device path (/dev/...)".into());
        };
        if let Some(d) = self.disks.iter().find(|d| d.name == name) {
            return Ok(d);
        }
        if let Some(d) = self.disks.iter().find(|d| d.partitions.contains(&name)) {
            return Err(format!(
                "is a partition of /dev/{}: give the whole disk",
                d.name
            ));
        }
        Err("does not exist or is not a disk".into())
    }
}

/// Disks an appliance may be installed on: not CD drives, loop devices,
/// RAM disks or device-mapper volumes.
fn is_installable_kind(name: &str) -> bool {
    !["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// (kernel device name, mount point) of every block-device mount.
fn mount_sources() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
        .into_iter()
        .filter_map(|(source, at)| {
            let source = std::fs::canonicalize(&source).unwrap_or_else(|_| source.into());
            let dev = source.strip_prefix("/dev").ok()?.to_str()?.to_owned();
            Some((dev, at))
        })
        .collect()
}

/// (source, mount point) of each line of `/proc/self/mountinfo` whose
/// source is under `/dev/`.
pub fn parse_mountinfo(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let at = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let source = fields.get(sep + 2)?;
            source
                .starts_with("/dev/")
                .then(|| (unescape(source), unescape(at)))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The whole disk a block device belongs to (`sdb1` → `sdb`, `sr0` → `sr0`).
fn disk_of(dev: &str) -> Option<String> {
    let sys = std::fs::canonicalize(Path::new("/sys/class/block").join(dev)).ok()?;
    if sys.join("partition").exists() {
        sys.parent()?.file_name()?.to_str().map(str::to_owned)
    } else {
        Some(dev.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 0:21 / /proc rw - proc proc rw\n\
                    30 25 11:0 / /run/live/medium ro,noatime - iso9660 /dev/sr0 ro\n\
                    31 25 8:17 / /mnt/with\\040space rw - ext4 /dev/sdb1 rw\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                ("/dev/sr0".to_owned(), "/run/live/medium".to_owned()),
                ("/dev/sdb1".to_owned(), "/mnt/with space".to_owned()),
            ]
        );
    }

    #[test]
    fn partition_names() {
        let disk = |name: &str| Disk {
            name: name.into(),
            size_bytes: 0,
            model: String::new(),
            read_only: false,
            partitions: vec![],
            mounts: vec![],
        };
        assert_eq!(disk("vda").partition_name(3), "vda3");
        assert_eq!(disk("nvme0n1").partition_name(1), "nvme0n1p1");
        assert_eq!(disk("mmcblk0").partition_name(2), "mmcblk0p2");
    }

    #[test]
    fn resolve() {
        let inv = Inventory {
            disks: vec![Disk {
                name: "vda".into(),
                size_bytes: 1 << 34,
                model: String::new(),
                read_only: false,
                partitions: vec!["vda1".into()],
                mounts: vec![],
            }],
            ..Inventory::default()
        };
        assert_eq!(
            inv.resolve_disk("/dev/vda").map(|d| &d.name),
            Ok(&"vda".to_owned())
        );
        assert!(
            inv.resolve_disk("/dev/vda1")
                .unwrap_err()
                .contains("partition of /dev/vda")
        );
        assert!(
            inv.resolve_disk("/dev/vdz")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(
            inv.resolve_disk("vda")
                .unwrap_err()
                .contains("not a device path")
        );
    }
}
