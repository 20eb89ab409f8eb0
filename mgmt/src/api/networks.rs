//! Virtual networking: switches with their uplinks, port groups, the
//! VMs' ports and the switch's counters. A change checks what depends on
//! it (port groups on a switch, NICs of VMs on a port group) before it
//! asks sfera-vswitchd, so a refused change changes nothing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, schema::Schema};
use vswitch::control_plane::api::types::{
    PortGroupConfig, PortGroupPatch, PortStats, UplinkConfig, UplinkType, VSwitchConfig, VlanMode,
};
use vswitch::control_plane::config::DEFAULT_SWITCH;
use vswitch::dataplane::frame::MacAddr;

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, created, ok, to_json};
use super::request::ApiRequest;
use super::{rules, schema};
use crate::service::Mgmt;

/// Body of `POST /api/v1/port-groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortGroupCreate {
    #[schema(schema_with = schema::object_name)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = schema::switch_or_null)]
    pub switch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::vlan_or_null)]
    pub vlan: Option<Value>,
}

/// Body of `POST /api/v1/switches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchCreate {
    #[schema(schema_with = schema::object_name)]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = schema::mac_ageing)]
    pub mac_ageing_s: Option<u32>,
    #[serde(default)]
    #[schema(schema_with = schema::uplinks)]
    pub uplinks: Vec<Uplink>,
}

/// An uplink of a new switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    #[schema(schema_with = schema::object_name)]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: UplinkKind,
    #[schema(schema_with = schema::interface_name)]
    pub interface: String,
}

/// tap: a TAP device the switch creates; af_packet: an existing host interface
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UplinkKind {
    Tap,
    AfPacket,
}

impl From<UplinkKind> for UplinkType {
    fn from(kind: UplinkKind) -> Self {
        match kind {
            UplinkKind::Tap => UplinkType::Tap,
            UplinkKind::AfPacket => UplinkType::AfPacket,
        }
    }
}

/// Body of `PATCH /api/v1/port-groups/{port_group}`: the parts given
/// replace the group's; sfera-vswitchd checks each part's fields.
// Field by field inside a part, a `null` field going back to its default:
// each part is read as sfera-vswitchd's `PortGroupPatch` (after `check`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortGroupEdit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::vlan)]
    pub vlan: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::security)]
    pub security: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::shaping)]
    pub shaping: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::teaming)]
    pub teaming: Option<Map<String, Value>>,
}

/// A part of a body (`what`) read as sfera-vswitchd's type for it.
fn part<T: DeserializeOwned>(what: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

impl PortGroupCreate {
    /// The group to make: on vSwitch0 unless a switch is given, with no
    /// VLAN unless one is.
    fn group(&self) -> Result<PortGroupConfig, ApiError> {
        let switch = self.switch.as_deref().unwrap_or(DEFAULT_SWITCH);
        let mut group = PortGroupConfig::new(&self.name, switch);
        if let Some(v) = &self.vlan {
            group.vlan = part::<VlanMode>("vlan", v.clone())?;
        }
        Ok(group)
    }
}

impl PortGroupEdit {
    /// Refuses what has a message of its own here.
    fn check(&self) -> Result<(), ApiError> {
        if let Some(s) = &self.security {
            rules::check_flags("security", s, &SECURITY_FLAGS)?;
        }
        if let Some(v) = &self.vlan {
            rules::check_vlan(v)?;
        }
        Ok(())
    }

    /// The edit as sfera-vswitchd's patch.
    fn patch(self) -> Result<PortGroupPatch, ApiError> {
        Ok(PortGroupPatch {
            vlan: self.vlan.map(|v| part("vlan", v)).transpose()?,
            security: self
                .security
                .map(|m| part("security", Value::Object(m)))
                .transpose()?,
            shaping: self
                .shaping
                .map(|m| part("shaping", Value::Object(m)))
                .transpose()?,
            teaming: self
                .teaming
                .map(|m| part("teaming", Value::Object(m)))
                .transpose()?,
        })
    }
}

/// A switch as sfera-vswitchd reports it (or the inventory's last copy),
/// passed on as it is.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Switch(pub Value);

/// A port group as sfera-vswitchd reports it (or the inventory's last
/// copy), passed on as it is.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct PortGroup(pub Value);

// The daemon's JSON is not a type of ours: its schema is written down.
impl utoipa::PartialSchema for Switch {
    fn schema() -> RefOr<Schema> {
        schema::switch().into()
    }
}

impl ToSchema for Switch {
    fn name() -> std::borrow::Cow<'static, str> {
        "Switch".into()
    }
}

