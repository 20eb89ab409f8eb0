//! The handlers that change what exists: editing a VM, switches and port
//! groups, datastores and volumes. Each checks its input and what depends
//! on the object (VM disks on a datastore, VM NICs on a port group) before
//! it asks a daemon, so a refused change changes nothing.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::handlers::{
    ApiRequest, Reply, accepted, check_object_name, created, ok, param, parse, principal,
};
use super::routes::Op;
use crate::db::{Vm, VmState};
use crate::service::Mgmt;
use crate::vm::edit::EditVm;
use crate::vm::request::{MAX_DISK_BYTES, MIN_DISK_BYTES};

/// Body of `POST /api/v1/switches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    name: String,
    #[serde(default)]
    mac_ageing_s: Option<u32>,
    #[serde(default)]
    uplinks: Vec<UplinkBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UplinkBody {
    name: String,
    #[serde(rename = "type")]
    kind: UplinkKind,
    interface: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum UplinkKind {
    Tap,
    AfPacket,
}

/// Body of `PATCH /api/v1/port-groups/{port_group}`: the parts given
/// replace the group's; sfera-vswitchd checks each part's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortGroupEdit {
    #[serde(default)]
    vlan: Option<Value>,
    #[serde(default)]
    security: Option<Map<String, Value>>,
    #[serde(default)]
    shaping: Option<Map<String, Value>>,
    #[serde(default)]
    teaming: Option<Map<String, Value>>,
}

/// Body of `POST /api/v1/datastores/{datastore}/volumes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeBody {
    name: String,
    size_bytes: u64,
}

/// Body of `PATCH /api/v1/datastores/{datastore}/volumes/{volume}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    size_bytes: u64,
}

pub const MAX_UPLINKS: usize = 8;
const MAX_MAC_AGEING_S: u32 = 1_000_000;

fn check_size(size: u64) -> Result<(), ApiError> {
    if (MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&size) && size.is_multiple_of(512) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "size_bytes must be a multiple of 512 from 1 MiB to 64 TiB",
        ))
    }
}

/// A host interface name: what Linux takes (IFNAMSIZ).
fn check_interface(i: usize, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "uplinks[{i}].interface {name:?} must be 1 to 15 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Only these keys, each a boolean.
fn check_flags(what: &str, m: &Map<String, Value>, keys: &[&str]) -> Result<(), ApiError> {
    for (k, v) in m {
        if !keys.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "{what}.{k} is not a field (fields: {})",
                keys.join(", ")
            )));
        }
        if !v.is_boolean() {
            return Err(ApiError::invalid(format!(
                "{what}.{k} must be true or false"
            )));
        }
    }
    Ok(())
}

/// VMs with a disk on `datastore` (and `volume`, if given).
fn disk_users(vms: &[Vm], datastore: &str, volume: Option<&str>) -> Vec<String> {
    vms.iter()
        .filter(|vm| {
            vm.disks
                .iter()
                .any(|d| d.datastore == datastore && volume.is_none_or(|v| d.volume == v))
        })
        .map(|vm| vm.name.clone())
        .collect()
}

async fn datastore_exists(mgmt: &Mgmt, ds: &str) -> Result<(), ApiError> {
    mgmt.need_blockd().await?;
    let (stores, _) = mgmt.sync_datastores().await?;
    if stores.iter().any(|s| s.name == ds) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("No datastore {ds:?}")))
    }
}

/// The volume as sfera-blockd lists it, or 404.
async fn volume(mgmt: &Mgmt, ds: &str, name: &str) -> Result<Value, ApiError> {
    let list = mgmt.blockd.volumes(ds).await?;
    list.as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Datastore {ds} has no volume {name}")))
}

fn event(mgmt: &Mgmt, r: &ApiRequest, kind: &str, target: &str, message: &str) {
    let by = r.principal.as_ref().map(|p| p.user.as_str());
    mgmt.db.event("info", kind, target, message, by);
}

