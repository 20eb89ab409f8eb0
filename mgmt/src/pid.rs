//! Processes mgmtd did not necessarily start itself (adopted daemons and
//! QEMU processes that outlive an mgmtd restart): liveness and command
//! line from /proc, signals.

#![allow(unsafe_code)]

use std::path::Path;

/// True if `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The command line of `pid`, one argument per element.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True if `pid` is alive and its command line has `needle` as an argument
/// or inside one (a socket path, a VM id): the check that a pid from a
/// pidfile still names the process it was written for.
pub fn alive_with_arg(pid: u32, needle: &str) -> bool {
    alive(pid)
        && cmdline(pid)
            .map(|args| args.iter().any(|a| a.contains(needle)))
            .unwrap_or(false)
}

/// When `pid` started, in clock ticks since the host booted: with the pid,
/// what tells a process from a later one that got the same number.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start with the third, the state; the
    // start time is the 22nd.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// When `pid` started, in seconds since the epoch.
pub fn started_at(pid: u32) -> Option<i64> {
    let ticks = start_ticks(pid)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf(3) reads a configuration value; no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|hz| *hz > 0)?;
    Some(boot + i64::try_from(ticks / hz).ok()?)
}

/// Reads a pidfile.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Sends `signal` to `pid`; false if there was no such process.
pub fn signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // pid > 0 so it signals one process, never a group or everything.
    unsafe { libc::kill(pid, signal) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_its_arguments() {
        let me = std::process::id();
        assert!(alive(me));
        let args = cmdline(me).unwrap();
        assert!(alive_with_arg(me, &args[0]));
        assert!(!alive_with_arg(me, "no-such-argument-anywhere-42"));
        assert!(!alive(u32::MAX - 1));
        assert!(!signal(0, 0));
        assert!(signal(me, 0));
    }

    #[test]
    fn this_process_started_since_the_host_booted_and_before_now() {
        let me = std::process::id();
        assert_eq!(start_ticks(me), start_ticks(me));
        assert!(start_ticks(u32::MAX - 1).is_none());
        let at = started_at(me).unwrap();
        let now = crate::db::now();
        assert!(at <= now + 1 && at > now - 24 * 3600, "{at} vs {now}");
    }
}
