//! vCPUs: CPUID, the boot register state and the run loop.

mod cpuid;
pub mod regs;
mod vcpu;

pub use regs::EntryState;
pub use vcpu::{
    ExitCounters, RunControl, Vcpu, VcpuContext, VcpuError, VcpuThread, VmEvent,
    install_kick_handler,
};