pub async fn handle(mgmt: Arc<Mgmt>, r: ApiRequest) -> Result<Reply, ApiError> {
    match r.op {
        Op::EditVm => {
            let vm = mgmt.find_vm(param(&r, "vm"))?;
            let edit: EditVm = parse(&r.body)?;
            edit.check(mgmt.host.memory_bytes >> 20)?;
            let plan = mgmt.plan_edit(&vm, &edit).await?;
            let user = principal(&r)?.user.clone();
            let m = Arc::clone(&mgmt);
            let by = user.clone();
            let task = crate::tasks::spawn(&mgmt.db, "vm.edit", &vm.id, &by, move |ctx| {
                m.edit_vm(plan, user, ctx)
            })?;
            accepted(&task)
        }
        Op::AddSwitch => {
            let body: SwitchBody = parse(&r.body)?;
            check_object_name("switch", &body.name)?;
            let ageing = body.mac_ageing_s.unwrap_or(300);
            if !(1..=MAX_MAC_AGEING_S).contains(&ageing) {
                return Err(ApiError::invalid(format!(
                    "mac_ageing_s must be 1 to {MAX_MAC_AGEING_S}"
                )));
            }
            if body.uplinks.len() > MAX_UPLINKS {
                return Err(ApiError::invalid(format!("at most {MAX_UPLINKS} uplinks")));
            }
            let mut uplinks = Vec::new();
            for (i, u) in body.uplinks.iter().enumerate() {
                check_object_name(&format!("uplinks[{i}]"), &u.name)?;
                check_interface(i, &u.interface)?;
                if body.uplinks[..i].iter().any(|x| x.name == u.name) {
                    return Err(ApiError::invalid(format!(
                        "uplinks[{i}]: name {} is given twice",
                        u.name
                    )));
                }
                if body.uplinks[..i].iter().any(|x| x.interface == u.interface) {
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
                uplinks.push(json!({
                    "name": u.name,
                    "type": match u.kind { UplinkKind::Tap => "tap", UplinkKind::AfPacket => "af_packet" },
                    "interface": u.interface,
                }));
            }
            let sw = json!({ "name": body.name, "mac_ageing_s": ageing, "uplinks": uplinks });
            mgmt.need_vswitchd().await?;
            mgmt.vswitchd.add_switch(&sw).await?;
            mgmt.sync_networks().await?;
            event(
                &mgmt,
                &r,
                "switch.added",
                &body.name,
                &format!(
                    "Switch {} created with {} uplinks",
                    body.name,
                    uplinks.len()
                ),
            );
            created(sw)
        }
        Op::DeleteSwitch => {
            let name = param(&r, "switch").to_owned();
            check_object_name("switch", &name)?;
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
                let vms = mgmt.db.vms()?;
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
            event(
                &mgmt,
                &r,
                "switch.deleted",
                &name,
                &format!("Switch {name} deleted"),
            );
            Ok(Reply::Empty)
        }
        Op::EditPortGroup => {
            let name = param(&r, "port_group").to_owned();
            check_object_name("port group", &name)?;
            let body: PortGroupEdit = parse(&r.body)?;
            if let Some(s) = &body.security {
                check_flags(
                    "security",
                    s,
                    &["promiscuous", "mac_changes", "forged_transmits"],
                )?;
            }
            if body.vlan.as_ref().is_some_and(|v| !v.is_object()) {
                return Err(ApiError::invalid(
                    "vlan must be an object: {\"mode\":\"none\"}, {\"mode\":\"access\",\"id\":N} or {\"mode\":\"trunk\",\"allowed\":[...]}",
                ));
            }
            mgmt.need_vswitchd().await?;
            let mut group = mgmt.vswitchd.port_group(&name).await?;
            if let Some(v) = body.vlan {
                group["vlan"] = v;
            }
            // Parts given merge into the group's: what is left out stays.
            for (key, part) in [
                ("security", body.security),
                ("shaping", body.shaping),
                ("teaming", body.teaming),
            ] {
                if let Some(part) = part {
                    let mut merged = group[key].as_object().cloned().unwrap_or_default();
                    for (k, v) in part {
                        if v.is_null() {
                            merged.remove(&k);
                        } else {
                            merged.insert(k, v);
                        }
                    }
                    group[key] = Value::Object(merged);
                }
            }
            // The group exists (it was just read): a 404 names something
            // else the body refers to (a teaming uplink), so it is the
            // body that is wrong.
            let done = match mgmt.vswitchd.set_port_group(&name, &group).await {
                Ok(v) => v,
                Err(e) => {
                    let e = ApiError::from(e);
                    return Err(if e.status == 404 {
                        ApiError::invalid(e.message)
                    } else {
                        e
                    });
                }
            };
            mgmt.sync_networks().await?;
            event(
                &mgmt,
                &r,
                "port_group.changed",
                &name,
                &format!("Port group {name} changed"),
            );
            let shown = if done.is_object() {
                done
            } else {
                mgmt.vswitchd.port_group(&name).await?
            };
            ok(shown)
        }
        Op::DeletePortGroup => {
            let name = param(&r, "port_group").to_owned();
            check_object_name("port group", &name)?;
            let vms = mgmt.db.vms()?;
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
            event(
                &mgmt,
                &r,
                "port_group.deleted",
                &name,
                &format!("Port group {name} deleted"),
            );
            Ok(Reply::Empty)
        }
        Op::RemoveDatastore => {
            let ds = param(&r, "datastore").to_owned();
            check_object_name("datastore", &ds)?;
            datastore_exists(&mgmt, &ds).await?;
            let users = disk_users(&mgmt.db.vms()?, &ds, None);
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "Datastore {ds} holds disks of VMs {}; remove them first",
                    users.join(", ")
                )));
            }
            mgmt.blockd.remove_datastore(&ds).await?;
            mgmt.sync_datastores().await?;
            event(
                &mgmt,
                &r,
                "datastore.removed",
                &ds,
                &format!("Datastore {ds} unregistered (its files stay)"),
            );
            Ok(Reply::Empty)
        }
        Op::CreateVolume => {
            let ds = param(&r, "datastore").to_owned();
            check_object_name("datastore", &ds)?;
            let body: VolumeBody = parse(&r.body)?;
            crate::import::check_volume_name(&body.name)?;
            check_size(body.size_bytes)?;
            datastore_exists(&mgmt, &ds).await?;
            if volume(&mgmt, &ds, &body.name).await.is_ok() {
                return Err(ApiError::conflict(format!(
                    "Datastore {ds} has a volume {} already",
                    body.name
                )));
            }
            let v = mgmt
                .blockd
                .create_volume(&ds, &body.name, body.size_bytes)
                .await?;
            event(
                &mgmt,
                &r,
                "volume.created",
                &format!("{ds}/{}", body.name),
                &format!(
                    "Volume {ds}/{} created ({} bytes)",
                    body.name, body.size_bytes
                ),
            );
            created(v)
        }
        Op::DeleteVolume => {
            let ds = param(&r, "datastore").to_owned();
            let name = param(&r, "volume").to_owned();
            check_object_name("datastore", &ds)?;
            crate::import::check_volume_name(&name)?;
            datastore_exists(&mgmt, &ds).await?;
            volume(&mgmt, &ds, &name).await?;
            let users = disk_users(&mgmt.db.vms()?, &ds, Some(&name));
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "Volume {ds}/{name} is a disk of VM {}; remove it from the VM first",
                    users.join(", ")
                )));
            }
            mgmt.blockd.delete_volume(&ds, &name).await?;
            event(
                &mgmt,
                &r,
                "volume.deleted",
                &format!("{ds}/{name}"),
                &format!("Volume {ds}/{name} deleted"),
            );
            Ok(Reply::Empty)
        }
        Op::ResizeVolume => {
            let ds = param(&r, "datastore").to_owned();
            let name = param(&r, "volume").to_owned();
            check_object_name("datastore", &ds)?;
            crate::import::check_volume_name(&name)?;
            let body: ResizeBody = parse(&r.body)?;
            check_size(body.size_bytes)?;
            datastore_exists(&mgmt, &ds).await?;
            let current = volume(&mgmt, &ds, &name).await?["size"]
                .as_u64()
                .unwrap_or_default();
            if body.size_bytes <= current {
                return Err(ApiError::invalid(format!(
                    "size_bytes must be larger than the volume's {current} bytes: volumes only grow"
                )));
            }
            let v = resize(&mgmt, &ds, &name, body.size_bytes).await?;
            event(
                &mgmt,
                &r,
                "volume.resized",
                &format!("{ds}/{name}"),
                &format!(
                    "Volume {ds}/{name} grown from {current} to {} bytes",
                    body.size_bytes
                ),
            );
            ok(v)
        }
        other => Err(ApiError::internal(format!("{other:?} is not a change"))),
    }
}

