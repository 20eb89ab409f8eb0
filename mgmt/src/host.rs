//! What the host offers VMs: CPUs, memory, and which kind of KVM, which
//! decides the hypervisor driver new VMs get (sfera-vmm on hardware
//! virtualization) and how QEMU accelerates guests.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How QEMU runs guest code.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The host's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostFacts {
    pub hostname: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    /// `/dev/kvm` exists.
    pub kvm: bool,
    /// `intel`, `amd`, `pvm` (paravirtual KVM), `unknown` or `none`.
    #[schema(schema_with = crate::api::schema::kvm_kind)]
    pub kvm_kind: String,
    /// The hypervisor driver new VMs with a kernel boot source get
    /// (`sfera-vmm` or `qemu`); boot sources that need firmware always get
    /// QEMU.
    #[schema(schema_with = crate::api::schema::default_driver)]
    pub default_driver: String,
    /// How QEMU accelerates guests here.
    #[schema(inline)]
    pub accel: Accel,
    /// The `-cpu` model QEMU guests get under KVM (`host`, or what this
    /// KVM accepts: see `qemu::cpu`); none (null) under TCG.
    pub qemu_cpu: Option<String>,
    /// Why, in a sentence for the host page.
    pub driver_reason: String,
    /// sfera-vmm can run VMs here at all (a `/dev/kvm` and the binary):
    /// a VM may ask for it even where it is not the default.
    pub sfera_vmm_available: bool,
}

/// Reads the facts from `/proc`, `/sys` and `/dev` under `root` ("/" on a
/// real host; a fake tree in tests).
/// `vmm` is the sfera-vmm binary mgmtd would run.
pub fn detect(root: &Path, forced: Option<Accel>, vmm: &Path) -> HostFacts {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let memory_bytes = read("proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let cpus = read("proc/cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let kvm = root.join("dev/kvm").exists();
    let module = |m: &str| root.join("sys/module").join(m).exists();
    let kvm_kind = if !kvm {
        "none"
    } else if module("kvm_pvm") {
        "pvm"
    } else if module("kvm_intel") {
        "intel"
    } else if module("kvm_amd") {
        "amd"
    } else {
        "unknown"
    };
    let (auto, why) = match kvm_kind {
        "none" => (
            Accel::Tcg,
            "no /dev/kvm: QEMU emulates the CPU (TCG)".to_owned(),
        ),
        "pvm" => (
            Accel::Tcg,
            "KVM here is PVM (paravirtual), under which stock Linux kernels cannot boot: QEMU emulates the CPU (TCG)"
                .to_owned(),
        ),
        k => (
            Accel::Kvm,
            format!("hardware virtualization ({k} KVM): QEMU with -accel kvm"),
        ),
    };
    let (accel, why) = match forced {
        Some(a) if a != auto => (
            a,
            format!("{} forced by --accel (detected: {why})", a.as_str()),
        ),
        _ => (auto, why),
    };
    let hardware = matches!(kvm_kind, "intel" | "amd");
    let vmm_found = vmm.is_file();
    let (default_driver, driver_reason) = if hardware && vmm_found {
        (
            "sfera-vmm",
            format!(
                "hardware virtualization ({kvm_kind} KVM): kernel-boot VMs run under sfera-vmm; VMs that boot through firmware run under QEMU ({why})"
            ),
        )
    } else if hardware {
        (
            "qemu",
            format!(
                "sfera-vmm is not installed ({} is missing); {why}",
                vmm.display()
            ),
        )
    } else {
        ("qemu", why)
    };
    HostFacts {
        hostname: read("proc/sys/kernel/hostname").trim().to_owned(),
        cpus,
        memory_bytes,
        kvm,
        kvm_kind: kvm_kind.to_owned(),
        default_driver: default_driver.to_owned(),
        accel,
        qemu_cpu: None,
        driver_reason,
        sfera_vmm_available: kvm && vmm_found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(pvm: bool, kvm: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(p.join("dev")).unwrap();
        std::fs::write(
            p.join("proc/meminfo"),
            "MemTotal:       2048 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        std::fs::write(
            p.join("proc/cpuinfo"),
            "processor\t: 0\nx\nprocessor\t: 1\n",
        )
        .unwrap();
        std::fs::write(p.join("proc/sys/kernel/hostname"), "h1\n").unwrap();
        if kvm {
            std::fs::write(p.join("dev/kvm"), "").unwrap();
            std::fs::create_dir_all(p.join("sys/module/kvm_intel")).unwrap();
        }
        if pvm {
            std::fs::create_dir_all(p.join("sys/module/kvm_pvm")).unwrap();
        }
        d
    }

    #[test]
    fn pvm_means_tcg() {
        let d = fake(true, true);
        let f = detect(d.path(), None, Path::new("/no/sfera-vmm"));
        assert_eq!(f.default_driver, "qemu");
        assert_eq!((f.cpus, f.memory_bytes), (2, 2 << 20));
        assert_eq!(f.hostname, "h1");
        assert_eq!((f.kvm_kind.as_str(), f.accel), ("pvm", Accel::Tcg));
        assert!(f.driver_reason.contains("PVM"));
    }

    #[test]
    fn hardware_kvm_means_kvm_unless_forced() {
        let d = fake(false, true);
        let no_vmm = Path::new("/no/sfera-vmm");
        assert_eq!(detect(d.path(), None, no_vmm).accel, Accel::Kvm);
        let f = detect(d.path(), Some(Accel::Tcg), no_vmm);
        assert_eq!(f.accel, Accel::Tcg);
        assert!(f.driver_reason.contains("forced"));
        let none = fake(false, false);
        let f = detect(none.path(), None, no_vmm);
        assert_eq!(f.kvm_kind, "none");
        assert!(!f.sfera_vmm_available);
    }

    #[test]
    fn hardware_kvm_with_the_vmm_means_sfera_vmm() {
        let d = fake(false, true);
        let vmm = d.path().join("sfera-vmm");
        let f = detect(d.path(), None, &vmm);
        assert_eq!(f.default_driver, "qemu");
        assert!(
            f.driver_reason.contains("not installed"),
            "{}",
            f.driver_reason
        );
        std::fs::write(&vmm, "").unwrap();
        let f = detect(d.path(), None, &vmm);
        assert_eq!(f.default_driver, "sfera-vmm");
        assert!(f.sfera_vmm_available);
        assert!(f.driver_reason.contains("intel KVM"), "{}", f.driver_reason);
        // PVM: QEMU by default, sfera-vmm only when a VM asks for it.
        let p = fake(true, true);
        let f = detect(p.path(), None, &vmm);
        assert_eq!(f.default_driver, "qemu");
        assert!(f.sfera_vmm_available);
    }
}

/// A network interface of the host, as `GET /api/v1/host/nics` lists it:
/// what an administrator picks a switch's `af_packet` uplink from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Nic {
    pub name: String,
    /// Its MAC address (absent for interfaces without one)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The kernel's operational state: `up`, `down`, `unknown`, ...
    pub state: String,
    /// The link speed in Mbit/s, when the driver reports one
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    /// Backed by a device (a NIC, physical or paravirtual), not a software
    /// interface (a bridge, a TAP, a veth, ...)
    pub physical: bool,
}

/// The host's network interfaces under `sys_class_net` (`/sys/class/net`),
/// by name, loopback left out: physical ones first.
pub fn nics(sys_class_net: &Path) -> std::io::Result<Vec<Nic>> {
    let read = |dir: &Path, f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let mut nics = Vec::new();
    for entry in std::fs::read_dir(sys_class_net)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        // ARPHRD_LOOPBACK: the loopback carries no VM's traffic out.
        if read(&dir, "type").as_deref() == Some("772") {
            continue;
        }
        let mac = read(&dir, "address").filter(|m| !m.is_empty() && m != "00:00:00:00:00:00");
        nics.push(Nic {
            name,
            mac,
            mtu: read(&dir, "mtu").and_then(|m| m.parse().ok()),
            state: read(&dir, "operstate").unwrap_or_else(|| "unknown".into()),
            // Reading `speed` of a link that is down fails (EINVAL), and
            // virtual drivers report -1.
            speed_mbps: read(&dir, "speed")
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok())
                .filter(|s| *s > 0),
            physical: dir.join("device").exists(),
        });
    }
    nics.sort_by(|a, b| b.physical.cmp(&a.physical).then(a.name.cmp(&b.name)));
    Ok(nics)
}

