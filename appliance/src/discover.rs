//! Finding the answer file of an unattended install, in this order:
//!
//! 1. `sfera.answer=PATH` on the kernel command line: PATH on the boot
//!    medium (the ISO or USB stick), e.g. `sfera.answer=/sfera/answer.toml`;
//! 2. `sfera/answer.toml` on the boot medium;
//! 3. `answer.toml` on a file system labelled `SFERA-ANSWER` (a second small
//!    disk or USB stick: `mkfs.ext4 -L SFERA-ANSWER`, or an ISO 9660 image
//!    with that volume ID), mounted read-only.
//!
//! None of them: the installer asks its questions on the console.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The file system label of an answer disk.
pub const ANSWER_LABEL: &str = "SFERA-ANSWER";
/// Where an answer disk is mounted (read-only) during the install.
pub const ANSWER_MOUNT: &str = "/run/sfera-answer";
/// The file on the boot medium found without a command line parameter.
pub const MEDIUM_ANSWER: &str = "sfera/answer.toml";

/// An answer file found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub place: String,
    pub text: String,
}

/// The value of `sfera.answer=` in a kernel command line.
pub fn cmdline_answer(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sfera.answer="))
}

/// Looks for an answer file; `Err` when one was asked for (on the command
/// line) or found (a labelled disk) but cannot be read.
pub fn find(cmdline: &str, medium: &Path) -> Result<Option<Found>, String> {
    if let Some(path) = cmdline_answer(cmdline) {
        let file = medium.join(path.trim_start_matches('/'));
        return read(&file, &format!("{path} on the boot medium (sfera.answer=)")).map(Some);
    }
    let on_medium = medium.join(MEDIUM_ANSWER);
    if on_medium.is_file() {
        return read(&on_medium, &format!("/{MEDIUM_ANSWER} on the boot medium")).map(Some);
    }
    let Some(device) = labelled_device(Duration::from_secs(5)) else {
        return Ok(None);
    };
    std::fs::create_dir_all(ANSWER_MOUNT)
        .map_err(|e| format!("Cannot create {ANSWER_MOUNT}: {e}"))?;
    let mounted = Command::new("mount")
        .args(["-o", "ro"])
        .arg(&device)
        .arg(ANSWER_MOUNT)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        return Err(format!(
            "{} (label {ANSWER_LABEL}) cannot be mounted",
            device.display()
        ));
    }
    let file = Path::new(ANSWER_MOUNT).join("answer.toml");
    read(
        &file,
        &format!("answer.toml on {} (label {ANSWER_LABEL})", device.display()),
    )
    .map(Some)
}

fn read(file: &Path, place: &str) -> Result<Found, String> {
    std::fs::read_to_string(file)
        .map(|text| Found {
            place: place.to_owned(),
            text,
        })
        .map_err(|e| format!("The answer file {place} cannot be read: {e}"))
}

/// The device with the answer label, waiting up to `wait` for udev to have
/// seen the disks.
fn labelled_device(wait: Duration) -> Option<PathBuf> {
    let _ = Command::new("udevadm")
        .args(["settle", "--timeout=10"])
        .status();
    let start = Instant::now();
    loop {
        let link = Path::new("/dev/disk/by-label").join(ANSWER_LABEL);
        if let Ok(dev) = std::fs::canonicalize(&link) {
            return Some(dev);
        }
        // blkid reads the devices itself, without udev's links.
        if let Ok(out) = Command::new("blkid").args(["-L", ANSWER_LABEL]).output()
            && out.status.success()
        {
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !dev.is_empty() {
                return Some(dev.into());
            }
        }
        if start.elapsed() >= wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        assert_eq!(
            cmdline_answer("boot=live sfera.answer=/sfera/a.toml quiet"),
            Some("/sfera/a.toml")
        );
        assert_eq!(cmdline_answer("boot=live sfera.mode=install"), None);
    }

    #[test]
    fn medium_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sfera")).unwrap();
        std::fs::write(dir.path().join("sfera/answer.toml"), "x").unwrap();
        std::fs::write(dir.path().join("other.toml"), "y").unwrap();
        let found = find("boot=live", dir.path()).unwrap().unwrap();
        assert_eq!(found.text, "x");
        let found = find("sfera.answer=/other.toml", dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(found.text, "y");
        let err = find("sfera.answer=/missing.toml", dir.path()).unwrap_err();
        assert!(err.contains("/missing.toml on the boot medium"), "{err}");
    }
}
