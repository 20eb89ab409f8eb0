//! The CPUs this process may run on, so that tests and benchmarks pin their
//! processes to CPUs that exist here instead of assuming CPUs 0 and 1 (a
//! container or a cgroup cpuset may grant others, a machine may have one).

use crate::{Error, Result};

/// The CPUs in this process's affinity mask, in ascending order.
pub fn allowed() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed; sched_getaffinity
    // writes at most `size_of::<cpu_set_t>()` bytes through a valid pointer.
    let (rc, set) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set);
        (rc, set)
    };
    if rc != 0 {
        return Err(Error::io(
            "Cannot read this process's CPU affinity",
            "/proc/self/status",
            std::io::Error::last_os_error(),
        ));
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `cpu` of an initialised set, and
        // `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(Error::Parse {
            what: "this process's CPU affinity".into(),
            text: "no CPU".into(),
        });
    }
    Ok(cpus)
}

/// The `index`-th CPU this process may run on, wrapping around when there
/// are fewer (on one CPU, every index is that CPU).
pub fn nth(index: usize) -> Result<usize> {
    let cpus = allowed()?;
    Ok(cpus[index % cpus.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_on_the_cpus_it_is_given() {
        let cpus = allowed().unwrap();
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(!cpus.is_empty() && cpus.len() <= online.max(cpus.len()));
        assert_eq!(nth(0).unwrap(), cpus[0]);
        assert_eq!(nth(cpus.len()).unwrap(), cpus[0]);
    }
}
