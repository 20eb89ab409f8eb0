//! The sfera-vmm driver: a VM is one `sfera-vmm` process started from a
//! JSON config file (`vmm.json` in the VM's directory), its disks on
//! sfera-blockd's vhost-user-blk exports and its NICs on sfera-vswitchd's
//! vhost-user ports, its control API on `api.sock` (pause, resume,
//! shutdown, info) and its serial console on `console.sock`. Its stdout,
//! the console's copy, goes to `console.log`; its diagnostics to
//! `vmm.log`. mgmtd writes its pid to `vmm.pid` and finds it again from
//! there after a restart, as it does QEMU.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::Method;
use vmm::config::{ConsoleConfig, ConsoleHistory, DiskConfig, NetConfig, SocketMode, VmConfig};

use crate::console::History;
use crate::db::Boot;
use crate::driver::{DriverError, VmPaths};
use crate::qemu::Launch;
use crate::{jail, pid};
use control::client::{CallError, UnixApi};

/// The requests mgmtd sends a running sfera-vmm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Pause,
    Resume,
    /// Ends the VM at once (a power cord) and the process with it.
    Shutdown,
}

impl Request {
    /// Its path on sfera-vmm's API (all are `PUT`s without a body).
    pub fn path(self) -> &'static str {
        match self {
            Request::Pause => "/v1/vm/pause",
            Request::Resume => "/v1/vm/resume",
            Request::Shutdown => "/v1/vm/shutdown",
        }
    }
}

/// What mgmtd reads of sfera-vmm's `GET /v1/vm`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Info {
    /// `created`, `running`, `paused`, `shutdown`...
    pub state: String,
}

/// sfera-vmm's configuration for a VM (vmm/README.md, "Running a VM");
/// sfera-vmm boots kernels only (the driver choice sees to that).
pub fn config(l: &Launch<'_>) -> Result<VmConfig, DriverError> {
    let vm = l.vm;
    let Boot::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &vm.boot
    else {
        return Err(DriverError::NeedsFirmware {
            vm: vm.name.clone(),
        });
    };
    Ok(VmConfig {
        vcpus: vm.vcpus,
        memory_mib: u64::from(vm.memory_mib),
        hugepages: false,
        kernel: kernel.into(),
        initrd: initrd.as_ref().map(Into::into),
        cmdline: cmdline.clone(),
        // mgmtd's console hub keeps a viewer's history apart from live
        // output (a terminal must not answer the queries in a history), so
        // the socket frames its history; the standard output is the VM's
        // console.log, the downloadable record of this power-on.
        console: ConsoleConfig {
            stdout: true,
            socket: Some(l.paths.console()),
            history: ConsoleHistory::Framed,
        },
        disks: l
            .disk_sockets
            .iter()
            .map(|s| DiskConfig {
                socket: s.clone(),
                mode: SocketMode::Connect,
                read_only: false,
            })
            .collect(),
        nets: l
            .nic_sockets
            .iter()
            .zip(&vm.nics)
            .map(|(s, n)| NetConfig {
                socket: s.clone(),
                mode: SocketMode::Connect,
                mac: n.mac.clone(),
                mtu: vmm::config::DEFAULT_MTU,
            })
            .collect(),
        rng: true,
    })
}

fn api(p: &VmPaths) -> UnixApi {
    UnixApi::new("sfera-vmm", &p.vmm_api())
}

/// The tail of the VMM's diagnostics, for an error message.
fn log_tail(p: &VmPaths) -> String {
    jail::log_tail(&p.vmm_log(), 3)
}

