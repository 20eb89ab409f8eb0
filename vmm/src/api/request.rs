//! The typed control requests of sfera-vmm (Firecracker's `VmmAction`
//! idea) and the errors they end in. The HTTP layer only turns HTTP into
//! these and back; the answers are in [`super::types`].

use control::{ApiError, error_chain};

use crate::config::{ConfigError, VmConfig};
use crate::machine::MachineError;

/// What the control API can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmAction {
    /// `PUT /v1/vm`: validate and keep a configuration.
    CreateVm(Box<VmConfig>),
    /// `PUT /v1/vm/boot`: build the machine and start its vCPUs.
    BootVm,
    /// `PUT /v1/vm/pause`.
    PauseVm,
    /// `PUT /v1/vm/resume`.
    ResumeVm,
    /// `PUT /v1/vm/shutdown`: stop the VM; the process then exits with 0.
    ShutdownVm,
    /// `GET /v1/vm`: state and configuration.
    GetVmInfo,
    /// `GET /v1/vm/counters`: exits by kind and per-device counters.
    GetCounters,
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::new(400, "invalid_config", error_chain(&e))
    }
}

impl From<MachineError> for ApiError {
    fn from(e: MachineError) -> Self {
        let message = error_chain(&e);
        match e {
            MachineError::Boot(_) => ApiError::new(400, "invalid_kernel", message),
            MachineError::Pci(_) => ApiError::new(502, "backend_failed", message),
            _ => ApiError::new(500, "boot_failed", message),
        }
    }
}
