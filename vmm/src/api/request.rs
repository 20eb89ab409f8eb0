//! The typed control requests of sfera-vmm (Firecracker's `VmmAction`
//! idea), their answers and errors. The HTTP layer only turns HTTP into
//! these and back.

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

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// JSON with status 200.
    Json(serde_json::Value),
    /// Nothing (204).
    Empty,
}

/// A refused or failed request: HTTP status, a stable code, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: String) -> Self {
        ApiError {
            status: 400,
            code: "invalid_request",
            message,
        }
    }

    pub fn not_found(message: String) -> Self {
        ApiError {
            status: 404,
            code: "not_found",
            message,
        }
    }

    pub fn conflict(message: String) -> Self {
        ApiError {
            status: 409,
            code: "conflict",
            message,
        }
    }

    pub fn internal(message: String) -> Self {
        ApiError {
            status: 500,
            code: "internal",
            message,
        }
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError {
            status: 400,
            code: "invalid_config",
            message: error_chain(&e),
        }
    }
}

impl From<MachineError> for ApiError {
    fn from(e: MachineError) -> Self {
        let message = error_chain(&e);
        match e {
            MachineError::Boot(_) => ApiError {
                status: 400,
                code: "invalid_kernel",
                message,
            },
            MachineError::Pci(_) => ApiError {
                status: 502,
                code: "backend_failed",
                message,
            },
            _ => ApiError {
                status: 500,
                code: "boot_failed",
                message,
            },
        }
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