impl utoipa::PartialSchema for PortGroup {
    fn schema() -> RefOr<Schema> {
        schema::port_group().into()
    }
}

impl ToSchema for PortGroup {
    fn name() -> std::borrow::Cow<'static, str> {
        "PortGroup".into()
    }
}

/// Switches and port groups.
#[derive(Debug, Serialize, ToSchema)]
pub struct Networks {
    switches: Vec<Switch>,
    port_groups: Vec<PortGroup>,
    /// sfera-vswitchd could not be asked: this is the inventory's last copy
    stale: bool,
}

/// A VM's port on the switch.
#[derive(Debug, Serialize, ToSchema)]
pub struct Port {
    name: String,
    port_group: String,
    #[schema(value_type = String)]
    mac: MacAddr,
    mtu: u16,
    /// The VM whose NIC it is
    vm: Option<PortVm>,
    /// A VMM is connected and the port's queues run
    connected: bool,
    /// The switch's counters of the port
    #[schema(value_type = Option<Object>)]
    stats: Option<PortStats>,
}

/// The VM a port belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortVm {
    id: String,
    name: String,
}

/// The fields of a port group's security policy.
const SECURITY_FLAGS: [&str; 3] = ["promiscuous", "mac_changes", "forged_transmits"];

/// The `{name}` path parameter, checked as a name of `what`.
fn name_param(r: &ApiRequest, name: &str, what: &str) -> Result<String, ApiError> {
    let value = r.param(name);
    rules::check_object_name(what, value)?;
    Ok(value.to_owned())
}

/// `GET /api/v1/networks`: switches and port groups.
pub async fn networks(mgmt: &Mgmt) -> Result<Reply, ApiError> {
    let (switches, port_groups, stale) = mgmt.sync_networks().await?;
    ok(Networks {
        switches: switches.into_iter().map(Switch).collect(),
        port_groups: port_groups.into_iter().map(PortGroup).collect(),
        stale,
    })
}

/// `GET /api/v1/switches`.
pub async fn list_switches(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let (switches, _, stale) = mgmt.sync_networks().await?;
    ok(page.of_maybe_stale(switches.into_iter().map(Switch).collect(), stale))
}

/// `GET /api/v1/port-groups`.
pub async fn list_port_groups(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let (_, groups, stale) = mgmt.sync_networks().await?;
    ok(page.of_maybe_stale(groups.into_iter().map(PortGroup).collect(), stale))
}

/// `POST /api/v1/port-groups`: on vSwitch0 unless a switch is given.
pub async fn add_port_group(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: PortGroupCreate = r.body()?;
    rules::check_object_name("port group", &body.name)?;
    if let Some(s) = &body.switch {
        rules::check_object_name("switch", s)?;
    }
    let group = body.group()?;
    mgmt.need_vswitchd().await?;
    mgmt.vswitchd.add_port_group(&group).await?;
    mgmt.sync_networks().await?;
    r.event(
        mgmt,
        "port_group.added",
        &body.name,
        &format!("Port group {} created", body.name),
    );
    // The answer has always been the request, the VLAN filled in.
    let mut shown =
        json!({ "name": body.name, "vlan": body.vlan.unwrap_or(json!({ "mode": "none" })) });
    if let Some(s) = body.switch {
        shown["switch"] = json!(s);
    }
    created(PortGroup(shown))
}

/// `GET /api/v1/networks/stats`: sfera-vswitchd's counters.
pub async fn stats(mgmt: &Mgmt) -> Result<Reply, ApiError> {
    ok(mgmt.vswitchd.stats().await?)
}

/// `GET /api/v1/ports`: the switch's ports, with their VM and counters.
pub async fn list_ports(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let config = mgmt.vswitchd.config().await?;
    let stats = mgmt.vswitchd.stats().await?;
    let vms = mgmt.inventory.vms_here().await?;
    let mut out = Vec::new();
    for p in &config.ports {
        let vm = vms.iter().find(|v| v.nics.iter().any(|n| n.port == p.name));
        let counters = stats.ports.iter().find(|s| s.name == p.name);
        out.push(Port {
            name: p.name.clone(),
            port_group: p.port_group.clone(),
            mac: p.mac,
            mtu: p.mtu,
            vm: vm.map(|v| PortVm {
                id: v.id.clone(),
                name: v.name.clone(),
            }),
            connected: counters.is_some_and(|c| c.connected),
            stats: counters.cloned(),
        });
    }
    ok(page.of(out))
}