/// How long sfera-vmm has to report a running VM.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts sfera-vmm for the VM in its sandbox (docs/sandbox.md: its own
/// uid, namespaces and cgroup, under its seccomp filter) and waits until
/// its API says the VM runs; returns its pid. The process is in its own
/// process group and outlives mgmtd.
pub async fn start(binary: &Path, jailer: &Path, l: &Launch<'_>) -> Result<u32, DriverError> {
    let p = l.paths;
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| DriverError::Io { what, path, source }
    };
    std::fs::create_dir_all(&p.dir).map_err(io("create", &p.dir))?;
    // The last power-on's API socket lock belongs to its uid (which may
    // differ from this one's), and the sticky directory keeps this VMM
    // from replacing it: mgmtd removes it, as it does the socket.
    let api_lock = control::socket::lock_path(&p.vmm_api());
    for f in [p.vmm_pidfile(), p.vmm_api(), api_lock, p.console()] {
        let _ = std::fs::remove_file(f);
    }
    let mut text = serde_json::to_vec_pretty(&config(l)?).expect("a VmConfig serialises");
    text.push(b'\n');
    std::fs::write(p.vmm_config(), text).map_err(io("write", &p.vmm_config()))?;
    let pid = jail::start(jail::VmProcess {
        launch: l,
        jailer,
        command: vec![
            binary.into(),
            "--config".into(),
            p.vmm_config().into(),
            "--api-sock".into(),
            p.vmm_api().into(),
            "--seccomp".into(),
            "kill".into(),
        ],
        pidfile: p.vmm_pidfile(),
        overhead_mib: jail::VMM_OVERHEAD_MIB,
        kvm: true,
        writable: Vec::new(),
        stdout: p.console_log(),
        stderr: p.vmm_log(),
    })
    .await?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !pid::alive(pid) {
            return Err(DriverError::ExitedAtStart {
                hypervisor: "sfera-vmm",
                log: log_tail(p),
            });
        }
        if let Ok(info) = info(p).await
            && (info.state == "running" || info.state == "paused")
        {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            pid::signal(pid, libc::SIGKILL);
            return Err(DriverError::StartTimeout {
                hypervisor: "sfera-vmm",
                pid,
                what: "report a running VM",
                secs: START_TIMEOUT.as_secs(),
                log: log_tail(p),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid of this VM's sfera-vmm if it runs: the pidfile names a live
/// process whose command line has this VM's API socket.
pub fn running_pid(p: &VmPaths) -> Option<u32> {
    let pid = pid::read_pidfile(&p.vmm_pidfile())?;
    pid::alive_with_arg(pid, &p.vmm_api().to_string_lossy()).then_some(pid)
}

/// How the running sfera-vmm's console socket starts its stream, as the
/// configuration it was started with says: framed history from this
/// mgmtd's launches; a VMM started by an older mgmtd replays its history
/// as plain bytes, which can only be taken for live output.
pub fn console_history(p: &VmPaths) -> History {
    let framed = jail::open_vm_file(&p.vmm_config(), false)
        .ok()
        .and_then(|f| serde_json::from_reader::<_, VmConfig>(std::io::BufReader::new(f)).ok())
        .is_some_and(|c| c.console.history == ConsoleHistory::Framed);
    if framed {
        History::Framed
    } else {
        History::Live
    }
}

/// The VM as sfera-vmm reports it.
pub async fn info(p: &VmPaths) -> Result<Info, CallError> {
    api(p).get_as("/v1/vm").await
}

/// Sends `request` (a `PUT` without a body).
pub async fn request(p: &VmPaths, request: Request) -> Result<(), CallError> {
    api(p)
        .call(Method::PUT, request.path(), None)
        .await
        .map(drop)
}

/// Stops sfera-vmm: a shutdown request (the VM ends at once, like a power
/// cord), SIGKILL if it lingers.
pub async fn stop(p: &VmPaths, pid: u32) -> Result<(), DriverError> {
    let err = request(p, Request::Shutdown).await.err();
    if !crate::qemu::wait_gone(pid, Duration::from_secs(10)).await {
        pid::signal(pid, libc::SIGKILL);
        if !crate::qemu::wait_gone(pid, Duration::from_secs(5)).await {
            return Err(DriverError::DoesNotExit {
                hypervisor: "sfera-vmm",
                pid,
                stop: err.map(|e| Box::new(e.into())),
            });
        }
    }
    let _ = std::fs::remove_file(p.vmm_pidfile());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::host::Accel;

    #[test]
    fn the_config_names_the_sockets_in_order() {
        let mut vm = crate::qemu::tests::one_disk_one_nic();
        vm.memory_mib = 64;
        vm.boot = Boot::Kernel {
            kernel: "/g/testguest.elf".into(),
            initrd: None,
            cmdline: "require=blk".into(),
        };
        let paths = VmPaths::new(Path::new("/r/vms"), "vm-1");
        let c = config(&Launch {
            vm: &vm,
            paths: &paths,
            accel: Accel::Tcg,
            qemu_cpu: None,
            disk_sockets: &[PathBuf::from("/r/blk/d.sock")],
            nic_sockets: &[PathBuf::from("/r/net/n.sock")],
        })
        .unwrap();
        assert_eq!((c.vcpus, c.memory_mib, c.initrd.as_deref()), (2, 64, None));
        assert_eq!(
            c.console.socket.as_deref(),
            Some(Path::new("/r/vms/vm-1/console.sock"))
        );
        assert_eq!(c.disks[0].socket, Path::new("/r/blk/d.sock"));
        assert_eq!(c.disks[0].mode, SocketMode::Connect);
        assert_eq!(c.nets[0].mac, "52:54:00:12:34:56");
        // The file mgmtd writes is what sfera-vmm reads.
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<VmConfig>(&text).unwrap(), c);
        assert_eq!(
            Request::Shutdown.path(),
            "/v1/vm/shutdown",
            "sfera-vmm's route"
        );
    }

    #[test]
    fn a_viewer_takes_the_history_as_the_vmm_was_told_to_send_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VmPaths::new(dir.path(), "vm-1");
        std::fs::create_dir_all(&paths.dir).unwrap();
        assert_eq!(console_history(&paths), History::Live, "no VMM yet");
        let mut vm = crate::qemu::tests::one_disk_one_nic();
        vm.boot = Boot::Kernel {
            kernel: "/g/testguest.elf".into(),
            initrd: None,
            cmdline: String::new(),
        };
        let mut c = config(&Launch {
            vm: &vm,
            paths: &paths,
            accel: Accel::Tcg,
            qemu_cpu: None,
            disk_sockets: &[],
            nic_sockets: &[],
        })
        .unwrap();
        std::fs::write(paths.vmm_config(), serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(console_history(&paths), History::Framed);
        // A VMM started (by an older mgmtd) with the plain replay.
        c.console.history = ConsoleHistory::Replay;
        std::fs::write(paths.vmm_config(), serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(console_history(&paths), History::Live);
    }
}
