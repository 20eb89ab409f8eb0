//! The QEMU driver: a VM is a QEMU process in its sandbox with its RAM in a
//! shared memfd, its disks on sfera-blockd's vhost-user-blk exports and its
//! NICs on sfera-vswitchd's vhost-user ports, exactly as the project's test
//! harness runs guests. Each VM has a directory with its pidfile, its QMP
//! socket and its serial console socket (with a log of everything the
//! console printed); mgmtd finds a running VM again from these after a
//! restart.

pub mod cpu;
pub mod qmp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::db::{Boot, Vm};
use crate::driver::DriverError;
pub use crate::driver::VmPaths;
use crate::host::Accel;
use crate::pid;

/// What QEMU needs besides the VM record.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub vm: &'a Vm,
    pub paths: &'a VmPaths,
    pub accel: Accel,
    /// The `-cpu` model under KVM ([`cpu::probe`]'s answer); `host` when
    /// none was probed.
    pub qemu_cpu: Option<&'a str>,
    /// The vhost-user-blk socket of each disk, in order.
    pub disk_sockets: &'a [PathBuf],
    /// The vhost-user-net socket of each NIC, in order.
    pub nic_sockets: &'a [PathBuf],
}

/// QEMU's arguments for a VM.
pub fn args(l: &Launch<'_>) -> Vec<String> {
    let vm = l.vm;
    let mem = format!("{}M", vm.memory_mib);
    let p = l.paths;
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("guest={},debug-threads=on", vm.name),
        "-accel".into(),
        l.accel.as_str().into(),
    ];
    if l.accel == Accel::Kvm {
        a.extend(["-cpu".into(), l.qemu_cpu.unwrap_or("host").into()]);
    }
    a.extend([
        "-machine".into(),
        "pc,memory-backend=mem".into(),
        "-m".into(),
        mem.clone(),
        "-smp".into(),
        vm.vcpus.to_string(),
        // vhost-user backends map guest RAM: it must be a shared memfd.
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-chardev".into(),
        format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            p.console().display(),
            p.console_log().display()
        ),
        "-serial".into(),
        "chardev:serial0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p.qmp().display()),
        // QEMU's own seccomp filter, on top of the jail (docs/sandbox.md).
        // No -runas: the jailer has made QEMU the VM's uid before exec,
        // so it never holds root. No -daemonize or -pidfile either: QEMU
        // is PID 1 of its PID namespace (a daemonizing parent's exit
        // would end the namespace) and the jailer writes the host's pid.
        "-sandbox".into(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
    ]);
    a.extend(display_args(p));
    match &vm.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            a.extend(["-kernel".into(), kernel.clone()]);
            if let Some(i) = initrd {
                a.extend(["-initrd".into(), i.clone()]);
            }
            a.extend(["-append".into(), cmdline.clone()]);
        }
        // SeaBIOS boots the first disk (bootindex below).
        Boot::Disk => {}
        // The ISO as a CD-ROM on the machine's IDE controller, booted first.
        Boot::Iso { iso } => a.extend([
            "-drive".into(),
            format!(
                "file={},media=cdrom,if=none,id=cd0,readonly=on,format=raw",
                iso.replace(',', ",,")
            ),
            "-device".into(),
            "ide-cd,drive=cd0,bootindex=0".into(),
        ]),
    }
    for (i, socket) in l.disk_sockets.iter().enumerate() {
        let boot = if i == 0 && vm.boot == Boot::Disk {
            ",bootindex=0"
        } else {
            ""
        };
        a.extend([
            "-chardev".into(),
            format!("socket,id=blk{i},path={},reconnect=1", socket.display()),
            "-device".into(),
            format!("vhost-user-blk-pci,chardev=blk{i},num-queues=1{boot}"),
        ]);
    }
    for (i, (socket, nic)) in l.nic_sockets.iter().zip(&vm.nics).enumerate() {
        a.extend([
            "-chardev".into(),
            format!("socket,id=net{i},path={},reconnect=1", socket.display()),
            "-netdev".into(),
            format!("vhost-user,id=net{i},chardev=net{i}"),
            // QEMU 7.2 under TCG crashes in its MSI-X path when a
            // vhost-user NIC starts with MSI-X: INTx (see DESIGN.md).
            "-device".into(),
            format!("virtio-net-pci,netdev=net{i},mac={},vectors=0", nic.mac),
        ]);
    }
    a
}

