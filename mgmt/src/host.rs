//! What the host offers VMs: CPUs, memory, and which kind of KVM, which
//! decides how QEMU accelerates guests.

use std::path::Path;

use serde::Serialize;

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    pub hostname: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    /// `/dev/kvm` exists.
    pub kvm: bool,
    /// `intel`, `amd`, `pvm` (paravirtual KVM) or `none`.
    pub kvm_kind: String,
    /// The hypervisor driver new VMs get.
    pub default_driver: String,
    /// How QEMU accelerates guests here.
    pub accel: Accel,
    /// Why, in a sentence for the host page.
    pub driver_reason: String,
}

/// Reads the facts from `/proc`, `/sys` and `/dev` under `root` ("/" on a
/// real host; a fake tree in tests).
pub fn detect(root: &Path, forced: Option<Accel>) -> HostFacts {
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
    HostFacts {
        hostname: read("proc/sys/kernel/hostname").trim().to_owned(),
        cpus,
        memory_bytes,
        kvm,
        kvm_kind: kvm_kind.to_owned(),
        default_driver: "qemu".to_owned(),
        accel,
        driver_reason: format!("sfera-vmm is not wired to mgmtd yet; {why}"),
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
        let f = detect(d.path(), None);
        assert_eq!((f.cpus, f.memory_bytes), (2, 2 << 20));
        assert_eq!(f.hostname, "h1");
        assert_eq!((f.kvm_kind.as_str(), f.accel), ("pvm", Accel::Tcg));
        assert!(f.driver_reason.contains("PVM"));
    }

    #[test]
    fn hardware_kvm_means_kvm_unless_forced() {
        let d = fake(false, true);
        assert_eq!(detect(d.path(), None).accel, Accel::Kvm);
        let f = detect(d.path(), Some(Accel::Tcg));
        assert_eq!(f.accel, Accel::Tcg);
        assert!(f.driver_reason.contains("forced"));
        let none = fake(false, false);
        assert_eq!(detect(none.path(), None).kvm_kind, "none");
    }
}
