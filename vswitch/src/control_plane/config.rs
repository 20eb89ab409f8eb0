//! The switch daemon's configuration: switches with their uplinks, port
//! groups with their policies, and ports (VM NICs). The same document is
//! the configuration file, the state the daemon persists, and what the
//! REST API reads and changes, so one `validate` guards all three.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataplane::frame::MacAddr;
use crate::dataplane::policy::{Security, VlanMode};

/// Error in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid switch configuration: {0}")]
pub struct BadConfig(pub String);

/// An object's name breaks the rule of every Sfera object name
/// ([`control::names`]): what the API puts in URL paths.
impl From<control::names::NameError> for BadConfig {
    fn from(e: control::names::NameError) -> Self {
        BadConfig(e.to_string())
    }
}

/// The switch a port group belongs to when it names none.
pub const DEFAULT_SWITCH: &str = "vSwitch0";
/// Most queue pairs a port may have.
pub const MAX_QUEUE_PAIRS: u16 = 8;

/// A virtual switch: its uplinks and MAC table settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VSwitchConfig {
    pub name: String,
    #[serde(default)]
    pub uplinks: Vec<UplinkConfig>,
    /// Seconds a learned address stays without traffic (vSphere and OVS
    /// use 300).
    #[serde(default = "mac_ageing_s")]
    pub mac_ageing_s: u32,
}

fn mac_ageing_s() -> u32 {
    300
}

/// How an uplink reaches the host's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkType {
    /// A TAP device the switch creates (or opens) by name.
    Tap,
    /// An AF_PACKET socket bound to an existing host interface.
    AfPacket,
}

/// An uplink: a host NIC of a switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: UplinkType,
    /// The host interface (TAP name, or the interface AF_PACKET binds to).
    pub interface: String,
}

/// One direction's traffic shaping, as vSphere defines it: a sustained
/// average, a peak the port may reach while it has burst allowance left,
/// and the size of that allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingRule {
    /// Bits per second, sustained.
    pub average_bps: u64,
    /// Bits per second at most, while bursting.
    pub peak_bps: u64,
    /// Bytes a port may send above the average before it is held to it.
    pub burst_bytes: u64,
}

/// Shaping of a port group's ports. `ingress` is traffic entering the
/// switch from the VM, `egress` traffic leaving the switch to the VM (the
/// vSphere distributed switch's naming).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shaping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<ShapingRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<ShapingRule>,
}

/// How a port group spreads its traffic over the switch's uplinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// By the VM's port: each port uses one uplink.
    #[default]
    OriginatingPort,
    /// By a hash of the source MAC address.
    SourceMac,
    /// By a hash of the source and destination IPv4/IPv6 addresses (the
    /// source MAC for frames that are not IP).
    IpHash,
    /// The first uplink of the failover order that has link.
    FailoverOrder,
}

/// NIC teaming of a port group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Teaming {
    #[serde(default)]
    pub policy: LoadBalancing,
    /// Uplinks in use, in failover order; empty means all of the switch's
    /// uplinks, in their order.
    #[serde(default)]
    pub active: Vec<String>,
    /// Uplinks used, in order, only when no active uplink has link.
    #[serde(default)]
    pub standby: Vec<String>,
}

/// A port group: the policy its ports share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortGroupConfig {
    pub name: String,
    #[serde(default = "default_switch")]
    pub switch: String,
    #[serde(default = "no_vlan")]
    pub vlan: VlanMode,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub shaping: Shaping,
    #[serde(default)]
    pub teaming: Teaming,
}

impl PortGroupConfig {
    /// A group on `switch` with the default policy: no VLAN, the three
    /// security items rejected, no shaping, teaming by originating port
    /// over all uplinks (what a body that gives only the names gets).
    pub fn new(name: impl Into<String>, switch: impl Into<String>) -> Self {
        PortGroupConfig {
            name: name.into(),
            switch: switch.into(),
            vlan: VlanMode::None,
            security: Security::default(),
            shaping: Shaping::default(),
            teaming: Teaming::default(),
        }
    }
}

fn default_switch() -> String {
    DEFAULT_SWITCH.to_owned()
}

fn no_vlan() -> VlanMode {
    VlanMode::None
}

/// Which side of a port's socket the switch takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketMode {
    /// The switch listens; the VMM connects.
    #[default]
    Server,
    /// The VMM listens; the switch connects and reconnects (OVS's
    /// `dpdkvhostuserclient`).
    Client,
}