/// The uplinks of a new switch, checked, as sfera-vswitchd takes them.
fn uplinks(given: &[Uplink]) -> Result<Vec<UplinkConfig>, ApiError> {
    rules::check_uplink_count(given.len())?;
    let mut uplinks = Vec::new();
    for (i, u) in given.iter().enumerate() {
        rules::check_object_name(&format!("uplinks[{i}]"), &u.name)?;
        rules::check_interface(&format!("uplinks[{i}].interface"), &u.interface)?;
        if given[..i].iter().any(|x| x.name == u.name) {
            return Err(ApiError::invalid(format!(
                "uplinks[{i}]: name {} is given twice",
                u.name
            )));
        }
        if given[..i].iter().any(|x| x.interface == u.interface) {
            return Err(ApiError::invalid(format!(
                "uplinks[{i}]: interface {} is given twice",
                u.interface
            )));
        }
        if matches!(u.kind, UplinkKind::AfPacket)
            && !std::path::Path::new("/sys/class/net")
                .join(&u.interface)
                .exists()
        {
            return Err(ApiError::invalid(format!(
                "uplinks[{i}]: the host has no interface {:?} for AF_PACKET",
                u.interface
            )));
        }
        uplinks.push(UplinkConfig {
            name: u.name.clone(),
            kind: u.kind.into(),
            interface: u.interface.clone(),
        });
    }
    Ok(uplinks)
}

/// `POST /api/v1/switches`: with its uplinks.
pub async fn add_switch(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: SwitchCreate = r.body()?;
    rules::check_object_name("switch", &body.name)?;
    let ageing = body.mac_ageing_s.unwrap_or(rules::DEFAULT_MAC_AGEING_S);
    rules::check_mac_ageing(ageing)?;
    let uplinks = uplinks(&body.uplinks)?;
    let count = uplinks.len();
    let sw = VSwitchConfig {
        name: body.name.clone(),
        uplinks,
        mac_ageing_s: ageing,
    };
    mgmt.need_vswitchd().await?;
    mgmt.vswitchd.add_switch(&sw).await?;
    mgmt.sync_networks().await?;
    r.event(
        mgmt,
        "switch.added",
        &body.name,
        &format!("Switch {} created with {count} uplinks", body.name),
    );
    created(Switch(to_json(&sw)?))
}

/// `DELETE /api/v1/switches/{switch}`: refused while it has port groups.
pub async fn delete_switch(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let name = name_param(r, "switch", "switch")?;
    mgmt.need_vswitchd().await?;
    let (switches, groups, _) = mgmt.sync_networks().await?;
    if !switches.iter().any(|s| s["name"] == name.as_str()) {
        return Err(ApiError::not_found(format!("No switch {name:?}")));
    }
    let on_it: Vec<&str> = groups
        .iter()
        .filter(|g| g["switch"] == name.as_str())
        .filter_map(|g| g["name"].as_str())
        .collect();
    if !on_it.is_empty() {
        let vms = mgmt.inventory.vms_here().await?;
        let users: Vec<&str> = vms
            .iter()
            .filter(|vm| {
                vm.nics
                    .iter()
                    .any(|n| on_it.contains(&n.port_group.as_str()))
            })
            .map(|vm| vm.name.as_str())
            .collect();
        return Err(ApiError::conflict(format!(
            "Switch {name} has port groups {}{}; delete them first",
            on_it.join(", "),
            if users.is_empty() {
                String::new()
            } else {
                format!(" with NICs of VMs {}", users.join(", "))
            }
        )));
    }
    mgmt.vswitchd.remove_switch(&name).await?;
    mgmt.sync_networks().await?;
    r.event(
        mgmt,
        "switch.deleted",
        &name,
        &format!("Switch {name} deleted"),
    );
    Ok(Reply::Empty)
}

/// `PATCH /api/v1/port-groups/{port_group}`.
pub async fn edit_port_group(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let name = name_param(r, "port_group", "port group")?;
    let body: PortGroupEdit = r.body()?;
    body.check()?;
    mgmt.need_vswitchd().await?;
    let group = mgmt.vswitchd.port_group(&name).await?;
    let group = body.patch()?.apply(group);
    // The group exists (it was just read): a 404 names something else
    // the body refers to (a teaming uplink), so it is the body that is
    // wrong.
    let done =
        mgmt.vswitchd
            .set_port_group(&name, &group)
            .await
            .map_err(|e| match ApiError::from(e) {
                e if e.status == 404 => ApiError::invalid(e.message),
                e => e,
            })?;
    mgmt.sync_networks().await?;
    r.event(
        mgmt,
        "port_group.changed",
        &name,
        &format!("Port group {name} changed"),
    );
    ok(PortGroup(to_json(&done)?))
}