/// Grows a volume. sfera-blockd refuses while it is exported, so a disk of
/// a stopped VM has its export taken down and made again around it (under
/// the VM's lock); a disk of a running VM is refused.
async fn resize(mgmt: &Mgmt, ds: &str, name: &str, size: u64) -> Result<Value, ApiError> {
    let vms = mgmt.db.vms()?;
    let Some(owner) = vms.iter().find(|vm| {
        vm.disks
            .iter()
            .any(|d| d.datastore == ds && d.volume == name)
    }) else {
        return Ok(mgmt.blockd.resize_volume(ds, name, size).await?);
    };
    let lock = mgmt.vm_lock(&owner.id);
    let _guard = lock.lock().await;
    let mut vm = mgmt.find_vm(&owner.id)?;
    if vm.state != VmState::Stopped {
        return Err(ApiError::conflict(format!(
            "Volume {ds}/{name} is a disk of VM {}, which is {}: power it off to grow the disk",
            vm.name,
            vm.state.as_str()
        )));
    }
    let Some(disk) = vm
        .disks
        .iter_mut()
        .find(|d| d.datastore == ds && d.volume == name)
    else {
        return Err(ApiError::conflict(format!(
            "VM {} changed meanwhile: try again",
            vm.name
        )));
    };
    let export = disk.export_id.clone();
    match mgmt.blockd.delete_export(&export).await {
        Err(e) if e.status() != Some(404) => return Err(e.into()),
        _ => {}
    }
    let grown = mgmt.blockd.resize_volume(ds, name, size).await;
    // Served again either way: the VM keeps its disk.
    let again = mgmt.blockd.create_export(&export, ds, name).await;
    let grown = grown?;
    again?;
    disk.size_bytes = size;
    mgmt.db.update_vm(&vm)?;
    Ok(grown)
}