/// A VM NIC's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    pub socket: PathBuf,
    #[serde(default)]
    pub mode: SocketMode,
    pub mac: MacAddr,
    pub port_group: String,
    #[serde(default = "mtu")]
    pub mtu: u16,
    /// Queue pairs offered to the guest (multi-queue virtio-net).
    #[serde(default = "one")]
    pub queues: u16,
}

fn mtu() -> u16 {
    super::api::request::DEFAULT_MTU
}

fn one() -> u16 {
    1
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    #[serde(default = "default_switches")]
    pub switches: Vec<VSwitchConfig>,
    #[serde(default)]
    pub port_groups: Vec<PortGroupConfig>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

fn default_switches() -> Vec<VSwitchConfig> {
    vec![VSwitchConfig {
        name: DEFAULT_SWITCH.to_owned(),
        uplinks: Vec::new(),
        mac_ageing_s: mac_ageing_s(),
    }]
}

impl Default for SwitchConfig {
    /// One switch without uplinks, no port groups, no ports.
    fn default() -> Self {
        SwitchConfig {
            switches: default_switches(),
            port_groups: Vec::new(),
            ports: Vec::new(),
        }
    }
}

/// Checks a host interface name as Linux accepts it.
fn check_ifname(uplink: &str, name: &str) -> Result<(), BadConfig> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return Err(BadConfig(format!(
            "uplink {uplink:?}: {name:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

impl ShapingRule {
    fn validate(&self, what: &str) -> Result<(), BadConfig> {
        if self.average_bps < 8_000 {
            return Err(BadConfig(format!(
                "{what}: average_bps must be at least 8000"
            )));
        }
        if self.peak_bps < self.average_bps {
            return Err(BadConfig(format!(
                "{what}: peak_bps ({}) is below average_bps ({})",
                self.peak_bps, self.average_bps
            )));
        }
        if self.burst_bytes < 1_518 {
            return Err(BadConfig(format!(
                "{what}: burst_bytes must hold at least one frame (1518)"
            )));
        }
        Ok(())
    }
}

impl SwitchConfig {
    /// Checks names, references, VLAN IDs, MAC addresses, MTUs, queue
    /// counts, shaping and teaming.
    pub fn validate(&self) -> Result<(), BadConfig> {
        let mut switches = BTreeSet::new();
        let mut uplinks = BTreeSet::new();
        let mut interfaces = BTreeSet::new();
        for s in &self.switches {
            control::names::check("switch", &s.name)?;
            if !switches.insert(s.name.as_str()) {
                return Err(BadConfig(format!("switch {:?} is defined twice", s.name)));
            }
            if !(10..=1_000_000).contains(&s.mac_ageing_s) {
                return Err(BadConfig(format!(
                    "switch {:?}: mac_ageing_s must be 10..=1000000",
                    s.name
                )));
            }
            for u in &s.uplinks {
                control::names::check("uplink", &u.name)?;
                check_ifname(&u.name, &u.interface)?;
                if !uplinks.insert(u.name.as_str()) {
                    return Err(BadConfig(format!("uplink {:?} is defined twice", u.name)));
                }
                if !interfaces.insert(u.interface.as_str()) {
                    return Err(BadConfig(format!(
                        "interface {:?} is used by two uplinks",
                        u.interface
                    )));
                }
            }
        }
        let mut groups = BTreeSet::new();
        for g in &self.port_groups {
            control::names::check("port group", &g.name)?;
            if !groups.insert(g.name.as_str()) {
                return Err(BadConfig(format!(
                    "port group {:?} is defined twice",
                    g.name
                )));
            }
            let Some(switch) = self.switches.iter().find(|s| s.name == g.switch) else {
                return Err(BadConfig(format!(
                    "port group {:?} names switch {:?}, which does not exist",
                    g.name, g.switch
                )));
            };
            g.vlan
                .validate()
                .map_err(|e| BadConfig(format!("port group {:?}: {e}", g.name)))?;
            if let Some(r) = &g.shaping.ingress {
                r.validate(&format!("port group {:?} ingress shaping", g.name))?;
            }
            if let Some(r) = &g.shaping.egress {
                r.validate(&format!("port group {:?} egress shaping", g.name))?;
            }
            let mut teamed = BTreeSet::new();
            for u in g.teaming.active.iter().chain(&g.teaming.standby) {
                if !switch.uplinks.iter().any(|x| &x.name == u) {
                    return Err(BadConfig(format!(
                        "port group {:?}: teaming names uplink {u:?}, which switch {:?} does not have",
                        g.name, g.switch
                    )));
                }
                if !teamed.insert(u.as_str()) {
                    return Err(BadConfig(format!(
                        "port group {:?}: uplink {u:?} is listed twice in teaming",
                        g.name
                    )));
                }
            }
        }
        let mut names = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        for p in &self.ports {
            control::names::check("port", &p.name)?;
            if !names.insert(p.name.as_str()) {
                return Err(BadConfig(format!("port {:?} is defined twice", p.name)));
            }
            if !sockets.insert(p.socket.as_path()) {
                return Err(BadConfig(format!(
                    "port {:?}: socket {} is used by another port",
                    p.name,
                    p.socket.display()
                )));
            }
            if !p.socket.is_absolute() {
                return Err(BadConfig(format!(
                    "port {:?}: socket path {} must be absolute",
                    p.name,
                    p.socket.display()
                )));
            }
            if !groups.contains(p.port_group.as_str()) {
                return Err(BadConfig(format!(
                    "port {:?} names port group {:?}, which does not exist",
                    p.name, p.port_group
                )));
            }
            if p.mac.is_multicast() || p.mac == MacAddr([0; 6]) {
                return Err(BadConfig(format!(
                    "port {:?}: {} is not a unicast address",
                    p.name, p.mac
                )));
            }
            if !(68..=9000).contains(&p.mtu) {
                return Err(BadConfig(format!(
                    "port {:?}: MTU {} is outside 68..=9000",
                    p.name, p.mtu
                )));
            }
            if !(1..=MAX_QUEUE_PAIRS).contains(&p.queues) {
                return Err(BadConfig(format!(
                    "port {:?}: queues {} is outside 1..={MAX_QUEUE_PAIRS}",
                    p.name, p.queues
                )));
            }
        }
        Ok(())
    }

    /// The port group a port belongs to.
    pub fn group_of(&self, port: &PortConfig) -> Option<&PortGroupConfig> {
        self.port_groups.iter().find(|g| g.name == port.port_group)
    }

    /// A switch by name.
    pub fn switch(&self, name: &str) -> Option<&VSwitchConfig> {
        self.switches.iter().find(|s| s.name == name)
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
        let c = parse(good).expect("valid");
        assert_eq!(c.switches[0].name, DEFAULT_SWITCH);
        assert_eq!(c.ports[0].queues, 1);
        let cases = [
            (good.replace("\"pg\"}]}", "\"nope\"}]}"), "does not exist"),
            (
                good.replace("52:54:00:00:00:01", "01:00:00:00:00:01"),
                "not a unicast",
            ),
            (good.replace("52:54:00:00:00:01", "junk"), "MAC"),
            (good.replace("\"id\":10", "\"id\":5000"), "outside"),
            (
                good.replace("\"socket\"", "\"extra\":1,\"socket\""),
                "unknown field",
            ),
            (good.replace("\"/s\"", "\"rel\""), "absolute"),
            (
                good.replace("\"port_group\"", "\"queues\":9,\"port_group\""),
                "queues 9",
            ),
            (good.replace("\"name\":\"a\"", "\"name\":\"a/b\""), "name"),
            (
                good.replace("\"name\":\"a\"", "\"name\":\"-a\""),
                "must not start with",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn uplinks_teaming_and_shaping() {
        let good = r#"{"switches":[{"name":"sw","uplinks":[
                          {"name":"u1","type":"tap","interface":"sfup1"},
                          {"name":"u2","type":"af_packet","interface":"eth9"}]}],
                       "port_groups":[{"name":"pg","switch":"sw",
                          "teaming":{"policy":"ip_hash","active":["u2"],"standby":["u1"]},
                          "shaping":{"ingress":{"average_bps":100000000,"peak_bps":200000000,"burst_bytes":102400}}}]}"#;
        let c = parse(good).expect("valid");
        assert_eq!(c.port_groups[0].teaming.policy, LoadBalancing::IpHash);
        let cases = [
            (good.replace("[\"u1\"]", "[\"u3\"]"), "does not have"),
            (good.replace("[\"u1\"]", "[\"u2\"]"), "twice"),
            (good.replace("\"eth9\"", "\"sfup1\""), "two uplinks"),
            (
                good.replace("\"eth9\"", "\"much-too-long-name\""),
                "interface name",
            ),
            (
                good.replace("\"peak_bps\":200000000", "\"peak_bps\":1"),
                "below",
            ),
            (
                good.replace("\"switch\":\"sw\"", "\"switch\":\"x\""),
                "does not exist",
            ),
            (good.replace("\"af_packet\"", "\"xdp\""), "unknown variant"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
