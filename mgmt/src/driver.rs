//! Hypervisor drivers: which one runs a VM and why, where a VM's runtime
//! files are, and the operations on a running VM, dispatched to
//! [`crate::qemu`] or [`crate::sfera_vmm`].
//!
//! sfera-vmm runs a VM where the host has hardware virtualization and the
//! VM boots a kernel directly; QEMU runs it otherwise (`-accel kvm` or
//! `tcg`) and whenever the boot source needs firmware. A VM may ask for a
//! driver; it gets it when the host and the boot source allow it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::db::{Boot, VmState};
use crate::host::HostFacts;
use crate::qemu::qmp;
use crate::{qemu, sfera_vmm};

/// A hypervisor driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Driver {
    #[serde(rename = "sfera-vmm")]
    SferaVmm,
    #[serde(rename = "qemu")]
    Qemu,
}

impl Driver {
    pub const NAMES: [&'static str; 2] = ["sfera-vmm", "qemu"];

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::SferaVmm => "sfera-vmm",
            Driver::Qemu => "qemu",
        }
    }

    /// The driver recorded for a VM; QEMU for anything else (the only
    /// driver before sfera-vmm's).
    pub fn parse(s: &str) -> Driver {
        if s == "sfera-vmm" {
            Driver::SferaVmm
        } else {
            Driver::Qemu
        }
    }
}

/// Whether a boot source needs firmware (a disk's boot loader, an ISO
/// installer), which only QEMU has. Linux direct boot does not.
pub fn needs_firmware(boot: &Boot) -> bool {
    match boot {
        Boot::Kernel { .. } => false,
        Boot::Disk | Boot::Iso { .. } => true,
    }
}

/// Picks the driver of a new VM, with the reason shown on the host page;
/// a driver asked for that cannot run it is the client's error.
pub fn choose(
    host: &HostFacts,
    boot: &Boot,
    asked: Option<Driver>,
) -> Result<(Driver, String), Error> {
    let qemu_how = format!("QEMU with -accel {}", host.accel.as_str());
    match asked {
        Some(Driver::SferaVmm) => {
            if !host.sfera_vmm_available {
                return Err(Error::Invalid(format!(
                    "driver: sfera-vmm needs /dev/kvm and the sfera-vmm binary on the host ({})",
                    host.driver_reason
                )));
            }
            if needs_firmware(boot) {
                return Err(Error::Invalid(
                    "driver: sfera-vmm boots kernels directly; this boot source needs firmware (QEMU)"
                        .into(),
                ));
            }
            let note = if host.default_driver == "sfera-vmm" {
                String::new()
            } else {
                format!(
                    "; not this host's default ({} KVM: only guests that run at CPL3, like sfera-vmm's test guest, work)",
                    host.kvm_kind
                )
            };
            Ok((Driver::SferaVmm, format!("sfera-vmm asked for{note}")))
        }
        Some(Driver::Qemu) => Ok((Driver::Qemu, format!("QEMU asked for ({qemu_how})"))),
        None if needs_firmware(boot) => Ok((
            Driver::Qemu,
            format!("the boot source needs firmware: {qemu_how}"),
        )),
        None if host.default_driver == "sfera-vmm" => Ok((
            Driver::SferaVmm,
            format!(
                "kernel boot on hardware virtualization ({} KVM): sfera-vmm",
                host.kvm_kind
            ),
        )),
        None => Ok((Driver::Qemu, host.driver_reason.clone())),
    }
}

/// Where a VM's runtime files live, for either driver.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub id: String,
    pub dir: PathBuf,
    /// The empty directory the VM's jail root is mounted on, in the jail's
    /// own mount namespace (`<run>/jail/<id>`: outside the VM directory,
    /// which the VM may write to).
    pub jail_root: PathBuf,
}

