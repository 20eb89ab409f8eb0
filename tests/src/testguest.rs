//! sfera-vmm's CPL3 test guest (`vmm/testguest`, a PVH ELF): where it is,
//! how to run it under sfera-vmm or under QEMU on KVM with the same
//! vhost-user sockets, what its console report says, and its disk pattern.
//!
//! The guest's console lines all start with `SFERA-TESTGUEST `; its last
//! is `done status=ok|fail`, after which it powers off through the i8042
//! (or triple-faults when there is none).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::daemons::binary;
use crate::process::{Process, describe};
use crate::testdir::TestDir;
use crate::vm_config::VmConfigBuilder;
use crate::wait::wait_until;
use crate::{Error, Result, http, tools};

/// What every console line of the test guest starts with.
pub const PREFIX: &str = "SFERA-TESTGUEST ";

/// The test guest's ELF, built by `make testguest`; an error saying how to
/// build it when it is missing.
pub fn elf() -> Result<PathBuf> {
    let path = std::env::var_os("SFERA_TESTGUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmm/testguest/build/testguest.elf")
        });
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTestGuest { path })
    }
}

/// The disk pattern word `i` (0..64) of sector `sector` for `seed`
/// (vmm/testguest/README.md, "The disk pattern").
pub fn pattern_word(seed: u64, sector: u64, i: u64) -> u64 {
    let mut z = (seed << 32)
        .wrapping_add(sector.wrapping_mul(64))
        .wrapping_add(i)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks that sectors `sector..sector+count` of `image` hold the pattern
/// for `seed`, byte for byte; the error names the first difference.
pub fn check_disk(image: &Path, seed: u64, sector: u64, count: u64) -> Result<()> {
    let file = File::open(image).map_err(|e| Error::io("Cannot open disk image", image, e))?;
    let mut buf = [0u8; 512];
    for s in sector..sector + count {
        file.read_exact_at(&mut buf, s * 512)
            .map_err(|e| Error::io("Cannot read disk image", image, e))?;
        for i in 0..64u64 {
            let at = i as usize * 8;
            let word = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
            let want = pattern_word(seed, s, i);
            if word != want {
                return Err(Error::Parse {
                    what: format!(
                        "disk pattern (seed {seed}) in {} at sector {s} word {i}: want {want:#x}",
                        image.display()
                    ),
                    text: format!("{word:#x}"),
                });
            }
        }
    }
    Ok(())
}

/// The test guest's console report: its lines without the prefix.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lines: Vec<String>,
}

impl Report {
    /// The report in a console transcript (other lines are ignored; a line
    /// may carry the VMM's or firmware's output before the prefix).
    pub fn parse(console: &str) -> Self {
        let lines = console
            .lines()
            .filter_map(|l| l.find(PREFIX).map(|at| l[at + PREFIX.len()..].trim_end()))
            .map(str::to_owned)
            .collect();
        Report { lines }
    }

    /// `Some(true)` after `done status=ok`, `Some(false)` after
    /// `done status=fail`, `None` before the guest is done.
    pub fn done(&self) -> Option<bool> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("done status="))
            .map(|s| s == "ok")
    }

    /// What is wrong unless the guest finished with `done status=ok` and
    /// reported a line starting with each of `lines`, the report included.
    pub fn failure(&self, lines: &[&str]) -> Option<String> {
        if self.done() != Some(true) {
            return Some(format!("report:\n{}", self.text()));
        }
        let missing = lines.iter().find(|l| self.line(l).is_none())?;
        Some(format!("no {missing:?} in\n{}", self.text()))
    }

    /// The first line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .map(String::as_str)
    }

    /// The memory map as printed: (start, end exclusive, e820 type).
    pub fn memmap(&self) -> Vec<(u64, u64, u32)> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("memmap "))
            .filter_map(|rest| {
                let mut w = rest.split_whitespace();
                Some((
                    parse_u64(w.next()?)?,
                    parse_u64(w.next()?)?,
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The command line the guest was given.
    pub fn cmdline(&self) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("cmdline").map(str::trim_start))
    }

    /// The device results, the part of the report that must not depend on
    /// the hypervisor: `rng ok` (without the random bytes), `blk ...`
    /// results and `net ok`, every `fail` line, and `done`. Counts that
    /// depend on timing (interrupts coalesced, retransmits) are dropped.
    pub fn device_results(&self) -> Vec<String> {
        const TIMING: &[&str] = &["irqs=", "wakeups=", "retransmits=", "stale=", "duplicates="];
        self.lines
            .iter()
            .filter(|l| {
                l.starts_with("rng ok")
                    || l.starts_with("blk capacity=")
                    || l.starts_with("blk id=")
                    || l.starts_with("blk polled")
                    || l.starts_with("blk irq")
                    || l.starts_with("blk ok")
                    || l.starts_with("net ok")
                    || l.starts_with("net mac=")
                    || l.contains(" fail")
                    || l.starts_with("done ")
            })
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| {
                        !w.starts_with("first=") && !TIMING.iter().any(|t| w.starts_with(t))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// The lines, for messages.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The devices a test guest VM gets, the same under either hypervisor.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub rng: bool,
    /// A vhost-user-blk socket that listens (sfera-blockd's export).
    pub disk: Option<PathBuf>,
    /// A vhost-user-net socket that listens (a sfera-vswitchd port) and
    /// the NIC's MAC.
    pub nic: Option<(PathBuf, String)>,
}

/// Which hypervisor runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypervisor {
    /// sfera-vmm from this workspace's build output.
    SferaVmm,
    /// Debian's QEMU on KVM, `-M pc` (SeaBIOS, conf1, i8042): the machine
    /// the test guest was proven on.
    QemuPc,
    /// Debian's QEMU on KVM, `-M microvm,pcie=on` (qboot, ECAM, no i8042):
    /// QEMU's closest match to a minimal VMM.
    QemuMicrovm,
}

impl Hypervisor {
    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::SferaVmm => "sfera-vmm",
            Hypervisor::QemuPc => "qemu-pc",
            Hypervisor::QemuMicrovm => "qemu-microvm",
        }
    }
}