/// `DELETE /api/v1/port-groups/{port_group}`: refused while NICs of VMs
/// are on it.
pub async fn delete_port_group(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let name = name_param(r, "port_group", "port group")?;
    let vms = mgmt.inventory.vms_here().await?;
    let users: Vec<&str> = vms
        .iter()
        .filter(|vm| vm.nics.iter().any(|n| n.port_group == name))
        .map(|vm| vm.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "Port group {name} has NICs of VMs {}; remove them or move them first",
            users.join(", ")
        )));
    }
    mgmt.need_vswitchd().await?;
    mgmt.vswitchd.remove_port_group(&name).await?;
    mgmt.sync_networks().await?;
    r.event(
        mgmt,
        "port_group.deleted",
        &name,
        &format!("Port group {name} deleted"),
    );
    Ok(Reply::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(body: &str) -> PortGroupEdit {
        serde_json::from_str(body).unwrap()
    }

    /// An edit reads as sfera-vswitchd's patch, part by part; a part it
    /// cannot read is the client's error, named.
    #[test]
    fn edits_read_as_the_switch_patch() {
        let patch = edit(
            r#"{"vlan":{"mode":"access","id":7},"security":{"promiscuous":true},
                "shaping":{"egress":null},"teaming":{"standby":["u1"]}}"#,
        )
        .patch()
        .unwrap();
        assert_eq!(patch.vlan, Some(VlanMode::Access { id: 7 }));
        assert_eq!(patch.security.unwrap().promiscuous, Some(Some(true)));
        assert_eq!(patch.shaping.unwrap().egress, Some(None));
        assert_eq!(
            patch.teaming.unwrap().standby,
            Some(Some(vec!["u1".into()]))
        );
        let e = edit(r#"{"teaming":{"policy":"random"}}"#)
            .patch()
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("teaming:"), "{}", e.message);
        let e = edit(r#"{"security":{"sniff":true}}"#).check().unwrap_err();
        assert!(e.message.contains("security.sniff"), "{}", e.message);
    }

    /// A new group is on vSwitch0 with no VLAN unless told otherwise.
    #[test]
    fn new_groups_take_the_defaults() {
        let create: PortGroupCreate = serde_json::from_str(r#"{"name":"pg"}"#).unwrap();
        assert_eq!(
            create.group().unwrap(),
            PortGroupConfig::new("pg", DEFAULT_SWITCH)
        );
        let create: PortGroupCreate = serde_json::from_str(
            r#"{"name":"pg","switch":"sw1","vlan":{"mode":"access","id":10}}"#,
        )
        .unwrap();
        let group = create.group().unwrap();
        assert_eq!(
            (group.switch.as_str(), group.vlan),
            ("sw1", VlanMode::Access { id: 10 })
        );
        let bad: PortGroupCreate =
            serde_json::from_str(r#"{"name":"pg","vlan":{"mode":"none","id":10}}"#).unwrap();
        assert_eq!(bad.group().unwrap_err().status, 400);
    }

    /// What the CLI sends reads back as the body it built, with what it
    /// left out left out.
    #[test]
    fn bodies_round_trip() {
        let e = PortGroupEdit {
            vlan: Some(json!({ "mode": "none" })),
            ..PortGroupEdit::default()
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json, json!({ "vlan": { "mode": "none" } }));
        assert_eq!(serde_json::from_value::<PortGroupEdit>(json).unwrap(), e);
        let sw = SwitchCreate {
            name: "sw1".into(),
            mac_ageing_s: None,
            uplinks: vec![Uplink {
                name: "u0".into(),
                kind: UplinkKind::AfPacket,
                interface: "eth0".into(),
            }],
        };
        let json = serde_json::to_value(&sw).unwrap();
        assert_eq!(
            json,
            json!({ "name": "sw1", "mac_ageing_s": null,
                    "uplinks": [{ "name": "u0", "type": "af_packet", "interface": "eth0" }] })
        );
        assert_eq!(serde_json::from_value::<SwitchCreate>(json).unwrap(), sw);
    }
}