impl VmPaths {
    pub fn new(vms_dir: &Path, vm_id: &str) -> Self {
        let run_dir = vms_dir.parent().unwrap_or(vms_dir);
        VmPaths {
            id: vm_id.to_owned(),
            dir: vms_dir.join(vm_id),
            jail_root: run_dir.join("jail").join(vm_id),
        }
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The console log of the power-on before the current one.
    pub fn previous_console_log(&self) -> PathBuf {
        self.dir.join("console.previous.log")
    }
    /// QEMU's VNC server (the VM's screen, keyboard and mouse).
    pub fn display(&self) -> PathBuf {
        self.dir.join("display.sock")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn vmm_config(&self) -> PathBuf {
        self.dir.join("vmm.json")
    }
    pub fn vmm_pidfile(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }
    pub fn vmm_api(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    /// The disk and NIC sockets bound into the VM's jail, one per line
    /// (root's file: the VM cannot change it).
    pub fn jail_sockets(&self) -> PathBuf {
        self.dir.join("jail.sockets")
    }
}

/// A hypervisor operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("VM {vm} boots through firmware, which sfera-vmm has not")]
    NeedsFirmware { vm: String },
    #[error("Cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not in PATH", program.display())]
    NotInPath { program: PathBuf },
    #[error("Cannot sandbox the VM")]
    Jail(#[from] crate::jail::JailError),
    #[error("QEMU's monitor")]
    Qmp(#[from] qmp::QmpError),
    #[error("sfera-vmm's API")]
    VmmApi(#[from] control::client::CallError),
    #[error("{hypervisor} exited at start: {log}")]
    ExitedAtStart {
        hypervisor: &'static str,
        log: String,
    },
    #[error("{hypervisor} (pid {pid}) did not {what} within {secs} s: {log}")]
    StartTimeout {
        hypervisor: &'static str,
        pid: u32,
        what: &'static str,
        secs: u64,
        log: String,
    },
    #[error("{hypervisor} (pid {pid}) does not exit")]
    DoesNotExit {
        hypervisor: &'static str,
        pid: u32,
        /// Why the clean stop failed, if it did.
        #[source]
        stop: Option<Box<DriverError>>,
    },
}

impl DriverError {
    /// The error and its causes in one line, for events and answers.
    pub fn chain(&self) -> String {
        control::error_chain(self)
    }
}

/// The hypervisor process of a VM, if it runs.
pub fn running_pid(driver: Driver, p: &VmPaths) -> Option<u32> {
    match driver {
        Driver::Qemu => qemu::running_pid(p),
        Driver::SferaVmm => sfera_vmm::running_pid(p),
    }
}

/// Ends the hypervisor process (the power cord), and removes what its
/// sandbox left.
pub async fn stop(driver: Driver, p: &VmPaths, pid: u32) -> Result<(), DriverError> {
    match driver {
        Driver::Qemu => qemu::stop(p, pid).await,
        Driver::SferaVmm => sfera_vmm::stop(p, pid).await,
    }?;
    crate::jail::clean_up(p).await;
    Ok(())
}

/// Stops the vCPUs (the VM's memory and devices stay).
pub async fn pause(driver: Driver, p: &VmPaths) -> Result<(), DriverError> {
    match driver {
        Driver::Qemu => drop(qmp::execute(&p.qmp(), qmp::Command::Stop).await?),
        Driver::SferaVmm => sfera_vmm::request(p, sfera_vmm::Request::Pause).await?,
    };
    Ok(())
}

/// Runs the vCPUs again.
pub async fn resume(driver: Driver, p: &VmPaths) -> Result<(), DriverError> {
    match driver {
        Driver::Qemu => drop(qmp::execute(&p.qmp(), qmp::Command::Cont).await?),
        Driver::SferaVmm => sfera_vmm::request(p, sfera_vmm::Request::Resume).await?,
    };
    Ok(())
}

/// Whether a running hypervisor has the VM running or paused, as it says.
pub async fn observed_state(driver: Driver, p: &VmPaths) -> Result<VmState, DriverError> {
    let paused = match driver {
        Driver::Qemu => {
            let s = qmp::execute(&p.qmp(), qmp::Command::QueryStatus).await?;
            s["status"] == "paused"
        }
        Driver::SferaVmm => sfera_vmm::info(p).await?.state == "paused",
    };
    Ok(if paused {
        VmState::Paused
    } else {
        VmState::Running
    })
}

/// Readies the VM's directory for a power-on: private to mgmtd's user (it
/// holds the display socket, which takes no password, and the console
/// socket, the guest's root shell), and a console log of this power-on
/// only. The last power-on's log is kept as
/// [`VmPaths::previous_console_log`]: seeded into a new console, its
/// terminal queries would be answered into the new boot.
pub fn prepare_power_on(p: &VmPaths) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&p.dir)?;
    // A directory made before this rule keeps its mode otherwise.
    std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o700))?;
    match std::fs::rename(p.console_log(), p.previous_console_log()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether a VM under `driver` has a screen: QEMU gives it a VGA card;
/// sfera-vmm has no framebuffer, only the serial console.
pub fn has_display(driver: Driver) -> bool {
    driver == Driver::Qemu
}

/// Where a console hub gets what the guest printed before it connected:
/// QEMU's console log (its chardev writes it beside the socket), and
/// sfera-vmm's own socket, which sends it framed ahead of the live output
/// (see [`crate::sfera_vmm::console_history`]).
pub fn console_history(driver: Driver, p: &VmPaths) -> crate::console::History {
    match driver {
        Driver::Qemu => crate::console::History::Log(p.console_log()),
        Driver::SferaVmm => sfera_vmm::console_history(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Accel;

    fn host(kind: &str, default: &str, vmm: bool) -> HostFacts {
        HostFacts {
            hostname: "h".into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            kvm: kind != "none",
            kvm_kind: kind.into(),
            default_driver: default.into(),
            accel: if default == "sfera-vmm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            },
            qemu_cpu: None,
            driver_reason: format!("{kind} host"),
            sfera_vmm_available: vmm,
        }
    }

    fn kernel() -> Boot {
        Boot::Kernel {
            kernel: "/k".into(),
            initrd: None,
            cmdline: String::new(),
        }
    }

    #[test]
    fn the_host_decides_unless_a_driver_is_asked_for() {
        let hw = host("intel", "sfera-vmm", true);
        let (d, why) = choose(&hw, &kernel(), None).unwrap();
        assert_eq!(d, Driver::SferaVmm);
        assert!(why.contains("hardware"), "{why}");
        let (d, why) = choose(&hw, &kernel(), Some(Driver::Qemu)).unwrap();
        assert_eq!(d, Driver::Qemu);
        assert!(why.contains("-accel kvm"), "{why}");

        let pvm = host("pvm", "qemu", true);
        let (d, why) = choose(&pvm, &kernel(), None).unwrap();
        assert_eq!((d, why.as_str()), (Driver::Qemu, "pvm host"));
        let (d, why) = choose(&pvm, &kernel(), Some(Driver::SferaVmm)).unwrap();
        assert_eq!(d, Driver::SferaVmm);
        assert!(why.contains("CPL3"), "{why}");

        let none = host("none", "qemu", false);
        let e = choose(&none, &kernel(), Some(Driver::SferaVmm)).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert!(e.to_string().starts_with("driver:"), "{e}");

        // A disk's boot loader needs firmware: QEMU, even on hardware.
        let (d, why) = choose(&hw, &Boot::Disk, None).unwrap();
        assert_eq!(d, Driver::Qemu);
        assert!(why.contains("firmware"), "{why}");
        let e = choose(&hw, &Boot::Disk, Some(Driver::SferaVmm)).unwrap_err();
        assert!(e.to_string().contains("firmware"), "{e}");
        let iso = Boot::Iso {
            iso: "/srv/installer.iso".into(),
        };
        assert_eq!(choose(&hw, &iso, None).unwrap().0, Driver::Qemu);
    }

    #[test]
    fn a_power_on_starts_a_new_console_log_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = VmPaths::new(tmp.path(), "vm-1");
        prepare_power_on(&p).unwrap();
        let mode = std::fs::metadata(&p.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!p.console_log().exists() && !p.previous_console_log().exists());

        std::fs::write(p.console_log(), "first boot\x1b[6n").unwrap();
        std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_power_on(&p).unwrap();
        assert!(!p.console_log().exists());
        assert_eq!(
            std::fs::read_to_string(p.previous_console_log()).unwrap(),
            "first boot\x1b[6n"
        );
        let mode = std::fs::metadata(&p.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn names_round_trip() {
        for n in Driver::NAMES {
            assert_eq!(Driver::parse(n).as_str(), n);
            let d: Driver = serde_json::from_value(serde_json::json!(n)).unwrap();
            assert_eq!(d.as_str(), n);
        }
        assert!(serde_json::from_value::<Driver>(serde_json::json!("xen")).is_err());
    }
}
