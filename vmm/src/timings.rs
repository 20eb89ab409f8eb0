//! Start-up timestamps: when the process reached each step from `main` to
//! the guest's first console byte, on `CLOCK_MONOTONIC` (the clock a
//! parent's `Instant` or `clock_gettime` reads too, so a launcher can
//! subtract its own exec time and see the process start as well).
//!
//! Each step keeps the first time it is marked; marking costs one atomic
//! load once the step is set, so the serial device can mark on every
//! write. `sfera-vmm --timings` prints them as one JSON line on stderr
//! when the VM ends; at `RUST_LOG=debug` each is logged as it happens.

use std::sync::atomic::{AtomicU64, Ordering};

/// A step of start-up, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `main` entered: exec, the dynamic loader and Rust's runtime are done.
    Main,
    /// The seccomp filter is compiled and installed.
    Seccomp,
    /// The VM config is read and checked.
    Config,
    /// Guest RAM made and mapped (memfd, mmap).
    Memory,
    /// /dev/kvm open, the VM made, guest RAM registered as its memory slots.
    MemorySlots,
    /// The in-kernel irqchip (PIC, IOAPIC, their interrupt routes) and PIT.
    Kvm,
    /// Serial, i8042, console socket and PCI devices set up.
    Devices,
    /// Kernel (or raw image) and MP table written to guest memory.
    BootLoader,
    /// vCPUs created and their registers set.
    Vcpus,
    /// The boot vCPU's thread is about to enter KVM_RUN the first time.
    FirstRun,
    /// The first exit to the VMM (the guest has run).
    FirstExit,
    /// The guest's first byte to the serial transmitter.
    FirstConsoleByte,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 12] = [
        Step::Main,
        Step::Seccomp,
        Step::Config,
        Step::Memory,
        Step::MemorySlots,
        Step::Kvm,
        Step::Devices,
        Step::BootLoader,
        Step::Vcpus,
        Step::FirstRun,
        Step::FirstExit,
        Step::FirstConsoleByte,
    ];

    /// The step's name in the `--timings` JSON.
    pub fn name(self) -> &'static str {
        match self {
            Step::Main => "main",
            Step::Seccomp => "seccomp",
            Step::Config => "config",
            Step::Kvm => "kvm",
            Step::Memory => "memory",
            Step::MemorySlots => "memory_slots",
            Step::Devices => "devices",
            Step::BootLoader => "boot_loader",
            Step::Vcpus => "vcpus",
            Step::FirstRun => "first_run",
            Step::FirstExit => "first_exit",
            Step::FirstConsoleByte => "first_console_byte",
        }
    }
}

static MARKS: [AtomicU64; Step::ALL.len()] = [const { AtomicU64::new(0) }; Step::ALL.len()];

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on
    // every Linux this runs on, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Records that `step` is reached now, unless it was already.
pub fn mark(step: Step) {
    let slot = &MARKS[step as usize];
    if slot.load(Ordering::Relaxed) != 0 {
        return;
    }
    let now = now_ns();
    if slot
        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        tracing::debug!(step = step.name(), monotonic_ns = now, "start-up step");
    }
}

/// Whether `step` has been marked.
pub fn reached(step: Step) -> bool {
    MARKS[step as usize].load(Ordering::Relaxed) != 0
}

/// The steps reached so far and when (`CLOCK_MONOTONIC` ns), in order.
pub fn marks() -> Vec<(Step, u64)> {
    Step::ALL
        .iter()
        .map(|&s| (s, MARKS[s as usize].load(Ordering::Relaxed)))
        .filter(|&(_, ns)| ns != 0)
        .collect()
}

/// The `--timings` line: `{"timings_monotonic_ns": {"main": ..., ...}}`.
pub fn json() -> serde_json::Value {
    let steps: serde_json::Map<String, serde_json::Value> = marks()
        .into_iter()
        .map(|(s, ns)| (s.name().to_owned(), ns.into()))
        .collect();
    serde_json::json!({ "timings_monotonic_ns": steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_keeps_its_first_time_and_steps_list_in_order() {
        mark(Step::Devices);
        let first = marks()
            .into_iter()
            .find(|&(s, _)| s == Step::Devices)
            .unwrap()
            .1;
        mark(Step::Devices);
        mark(Step::Main);
        let all = marks();
        assert!(all.contains(&(Step::Devices, first)));
        let order: Vec<usize> = all.iter().map(|&(s, _)| s as usize).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(reached(Step::Main));
        assert!(json()["timings_monotonic_ns"]["devices"].as_u64() == Some(first));
    }
}