/// The VM's screen: a standard VGA card (what firmware and installers
/// draw on) shown by QEMU's VNC server on a Unix socket in the VM's
/// private directory, never a TCP port. It has no VNC password: only
/// mgmtd reaches the socket, and it lets administrators in
/// ([`crate::api::display_ws`]). No local window (`-display none`).
fn display_args(p: &VmPaths) -> [String; 6] {
    [
        "-display".into(),
        "none".into(),
        "-vga".into(),
        "std".into(),
        "-vnc".into(),
        format!("unix:{}", p.display().display()),
    ]
}

/// How long QEMU has to open its QMP socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts QEMU in the VM's sandbox (docs/sandbox.md); returns its pid
/// once its QMP monitor answers, which QEMU opens when the VM is set up.
pub async fn start(qemu: &Path, jailer: &Path, l: &Launch<'_>) -> Result<u32, DriverError> {
    let p = l.paths;
    std::fs::create_dir_all(&p.dir).map_err(|source| DriverError::Io {
        what: "create",
        path: p.dir.clone(),
        source,
    })?;
    // The last power-on's sockets belong to its uid, and the sticky VM
    // directory keeps this one's QEMU (its uid may differ) from removing
    // them: mgmtd does.
    for f in [p.pidfile(), p.qmp(), p.console(), p.display()] {
        let _ = std::fs::remove_file(f);
    }
    let program = absolute_program(qemu)?;
    let mut command = vec![program.into_os_string()];
    command.extend(args(l).into_iter().map(Into::into));
    let pid = crate::jail::start(crate::jail::VmProcess {
        launch: l,
        jailer,
        command,
        pidfile: p.pidfile(),
        overhead_mib: crate::jail::QEMU_OVERHEAD_MIB,
        kvm: l.accel == Accel::Kvm,
        writable: vec![p.console_log()],
        stdout: p.qemu_log(),
        stderr: p.qemu_log(),
    })
    .await?;
    let log = || crate::jail::log_tail(&p.qemu_log(), 3);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !pid::alive(pid) {
            return Err(DriverError::ExitedAtStart {
                hypervisor: "QEMU",
                log: log(),
            });
        }
        if qmp::execute(&p.qmp(), qmp::Command::QueryStatus)
            .await
            .is_ok()
        {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            pid::signal(pid, libc::SIGKILL);
            return Err(DriverError::StartTimeout {
                hypervisor: "QEMU",
                pid,
                what: "open its QMP socket",
                secs: START_TIMEOUT.as_secs(),
                log: log(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `program` as an absolute path, looked up in PATH when it is a bare
/// name: the jail holds the file at that path, and no PATH.
fn absolute_program(program: &Path) -> Result<PathBuf, DriverError> {
    if program.components().count() > 1 {
        return std::path::absolute(program).map_err(|source| DriverError::Io {
            what: "find",
            path: program.to_owned(),
            source,
        });
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| DriverError::NotInPath {
            program: program.to_owned(),
        })
}

/// The pid of this VM's QEMU if it runs: the pidfile names a live process
/// whose command line has this VM's QMP socket.
pub fn running_pid(p: &VmPaths) -> Option<u32> {
    let pid = pid::read_pidfile(&p.pidfile())?;
    pid::alive_with_arg(pid, &p.qmp().to_string_lossy()).then_some(pid)
}

/// Stops QEMU: `quit` over QMP (the power cord), SIGKILL if it lingers.
pub async fn stop(p: &VmPaths, pid: u32) -> Result<(), DriverError> {
    let qmp_err = qmp::execute(&p.qmp(), qmp::Command::Quit).await.err();
    if !wait_gone(pid, Duration::from_secs(10)).await {
        pid::signal(pid, libc::SIGKILL);
        if !wait_gone(pid, Duration::from_secs(5)).await {
            return Err(DriverError::DoesNotExit {
                hypervisor: "QEMU",
                pid,
                stop: qmp_err.map(|e| Box::new(e.into())),
            });
        }
    }
    let _ = std::fs::remove_file(p.pidfile());
    Ok(())
}

/// Waits for `pid` to end; false after `timeout`.
pub(crate) async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid::alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::db::{VmDisk, VmNic, VmState};

    /// A VM with one disk and one NIC, for the drivers' tests.
    pub(crate) fn one_disk_one_nic() -> Vm {
        Vm {
            id: "vm-1".into(),
            name: "tiny".into(),
            host: "a".into(),
            resource_version: 1,
            vcpus: 2,
            memory_mib: 256,
            boot: Boot::Kernel {
                kernel: "/g/vmlinuz".into(),
                initrd: Some("/g/initrd.img".into()),
                cmdline: "console=ttyS0".into(),
            },
            driver: "qemu".into(),
            driver_reason: String::new(),
            state: VmState::Stopped,
            pid: None,
            disks: vec![VmDisk {
                datastore: "local".into(),
                volume: "tiny/disk0".into(),
                size_bytes: 1,
                export_id: "vm-1-disk0".into(),
            }],
            nics: vec![VmNic {
                port_group: "vm-network".into(),
                mac: "52:54:00:12:34:56".into(),
                port: "vm-1-nic0".into(),
            }],
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn kvm_guests_get_the_probed_cpu_model() {
        let vm = one_disk_one_nic();
        let paths = VmPaths::new(Path::new("/r/vms"), "vm-1");
        let kvm = |qemu_cpu| {
            args(&Launch {
                vm: &vm,
                paths: &paths,
                accel: Accel::Kvm,
                qemu_cpu,
                disk_sockets: &[],
                nic_sockets: &[],
            })
            .join(" ")
        };
        let a = kvm(Some("host,-arch-capabilities"));
        assert!(
            a.contains("-accel kvm -cpu host,-arch-capabilities "),
            "{a}"
        );
        let a = kvm(None);
        assert!(a.contains("-accel kvm -cpu host "), "{a}");
    }

    #[test]
    fn args_follow_the_harness() {
        let vm = one_disk_one_nic();
        let paths = VmPaths::new(Path::new("/r/vms"), "vm-1");
        let a = args(&Launch {
            vm: &vm,
            paths: &paths,
            accel: Accel::Tcg,
            qemu_cpu: None,
            disk_sockets: &[PathBuf::from("/r/blk/vm-1-disk0.sock")],
            nic_sockets: &[PathBuf::from("/r/net/vm-1-nic0.sock")],
        })
        .join(" ");
        for part in [
            "-accel tcg -machine pc,memory-backend=mem -m 256M -smp 2",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-chardev socket,id=serial0,path=/r/vms/vm-1/console.sock,server=on,wait=off,logfile=/r/vms/vm-1/console.log",
            "-qmp unix:/r/vms/vm-1/qmp.sock,server=on,wait=off",
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-display none -vga std -vnc unix:/r/vms/vm-1/display.sock",
            "-kernel /g/vmlinuz -initrd /g/initrd.img -append console=ttyS0",
            "-chardev socket,id=blk0,path=/r/blk/vm-1-disk0.sock,reconnect=1 -device vhost-user-blk-pci,chardev=blk0",
            "-netdev vhost-user,id=net0,chardev=net0 -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,vectors=0",
        ] {
            assert!(a.contains(part), "{part:?} not in {a}");
        }
        assert!(!a.contains("-cpu"));
        assert!(!a.contains("bootindex"));
        // Firmware boots: one disk, no NIC.
        let firmware = |boot: Boot| {
            let vm = Vm { boot, ..vm.clone() };
            args(&Launch {
                vm: &vm,
                paths: &paths,
                accel: Accel::Tcg,
                qemu_cpu: None,
                disk_sockets: &[PathBuf::from("/r/blk/vm-1-disk0.sock")],
                nic_sockets: &[],
            })
            .join(" ")
        };
        let a = firmware(Boot::Disk);
        assert!(
            a.contains("vhost-user-blk-pci,chardev=blk0,num-queues=1,bootindex=0"),
            "{a}"
        );
        assert!(!a.contains("-kernel"), "{a}");
        let a = firmware(Boot::Iso {
            iso: "/srv/a,b.iso".into(),
        });
        assert!(
            a.contains("-drive file=/srv/a,,b.iso,media=cdrom,if=none,id=cd0,readonly=on,format=raw -device ide-cd,drive=cd0,bootindex=0"),
            "{a}"
        );
        assert!(a.ends_with("num-queues=1"), "{a}");
    }
}
