//! The answers of sfera-vmm's API as serde types, so that a client
//! (sfera-mgmtd) compiles against the types the VMM answers with. The
//! request body of `PUT /v1/vm` is [`crate::config::VmConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;

/// `GET /v1/vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// `not_created`, `created`, `running`, `paused` or `stopped`.
    pub state: String,
    pub config: Option<VmConfig>,
    /// How the VM ended, once it has.
    pub end: Option<VmEnd>,
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEnd {
    /// Power-off, reset or a shutdown request: exit status 0.
    pub clean: bool,
    pub reason: String,
}

/// `GET /v1/vm/counters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// vCPU exits by kind, summed over the vCPUs.
    pub exits: BTreeMap<String, u64>,
    pub devices: Vec<DeviceCounters>,
}

/// One device's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceCounters {
    Virtio(VirtioCounters),
    Serial(SerialCounters),
}

/// A virtio-pci device: its transport's counters and its backend's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioCounters {
    /// The device's name (`rng`, `blk0`, `net0`...).
    pub device: String,
    /// The driver's device status register.
    pub status: u8,
    pub msix: bool,
    pub activations: u64,
    pub resets: u64,
    pub notifications_trapped: u64,
    pub intx_interrupts: u64,
    pub backend: BackendCounters,
}

/// What does a virtio device's work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BackendCounters {
    Rng(RngCounters),
    VhostUser(VhostUserCounters),
}

/// The virtio-rng device, served in the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngCounters {
    pub notifications: u64,
    pub interrupts: u64,
    pub bytes: u64,
    pub bad_requests: u64,
    /// Times the queue was stopped because the guest broke its ring, by
    /// reason.
    pub broken_queues: BTreeMap<String, u64>,
}

/// A device whose backend is a vhost-user process (sfera-blockd,
/// sfera-vswitchd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostUserCounters {
    pub socket: PathBuf,
    pub connected: bool,
    pub connects: u64,
    pub reconnects: u64,
    pub setups: u64,
    pub setup_errors: u64,
}

/// The serial console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialCounters {
    /// Always `serial`.
    pub device: String,
    /// Console output dropped because no reader kept up.
    pub output_bytes_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_counters_read_back_as_their_kind() {
        let counters = Counters {
            exits: [("io_in".to_owned(), 4)].into(),
            devices: vec![
                DeviceCounters::Virtio(VirtioCounters {
                    device: "blk0".into(),
                    status: 15,
                    msix: true,
                    activations: 1,
                    resets: 0,
                    notifications_trapped: 0,
                    intx_interrupts: 0,
                    backend: BackendCounters::VhostUser(VhostUserCounters {
                        socket: "/run/sfera/blk/e.sock".into(),
                        connected: true,
                        connects: 1,
                        reconnects: 0,
                        setups: 1,
                        setup_errors: 0,
                    }),
                }),
                DeviceCounters::Virtio(VirtioCounters {
                    device: "rng".into(),
                    status: 15,
                    msix: false,
                    activations: 1,
                    resets: 0,
                    notifications_trapped: 3,
                    intx_interrupts: 3,
                    backend: BackendCounters::Rng(RngCounters {
                        notifications: 3,
                        interrupts: 3,
                        bytes: 64,
                        bad_requests: 0,
                        broken_queues: [("avail_index".to_owned(), 0)].into(),
                    }),
                }),
                DeviceCounters::Serial(SerialCounters {
                    device: "serial".into(),
                    output_bytes_dropped: 7,
                }),
            ],
        };
        let json = serde_json::to_value(&counters).unwrap();
        assert_eq!(json["devices"][0]["backend"]["connected"], true);
        assert_eq!(json["devices"][2]["output_bytes_dropped"], 7);
        assert_eq!(serde_json::from_value::<Counters>(json).unwrap(), counters);
    }
}