/// One VM running the test guest: the hypervisor process, its console in a
/// file (the hypervisor's stdout), its diagnostics in a log.
#[derive(Debug)]
pub struct TestGuestVm {
    name: String,
    process: Process,
    console: PathBuf,
    api: Option<PathBuf>,
    started: Instant,
}

impl TestGuestVm {
    /// Starts the test guest with `cmdline` and `devices` and `memory_mib`
    /// of RAM under `hypervisor`. Under sfera-vmm the VM is created from a
    /// JSON config file and its API listens in `dir`.
    pub fn start(
        dir: &TestDir,
        name: &str,
        hypervisor: Hypervisor,
        memory_mib: u64,
        cmdline: &str,
        devices: &Devices,
    ) -> Result<Self> {
        let console = dir.join(format!("{name}.console"));
        let log = dir.join(format!("{name}.log"));
        let (command, api) = match hypervisor {
            Hypervisor::SferaVmm => {
                let config = dir.join(format!("{name}.json"));
                let doc = vmm_config(memory_mib, cmdline, devices)?;
                std::fs::write(&config, doc.to_string())
                    .map_err(|e| Error::io("Cannot write VM config", &config, e))?;
                let api = dir.join(format!("{name}.api.sock"));
                let mut c = Command::new(binary("sfera-vmm")?);
                c.arg("--config").arg(&config).arg("--api-sock").arg(&api);
                (c, Some(api))
            }
            Hypervisor::QemuPc | Hypervisor::QemuMicrovm => {
                let mut c = Command::new(tools::require("qemu-system-x86_64", "qemu-system-x86")?);
                c.args(qemu_args(hypervisor, memory_mib, cmdline, devices)?);
                (c, None)
            }
        };
        let started = Instant::now();
        let process = Process::spawn_split(
            &format!("{} {name}", hypervisor.name()),
            command,
            &console,
            &log,
        )?;
        Ok(TestGuestVm {
            name: name.to_owned(),
            process,
            console,
            api,
            started,
        })
    }

    /// The console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        Report::parse(&self.console())
    }

    /// The hypervisor's diagnostics (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// The hypervisor's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The API socket (sfera-vmm only).
    pub fn api(&self) -> Option<&Path> {
        self.api.as_deref()
    }

    /// Waits until the report has a line starting with `prefix`; fails if
    /// the process ends first.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let what = format!("{}: a console line `{prefix}`", self.name);
        wait_until(&what, timeout, || {
            if let Some(l) = self.report().line(prefix) {
                return Ok(Some(l.to_owned()));
            }
            if let Some(status) = self.process.try_wait()? {
                return Err(Error::Exited {
                    name: format!("{} (before `{prefix}`)", self.process.name()),
                    status: describe(status),
                    log_tail: format!("{}\n{}", self.report().text(), self.process.log_tail(20)),
                });
            }
            Ok(None)
        })
    }

    /// Waits for the hypervisor to exit by itself; returns its status and
    /// the guest's report.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, Report)> {
        match self.process.wait_timeout(timeout)? {
            Some(status) => Ok((status, self.report())),
            None => Err(Error::Timeout {
                what: format!("{} to end", self.process.name()),
                timeout,
                context: format!("{}\n{}", self.report().text(), self.process.log_tail(20)),
            }),
        }
    }

    /// `PUT /v1/vm/<action>` on sfera-vmm's API; fails unless 204.
    pub fn put(&self, action: &str) -> Result<()> {
        let api = self.api.as_deref().ok_or_else(|| Error::Parse {
            what: "an API socket (sfera-vmm only)".to_owned(),
            text: self.name.clone(),
        })?;
        let answer = http::call(api, "PUT", &format!("/v1/vm/{action}"), None)?;
        if answer.status == 204 {
            Ok(())
        } else {
            Err(Error::Parse {
                what: format!("answer to PUT /v1/vm/{action}"),
                text: format!("{} {}", answer.status, answer.body),
            })
        }
    }

    /// `GET /v1/vm` on sfera-vmm's API.
    pub fn info(&self) -> Result<serde_json::Value> {
        let api = self.api.as_deref().ok_or_else(|| Error::Parse {
            what: "an API socket (sfera-vmm only)".to_owned(),
            text: self.name.clone(),
        })?;
        http::call(api, "GET", "/v1/vm", None)?.json()
    }
}

