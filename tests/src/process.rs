//! External processes that are always stopped.
//!
//! Every process is started in its own process group, with its output in a
//! log file of the test's directory, and with `PR_SET_PDEATHSIG` so the kernel
//! kills it if the test process dies without unwinding (for example when the
//! test runner kills a hung test). Dropping a [`Process`] stops the whole
//! group: `SIGTERM`, a grace period, then `SIGKILL`. When the drop happens
//! while a test panics, the tail of the log goes to stderr, where the test
//! runner shows it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a process has to exit after `SIGTERM` before it gets `SIGKILL`.
const GRACE: Duration = Duration::from_secs(5);

/// A running external process owned by a test.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// The pipes of a process started with [`Process::spawn_interactive`].
#[derive(Debug)]
pub struct Pipes {
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr appended to
    /// `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = open_log(log)?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("Cannot duplicate log file", log, e))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        Self::start(name, command, log)
    }

    /// Starts `command` with stdin closed, stdout written to `stdout` (a
    /// program's own output kept apart from its diagnostics) and stderr
    /// appended to `log`.
    pub fn spawn_split(
        name: &str,
        mut command: Command,
        stdout: &Path,
        log: &Path,
    ) -> Result<Self> {
        let out = open_log(stdout)?;
        let err = open_log(log)?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        Self::start(name, command, log)
    }

    /// Starts `command` with piped stdin and stdout (for a console or an
    /// interactive tool) and stderr appended to `log`.
    pub fn spawn_interactive(
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> Result<(Self, Pipes)> {
        let err = open_log(log)?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err);
        let mut process = Self::start(name, command, log)?;
        let stdin = process.child.stdin.take();
        let stdout = process.child.stdout.take();
        match (stdin, stdout) {
            (Some(stdin), Some(stdout)) => Ok((process, Pipes { stdin, stdout })),
            _ => unreachable!("both pipes were requested above"),
        }
    }

    fn start(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        command.process_group(0);
        // The closure runs in the forked child before exec; it touches no
        // memory shared with the parent.
        // SAFETY: it only calls prctl(2) and getppid(2), both async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent exited during start"));
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            name: name.to_owned(),
            source,
        })?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The process's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Returns the exit status if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .map_err(|e| Error::io(format!("Cannot wait for {}", self.name), &self.log, e))?;
        }
        Ok(self.exited)
    }

    /// Fails with [`Error::Exited`] if the process is no longer running.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_wait()? {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                name: self.name.clone(),
                status: describe(status),
                log_tail: self.log_tail(30),
            }),
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process group: `SIGTERM`, then `SIGKILL` after a grace
    /// period. Returns the exit status of the process itself.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            // The leader is gone; make sure nothing it started lingers.
            self.signal_group(libc::SIGKILL);
            return Ok(status);
        }
        self.signal_group(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(GRACE)? {
            self.signal_group(libc::SIGKILL);
            return Ok(status);
        }
        self.signal_group(libc::SIGKILL);
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("Cannot wait for {}", self.name), &self.log, e))?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Kills the process group at once (`SIGKILL`, no grace period), as a
    /// crash or `kill -9` would, and returns the process's exit status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal_group(libc::SIGKILL);
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("Cannot wait for {}", self.name), &self.log, e))?;
        self.exited = Some(status);
        Ok(status)
    }

    fn signal_group(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // A negative pid signals the group made by process_group(0) above;
        // ESRCH (group already gone) is fine.
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of_file(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() {
            let status = match status {
                Ok(s) => describe(s),
                Err(e) => e.to_string(),
            };
            eprintln!(
                "--- {} ({status}), last lines of {} ---\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

/// Describes an exit status for messages: "exit status 1", "signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The last `lines` lines of a text file, or a note saying it cannot be read.
pub fn tail_of_file(path: &Path, lines: usize) -> String {
    match File::open(path) {
        Ok(file) => {
            let all: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn open_log(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("Cannot open log file", path, e))
}

/// Runs a short helper command to completion and returns its stdout; a
/// non-zero exit becomes [`Error::CommandFailed`] with its stderr.
pub fn run(mut command: Command) -> Result<String> {
    let rendered = render(&command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            name: rendered.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::CommandFailed {
            command: rendered,
            status: describe(output.status),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// CPU time (user and system, all threads) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| Error::io("Cannot read the process's CPU times", &path, e))?;
    // Fields after the command name (which may hold spaces), from field 3
    // on: utime and stime are fields 14 and 15.
    let ticks: Option<u64> = stat.rsplit_once(')').and_then(|(_, rest)| {
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(utime + stime)
    });
    let ticks = ticks.ok_or_else(|| Error::Parse {
        what: format!("utime and stime in {path}"),
        text: stat.clone(),
    })?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Ok(Duration::from_millis(ticks * 1000 / per_second))
}

/// A command line as a shell user would type it, for messages.
pub fn render(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie still answers kill(0); /proc/PID/stat shows its state.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat.contains(") Z "),
            Err(_) => false,
        }
    }

    #[test]
    fn drop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let mut cmd = Command::new("sh");
        // The grandchild ignores SIGTERM, so only the SIGKILL escalation ends it.
        cmd.args(["-c", "trap '' TERM; sleep 300 & echo $! > grandchild; wait"])
            .current_dir(dir.path());
        let process = Process::spawn("sleeper", cmd, &log).unwrap();
        let pid = process.pid();
        let pidfile = dir.path().join("grandchild");
        let grandchild: u32 = crate::wait::wait_until("pid file", Duration::from_secs(5), || {
            Ok(std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok()))
        })
        .unwrap();
        assert!(alive(pid) && alive(grandchild));
        drop(process);
        crate::wait::wait_until("grandchild to die", Duration::from_secs(10), || {
            Ok((!alive(grandchild)).then_some(()))
        })
        .unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn ensure_running_reports_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("fail.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo it broke >&2; exit 3"]);
        let mut process = Process::spawn("failer", cmd, &log).unwrap();
        process.wait_timeout(Duration::from_secs(5)).unwrap();
        let err = process.ensure_running().unwrap_err().to_string();
        assert!(
            err.contains("exit status 3") && err.contains("it broke"),
            "{err}"
        );
    }

    #[test]
    fn run_reports_stderr_of_failures() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo nope >&2; exit 2"]);
        let err = run(cmd).unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("exit status 2"),
            "{err}"
        );
    }
}
