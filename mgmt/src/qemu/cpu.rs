//! The `-cpu` model QEMU guests get under KVM on this host.
//!
//! `-cpu host` gives a guest the host's CPU, which is what a user of a
//! hardware-virtualization host wants. It also hands the guest the host's
//! IA32_ARCH_CAPABILITIES MSR, and some KVMs refuse to set that MSR (the
//! paravirtual KVM of the project's CI machines does on some CPUs, nested
//! KVMs may): QEMU then aborts while it creates the vCPU ("failed to set
//! MSR 0x10a"), so every VM start would fail. mgmtd asks QEMU once, at
//! start, by starting it paused with each model in turn, and records the
//! answer in the host facts (the host page shows it).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Models in order of preference.
pub const MODELS: &[&str] = &["host", "host,-arch-capabilities"];

/// The first of [`MODELS`] that `qemu` starts with on KVM, or why none
/// did (each model with QEMU's own words).
pub fn probe(qemu: &Path) -> Result<String, String> {
    probe_models(qemu, MODELS)
}

fn probe_models(qemu: &Path, models: &[&str]) -> Result<String, String> {
    let mut refusals = Vec::with_capacity(models.len());
    for model in models {
        match starts_paused(qemu, model) {
            Ok(()) => {
                if !refusals.is_empty() {
                    tracing::warn!(model, refused = %refusals.join("; "), "QEMU under KVM gets a reduced CPU model");
                }
                return Ok((*model).to_owned());
            }
            Err(why) => refusals.push(format!("-cpu {model}: {why}")),
        }
    }
    Err(refusals.join("; "))
}

/// QEMU on KVM with `-cpu model`, paused before any guest code (`-S`),
/// told to quit on its monitor: did it start and quit cleanly?
fn starts_paused(qemu: &Path, model: &str) -> Result<(), String> {
    let mut child = Command::new(qemu)
        .args(["-accel", "kvm", "-cpu", model, "-M", "microvm", "-S"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    // A QEMU that already died closed its end: its status tells.
    let _ = child.stdin.take().map(|mut s| s.write_all(b"quit\n"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("did not quit within 30 s".into());
            }
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut said));
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(format!("{status}: {said}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A QEMU that refuses `-cpu host` with PVM's words on an AMD EPYC.
    fn refuses_host(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("qemu-system-x86_64");
        let script = r#"#!/bin/sh
case " $* " in
*" -cpu host "*) echo 'error: failed to set MSR 0x10a to 0x69' >&2; exit 134 ;;
esac
read -r line && [ "$line" = quit ]
"#;
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_kvm_that_refuses_the_msr_gets_host_without_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            probe(&refuses_host(dir.path())).unwrap(),
            "host,-arch-capabilities"
        );
    }

    #[test]
    fn no_model_that_starts_is_an_error_with_qemus_words() {
        let dir = tempfile::tempdir().unwrap();
        let why = probe_models(&refuses_host(dir.path()), &["host"]).unwrap_err();
        assert!(why.contains("failed to set MSR 0x10a"), "{why}");
        let why = probe(&dir.path().join("missing")).unwrap_err();
        assert!(why.contains("cannot start"), "{why}");
    }
}
