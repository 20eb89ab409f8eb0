//! The VM configuration (the JSON body of `PUT /v1/vm` and the file of
//! `--config`) and its validation, done before anything is started.

use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout;

/// Largest vCPU count this VMM supports.
pub const MAX_VCPUS: u32 = 64;
/// PCI slots left for devices (slot 0 is the host bridge).
pub const MAX_PCI_DEVICES: usize = 31;
/// Longest Unix socket path (sun_path minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How a vhost-user socket is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketMode {
    /// The backend listens; the VMM connects (and reconnects).
    #[default]
    Connect,
    /// The VMM listens; the backend connects (QEMU's `server` mode).
    Listen,
}

/// A virtio-blk disk served by a vhost-user-blk backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub socket: PathBuf,
    #[serde(default)]
    pub mode: SocketMode,
    #[serde(default)]
    pub read_only: bool,
}

/// A virtio-net NIC served by a vhost-user-net backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub socket: PathBuf,
    #[serde(default)]
    pub mode: SocketMode,
    /// `52:54:00:12:34:56`.
    pub mac: String,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

/// A NIC's MTU when the configuration gives none.
pub const DEFAULT_MTU: u16 = 1500;

fn default_mtu() -> u16 {
    DEFAULT_MTU
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Copy the output to the VMM's standard output.
    #[serde(default)]
    pub stdout: bool,
    /// A Unix socket the VMM listens on: clients get the output and send
    /// input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// How a socket client gets the output from before it connected.
    #[serde(default)]
    pub history: ConsoleHistory,
}

/// What a console socket client is sent before the live output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleHistory {
    /// The recent output (up to 64 KiB) as plain bytes, then the live
    /// output: a terminal attached to the socket shows the history, but a
    /// client cannot tell where it ends.
    #[default]
    Replay,
    /// A header line [`history_header`] giving the history's length, the
    /// recent output (up to 64 KiB), then the live output. The history is
    /// everything the guest printed before the client's live output starts
    /// (its last 64 KiB), so a client that keeps the two apart (mgmtd, whose
    /// viewers' terminals must not answer the queries in a history) loses
    /// and repeats nothing between them.
    Framed,
}

/// What starts a [`ConsoleHistory::Framed`] socket's stream: the length in
/// bytes of the history that follows it.
pub fn history_header(len: usize) -> String {
    format!("{HISTORY_HEADER}{len}\n")
}

/// The length a header line (`history_header`, its newline taken off)
/// gives, or `None` when it is not one.
pub fn parse_history_header(line: &[u8]) -> Option<usize> {
    let digits = line.strip_prefix(HISTORY_HEADER.as_bytes())?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The header line's text before the length.
const HISTORY_HEADER: &str = "sfera-console history ";

/// The longest header line, newline included: a client reading one gives
/// up past it.
pub const HISTORY_HEADER_MAX: usize = HISTORY_HEADER.len() + 21;

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            stdout: true,
            socket: None,
            history: ConsoleHistory::Replay,
        }
    }
}

/// A whole VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default = "one")]
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub hugepages: bool,
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    #[serde(default)]
    pub rng: bool,
}

fn one() -> u32 {
    1
}

/// What the host allows, for validation.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    pub max_vcpus: u32,
    pub memory_mib: u64,
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("vcpus must be 1 to {max} (this host allows {host}); got {got}")]
    Vcpus { got: u32, max: u32, host: u32 },
    #[error("memory_mib must be {min} to {max}; got {got}")]
    Memory { got: u64, min: u64, max: u64 },
    #[error("memory_mib {got} exceeds this host's {host} MiB of RAM")]
    MemoryOverHost { got: u64, host: u64 },
    #[error("memory_mib must be a multiple of 2 with hugepages; got {0}")]
    HugepageMultiple(u64),
    #[error("Cannot read {what} {path}: {reason}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "Kernel ({kernel} bytes) and initrd ({initrd} bytes) overlap in {memory_mib} MiB of RAM"
    )]
    DoesNotFit {
        kernel: u64,
        initrd: u64,
        memory_mib: u64,
    },
    #[error("cmdline is {0} bytes; at most {max} are accepted", max = layout::CMDLINE_MAX - 1)]
    CmdlineTooLong(usize),
    #[error("{what} socket {path}: {reason}")]
    Socket {
        what: String,
        path: PathBuf,
        reason: String,
    },
    #[error("Socket {0} is used twice")]
    DuplicateSocket(PathBuf),
    #[error("nets[{index}].mac {mac:?} is not a unicast MAC address like 52:54:00:12:34:56")]
    Mac { index: usize, mac: String },
    #[error("nets[{index}].mtu must be 68 to 65535; got {mtu}")]
    Mtu { index: usize, mtu: u16 },
    #[error("{0} PCI devices requested; at most {MAX_PCI_DEVICES} fit on bus 0")]
    TooManyDevices(usize),
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn readable(what: &'static str, path: &Path) -> Result<u64, ConfigError> {
    let unreadable = |reason: String| ConfigError::Unreadable {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".to_owned()));
    }
    Ok(meta.len())
}

