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
//!                                         (a client's PATCH: PortGroupPatch, applied
//!                                          to the group to make the PUT's body)
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

/// A change to a port group's policy, for a client that changes part of
/// it (mgmtd's `PATCH`): the parts given change, the rest stays. Inside a
/// part, a field given replaces the group's and a field given as `null`
/// goes back to its default (no shaping in that direction, all uplinks);
/// a part given as `null` is left out. sfera-vswitchd takes a group
/// whole (`PUT`, [`PortGroupSettings`]): [`PortGroupPatch::apply`] makes
/// that body from the group as `GET` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroupPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaping: Option<ShapingPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teaming: Option<TeamingPatch>,
}

/// A field of a patch: left out (`None`), `null` (`Some(None)`: back to
/// its default) or a value.
pub type PatchField<T> = Option<Option<T>>;

/// Reads a field that is there, `null` included, as `Some` (serde reads a
/// `null` `Option` as `None`, which would mean "left out").
fn given<'de, D, T>(d: D) -> Result<PatchField<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The [`Security`] flags to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityPatch {
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub promiscuous: PatchField<bool>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub mac_changes: PatchField<bool>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub forged_transmits: PatchField<bool>,
}

/// The [`Shaping`] directions to change (`null`: not shaped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingPatch {
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress: PatchField<ShapingRule>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress: PatchField<ShapingRule>,
}

/// The [`Teaming`] fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamingPatch {
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub policy: PatchField<LoadBalancing>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub active: PatchField<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub standby: PatchField<Vec<String>>,
}

/// Sets `to` to a field that is given, its default for `null`.
fn patch<T: Default>(field: PatchField<T>, to: &mut T) {
    if let Some(value) = field {
        *to = value.unwrap_or_default();
    }
}

impl PortGroupPatch {
    /// The body of the `PUT` that makes `group` (as `GET` shows it) what
    /// this patch asks for; sfera-vswitchd checks it.
    pub fn apply(self, group: PortGroupConfig) -> PortGroupSettings {
        let mut group = group;
        if let Some(vlan) = self.vlan {
            group.vlan = vlan;
        }
        if let Some(s) = self.security {
            patch(s.promiscuous, &mut group.security.promiscuous);
            patch(s.mac_changes, &mut group.security.mac_changes);
            patch(s.forged_transmits, &mut group.security.forged_transmits);
        }
        if let Some(s) = self.shaping {
            // Not shaped is the default.
            if let Some(ingress) = s.ingress {
                group.shaping.ingress = ingress;
            }
            if let Some(egress) = s.egress {
                group.shaping.egress = egress;
            }
        }
        if let Some(t) = self.teaming {
            patch(t.policy, &mut group.teaming.policy);
            patch(t.active, &mut group.teaming.active);
            patch(t.standby, &mut group.teaming.standby);
        }
        group.into()
    }
}

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
    /// Deliveries to the guest retried because its receive ring was full
    /// (absent from switches before retries were counted).
    #[serde(default)]
    pub rx_retries: u64,
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

    fn group() -> PortGroupConfig {
        serde_json::from_str(
            r#"{"name":"pg","switch":"sw1","vlan":{"mode":"access","id":10},
                "security":{"promiscuous":true},
                "shaping":{"egress":{"average_bps":1000,"peak_bps":2000,"burst_bytes":3000}},
                "teaming":{"policy":"ip_hash","active":["u0"],"standby":["u1"]}}"#,
        )
        .unwrap()
    }

    /// A patch changes the parts and fields it gives, and nothing else;
    /// the `PUT` body it makes keeps the group's name and switch.
    #[test]
    fn a_patch_changes_only_what_it_gives() {
        let patch: PortGroupPatch = serde_json::from_str(
            r#"{"security":{"mac_changes":true},"teaming":{"policy":"failover_order"}}"#,
        )
        .unwrap();
        let body = patch.apply(group());
        let mut want: PortGroupSettings = group().into();
        want.security.mac_changes = true;
        want.teaming.policy = LoadBalancing::FailoverOrder;
        assert_eq!(body, want);
        assert_eq!(
            (body.name.as_deref(), body.switch.as_deref()),
            (Some("pg"), Some("sw1"))
        );
        let whole = PortGroupPatch::default().apply(group());
        assert_eq!(whole, group().into());
    }

    /// `null` inside a part is the field's default; a `null` part, or one
    /// left out, changes nothing.
    #[test]
    fn null_fields_take_their_defaults() {
        let patch: PortGroupPatch = serde_json::from_str(
            r#"{"vlan":{"mode":"none"},"security":null,
                "shaping":{"egress":null,"ingress":{"average_bps":1,"peak_bps":2,"burst_bytes":3}},
                "teaming":{"active":null}}"#,
        )
        .unwrap();
        assert_eq!(patch.shaping.as_ref().unwrap().egress, Some(None));
        let body = patch.clone().apply(group());
        assert_eq!(body.vlan, VlanMode::None);
        assert!(body.security.promiscuous);
        assert_eq!(body.shaping.egress, None);
        assert_eq!(body.shaping.ingress.unwrap().peak_bps, 2);
        assert!(body.teaming.active.is_empty());
        assert_eq!(body.teaming.standby, ["u1"]);
        // What a client sends reads back the same, `null`s included.
        let json = serde_json::to_value(&patch).unwrap();
        assert_eq!(json["shaping"]["egress"], serde_json::Value::Null);
        assert!(json.get("security").is_none());
        assert_eq!(
            serde_json::from_value::<PortGroupPatch>(json).unwrap(),
            patch
        );
        assert!(serde_json::from_str::<PortGroupPatch>(r#"{"shaping":{"in":null}}"#).is_err());
    }
}
