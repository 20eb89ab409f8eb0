//! `sfera vm edit`, `sfera network switch|port-group ...` and `sfera
//! datastore remove|volume ...`: the commands that change what exists.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Map, Value, json};

use crate::{parse_size, print, s, wait_task};
use mgmt::api::datastores::{VolumeCreate, VolumeResize};
use mgmt::api::networks::{PortGroupCreate, PortGroupEdit, SwitchCreate, Uplink, UplinkKind};
use mgmt::blockd::encode_segment;
use mgmt::client::Client;
use mgmt::db::Boot;
use mgmt::driver::Driver;
use mgmt::vm::edit::{EditVm, RemoveDisk, RemoveNic};
use mgmt::vm::request::{DiskRequest, NicRequest};
use vswitch::control_plane::api::types::{ShapingRule, VlanMode};

/// `sfera vm edit`: what is left out stays.
#[derive(Debug, Args)]
pub(crate) struct VmEdit {
    vm: String,
    /// Only if the VM is still at this resource_version (from `vm show`):
    /// an edit made meanwhile by someone else is not overwritten.
    #[arg(long, value_name = "VERSION")]
    if_version: Option<i64>,
    /// A new name (any time; the rest only while the VM is stopped).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// A new disk, DATASTORE:SIZE (SIZE with K, M, G, T), repeatable.
    #[arg(long = "add-disk")]
    add_disks: Vec<String>,
    /// An existing volume as a new disk, DATASTORE:VOLUME, repeatable.
    #[arg(long = "attach")]
    attach: Vec<String>,
    /// Take a disk off, DATASTORE:VOLUME, repeatable; its volume stays
    /// unless --delete-volumes.
    #[arg(long = "remove-disk")]
    remove_disks: Vec<String>,
    /// Delete the volumes of the disks taken off.
    #[arg(long)]
    delete_volumes: bool,
    /// A new NIC, PORT_GROUP or PORT_GROUP=MAC, repeatable.
    #[arg(long = "add-nic")]
    add_nics: Vec<String>,
    /// Take the NIC with this MAC off, repeatable.
    #[arg(long = "remove-nic")]
    remove_nics: Vec<String>,
    /// Boot this kernel (with --initrd and --cmdline).
    #[arg(long, conflicts_with_all = ["boot_disk", "iso"])]
    kernel: Option<String>,
    #[arg(long, requires = "kernel")]
    initrd: Option<String>,
    #[arg(long, requires = "kernel", default_value = "")]
    cmdline: String,
    /// Boot the first disk through firmware (QEMU).
    #[arg(long, conflicts_with = "iso")]
    boot_disk: bool,
    /// Boot this ISO image of the host (QEMU).
    #[arg(long)]
    iso: Option<String>,
    #[arg(long, value_parser = ["sfera-vmm", "qemu"])]
    driver: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCmd {
    /// Port groups and their switches.
    List,
    /// Virtual switches.
    #[command(subcommand)]
    Switch(SwitchCmd),
    /// Port groups.
    #[command(subcommand, name = "port-group")]
    PortGroup(PortGroupCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SwitchCmd {
    List,
    /// Create a switch.
    Create {
        name: String,
        /// An uplink, NAME:tap:INTERFACE (a TAP device the switch creates)
        /// or NAME:af_packet:INTERFACE (an existing host NIC), repeatable.
        #[arg(long = "uplink")]
        uplinks: Vec<String>,
        /// Seconds a learned MAC address is kept (default 300).
        #[arg(long)]
        mac_ageing: Option<u32>,
    },
    /// Delete a switch without port groups.
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PortGroupCmd {
    /// Create a port group.
    Create {
        name: String,
        #[arg(long)]
        switch: Option<String>,
        /// none, an access VLAN ID (1-4094), or trunk:ID,ID...[:NATIVE].
        #[arg(long)]
        vlan: Option<String>,
    },
    /// Change a port group's policy; what is left out stays.
    Edit {
        name: String,
        /// none, an access VLAN ID (1-4094), or trunk:ID,ID...[:NATIVE].
        #[arg(long)]
        vlan: Option<String>,
        #[arg(long)]
        promiscuous: Option<bool>,
        #[arg(long)]
        mac_changes: Option<bool>,
        #[arg(long)]
        forged_transmits: Option<bool>,
        /// Shaping of traffic from the VMs: AVERAGE_BPS:PEAK_BPS:BURST_BYTES, or off.
        #[arg(long)]
        ingress: Option<String>,
        /// Shaping of traffic to the VMs: AVERAGE_BPS:PEAK_BPS:BURST_BYTES, or off.
        #[arg(long)]
        egress: Option<String>,
        /// originating_port, source_mac, ip_hash or failover_order.
        #[arg(long, value_parser = ["originating_port", "source_mac", "ip_hash", "failover_order"])]
        teaming: Option<String>,
        /// Active uplinks in failover order, comma-separated ("" for all).
        #[arg(long)]
        active: Option<String>,
        /// Standby uplinks in order, comma-separated.
        #[arg(long)]
        standby: Option<String>,
    },
    /// Delete a port group without VM NICs.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCmd {
    List {
        datastore: String,
    },
    /// Create a thin volume.
    Create {
        datastore: String,
        /// NAME or FOLDER/NAME.
        volume: String,
        /// With K, M, G, T.
        size: String,
    },
    /// Grow a volume (a VM's disk only while the VM is stopped).
    Resize {
        datastore: String,
        volume: String,
        size: String,
    },
    /// Delete a volume that is no VM's disk.
    Delete {
        datastore: String,
        volume: String,
    },
}

fn split2<'a>(what: &str, spec: &'a str, form: &str) -> Result<(&'a str, &'a str)> {
    spec.split_once(':')
        .with_context(|| format!("{what} {spec:?}: expected {form}"))
}

pub(crate) fn show(v: &Value, json_out: bool, text: &str) {
    if json_out {
        print(&v.to_string());
    } else {
        eprintln!("{text}");
    }
}

/// `none`, `N` or `trunk:LIST[:NATIVE]` (LIST as sfera-vswitchd's own
/// CLI reads it: `10,20,100-110`) as the API's VLAN object.
fn vlan(spec: &str) -> Result<Value> {
    let mode = if spec == "none" {
        VlanMode::None
    } else if let Some(rest) = spec.strip_prefix("trunk:") {
        let (ids, native) = match rest.split_once(':') {
            Some((ids, n)) => (ids, Some(n.parse::<u16>().context("trunk native VLAN")?)),
            None => (rest, None),
        };
        VlanMode::Trunk {
            allowed: VlanMode::parse_list(ids)?,
            native,
        }
    } else {
        let id: u16 = spec
            .parse()
            .with_context(|| format!("--vlan {spec:?}: none, an ID or trunk:IDS[:NATIVE]"))?;
        VlanMode::Access { id }
    };
    Ok(serde_json::to_value(mode)?)
}

fn shaping(spec: &str) -> Result<Value> {
    if spec == "off" {
        return Ok(Value::Null);
    }
    let parts = spec
        .split(':')
        .map(|p| {
            p.parse::<u64>()
                .with_context(|| format!("{p:?} is not a number"))
        })
        .collect::<Result<Vec<_>>>()?;
    let [average_bps, peak_bps, burst_bytes] = parts[..] else {
        bail!("shaping {spec:?}: expected AVERAGE_BPS:PEAK_BPS:BURST_BYTES or off");
    };
    Ok(serde_json::to_value(ShapingRule {
        average_bps,
        peak_bps,
        burst_bytes,
    })?)
}

fn names(list: &str) -> Vec<&str> {
    list.split(',').filter(|n| !n.is_empty()).collect()
}

/// A new disk, `DATASTORE:SIZE`, as the API takes it (`what`: the flag).
pub(crate) fn new_disk(what: &str, spec: &str) -> Result<DiskRequest> {
    let (ds, size) = split2(what, spec, "DATASTORE:SIZE")?;
    Ok(DiskRequest {
        datastore: ds.to_owned(),
        size_bytes: Some(parse_size(size)?),
        volume: None,
    })
}

/// An existing volume as a disk, `DATASTORE:VOLUME`.
pub(crate) fn attached_disk(what: &str, spec: &str) -> Result<DiskRequest> {
    let (ds, volume) = split2(what, spec, "DATASTORE:VOLUME")?;
    Ok(DiskRequest {
        datastore: ds.to_owned(),
        size_bytes: None,
        volume: Some(volume.to_owned()),
    })
}

/// A NIC, `PORT_GROUP` or `PORT_GROUP=MAC`.
pub(crate) fn nic(spec: &str) -> NicRequest {
    let (port_group, mac) = match spec.split_once('=') {
        Some((g, mac)) => (g, Some(mac.to_owned())),
        None => (spec, None),
    };
    NicRequest {
        port_group: port_group.to_owned(),
        mac,
    }
}

/// The API's request for the edit `sfera vm edit` describes.
fn edit_body(a: VmEdit) -> Result<EditVm> {
    let boot = if let Some(kernel) = a.kernel {
        Some(Boot::Kernel {
            kernel,
            initrd: a.initrd,
            cmdline: a.cmdline,
        })
    } else if a.boot_disk {
        Some(Boot::Disk)
    } else {
        a.iso.map(|iso| Boot::Iso { iso })
    };
    let mut add_disks = Vec::new();
    for spec in &a.add_disks {
        add_disks.push(new_disk("--add-disk", spec)?);
    }
    for spec in &a.attach {
        add_disks.push(attached_disk("--attach", spec)?);
    }
    let mut remove_disks = Vec::new();
    for spec in &a.remove_disks {
        let (ds, volume) = split2("--remove-disk", spec, "DATASTORE:VOLUME")?;
        remove_disks.push(RemoveDisk {
            datastore: ds.to_owned(),
            volume: volume.to_owned(),
            delete_volume: a.delete_volumes,
        });
    }
    Ok(EditVm {
        name: a.name,
        vcpus: a.vcpus,
        memory_mib: a.memory,
        boot,
        driver: a.driver.as_deref().map(Driver::parse),
        add_disks,
        remove_disks,
        add_nics: a.add_nics.iter().map(|n| nic(n)).collect(),
        remove_nics: a
            .remove_nics
            .iter()
            .map(|mac| RemoveNic { mac: mac.clone() })
            .collect(),
        resource_version: a.if_version,
    })
}

pub(crate) async fn vm_edit(client: &Client, a: VmEdit, json_out: bool) -> Result<()> {
    let path = format!("/api/v1/vms/{}", encode_segment(&a.vm));
    let body = edit_body(a)?;
    let task = client.call_with(Method::PATCH, &path, &body).await?;
    let result = wait_task(client, &task).await?;
    let id = s(&result["id"]);
    let vm = client
        .call(
            Method::GET,
            &format!("/api/v1/vms/{}", encode_segment(&id)),
            None,
        )
        .await?;
    let not_deleted = result["volumes_not_deleted"]
        .as_array()
        .filter(|a| !a.is_empty());
    show(
        &vm,
        json_out,
        &format!(
            "Edited {}: {} vCPUs, {} MiB, {} disks, {} NICs{}",
            s(&vm["name"]),
            s(&vm["vcpus"]),
            s(&vm["memory_mib"]),
            vm["disks"].as_array().map_or(0, Vec::len),
            vm["nics"].as_array().map_or(0, Vec::len),
            not_deleted.map_or(String::new(), |v| format!(
                "; volumes not deleted: {}",
                Value::Array(v.clone())
            ))
        ),
    );
    Ok(())
}

pub(crate) async fn network(client: &Client, cmd: NetworkCmd, json_out: bool) -> Result<()> {
    match cmd {
        // Listed by the caller.
        NetworkCmd::List => bail!("network list is not a change"),
        NetworkCmd::Switch(cmd) => switch(client, cmd, json_out).await,
        NetworkCmd::PortGroup(cmd) => port_group(client, cmd, json_out).await,
    }
}

async fn switch(client: &Client, cmd: SwitchCmd, json_out: bool) -> Result<()> {
    match cmd {
        SwitchCmd::List => {
            let v = client.call(Method::GET, "/api/v1/switches", None).await?;
            if json_out {
                print(&v.to_string());
                return Ok(());
            }
            for sw in v["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let uplinks: Vec<String> = sw["uplinks"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|u| format!("{}:{}:{}", s(&u["name"]), s(&u["type"]), s(&u["interface"])))
                    .collect();
                print(&format!("{}  {}", s(&sw["name"]), uplinks.join(" ")));
            }
        }
        SwitchCmd::Create {
            name,
            uplinks,
            mac_ageing,
        } => {
            let body = SwitchCreate {
                name: name.clone(),
                mac_ageing_s: mac_ageing,
                uplinks: uplinks.iter().map(|u| uplink(u)).collect::<Result<_>>()?,
            };
            let v = client
                .call_with(Method::POST, "/api/v1/switches", &body)
                .await?;
            show(&v, json_out, &format!("Created switch {name}"));
        }
        SwitchCmd::Delete { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/switches/{}", encode_segment(&name)),
                    None,
                )
                .await?;
            show(
                &json!({ "deleted": name }),
                json_out,
                &format!("Deleted switch {name}"),
            );
        }
    }
    Ok(())
}

async fn port_group(client: &Client, cmd: PortGroupCmd, json_out: bool) -> Result<()> {
    match cmd {
        PortGroupCmd::Create {
            name,
            switch,
            vlan: v,
        } => {
            let body = PortGroupCreate {
                name: name.clone(),
                switch,
                vlan: v.map(|spec| vlan(&spec)).transpose()?,
            };
            let g = client
                .call_with(Method::POST, "/api/v1/port-groups", &body)
                .await?;
            show(&g, json_out, &format!("Created port group {name}"));
        }
        PortGroupCmd::Edit {
            name,
            vlan: v,
            promiscuous,
            mac_changes,
            forged_transmits,
            ingress,
            egress,
            teaming,
            active,
            standby,
        } => {
            let security = security_patch(promiscuous, mac_changes, forged_transmits);
            let team = teaming_patch(teaming, active.as_deref(), standby.as_deref());
            let body = PortGroupEdit {
                vlan: v.map(|spec| vlan(&spec)).transpose()?,
                security: unless_empty(security),
                shaping: unless_empty(shaping_patch(ingress, egress)?),
                teaming: unless_empty(team),
            };
            let g = client
                .call_with(
                    Method::PATCH,
                    &format!("/api/v1/port-groups/{}", encode_segment(&name)),
                    &body,
                )
                .await?;
            show(&g, json_out, &format!("Changed port group {name}"));
        }
        PortGroupCmd::Delete { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/port-groups/{}", encode_segment(&name)),
                    None,
                )
                .await?;
            show(
                &json!({ "deleted": name }),
                json_out,
                &format!("Deleted port group {name}"),
            );
        }
    }
    Ok(())
}

/// A part of a patch, left out when it says nothing.
fn unless_empty(part: Map<String, Value>) -> Option<Map<String, Value>> {
    (!part.is_empty()).then_some(part)
}

/// `--uplink NAME:tap|af_packet:INTERFACE`.
fn uplink(spec: &str) -> Result<Uplink> {
    let mut parts = spec.splitn(3, ':');
    let form = || format!("--uplink {spec:?}: expected NAME:tap|af_packet:INTERFACE");
    let (Some(name), Some(kind), Some(interface)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!(form());
    };
    let kind = match kind {
        "tap" => UplinkKind::Tap,
        "af_packet" => UplinkKind::AfPacket,
        _ => bail!(form()),
    };
    Ok(Uplink {
        name: name.to_owned(),
        kind,
        interface: interface.to_owned(),
    })
}

/// The security flags given, as a port group's `security` patch.
fn security_patch(
    promiscuous: Option<bool>,
    mac_changes: Option<bool>,
    forged_transmits: Option<bool>,
) -> Map<String, Value> {
    let mut security = Map::new();
    for (k, flag) in [
        ("promiscuous", promiscuous),
        ("mac_changes", mac_changes),
        ("forged_transmits", forged_transmits),
    ] {
        if let Some(f) = flag {
            security.insert(k.into(), Value::Bool(f));
        }
    }
    security
}

/// `--ingress` and `--egress`, as a port group's `shaping` patch.
fn shaping_patch(ingress: Option<String>, egress: Option<String>) -> Result<Map<String, Value>> {
    let mut part = Map::new();
    if let Some(spec) = ingress {
        part.insert("ingress".into(), shaping(&spec)?);
    }
    if let Some(spec) = egress {
        part.insert("egress".into(), shaping(&spec)?);
    }
    Ok(part)
}

/// `--teaming`, `--active` and `--standby`, as a port group's `teaming`
/// patch.
fn teaming_patch(
    policy: Option<String>,
    active: Option<&str>,
    standby: Option<&str>,
) -> Map<String, Value> {
    let mut team = Map::new();
    if let Some(p) = policy {
        team.insert("policy".into(), Value::String(p));
    }
    if let Some(list) = active {
        team.insert("active".into(), Value::from(names(list)));
    }
    if let Some(list) = standby {
        team.insert("standby".into(), Value::from(names(list)));
    }
    team
}

pub(crate) async fn remove_datastore(client: &Client, name: &str, json_out: bool) -> Result<()> {
    client
        .call(
            Method::DELETE,
            &format!("/api/v1/datastores/{}", encode_segment(name)),
            None,
        )
        .await?;
    show(
        &json!({ "removed": name }),
        json_out,
        &format!("Removed datastore {name} (its files stay)"),
    );
    Ok(())
}

pub(crate) async fn volume(client: &Client, cmd: VolumeCmd, json_out: bool) -> Result<()> {
    let base = |ds: &str| format!("/api/v1/datastores/{}/volumes", encode_segment(ds));
    match cmd {
        VolumeCmd::List { datastore } => {
            let v = client.call(Method::GET, &base(&datastore), None).await?;
            if json_out {
                print(&v.to_string());
                return Ok(());
            }
            for vol in v["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
                print(&format!("{}  {}", s(&vol["name"]), s(&vol["size"])));
            }
        }
        VolumeCmd::Create {
            datastore,
            volume,
            size,
        } => {
            let size = parse_size(&size)?;
            let body = VolumeCreate {
                name: volume.clone(),
                size_bytes: size,
            };
            let v = client
                .call_with(Method::POST, &base(&datastore), &body)
                .await?;
            show(
                &v,
                json_out,
                &format!("Created {datastore}/{volume} ({size} bytes)"),
            );
        }
        VolumeCmd::Resize {
            datastore,
            volume,
            size,
        } => {
            let size = parse_size(&size)?;
            let v = client
                .call_with(
                    Method::PATCH,
                    &format!("{}/{}", base(&datastore), encode_segment(&volume)),
                    &VolumeResize { size_bytes: size },
                )
                .await?;
            show(
                &v,
                json_out,
                &format!("Grew {datastore}/{volume} to {size} bytes"),
            );
        }
        VolumeCmd::Delete { datastore, volume } => {
            client
                .call(
                    Method::DELETE,
                    &format!("{}/{}", base(&datastore), encode_segment(&volume)),
                    None,
                )
                .await?;
            show(
                &json!({ "deleted": format!("{datastore}/{volume}") }),
                json_out,
                &format!("Deleted {datastore}/{volume}"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sfera vm edit`'s body holds only what its flags give.
    #[test]
    fn edit_bodies() {
        use clap::Parser;

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            edit: VmEdit,
        }
        let body = |args: &[&str]| {
            let c = Cli::try_parse_from(["edit", "vm1"].iter().chain(args)).unwrap();
            serde_json::to_value(edit_body(c.edit).unwrap()).unwrap()
        };
        assert_eq!(body(&["--memory", "320"]), json!({ "memory_mib": 320 }));
        assert_eq!(
            body(&[
                "--name",
                "vm2",
                "--remove-disk",
                "local:vm1/disk0",
                "--delete-volumes",
                "--remove-nic",
                "52:54:00:00:00:01",
                "--add-nic",
                "pg",
                "--driver",
                "sfera-vmm"
            ]),
            json!({ "name": "vm2", "driver": "sfera-vmm",
                    "remove_disks": [{ "datastore": "local", "volume": "vm1/disk0", "delete_volume": true }],
                    "add_nics": [{ "port_group": "pg" }],
                    "remove_nics": [{ "mac": "52:54:00:00:00:01" }] })
        );
        assert!(
            Cli::try_parse_from(["edit", "vm1", "--add-disk", "local"])
                .map(|c| edit_body(c.edit))
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn vlans_and_shaping_parse() {
        assert_eq!(vlan("none").unwrap(), json!({ "mode": "none" }));
        assert_eq!(vlan("12").unwrap(), json!({ "mode": "access", "id": 12 }));
        assert_eq!(
            vlan("trunk:10,20:10").unwrap(),
            json!({ "mode": "trunk", "allowed": [10, 20], "native": 10 })
        );
        assert_eq!(
            vlan("trunk:10,20-22").unwrap(),
            json!({ "mode": "trunk", "allowed": [10, 20, 21, 22] })
        );
        assert!(vlan("trunk:x").is_err());
        assert!(vlan("vlan9").is_err());
        assert_eq!(shaping("off").unwrap(), Value::Null);
        assert_eq!(
            shaping("1000:2000:3000").unwrap(),
            json!({ "average_bps": 1000, "peak_bps": 2000, "burst_bytes": 3000 })
        );
        assert!(shaping("1:2").is_err());
    }
}
