//! Every VM process runs jailed and the guest still works through the jail (sfera-vmm, QEMU).
//!
//! The VM sandbox (docs/sandbox.md), checked from outside on VMs that
//! mgmtd starts: each VM process (sfera-vmm with sfera-vmm's test guest,
//! QEMU with the same guest) runs as its own non-root uid with no
//! capabilities, in mount, PID and IPC namespaces of its own, under a
//! seccomp filter, in a cgroup with the VM's memory and CPU limits, and
//! sees none of the host's files but its own; the guest still uses its
//! disk and NIC through the jail; powering off removes the cgroup.

mod mgmt_client;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::mgmtd::Site;
use mgmt_client::{Cred, Mgmtd, poll};
use serde_json::{Value, json};

/// The first uid mgmtd gives VM processes (mgmt/src/jail/mod.rs).
const VM_UID_BASE: u64 = 1_500_000_000;

/// A field of /proc/<pid>/status.
fn status_field(pid: u64, name: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {name} in the status of {pid}"))
}

fn namespace(pid: u64, kind: &str) -> Result<PathBuf> {
    Ok(std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))?)
}

/// The directory of the v1 `controller` hierarchy or the v2 hierarchy
/// that holds `pid`, from /proc/<pid>/cgroup and the mounts.
fn cgroup_dir(pid: u64, controller: &str) -> Result<(PathBuf, bool)> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let v2 = controllers.is_empty();
        let wanted = if v2 {
            "cgroup2"
        } else if controllers.split(',').any(|c| c == controller) {
            "cgroup"
        } else {
            continue;
        };
        let mount = mounts.lines().find_map(|m| {
            let (left, right) = m.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or("");
            let ok = fstype == wanted && (v2 || options.split(',').any(|o| o == controller));
            ok.then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        });
        if let Some(mount) = mount {
            let dir = mount.join(path.trim_start_matches('/'));
            // The v2 line exists on hybrid hosts too: it counts when it
            // has the controller's files.
            if !v2 || dir.join(format!("{controller}.max")).exists() {
                return Ok((dir, v2));
            }
        }
    }
    bail!("{pid} is in no {controller} cgroup:\n{cgroups}")
}

/// The VM's memory limit in bytes, and its cgroup directories.
fn memory_limit(pid: u64) -> Result<(u64, PathBuf)> {
    let (dir, v2) = cgroup_dir(pid, "memory")?;
    let file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limit = std::fs::read_to_string(dir.join(file))?.trim().parse()?;
    Ok((limit, dir))
}

/// Checks what a VM's process is allowed from outside; returns its uid
/// and its memory cgroup.
fn check_sandbox(
    pid: u64,
    mgmtd_pid: u64,
    memory_mib: u64,
    vm_dir: &Path,
    private: &[&Path],
) -> Result<(u64, PathBuf)> {
    let uids = status_field(pid, "Uid")?;
    let uid: u64 = uids.split_whitespace().next().context("no uid")?.parse()?;
    ensure!(
        uid >= VM_UID_BASE && uids.split_whitespace().all(|u| u == uid.to_string()),
        "{pid} runs as uids {uids}"
    );
    let gids = status_field(pid, "Gid")?;
    ensure!(!gids.split_whitespace().any(|g| g == "0"), "gids {gids}");
    ensure!(
        status_field(pid, "Groups")?.is_empty(),
        "supplementary groups"
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        ensure!(
            status_field(pid, caps)? == "0000000000000000",
            "{pid} has {caps} {}",
            status_field(pid, caps)?
        );
    }
    ensure!(status_field(pid, "NoNewPrivs")? == "1");
    ensure!(status_field(pid, "Seccomp")? == "2", "no seccomp filter");
    for kind in ["mnt", "pid", "ipc"] {
        ensure!(
            namespace(pid, kind)? != namespace(mgmtd_pid, kind)?,
            "{pid} shares mgmtd's {kind} namespace"
        );
    }
    // PID 1 of its own PID namespace.
    ensure!(
        status_field(pid, "NSpid")?.ends_with("\t1") || status_field(pid, "NSpid")?.ends_with(" 1")
    );

    let (limit, cgroup) = memory_limit(pid)?;
    ensure!(
        limit > memory_mib << 20 && limit <= (memory_mib + 1024) << 20,
        "memory limit {limit} for a {memory_mib} MiB VM ({})",
        cgroup.display()
    );
    let (cpu, v2) = cgroup_dir(pid, "cpu")?;
    let quota = if v2 {
        std::fs::read_to_string(cpu.join("cpu.max"))?
    } else {
        std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))?
    };
    ensure!(
        !quota.starts_with("max") && !quota.starts_with("-1"),
        "no CPU limit: {quota}"
    );

    // What the jail shows: its own directory, none of the host's files.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    ensure!(inside(vm_dir).is_dir(), "the VM dir is not in the jail");
    for hidden in [Path::new("/etc/shadow"), Path::new("/etc/passwd")]
        .into_iter()
        .chain(private.iter().copied())
    {
        ensure!(hidden.exists(), "{} is not on the host", hidden.display());
        ensure!(
            !inside(hidden).exists(),
            "{} is visible in the jail",
            hidden.display()
        );
    }
    Ok((uid, cgroup))
}

