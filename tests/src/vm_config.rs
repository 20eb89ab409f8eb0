//! sfera-vmm's VM configuration ([`vmm::config::VmConfig`]) with test
//! defaults: one vCPU, 64 MiB, no devices, the console on standard output.
//! Tests build the typed struct (or its JSON, `serde_json::to_value` of
//! it, for `--config`), so a field renamed in sfera-vmm breaks them at
//! compile time.

use std::path::{Path, PathBuf};

use vmm::config::{ConsoleConfig, DiskConfig, NetConfig, SocketMode, VmConfig};

use crate::testdir::TestDir;
use crate::{Error, Result};

/// Builds a [`VmConfig`]; every device it adds is a vhost-user socket the
/// backend listens on (sfera-vmm connects).
#[derive(Debug, Clone)]
pub struct VmConfigBuilder {
    config: VmConfig,
}

impl VmConfigBuilder {
    /// A VM booting `kernel`: one vCPU, 64 MiB of RAM, no initrd, an empty
    /// command line, the console on standard output, no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfigBuilder {
            config: VmConfig {
                vcpus: 1,
                memory_mib: 64,
                hugepages: false,
                kernel: kernel.into(),
                initrd: None,
                cmdline: String::new(),
                console: ConsoleConfig::default(),
                disks: Vec::new(),
                nets: Vec::new(),
                rng: false,
            },
        }
    }

    /// A VM a test builds with `Machine::build` and its own boot source:
    /// the kernel is an empty file in `dir` that is never loaded, and the
    /// console stays off the test's standard output.
    pub fn unbooted(dir: &TestDir) -> Result<Self> {
        let kernel = dir.join("unused-kernel");
        std::fs::write(&kernel, b"")
            .map_err(|e| Error::io("Cannot write a placeholder kernel", &kernel, e))?;
        Ok(VmConfigBuilder::new(kernel).console_stdout(false))
    }

    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.config.memory_mib = mib;
        self
    }

    /// Guest RAM from the hugepage pool.
    pub fn hugepages(mut self) -> Self {
        self.config.hugepages = true;
        self
    }

    pub fn cmdline(mut self, cmdline: &str) -> Self {
        cmdline.clone_into(&mut self.config.cmdline);
        self
    }

    /// Whether the console is copied to sfera-vmm's standard output.
    pub fn console_stdout(mut self, stdout: bool) -> Self {
        self.config.console.stdout = stdout;
        self
    }

    /// A read-write virtio-blk disk on the vhost-user-blk socket `socket`.
    pub fn disk(mut self, socket: &Path) -> Self {
        self.config.disks.push(DiskConfig {
            socket: socket.to_path_buf(),
            mode: SocketMode::Connect,
            read_only: false,
        });
        self
    }

    /// A virtio-net NIC with `mac` and a 1500-byte MTU on the
    /// vhost-user-net socket `socket`.
    pub fn nic(mut self, socket: &Path, mac: &str) -> Self {
        self.config.nets.push(NetConfig {
            socket: socket.to_path_buf(),
            mode: SocketMode::Connect,
            mac: mac.to_owned(),
            mtu: 1500,
        });
        self
    }

    /// Whether the VM has a virtio-rng device.
    pub fn rng(mut self, rng: bool) -> Self {
        self.config.rng = rng;
        self
    }

    pub fn build(self) -> VmConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_form_is_what_sfera_vmm_reads_back() {
        let config = VmConfigBuilder::new("/k")
            .memory_mib(128)
            .cmdline("console=ttyS0")
            .disk(Path::new("/d.sock"))
            .nic(Path::new("/n.sock"), "52:54:00:00:00:01")
            .rng(true)
            .build();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["memory_mib"], 128);
        assert_eq!(json["disks"][0]["mode"], "connect");
        assert_eq!(json["nets"][0]["mtu"], 1500);
        let back: VmConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }
}
