//! The contract of sfera-vswitchd's API: every request body and every
//! answer it sends, as the types both sides compile against (the daemon
//! here, its CLI and sfera-mgmtd as clients). Errors are `control`'s one
//! body, `{"error": {"code", "message"}}` ([`control::ApiError`]).
//!
//! ```text
//! GET  /v1/config                         SwitchConfig      PUT: SwitchConfig
//! GET  /v1/switches                       Vec<VSwitchConfig> POST: VSwitchConfig
//! GET  /v1/switches/{sw}                  VSwitchConfig     PUT: SwitchSettings
//! GET  /v1/switches/{sw}/uplinks          Vec<UplinkConfig>  POST: UplinkConfig
//! GET  /v1/switches/{sw}/uplinks/{name}   UplinkConfig
//! GET  /v1/switches/{sw}/mac-table        Vec<MacEntry>
//! GET  /v1/port-groups                    Vec<PortGroupConfig> POST: PortGroupConfig
//! GET  /v1/port-groups/{name}             PortGroupConfig   PUT: PortGroupSettings
//! GET  /v1/ports                          Vec<PortConfig>   POST: PortConfig
//! GET  /v1/ports/{name}                   PortConfig        PUT: PortSettings
//! GET  /v1/ports/{name}/stats             PortStats
//! GET  /v1/stats                          Stats
//! ```
//!
//! A POST answers 201 with the object created, a PUT 200 with the object
//! as changed, a DELETE 204.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::request::{PortGroupSettings, PortSettings, SwitchSettings};
pub use crate::control_plane::config::{
    LoadBalancing, PortConfig, PortGroupConfig, Shaping, ShapingRule, SocketMode, SwitchConfig,
    Teaming, UplinkConfig, UplinkType, VSwitchConfig,
};
pub use crate::dataplane::frame::MacAddr;
pub use crate::dataplane::policy::{Security, VlanMode};

/// Counters of a VM port.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Frames dropped at this port, by reason label ([`crate::dataplane::frame::DropReason::label`]).
    pub drops: BTreeMap<String, u64>,
}

/// Counters of an uplink.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    pub drops: BTreeMap<String, u64>,
}

/// Everything the switch counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub vlan: u16,
    pub mac: MacAddr,
    /// Port or uplink name.
    pub port: String,
    /// Seconds since the address was last seen.
    pub age_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers read back as they were sent (mgmtd will read them).
    #[test]
    fn answers_round_trip() {
        let stats = Stats {
            ports: vec![PortStats {
                name: "a".into(),
                drops: [("runt".to_owned(), 2)].into(),
                ..PortStats::default()
            }],
            uplinks: vec![UplinkStats::default()],
            worker_packets: 3,
            ..Stats::default()
        };
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["ports"][0]["drops"]["runt"], 2);
        let back: Stats = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        let entry: MacEntry =
            serde_json::from_str(r#"{"vlan":10,"mac":"52:54:00:00:00:01","port":"a","age_s":3}"#)
                .unwrap();
        assert_eq!(entry.mac.to_string(), "52:54:00:00:00:01");
    }

    /// A settings body a client builds reads back the same, and leaves out
    /// what it does not set.
    #[test]
    fn settings_round_trip() {
        let body: PortSettings =
            serde_json::from_str(r#"{"port_group":"pg","mac":"52:54:00:00:00:01"}"#).unwrap();
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"port_group": "pg", "mac": "52:54:00:00:00:01", "mtu": 1500})
        );
        assert_eq!(serde_json::from_value::<PortSettings>(json).unwrap(), body);
        let group: PortGroupSettings = serde_json::from_str("{}").unwrap();
        let back = serde_json::to_value(&group).unwrap();
        assert_eq!(
            serde_json::from_value::<PortGroupSettings>(back).unwrap(),
            group
        );
        let switch: SwitchSettings = serde_json::from_str(r#"{"mac_ageing_s":60}"#).unwrap();
        assert_eq!(
            serde_json::to_value(&switch).unwrap(),
            serde_json::json!({"mac_ageing_s": 60})
        );
    }
}
