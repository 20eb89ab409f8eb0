//! The typed control requests of sfera-vswitchd, their answers and errors.
//! The HTTP layer only turns HTTP into these and back; [`crate::service`]
//! carries them out.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{
    BadConfig, PortConfig, PortGroupConfig, Shaping, SocketMode, SwitchConfig, Teaming,
    UplinkConfig, VSwitchConfig,
};
use crate::daemon::DaemonError;
use crate::frame::MacAddr;
use crate::policy::{Security, VlanMode};

/// Body of `PUT /v1/switches/{name}`: the switch as `GET` shows it. `name`
/// may be left out; `uplinks`, when left out, stay as they are (they have
/// their own resource), and when given replace the switch's list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSettings {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_mac_ageing_s")]
    pub mac_ageing_s: u32,
    #[serde(default)]
    pub uplinks: Option<Vec<UplinkConfig>>,
}

/// Body of `PUT /v1/port-groups/{name}`: the group as `GET` shows it. The
/// policy (`vlan`, `security`, `shaping`, `teaming`) is replaced, a missing
/// one taking its default; `name` and `switch` may be left out and cannot
/// change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroupSettings {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
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

/// Body of `PUT /v1/ports/{name}`: the port as `GET` shows it. `port_group`,
/// `mac` and `mtu` may change (a missing `mtu` is 1500); `name`, `socket`,
/// `mode` and `queues` may be left out and cannot change (the VMM would
/// have to reconnect: delete the port and create it again).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSettings {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub mode: Option<SocketMode>,
    #[serde(default)]
    pub queues: Option<u16>,
    pub port_group: String,
    pub mac: MacAddr,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
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

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// JSON with status 200, or 201 when `created`.
    Json {
        created: bool,
        body: serde_json::Value,
    },
    /// Nothing (204).
    Empty,
    /// Prometheus text exposition.
    Metrics(String),
}

/// A refused or failed request: HTTP status, a stable code, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Methods the resource allows (the `Allow` header of a 405).
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            allow: None,
        }
    }

    /// 400: malformed JSON, unknown fields, invalid values.
    pub fn invalid(message: String) -> Self {
        Self::new(400, "invalid", message)
    }

    /// 404: no such object (in the path, or named by the body).
    pub fn not_found(message: String) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 405, with the methods the resource allows.
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path} (allowed: {allow})"),
            )
        }
    }

    /// 409: a duplicate, or an object still in use.
    pub fn conflict(message: String) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 409: the host refused a valid configuration (an interface or socket
    /// path taken, say); nothing changed.
    pub fn apply_failed(message: String) -> Self {
        Self::new(409, "apply_failed", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("Request bodies are limited to {limit} bytes"),
        )
    }

    /// 500: the daemon's own failure (the state file cannot be written).
    pub fn internal(message: String) -> Self {
        Self::new(500, "internal", message)
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<BadConfig> for ApiError {
    fn from(e: BadConfig) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Invalid(bad) => bad.into(),
            DaemonError::Apply(_) => ApiError::apply_failed(e.to_string()),
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
        let body = ApiError::not_found("No port \"a\"".into()).body();
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["message"], "No port \"a\"");
        let e = ApiError::method_not_allowed("PATCH", "/v1/ports", "GET, POST");
        assert_eq!((e.status, e.allow), (405, Some("GET, POST")));
    }
}
