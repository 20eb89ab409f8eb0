//! Sfera's own daemons, started from the workspace's build output.

pub mod blockd;
pub mod vswitchd;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Process;
use crate::wait::wait_until;
use crate::{Error, Result};

/// The path of a workspace binary: in `$SFERA_BIN_DIR`, or in the profile
/// directory the running test executable was built into
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("SFERA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir()?,
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool {
            tool: path.display().to_string(),
            package: "this workspace (cargo build --workspace)".to_owned(),
        })
    }
}

/// The path of a mutant build of a daemon (one with a fault compiled in,
/// which a test must catch): in `$SFERA_MUTANT_BIN_DIR`, or where `make
/// mutant-blockd` builds it, its own target directory `target/mutant` (so
/// that the workspace's binaries are never the mutants).
pub fn mutant_binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("SFERA_MUTANT_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let profile = profile_dir()?;
            let target = profile.parent().map(PathBuf::from).unwrap_or_default();
            target.join("mutant").join("debug")
        }
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingMutant { path })
    }
}

/// `target/<profile>`, from the running test executable's path.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("Cannot find the running executable", "", e))?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The log filter a daemon runs with: the environment variable `var`
/// (`SFERA_BLOCKD_LOG`, `SFERA_VSWITCHD_LOG`) when set, e.g. `debug` to
/// chase a flake; `info` otherwise.
fn log_filter(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| "info".to_owned())
}

/// Starts `daemon`'s `serve` (`command` is the program, run as it is or
/// through a wrapper) with its API on the Unix socket `api` (a stale one
/// removed first), its state in `data_dir`, `more` arguments after those,
/// its output in `log` and the log filter from `log_var`; waits for the API
/// socket.
fn serve(
    daemon: &str,
    mut command: Command,
    api: &Path,
    data_dir: &Path,
    more: &[&OsStr],
    log: &Path,
    log_var: &str,
) -> Result<Process> {
    let _ = std::fs::remove_file(api);
    command
        .arg("--api")
        .arg(api)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(more)
        .env("RUST_LOG", log_filter(log_var));
    let mut process = Process::spawn(&format!("{daemon} serve"), command, log)?;
    wait_until(
        &format!("{daemon}'s API socket"),
        Duration::from_secs(30),
        || {
            process.ensure_running()?;
            Ok(api.exists().then_some(()))
        },
    )?;
    Ok(process)
}

/// Kills a daemon with SIGKILL, as a crash would, and reaps it.
fn crash(process: Option<Process>) {
    if let Some(mut p) = process {
        // SAFETY: kill(2) on the pid of a child this harness started; no
        // memory is involved.
        unsafe {
            libc::kill(p.pid() as libc::pid_t, libc::SIGKILL);
        }
        let _ = p.wait_timeout(Duration::from_secs(10));
    }
}
