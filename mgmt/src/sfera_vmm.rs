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
use serde_json::{Value, json};

use crate::db::Boot;
use crate::driver::VmPaths;
use crate::qemu::Launch;
use crate::{jail, pid};
use control::client::UnixApi;

/// sfera-vmm's configuration for a VM (vmm/README.md, "Running a VM");
/// sfera-vmm boots kernels only (the driver choice sees to that).
pub fn config(l: &Launch<'_>) -> Result<Value, String> {
    let vm = l.vm;
    let Boot::Kernel {
        kernel,
        initrd,
        cmdline,
    } = &vm.boot
    else {
        return Err(format!(
            "VM {} boots through firmware, which sfera-vmm has not",
            vm.name
        ));
    };
    Ok(json!({
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": cmdline,
        "console": { "stdout": true, "socket": l.paths.console() },
        "disks": l.disk_sockets.iter()
            .map(|s| json!({ "socket": s, "mode": "connect", "read_only": false }))
            .collect::<Vec<_>>(),
        "nets": l.nic_sockets.iter().zip(&vm.nics)
            .map(|(s, n)| json!({ "socket": s, "mode": "connect", "mac": n.mac }))
            .collect::<Vec<_>>(),
        "rng": true,
    }))
}

fn api(p: &VmPaths) -> UnixApi {
    UnixApi::new("sfera-vmm", &p.vmm_api())
}

/// The tail of the VMM's diagnostics, for an error message.
fn log_tail(p: &VmPaths) -> String {
    jail::log_tail(&p.vmm_log(), 3)
}

/// Starts sfera-vmm for the VM in its sandbox (docs/sandbox.md: its own
/// uid, namespaces and cgroup, under its seccomp filter) and waits until
/// its API says the VM runs; returns its pid. The process is in its own
/// process group and outlives mgmtd.
pub async fn start(binary: &Path, jailer: &Path, l: &Launch<'_>) -> Result<u32, String> {
    let p = l.paths;
    std::fs::create_dir_all(&p.dir)
        .map_err(|e| format!("Cannot create {}: {e}", p.dir.display()))?;
    for f in [p.vmm_pidfile(), p.vmm_api(), p.console()] {
        let _ = std::fs::remove_file(f);
    }
    let text = serde_json::to_string_pretty(&config(l)?).map_err(|e| e.to_string())?;
    std::fs::write(p.vmm_config(), text)
        .map_err(|e| format!("Cannot write {}: {e}", p.vmm_config().display()))?;
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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if !pid::alive(pid) {
            return Err(format!("sfera-vmm exited at start: {}", log_tail(p)));
        }
        if let Ok(s) = state(p).await
            && (s == "running" || s == "paused")
        {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            pid::signal(pid, libc::SIGKILL);
            return Err(format!(
                "sfera-vmm (pid {pid}) did not report a running VM within 15 s: {}",
                log_tail(p)
            ));
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

/// The VM's state as sfera-vmm reports it (`running`, `paused`, ...).
pub async fn state(p: &VmPaths) -> Result<String, String> {
    let v = api(p).get("/v1/vm").await.map_err(|e| e.to_string())?;
    v["state"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("sfera-vmm answered GET /v1/vm without a state: {v}"))
}

/// `PUT /v1/vm/{action}`: pause, resume or shutdown.
pub async fn put(p: &VmPaths, action: &str) -> Result<(), String> {
    api(p)
        .call(Method::PUT, &format!("/v1/vm/{action}"), None)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Stops sfera-vmm: a shutdown request (the VM ends at once, like a power
/// cord), SIGKILL if it lingers.
pub async fn stop(p: &VmPaths, pid: u32) -> Result<(), String> {
    let err = put(p, "shutdown").await.err();
    if !crate::qemu::wait_gone(pid, Duration::from_secs(10)).await {
        pid::signal(pid, libc::SIGKILL);
        if !crate::qemu::wait_gone(pid, Duration::from_secs(5)).await {
            return Err(format!(
                "sfera-vmm (pid {pid}) does not exit{}",
                err.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
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
        assert_eq!(c["vcpus"], 2);
        assert_eq!(c["memory_mib"], 64);
        assert_eq!(c["initrd"], Value::Null);
        assert_eq!(c["console"]["socket"], "/r/vms/vm-1/console.sock");
        assert_eq!(c["disks"][0]["socket"], "/r/blk/d.sock");
        assert_eq!(c["disks"][0]["mode"], "connect");
        assert_eq!(c["nets"][0]["mac"], "52:54:00:12:34:56");
    }
}
