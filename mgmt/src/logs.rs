//! Caps on the logs of the daemons and VMs mgmtd starts.
//!
//! sfera-blockd's and sfera-vswitchd's diagnostics (`<data>/logs/*.log`)
//! and each VM's console and VMM logs (`<run>/vms/<vm>/*.log`) are files
//! their writers opened with `O_APPEND`, and those writers outlive mgmtd
//! (a VM runs on while mgmtd restarts), so mgmtd cannot sit between them
//! and their files. It rotates them the way logrotate's `copytruncate`
//! does: once a second it looks at each log, and one over the cap is
//! copied to `<name>.1` (the older copies move up to `<name>.<keep>`, the
//! oldest is dropped) and truncated; the writer's next append lands at
//! the start of the emptied file. A guest that floods its serial console
//! can therefore use at most about `(keep + 1) × cap` of the disk, plus
//! what it writes in one second.
//!
//! The known cost of copy-and-truncate: what a writer appends between the
//! last read of the copy and the truncation is lost. The copy reads up to
//! the end it finds just before truncating, so the window is the time of
//! one `ftruncate` call.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use datapath::log_limit::LogLimit;

/// How big a log may grow, and how many rotated copies are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogCap {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for LogCap {
    /// 16 MiB and four older copies: 80 MiB per log at most, a few days
    /// of a busy daemon's diagnostics.
    fn default() -> Self {
        LogCap {
            max_bytes: 16 << 20,
            keep: 4,
        }
    }
}

/// How often the logs are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The path of the `n`th rotated copy of `log` (`console.log.2`).
fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens `log` for `options` without following a symlink and without
/// blocking on a FIFO.
fn open_nofollow(log: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(log)
}

/// Rotates `log` if it is over the cap; true if it did.
///
/// A VM's directory is writable by the VM's (jailed, possibly hostile)
/// process, and this runs as root: a name there may be a symlink to a host
/// file, a FIFO, or a hard link, planted to make root copy or truncate
/// something else. So the log is opened without following symlinks, must
/// be a regular file with one link, and is truncated through a descriptor
/// of that same file; the copy is made under a fresh name no one else can
/// have prepared (created exclusively, after removing whatever was there).
pub fn rotate_if_over(log: &Path, cap: LogCap) -> io::Result<bool> {
    let mut from = match open_nofollow(log, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = from.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file with one link; left alone",
        ));
    }
    if meta.len() <= cap.max_bytes {
        return Ok(false);
    }
    for n in (1..cap.keep.max(1)).rev() {
        // rename() moves a symlink itself, never what it points to.
        match std::fs::rename(rotated(log, n), rotated(log, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let first = rotated(log, 1);
    let mut partial = first.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)?;
    // Copy what is there, then once more what was appended meanwhile,
    // right before the truncation.
    io::copy(&mut from, &mut to)?;
    let live = open_nofollow(log, OpenOptions::new().write(true))?;
    let now = live.metadata()?;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        let _ = std::fs::remove_file(&partial);
        return Err(io::Error::other(
            "the log was replaced while it was rotated",
        ));
    }
    io::copy(&mut from, &mut to)?;
    live.set_len(0)?;
    to.flush()?;
    std::fs::rename(&partial, &first)?;
    Ok(true)
}

