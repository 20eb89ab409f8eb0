//! The switch's configuration file (JSON): port groups and ports.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use crate::frame::MacAddr;
use crate::policy::{Security, VlanMode};

/// Error in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid switch configuration: {0}")]
pub struct BadConfig(pub String);

/// A port group: the policy its ports share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroupConfig {
    pub name: String,
    #[serde(default = "no_vlan")]
    pub vlan: VlanMode,
    #[serde(default)]
    pub security: Security,
}

fn no_vlan() -> VlanMode {
    VlanMode::None
}

/// A VM NIC's port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortFileConfig {
    pub name: String,
    pub socket: PathBuf,
    /// `server` (the switch listens) or `client` (the VMM listens).
    #[serde(default = "server")]
    pub mode: String,
    pub mac: String,
    pub port_group: String,
    #[serde(default = "mtu")]
    pub mtu: u16,
}

fn server() -> String {
    "server".to_owned()
}

fn mtu() -> u16 {
    1500
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    pub port_groups: Vec<PortGroupConfig>,
    pub ports: Vec<PortFileConfig>,
}

impl SwitchConfig {
    /// Checks names, references, VLAN IDs, MAC addresses and MTUs.
    pub fn validate(&self) -> Result<(), BadConfig> {
        let mut groups = BTreeSet::new();
        for g in &self.port_groups {
            if !groups.insert(g.name.as_str()) {
                return Err(BadConfig(format!(
                    "port group {:?} is defined twice",
                    g.name
                )));
            }
            g.vlan
                .validate()
                .map_err(|e| BadConfig(format!("port group {:?}: {e}", g.name)))?;
        }
        let mut names = BTreeSet::new();
        for p in &self.ports {
            if !names.insert(p.name.as_str()) {
                return Err(BadConfig(format!("port {:?} is defined twice", p.name)));
            }
            if !groups.contains(p.port_group.as_str()) {
                return Err(BadConfig(format!(
                    "port {:?} names port group {:?}, which does not exist",
                    p.name, p.port_group
                )));
            }
            let mac: MacAddr = p
                .mac
                .parse()
                .map_err(|e| BadConfig(format!("port {:?}: {e}", p.name)))?;
            if mac.is_multicast() {
                return Err(BadConfig(format!(
                    "port {:?}: {} is a group address",
                    p.name, p.mac
                )));
            }
            if !(68..=9000).contains(&p.mtu) {
                return Err(BadConfig(format!(
                    "port {:?}: MTU {} is outside 68..=9000",
                    p.name, p.mtu
                )));
            }
            if p.mode != "server" && p.mode != "client" {
                return Err(BadConfig(format!(
                    "port {:?}: mode must be server or client",
                    p.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SwitchConfig, String> {
        let c: SwitchConfig = serde_json::from_str(s).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn valid_and_invalid_configurations() {
        let good = r#"{"port_groups":[{"name":"pg","vlan":{"mode":"access","id":10}}],
                       "ports":[{"name":"a","socket":"/s","mac":"52:54:00:00:00:01","port_group":"pg"}]}"#;
        assert!(parse(good).is_ok());
        let cases = [
            (good.replace("\"pg\"}]}", "\"nope\"}]}"), "does not exist"),
            (
                good.replace("52:54:00:00:00:01", "01:00:00:00:00:01"),
                "group address",
            ),
            (good.replace("52:54:00:00:00:01", "junk"), "Invalid MAC"),
            (good.replace("\"id\":10", "\"id\":5000"), "outside"),
            (
                good.replace("\"socket\"", "\"extra\":1,\"socket\""),
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}