#[cfg(test)]
mod nic_tests {
    use super::*;

    fn iface(root: &Path, name: &str, files: &[(&str, &str)], device: bool) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in files {
            std::fs::write(dir.join(f), format!("{v}\n")).unwrap();
        }
        if device {
            std::fs::create_dir(dir.join("device")).unwrap();
        }
    }

    #[test]
    fn the_hosts_nics_are_listed_physical_first_without_loopback() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        iface(
            r,
            "lo",
            &[("type", "772"), ("address", "00:00:00:00:00:00")],
            false,
        );
        iface(
            r,
            "eth1",
            &[
                ("type", "1"),
                ("address", "52:54:00:12:34:57"),
                ("mtu", "9000"),
                ("operstate", "down"),
            ],
            true,
        );
        iface(
            r,
            "eth0",
            &[
                ("type", "1"),
                ("address", "52:54:00:12:34:56"),
                ("mtu", "1500"),
                ("operstate", "up"),
                ("speed", "10000"),
            ],
            true,
        );
        iface(
            r,
            "veth9",
            &[
                ("type", "1"),
                ("address", "aa:bb:cc:dd:ee:ff"),
                ("speed", "-1"),
            ],
            false,
        );
        let got = nics(r).unwrap();
        let names: Vec<&str> = got.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1", "veth9"]);
        assert_eq!(got[0].speed_mbps, Some(10_000));
        assert_eq!(got[0].mtu, Some(1500));
        assert!(got[0].physical && !got[2].physical);
        assert_eq!(got[1].state, "down");
        assert_eq!(got[1].speed_mbps, None);
        assert_eq!(got[2].speed_mbps, None, "a virtual driver's -1");
        assert_eq!(got[2].state, "unknown");
        assert!(nics(&r.join("missing")).is_err());
    }
}