/// The logs under mgmtd's care: regular `*.log` files (not symlinks) in
/// `logs_dir` and in each VM's directory under `vms_dir`.
pub fn logs(logs_dir: &Path, vms_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![logs_dir.to_owned()];
    if let Ok(vms) = std::fs::read_dir(vms_dir) {
        dirs.extend(
            vms.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect()
}

/// Keeps the logs capped, for as long as mgmtd runs.
pub async fn keep_capped(logs_dir: PathBuf, vms_dir: PathBuf, cap: LogCap) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A log that cannot be rotated (a full disk, a file made read-only)
    // is reported once a minute, not once a second.
    let complaints = LogLimit::new(Duration::from_secs(60), 1);
    loop {
        every.tick().await;
        let (l, v) = (logs_dir.clone(), vms_dir.clone());
        let failures = tokio::task::spawn_blocking(move || {
            logs(&l, &v)
                .into_iter()
                .filter_map(|log| match rotate_if_over(&log, cap) {
                    Ok(true) => {
                        tracing::info!(log = %log.display(), "Rotated a log over its cap");
                        None
                    }
                    Ok(false) => None,
                    Err(e) => Some(format!("{}: {e}", log.display())),
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if !failures.is_empty() {
            datapath::log_limited!(warn, limit: &complaints, ?failures, "Cannot rotate logs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    const CAP: LogCap = LogCap {
        max_bytes: 100,
        keep: 2,
    };

    fn append(p: &Path, text: &str) -> File {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_log_under_the_cap_stays() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("a.log");
        append(&log, &"x".repeat(100));
        assert!(!rotate_if_over(&log, CAP).unwrap());
        assert!(!rotate_if_over(&d.path().join("none.log"), CAP).unwrap());
        assert_eq!(read(&log).len(), 100);
    }

    #[test]
    fn an_appending_writer_goes_on_at_the_start_and_old_copies_move_up() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        let mut writer = append(&log, &"1".repeat(150));
        assert!(rotate_if_over(&log, CAP).unwrap());
        assert_eq!(read(&rotated(&log, 1)), "1".repeat(150));
        // The writer keeps its descriptor, as a VM does.
        writer.write_all(&[b'2'; 120]).unwrap();
        assert_eq!(read(&log), "2".repeat(120));
        assert!(rotate_if_over(&log, CAP).unwrap());
        writer.write_all(&[b'3'; 130]).unwrap();
        assert!(rotate_if_over(&log, CAP).unwrap());
        assert_eq!(read(&rotated(&log, 1)), "3".repeat(130));
        assert_eq!(read(&rotated(&log, 2)), "2".repeat(120));
        assert!(!rotated(&log, 3).exists(), "only `keep` copies are kept");
        assert!(read(&log).is_empty());
        assert!(!rotated(&log, 1).with_extension("1.part").exists());
    }

    #[test]
    fn what_a_vm_plants_in_its_directory_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let host_file = d.path().join("shadow");
        append(&host_file, &"s".repeat(500));
        let vm = d.path().join("vm");
        std::fs::create_dir(&vm).unwrap();
        // A symlink to a host file, a hard link to it, a FIFO.
        std::os::unix::fs::symlink(&host_file, vm.join("evil.log")).unwrap();
        std::fs::hard_link(&host_file, vm.join("linked.log")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(vm.join("fifo.log"))
            .status()
            .unwrap();
        assert!(made.success());
        for name in ["evil.log", "linked.log", "fifo.log"] {
            assert!(rotate_if_over(&vm.join(name), CAP).is_err(), "{name}");
            assert!(!rotated(&vm.join(name), 1).exists(), "{name}");
        }
        assert_eq!(read(&host_file).len(), 500, "the host file is untouched");
        // The copy's name prepared as a symlink is replaced, not followed.
        let live = vm.join("console.log");
        append(&live, &"c".repeat(150));
        std::os::unix::fs::symlink(&host_file, vm.join("console.log.1.part")).unwrap();
        assert!(rotate_if_over(&live, CAP).unwrap());
        assert_eq!(read(&host_file).len(), 500, "the host file is untouched");
        assert_eq!(read(&rotated(&live, 1)), "c".repeat(150));
        let listed = logs(d.path(), d.path());
        assert!(!listed.contains(&vm.join("evil.log")), "{listed:?}");
    }

    #[test]
    fn the_logs_are_the_daemons_and_each_vms() {
        let d = tempfile::tempdir().unwrap();
        let (logs_dir, vms) = (d.path().join("logs"), d.path().join("vms"));
        std::fs::create_dir_all(vms.join("web")).unwrap();
        std::fs::create_dir_all(&logs_dir).unwrap();
        for f in [
            "logs/blockd.log",
            "logs/blockd.log.1",
            "vms/web/console.log",
            "vms/web/vmm.json",
        ] {
            append(&d.path().join(f), "x");
        }
        let mut found = logs(&logs_dir, &vms);
        found.sort();
        assert_eq!(
            found,
            vec![logs_dir.join("blockd.log"), vms.join("web/console.log")]
        );
    }
}
