//! Polling policy for worker threads: after an event, keep polling for new
//! work for a short budget (busy-poll, as SPDK, VPP and OVS-DPDK do) and only
//! then go back to sleeping on eventfds. Work found during the budget
//! restarts it, so a busy queue is served without wake-ups and an idle one
//! costs at most one budget of CPU per event.

use std::time::{Duration, Instant};

/// Busy-poll budget after the last work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePoll {
    budget: Duration,
}

impl AdaptivePoll {
    /// A budget of `micros` µs; 0 disables busy-polling.
    pub fn from_micros(micros: u32) -> Self {
        AdaptivePoll {
            budget: Duration::from_micros(u64::from(micros)),
        }
    }

    /// Whether polling is enabled.
    pub fn enabled(&self) -> bool {
        !self.budget.is_zero()
    }

    /// Calls `poll` (which reports whether it found work) until it has
    /// found none for the whole budget. Returns how many calls found work.
    pub fn spin(&self, mut poll: impl FnMut() -> bool) -> u64 {
        if !self.enabled() {
            return 0;
        }
        let mut busy = 0;
        let mut idle_since = Instant::now();
        loop {
            if poll() {
                busy += 1;
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= self.budget {
                return busy;
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Pins the calling thread to CPU `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // CPU_SET ignores out-of-range CPUs.
    // SAFETY: cpu_set_t is plain data, valid when zeroed; sched_setaffinity
    // reads `size_of::<cpu_set_t>()` bytes from a valid pointer.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_polls_never() {
        assert_eq!(AdaptivePoll::from_micros(0).spin(|| panic!("polled")), 0);
    }

    #[test]
    fn work_restarts_the_budget_then_idle_ends_it() {
        let mut left = 5;
        let found = AdaptivePoll::from_micros(200).spin(|| {
            if left > 0 {
                left -= 1;
                true
            } else {
                false
            }
        });
        assert_eq!(found, 5);
    }

    #[test]
    fn pins_to_cpu_zero() {
        pin_current_thread(0).unwrap();
    }
}
