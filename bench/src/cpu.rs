//! CPU time a process has used, summed over its threads, from
//! `/proc/<pid>/task/*/schedstat` (nanoseconds on a CPU).

use anyhow::{Context, Result};

/// Nanoseconds all threads of `pid` have run so far (threads that already
/// exited are not counted; the servers measured here keep theirs).
pub fn process_cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between listing and reading.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("cannot parse {}", path.display()))?;
        total += ns;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows() {
        let pid = std::process::id();
        let before = process_cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_ns(pid).unwrap() > before);
    }
}