/// The VM's id and its hypervisor's pid, once running.
fn power_on(m: &Mgmtd, token: &str, name: &str) -> Result<(String, u64)> {
    m.power(token, name, "on")?;
    let vm = m.expect(
        Cred::Bearer(token),
        "GET",
        &format!("/api/v1/vms/{name}"),
        None,
        200,
    )?;
    ensure!(vm["state"] == "running", "{vm}");
    let id = vm["id"].as_str().context("no id")?.to_owned();
    let pid = vm["pid"].as_u64().context("no pid")?;
    Ok((id, pid))
}

fn create(m: &Mgmtd, token: &str, body: &Value) -> Result<()> {
    let task = m.expect(Cred::Bearer(token), "POST", "/api/v1/vms", Some(body), 202)?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn vm_processes_run_in_their_sandbox() -> Result<()> {
    let elf = harness::testguest::elf()?;
    let site = Site::without_guest_image("mgmt-sandbox")?;
    let m = Mgmtd::start(&site, false, 1)?;
    let token = m.admin_token(&site.dir.join("cookies"))?;
    let mgmtd_pid = u64::from(m.process.as_ref().context("no mgmtd")?.pid());
    let imported = m.data.join("import/testguest.elf");
    std::fs::copy(&elf, &imported)?;
    let vms = m.data.join("run/vms");

    // sfera-vmm with a disk and a NIC: its guest benchmarks the disk for
    // 10 s (time to look at it), sends frames and powers off.
    let cmdline =
        "require=rng,blk,net blk.bench=10000 blk.req=8 blk.depth=4 net.role=send net.count=4";
    let body = json!({ "name": "tg", "driver": "sfera-vmm", "vcpus": 1, "memory_mib": 128,
                       "boot": { "kind": "kernel", "kernel": imported, "cmdline": cmdline },
                       "disks": [{ "datastore": "local", "size_bytes": 64 << 20 }],
                       "nics": [{ "port_group": "vm-network" }] });
    create(&m, &token, &body)?;
    // QEMU (TCG here) with the same guest and no devices: it waits for a
    // disk that is not there; its process is what is looked at.
    let qemu_body = json!({ "name": "qg", "driver": "qemu", "vcpus": 1, "memory_mib": 128,
                            "boot": { "kind": "kernel", "kernel": imported, "cmdline": "require=rng" } });
    create(&m, &token, &qemu_body)?;

    let (tg, vmm_pid) = power_on(&m, &token, "tg")?;
    let (qg, qemu_pid) = power_on(&m, &token, "qg")?;
    let private = [
        m.data.join("mgmt.db"),
        m.data.join("run/vswitchd.pid"),
        vms.join(&qg),
    ];
    let private: Vec<&Path> = private.iter().map(PathBuf::as_path).collect();
    let (vmm_uid, vmm_cgroup) = check_sandbox(vmm_pid, mgmtd_pid, 128, &vms.join(&tg), &private)?;
    let qemu_private = [m.data.join("mgmt.db"), vms.join(&tg)];
    let qemu_private: Vec<&Path> = qemu_private.iter().map(PathBuf::as_path).collect();
    let (qemu_uid, qemu_cgroup) =
        check_sandbox(qemu_pid, mgmtd_pid, 128, &vms.join(&qg), &qemu_private)?;
    ensure!(vmm_uid != qemu_uid, "two VMs share uid {vmm_uid}");
    ensure!(vmm_cgroup != qemu_cgroup);
    // /dev/kvm in sfera-vmm's jail is its own; QEMU under TCG has none.
    let kvm = std::fs::metadata(format!("/proc/{vmm_pid}/root/dev/kvm"))?;
    ensure!(u64::from(std::os::unix::fs::MetadataExt::uid(&kvm)) == vmm_uid);
    ensure!(!Path::new(&format!("/proc/{qemu_pid}/root/dev/kvm")).exists());

    // The guest reaches its disk and NIC through the jail and powers off.
    let console = vms.join(&tg).join("console.log");
    let text = poll("the test guest's report", Duration::from_secs(120), || {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        Ok(text
            .contains("SFERA-TESTGUEST done status=")
            .then_some(text))
    })?;
    let report = harness::testguest::Report::parse(&text);
    if let Some(why) = report.failure(&["rng ok", "blk ok bench", "net ok role=send"]) {
        bail!(why);
    }
    poll("tg to stop", Duration::from_secs(30), || {
        Ok((m.vm_state(&token, "tg")? == "stopped").then_some(()))
    })?;
    poll("tg's cgroup to go", Duration::from_secs(10), || {
        Ok((!vmm_cgroup.exists()).then_some(()))
    })?;

    m.power(&token, "qg", "off")?;
    ensure!(!qemu_cgroup.exists(), "{} is left", qemu_cgroup.display());
    Ok(())
}
