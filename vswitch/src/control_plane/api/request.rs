//! The typed control requests of sfera-vswitchd and its errors (the
//! answers are `control`'s [`control::server::Reply`]). The HTTP layer only
//! turns HTTP into these and back; [`crate::control_plane::service`] carries them out.

use std::path::PathBuf;

pub use control::ApiError;
use serde::{Deserialize, Serialize};

use crate::control_plane::config::{
    BadConfig, PortConfig, PortGroupConfig, Shaping, SocketMode, SwitchConfig, Teaming,
    UplinkConfig, VSwitchConfig,
};
use crate::control_plane::daemon::DaemonError;
use crate::dataplane::frame::MacAddr;
use crate::dataplane::policy::{Security, VlanMode};

/// Body of `PUT /v1/switches/{name}`: the switch as `GET` shows it. `name`
/// may be left out; `uplinks`, when left out, stay as they are (they have
/// their own resource), and when given replace the switch's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_mac_ageing_s")]
    pub mac_ageing_s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplinks: Option<Vec<UplinkConfig>>,
}

/// Body of `PUT /v1/port-groups/{name}`: the group as `GET` shows it. The
/// policy (`vlan`, `security`, `shaping`, `teaming`) is replaced, a missing
/// one taking its default; `name` and `switch` may be left out and cannot
/// change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroupSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    #[serde(default = "no_vlan")]
    pub vlan: VlanMode,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub shaping: Shaping,
    #[serde(default)]
    pub teaming: Teaming,
}

impl From<PortGroupConfig> for PortGroupSettings {
    /// The group as `GET` shows it, as a `PUT` body that keeps it.
    fn from(g: PortGroupConfig) -> Self {
        PortGroupSettings {
            name: Some(g.name),
            switch: Some(g.switch),
            vlan: g.vlan,
            security: g.security,
            shaping: g.shaping,
            teaming: g.teaming,
        }
    }
}

/// Body of `PUT /v1/ports/{name}`: the port as `GET` shows it. `port_group`,
/// `mac` and `mtu` may change (a missing `mtu` is 1500); `name`, `socket`,
/// `mode` and `queues` may be left out and cannot change (the VMM would
/// have to reconnect: delete the port and create it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SocketMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u16>,
    pub port_group: String,
    pub mac: MacAddr,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

impl From<PortConfig> for PortSettings {
    /// The port as `GET` shows it, as a `PUT` body that keeps it.
    fn from(p: PortConfig) -> Self {
        PortSettings {
            name: Some(p.name),
            socket: Some(p.socket),
            mode: Some(p.mode),
            queues: Some(p.queues),
            port_group: p.port_group,
            mac: p.mac,
            mtu: p.mtu,
        }
    }
}

/// The MAC ageing a switch gets when none is given (as in vSphere and OVS).
pub const DEFAULT_MAC_AGEING_S: u32 = 300;
/// The MTU a port gets when none is given.
pub const DEFAULT_MTU: u16 = 1500;

fn default_mac_ageing_s() -> u32 {
    DEFAULT_MAC_AGEING_S
}

fn default_mtu() -> u16 {
    DEFAULT_MTU
}

fn no_vlan() -> VlanMode {
    VlanMode::None
}

/// A request that reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Config,
    Switches,
    Switch { name: String },
    Uplinks { switch: String },
    Uplink { switch: String, name: String },
    PortGroups,
    PortGroup { name: String },
    Ports,
    Port { name: String },
    MacTable { switch: String },
    Stats,
    PortStats { name: String },
    Metrics,
}

/// A request that changes the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ReplaceConfig(SwitchConfig),
    AddSwitch(VSwitchConfig),
    SetSwitch {
        name: String,
        body: SwitchSettings,
    },
    RemoveSwitch {
        name: String,
    },
    AddUplink {
        switch: String,
        body: UplinkConfig,
    },
    RemoveUplink {
        switch: String,
        name: String,
    },
    AddPortGroup(PortGroupConfig),
    SetPortGroup {
        name: String,
        body: PortGroupSettings,
    },
    RemovePortGroup {
        name: String,
    },
    AddPort(PortConfig),
    SetPort {
        name: String,
        body: PortSettings,
    },
    RemovePort {
        name: String,
    },
}

/// What the control API can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Query(Query),
    Change(Change),
}

/// A 400 with the code sfera-vswitchd has always answered, `invalid` (the
/// other daemons say `invalid_request`): its clients match on it.
pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "invalid", message)
}

/// 409: the host refused a valid configuration (an interface or socket
/// path taken, say); nothing changed.
pub fn apply_failed(message: impl Into<String>) -> ApiError {
    ApiError::new(409, "apply_failed", message)
}

impl From<BadConfig> for ApiError {
    fn from(e: BadConfig) -> Self {
        invalid(e.to_string())
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Invalid(bad) => bad.into(),
            DaemonError::Apply(_) => apply_failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_bodies_take_defaults_and_refuse_unknown_fields() {
        let s: PortGroupSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s.vlan, VlanMode::None);
        assert_eq!(s.security, Security::default());
        assert!(serde_json::from_str::<PortGroupSettings>(r#"{"vlans":{}}"#).is_err());
        assert!(
            serde_json::from_str::<PortGroupSettings>(r#"{"security":{"promiscuos":true}}"#)
                .is_err()
        );
        let p: PortSettings =
            serde_json::from_str(r#"{"port_group":"pg","mac":"52:54:00:00:00:01"}"#).unwrap();
        assert_eq!((p.mtu, p.socket), (DEFAULT_MTU, None));
        assert!(serde_json::from_str::<PortSettings>(r#"{"port_group":"pg"}"#).is_err());
        let w: SwitchSettings = serde_json::from_str("{}").unwrap();
        assert_eq!((w.mac_ageing_s, w.uplinks), (DEFAULT_MAC_AGEING_S, None));
    }

    #[test]
    fn errors_map_to_statuses_and_bodies() {
        let e: ApiError = BadConfig("bad".into()).into();
        assert_eq!((e.status, e.code), (400, "invalid"));
        let e: ApiError = DaemonError::Apply("TAP sfapi0 is busy".into()).into();
        assert_eq!((e.status, e.code), (409, "apply_failed"));
        assert!(e.message.contains("sfapi0"), "{}", e.message);
        let e: ApiError = DaemonError::Invalid(BadConfig("x".into())).into();
        assert_eq!(e.status, 400);
        assert_eq!(invalid("x").body()["error"]["code"], "invalid");
    }
}