fn check_socket(what: String, path: &Path, mode: SocketMode) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Socket {
        what: what.clone(),
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(bad("path longer than 107 bytes"));
    }
    match mode {
        SocketMode::Connect => {
            let meta = std::fs::metadata(path).map_err(|e| bad(&e.to_string()))?;
            if !meta.file_type().is_socket() {
                return Err(bad("not a Unix socket"));
            }
        }
        SocketMode::Listen => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent
                && !dir.is_dir()
            {
                return Err(bad("its directory does not exist"));
            }
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && !meta.file_type().is_socket()
            {
                return Err(bad("exists and is not a socket"));
            }
        }
    }
    Ok(())
}

impl VmConfig {
    /// Memory size in bytes.
    pub fn mem_size(&self) -> u64 {
        self.memory_mib << 20
    }

    /// Checks everything that can be checked before starting: counts and
    /// sizes, that files are readable and fit, and the sockets.
    pub fn validate(&self, host: &HostLimits) -> Result<(), ConfigError> {
        let max = MAX_VCPUS.min(host.max_vcpus);
        if self.vcpus == 0 || self.vcpus > max {
            return Err(ConfigError::Vcpus {
                got: self.vcpus,
                max: MAX_VCPUS,
                host: host.max_vcpus,
            });
        }
        if !(layout::MIN_MEMORY_MIB..=layout::MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::Memory {
                got: self.memory_mib,
                min: layout::MIN_MEMORY_MIB,
                max: layout::MAX_MEMORY_MIB,
            });
        }
        if self.memory_mib > host.memory_mib {
            return Err(ConfigError::MemoryOverHost {
                got: self.memory_mib,
                host: host.memory_mib,
            });
        }
        if self.hugepages && !self.memory_mib.is_multiple_of(2) {
            return Err(ConfigError::HugepageMultiple(self.memory_mib));
        }
        let kernel = readable("kernel", &self.kernel)?;
        let initrd = match &self.initrd {
            Some(p) => readable("initrd", p)?,
            None => 0,
        };
        let room = layout::low_ram_end(self.mem_size()).saturating_sub(layout::HIMEM_START);
        if kernel.saturating_add(initrd) > room {
            return Err(ConfigError::DoesNotFit {
                kernel,
                initrd,
                memory_mib: self.memory_mib,
            });
        }
        if self.cmdline.len() >= layout::CMDLINE_MAX {
            return Err(ConfigError::CmdlineTooLong(self.cmdline.len()));
        }
        let devices = self.disks.len() + self.nets.len() + usize::from(self.rng);
        if devices > MAX_PCI_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        let mut seen = HashSet::new();
        let sockets = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("disks[{i}]"), &d.socket, d.mode))
            .chain(
                self.nets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("nets[{i}]"), &n.socket, n.mode)),
            )
            .chain(
                self.console
                    .socket
                    .iter()
                    .map(|s| ("console".to_owned(), s, SocketMode::Listen)),
            );
        for (what, path, mode) in sockets {
            check_socket(what, path, mode)?;
            if !seen.insert(path.clone()) {
                return Err(ConfigError::DuplicateSocket(path.clone()));
            }
        }
        for (index, n) in self.nets.iter().enumerate() {
            match parse_mac(&n.mac) {
                Some(mac) if mac[0] & 1 == 0 => {}
                _ => {
                    return Err(ConfigError::Mac {
                        index,
                        mac: n.mac.clone(),
                    });
                }
            }
            if n.mtu < 68 {
                return Err(ConfigError::Mtu { index, mtu: n.mtu });
            }
        }
        Ok(())
    }
}

/// This host's limits: KVM's vCPU count and the RAM in /proc/meminfo.
pub fn host_limits(kvm_max_vcpus: usize) -> HostLimits {
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib / 1024);
    HostLimits {
        max_vcpus: u32::try_from(kvm_max_vcpus).unwrap_or(u32::MAX),
        memory_mib,
    }
}

#[cfg(test)]
mod tests;