/// sfera-vmm's JSON config for the test guest (vmm/README.md).
pub fn vmm_config(memory_mib: u64, cmdline: &str, devices: &Devices) -> Result<serde_json::Value> {
    let mut builder = VmConfigBuilder::new(elf()?)
        .memory_mib(memory_mib)
        .cmdline(cmdline)
        .rng(devices.rng);
    if let Some(socket) = &devices.disk {
        builder = builder.disk(socket);
    }
    if let Some((socket, mac)) = &devices.nic {
        builder = builder.nic(socket, mac);
    }
    serde_json::to_value(builder.build()).map_err(|e| Error::Parse {
        what: "a VM config as JSON".to_owned(),
        text: e.to_string(),
    })
}

/// QEMU's arguments for the test guest: KVM (with the CPU model
/// [`crate::qemu_kvm`] found this KVM accepts), guest RAM in a shared memfd
/// (the vhost-user backends map it), modern-only virtio-pci devices,
/// `vhost-user-blk-pci` and a vhost-user netdev on the same sockets
/// sfera-vmm would use, the serial console on stdout, and `-no-reboot` so
/// the guest's i8042 reset (or triple fault) ends QEMU.
pub fn qemu_args(
    hypervisor: Hypervisor,
    memory_mib: u64,
    cmdline: &str,
    devices: &Devices,
) -> Result<Vec<String>> {
    let mem = format!("{memory_mib}M");
    let (machine, cmdline) = match hypervisor {
        // microvm has no conf1: the guest uses its ECAM.
        Hypervisor::QemuMicrovm => (
            "microvm,pcie=on,rtc=off,memory-backend=mem".to_owned(),
            format!("{cmdline} pci.ecam=0xe0000000"),
        ),
        _ => ("pc,memory-backend=mem".to_owned(), cmdline.to_owned()),
    };
    let mut args: Vec<String> = crate::qemu_kvm::kvm_args()?.into();
    args.extend(
        [
            "-machine",
            &machine,
            "-m",
            &mem,
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
            "-kernel",
            &elf()?.to_string_lossy(),
            "-append",
            &cmdline,
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    // The same slot order as sfera-vmm: rng, disk, NIC.
    if devices.rng {
        args.extend(["-device".into(), "virtio-rng-pci,disable-legacy=on".into()]);
    }
    if let Some(socket) = &devices.disk {
        args.extend([
            "-chardev".into(),
            format!("socket,id=blk0,path={}", socket.display()),
            "-device".into(),
            "vhost-user-blk-pci,chardev=blk0,num-queues=1,disable-legacy=on".into(),
        ]);
    }
    if let Some((socket, mac)) = &devices.nic {
        args.extend([
            "-chardev".into(),
            format!("socket,id=net0,path={}", socket.display()),
            "-netdev".into(),
            "vhost-user,id=net0,chardev=net0".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,mac={mac},disable-legacy=on"),
        ]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        let text = "noise\nSFERA-TESTGUEST start\n  1.0 SFERA-TESTGUEST memmap 0x0 0x9fc00 1\n\
                    SFERA-TESTGUEST cmdline a=1 b=2\nSFERA-TESTGUEST rng ok bytes=64 requests=1 first=ab\n\
                    SFERA-TESTGUEST blk ok written=8 verified=16 irqs=3 wakeups=3 flush=ok\n\
                    SFERA-TESTGUEST done status=ok\n";
        let r = Report::parse(text);
        assert_eq!(r.memmap(), vec![(0, 0x9fc00, 1)]);
        assert_eq!(r.cmdline(), Some("a=1 b=2"));
        assert_eq!(r.done(), Some(true));
        assert_eq!(
            r.device_results(),
            vec![
                "rng ok bytes=64 requests=1",
                "blk ok written=8 verified=16 flush=ok",
                "done status=ok"
            ]
        );
    }

    #[test]
    fn the_pattern_matches_splitmix64() {
        // splitmix64's first output for state 0 is 0xe220a8397b1dcdaf.
        assert_eq!(pattern_word(0, 0, 0), 0xe220_a839_7b1d_cdaf);
    }
}
