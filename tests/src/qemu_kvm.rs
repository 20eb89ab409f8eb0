//! How QEMU runs guests on this host's KVM, decided once per process.
//!
//! `-cpu host` is what QEMU recommends under KVM, and what users of a
//! hardware-virtualization host get. It hands the guest the host's
//! IA32_ARCH_CAPABILITIES MSR, and some KVMs refuse that write: the
//! paravirtual KVM of the CI machines does on some CPUs (on an AMD EPYC,
//! QEMU prints "failed to set MSR 0x10a to 0x69" and aborts while it
//! creates the vCPU), and not on others. Which one a machine is cannot be
//! told from its CPU model, so the harness asks QEMU itself: it starts QEMU
//! with each candidate, stopped before any guest code runs (`-S`), quits it
//! through the monitor, and keeps the first candidate that started. Every
//! test and benchmark that runs QEMU with `-accel kvm` takes its arguments
//! from [`kvm_args`].

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{Error, Result, tools, wait};

/// CPU models in order of preference: the host's own, then the host's
/// without the MSR some KVMs refuse.
pub const CANDIDATES: &[&str] = &["host", "host,-arch-capabilities"];

/// How long one probe may take (QEMU starts in well under a second).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// QEMU's accelerator and CPU arguments for this host's KVM:
/// `-accel kvm -cpu <model>`.
pub fn kvm_args() -> Result<[String; 4]> {
    Ok([
        "-accel".into(),
        "kvm".into(),
        "-cpu".into(),
        kvm_cpu()?.to_owned(),
    ])
}

/// The CPU model QEMU starts with on this host's KVM, probed once per
/// process; the first call says on stderr what was chosen and why.
pub fn kvm_cpu() -> Result<&'static str> {
    static CHOSEN: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| {
        let qemu =
            tools::require("qemu-system-x86_64", "qemu-system-x86").map_err(|e| e.to_string())?;
        probe(&qemu, CANDIDATES).map_err(|e| e.to_string())
    });
    match chosen {
        Ok(model) => Ok(model.as_str()),
        Err(why) => Err(Error::QemuCpu { tried: why.clone() }),
    }
}

/// The first of `candidates` that `qemu` starts with under KVM. Each
/// refusal is printed on stderr with QEMU's own words, so a fallback is
/// visible in every test log.
pub fn probe(qemu: &Path, candidates: &[&str]) -> Result<String> {
    let mut refused = Vec::new();
    for model in candidates {
        match start_stopped(qemu, model)? {
            None => {
                if !refused.is_empty() {
                    eprintln!(
                        "QEMU on this KVM: -cpu {model} (refused: {})",
                        refused.join("; ")
                    );
                }
                return Ok((*model).to_owned());
            }
            Some(why) => refused.push(format!("-cpu {model}: {why}")),
        }
    }
    Err(Error::QemuCpu {
        tried: refused.join("; "),
    })
}

/// Starts `qemu` with `-cpu model` on KVM, paused, and quits it through the
/// monitor: `None` if it started and quit cleanly, else what it said.
fn start_stopped(qemu: &Path, model: &str) -> Result<Option<String>> {
    let mut command = Command::new(qemu);
    command
        .args(["-accel", "kvm", "-cpu", model, "-M", "microvm"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-S"])
        .args(["-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        name: format!("{} (CPU probe)", qemu.display()),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // QEMU that died while creating its vCPU closed the pipe: its
        // status and stderr below say why.
        let _ = stdin.write_all(b"quit\n");
    }
    let status = wait::wait_until("QEMU's CPU probe to quit", PROBE_TIMEOUT, || {
        child
            .try_wait()
            .map_err(|e| Error::io("Cannot wait for QEMU", qemu, e))
    });
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    if status.success() {
        return Ok(None);
    }
    let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    Ok(Some(if said.is_empty() {
        format!("QEMU ended with {status} and said nothing")
    } else {
        format!("{} ({status})", said.join(" / "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for QEMU that refuses `-cpu host` as PVM does on some
    /// CPUs and starts with anything else.
    fn fake_qemu(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("qemu");
        std::fs::write(
            &path,
            "#!/bin/sh\n\
             while [ $# -gt 0 ]; do\n\
             \x20 if [ \"$1\" = -cpu ] && [ \"$2\" = host ]; then\n\
             \x20   echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2\n\
             \x20   exit 134\n\
             \x20 fi\n\
             \x20 shift\n\
             done\n\
             read -r cmd && [ \"$cmd\" = quit ]\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn falls_back_when_host_is_refused_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path());
        assert_eq!(probe(&qemu, CANDIDATES).unwrap(), "host,-arch-capabilities");
    }

    #[test]
    fn keeps_the_first_candidate_that_starts() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path());
        assert_eq!(probe(&qemu, &["max", "host"]).unwrap(), "max");
    }

    #[test]
    fn fails_with_every_refusal_when_none_starts() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path());
        let err = probe(&qemu, &["host"]).unwrap_err().to_string();
        assert!(err.contains("failed to set MSR 0x10a"), "{err}");
    }

    #[test]
    fn this_hosts_qemu_starts_with_one_of_the_candidates() {
        // The real QEMU on the real KVM: `make test` installs both.
        let model = kvm_cpu().unwrap();
        assert!(CANDIDATES.contains(&model), "{model}");
    }
}
