//! The switch daemon's control object: it holds the configuration, applies
//! changes to the running dataplane, and reads its counters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{BadConfig, SwitchConfig};

/// Errors of the control object.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The new configuration does not validate: nothing changed.
    #[error(transparent)]
    Invalid(#[from] BadConfig),
    /// The configuration is valid but the host refused part of it (a TAP
    /// that cannot be created, a socket that cannot be bound): nothing
    /// changed.
    #[error("Cannot apply the configuration: {0}")]
    Apply(String),
}

/// Options of the daemon that are not part of the switching configuration.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// CPU the forwarding worker is pinned to.
    pub cpu: Option<usize>,
    /// Microseconds the worker keeps polling after its last frame before it
    /// sleeps on the guests' kicks (0: always sleep when idle).
    pub poll_us: u32,
}

/// Counters of a VM port.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PortStats {
    pub name: String,
    pub port_group: String,
    pub switch: String,
    /// A frontend is connected and the port's queues are running.
    pub connected: bool,
    /// Queue pairs the guest enabled.
    pub queues_enabled: u16,
    /// Frames and bytes delivered to the guest.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames and bytes the guest sent that the switch accepted.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped at this port, by reason label ([`crate::frame::DropReason::label`]).
    pub drops: BTreeMap<&'static str, u64>,
}

/// Counters of an uplink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UplinkStats {
    pub name: String,
    pub switch: String,
    pub interface: String,
    pub link_up: bool,
    /// Frames received from the host network.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames sent to the host network.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

/// Everything the switch counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub ports: Vec<PortStats>,
    pub uplinks: Vec<UplinkStats>,
    /// Forwarding worker: poll rounds that moved frames, and the TSC cycles
    /// they took (OVS's "processing cycles").
    pub worker_busy_rounds: u64,
    pub worker_busy_cycles: u64,
    pub worker_packets: u64,
}

/// One learned address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacEntry {
    pub vlan: u16,
    pub mac: crate::frame::MacAddr,
    /// Port or uplink name.
    pub port: String,
    /// Seconds since the address was last seen.
    pub age_s: u64,
}

/// The running switch daemon.
/// `Send + Sync`: the API shares it behind an `Arc`.
pub struct Daemon {}

impl Daemon {
    /// Validates `config`, starts the forwarding worker and the ports.
    pub fn start(config: SwitchConfig, options: DaemonOptions) -> Result<Daemon, DaemonError> { todo!() }
    /// The configuration in force.
    pub fn config(&self) -> SwitchConfig { todo!() }
    /// Replaces the configuration: validates it, then adds, changes and
    /// removes switches, uplinks, port groups and ports to match. On error
    /// the configuration in force is unchanged.
    pub fn apply(&self, new: SwitchConfig) -> Result<(), DaemonError> { todo!() }
    /// Counters of every port and uplink.
    pub fn stats(&self) -> Stats { todo!() }
    /// The MAC table of a switch; `None` when there is no such switch.
    pub fn mac_table(&self, switch: &str) -> Option<Vec<MacEntry>> { todo!() }
    /// Stops the worker and closes every port.
    pub fn shutdown(self) { todo!() }
}
