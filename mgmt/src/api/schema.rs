//! The JSON Schema forms of the request rules ([`super::rules`]) and of
//! the fields the handlers pass on to a daemon as they are (a port
//! group's VLAN, security, shaping and teaming, which sfera-vswitchd
//! checks). The request types name these in `#[schema(schema_with = ...)]`
//! where what a field takes is a rule of ours rather than its Rust type.

use serde_json::{Value, json};
use utoipa::PartialSchema;
use utoipa::openapi::schema::Schema;

use super::rules::{
    INTERFACE_NAME, MAX_MAC_AGEING_S, MAX_TOKEN_NAME, MAX_UPLINKS, OBJECT_NAME, VOLUME_NAME,
};
use crate::db::Boot;
use crate::vm::edit::{RemoveDisk, RemoveNic};
use crate::vm::request::{
    DiskRequest, MAX_DISK_BYTES, MAX_DISKS, MAX_NICS, MAX_VCPUS, MIN_DISK_BYTES, MIN_MEMORY_MIB,
    NicRequest, TINY_LINUX,
};

/// A schema written as JSON. Only the fields utoipa's [`Schema`] holds
/// survive, so debug builds check that it comes out as it went in (the
/// unit tests make every schema of this module).
fn from_json(v: Value) -> Schema {
    let schema: Schema = serde_json::from_value(v.clone())
        .expect("the schemas of this module are valid (a unit test makes each)");
    debug_assert_eq!(
        serde_json::to_value(&schema).ok(),
        Some(v),
        "lost in utoipa's Schema"
    );
    schema
}

/// A name of a datastore, switch, port group or uplink.
pub fn object_name() -> Schema {
    from_json(json!({ "type": "string", "pattern": OBJECT_NAME }))
}

/// A volume name: NAME or FOLDER/NAME.
pub fn volume_name() -> Schema {
    from_json(
        json!({ "type": "string", "pattern": VOLUME_NAME, "description": "NAME or FOLDER/NAME" }),
    )
}

/// The volume an import makes.
pub fn new_volume_name() -> Schema {
    from_json(json!({ "type": "string", "pattern": VOLUME_NAME,
                      "description": "The new volume: NAME or FOLDER/NAME" }))
}

/// A host interface name.
pub fn interface_name() -> Schema {
    from_json(
        json!({ "type": "string", "pattern": INTERFACE_NAME, "description": "The host interface name" }),
    )
}

/// A switch of a new port group, or null.
pub fn switch_or_null() -> Schema {
    from_json(json!({ "type": ["string", "null"], "pattern": OBJECT_NAME,
                      "description": "Default (or null): vSwitch0" }))
}

/// A volume's size.
pub fn disk_size() -> Schema {
    from_json(
        json!({ "type": "integer", "minimum": MIN_DISK_BYTES, "maximum": MAX_DISK_BYTES,
                      "multipleOf": 512 }),
    )
}

/// The new size of a volume.
pub fn new_disk_size() -> Schema {
    from_json(
        json!({ "type": "integer", "minimum": MIN_DISK_BYTES, "maximum": MAX_DISK_BYTES,
                      "multipleOf": 512, "description": "The new size: larger than the current one" }),
    )
}

/// The size of a VM's new disk, or null.
pub fn disk_size_or_null() -> Schema {
    from_json(
        json!({ "type": ["integer", "null"], "minimum": MIN_DISK_BYTES, "maximum": MAX_DISK_BYTES,
                "multipleOf": 512, "description": "A new thin volume of this size" }),
    )
}

/// An existing volume as a VM's disk, or null.
pub fn volume_or_null() -> Schema {
    from_json(json!({ "type": ["string", "null"], "pattern": VOLUME_NAME,
        "description": "An existing volume of the datastore (an imported image) that no other VM has" }))
}

/// The template of a new VM, or null.
pub fn template() -> Schema {
    from_json(
        json!({ "type": ["string", "null"], "enum": [TINY_LINUX, null],
        "description": "A template's boot source, vCPUs and memory (unless given here); without one, boot is required" }),
    )
}

/// A VM's vCPUs, or null.
pub fn vcpus() -> Schema {
    from_json(json!({ "type": ["integer", "null"], "minimum": 1, "maximum": MAX_VCPUS }))
}

/// A new VM's vCPUs, or null.
pub fn new_vcpus() -> Schema {
    from_json(
        json!({ "type": ["integer", "null"], "minimum": 1, "maximum": MAX_VCPUS,
                      "description": "Default (or null): the template's, else 1" }),
    )
}

/// A VM's memory, or null.
pub fn memory() -> Schema {
    from_json(
        json!({ "type": ["integer", "null"], "minimum": MIN_MEMORY_MIB,
                      "description": "At most the host's memory" }),
    )
}

/// A new VM's memory, or null.
pub fn new_memory() -> Schema {
    from_json(
        json!({ "type": ["integer", "null"], "minimum": MIN_MEMORY_MIB,
        "description": "At most the host's memory; default (or null): the template's, else 512" }),
    )
}

/// A VM's boot source as a request gives it, or null: a [`Boot`] with no
/// other field (serde's `deny_unknown_fields` on the enum, which utoipa
/// does not carry to its variants).
pub fn boot_or_null() -> Schema {
    let mut boot = serde_json::to_value(Boot::schema()).expect("a schema is JSON");
    if let Some(variants) = boot["oneOf"].as_array_mut() {
        for v in variants {
            v["additionalProperties"] = json!(false);
        }
    }
    from_json(json!({ "oneOf": [{ "type": "null" }, boot] }))
}

/// An array of at most `max` of `T`.
fn at_most<T: PartialSchema>(max: usize) -> Value {
    json!({ "type": "array", "maxItems": max,
            "items": serde_json::to_value(T::schema()).expect("a schema is JSON") })
}

/// A VM's new disks: each a new volume (size_bytes) or an existing one,
/// exactly one of them (null counts as absent), which the type cannot say.
pub fn new_disks() -> Schema {
    let disk = serde_json::to_value(DiskRequest::schema()).expect("a schema is JSON");
    let one_of = |field: &str, kind: &str| {
        json!({ "type": "object", "required": [field],
                "properties": { field: { "type": kind } } })
    };
    from_json(
        json!({ "type": "array", "maxItems": MAX_DISKS, "items": { "allOf": [
        disk,
        { "oneOf": [one_of("size_bytes", "integer"), one_of("volume", "string")] }
    ] } }),
    )
}

/// A VM's new NICs.
pub fn new_nics() -> Schema {
    from_json(at_most::<NicRequest>(MAX_NICS))
}

/// Disks to take off a VM.
pub fn removed_disks() -> Schema {
    from_json(at_most::<RemoveDisk>(MAX_DISKS))
}

/// NICs to take off a VM.
pub fn removed_nics() -> Schema {
    from_json(at_most::<RemoveNic>(MAX_NICS))
}

/// How long a switch remembers a MAC address, or null.
pub fn mac_ageing() -> Schema {
    from_json(
        json!({ "type": ["integer", "null"], "minimum": 1, "maximum": MAX_MAC_AGEING_S,
                      "description": "Default (or null): 300" }),
    )
}

/// An API token's name.
pub fn token_name() -> Schema {
    from_json(json!({ "type": "string", "minLength": 1, "maxLength": MAX_TOKEN_NAME }))
}

/// A user's role.
pub fn role() -> Schema {
    from_json(json!({ "type": "string", "enum": ["administrator", "read-only"] }))
}

/// A task's state.
pub fn task_state() -> Schema {
    from_json(json!({ "type": "string", "enum": ["queued", "running", "success", "error"] }))
}

/// An event's severity.
pub fn severity() -> Schema {
    from_json(json!({ "type": "string", "enum": ["info", "warning", "error"] }))
}

/// A supervised daemon's state.
pub fn daemon_state() -> Schema {
    from_json(json!({ "type": "string", "enum": ["starting", "running", "restarting", "stopped"] }))
}

/// The kind of KVM the host has.
pub fn kvm_kind() -> Schema {
    from_json(json!({ "type": "string", "enum": ["intel", "amd", "pvm", "unknown", "none"] }))
}

/// A VM's hypervisor driver.
pub fn driver() -> Schema {
    from_json(json!({ "type": "string", "enum": crate::driver::Driver::NAMES }))
}

/// The driver of new kernel-boot VMs.
pub fn default_driver() -> Schema {
    from_json(
        json!({ "type": "string", "enum": crate::driver::Driver::NAMES,
                      "description": "The driver of new kernel-boot VMs" }),
    )
}

/// A kind of sampled object.
pub fn metric_kind() -> Schema {
    from_json(json!({ "type": "string", "enum": crate::metrics::KINDS }))
}

/// A switch's uplinks.
pub fn uplinks() -> Schema {
    from_json(at_most::<super::networks::Uplink>(MAX_UPLINKS))
}

/// A port group's VLAN as a request gives it.
fn vlan_json() -> Value {
    let vlan_id = json!({ "type": "integer", "minimum": 1, "maximum": 4094 });
    let only = |required: &[&str], props: Value| {
        json!({ "type": "object", "required": required, "properties": props,
                "additionalProperties": false })
    };
    json!({ "oneOf": [
        only(&["mode"], json!({ "mode": { "type": "string", "enum": ["none"] } })),
        only(&["mode", "id"], json!({ "mode": { "type": "string", "enum": ["access"] }, "id": vlan_id })),
        only(&["mode", "allowed"], json!({ "mode": { "type": "string", "enum": ["trunk"] },
            "allowed": { "type": "array", "minItems": 1, "items": vlan_id }, "native": vlan_id })),
    ] })
}

/// A port group's VLAN, in a change.
pub fn vlan() -> Schema {
    from_json(vlan_json())
}

/// A new port group's VLAN, or null.
pub fn vlan_or_null() -> Schema {
    from_json(json!({ "oneOf": [{ "type": "null" }, vlan_json()],
                      "description": "Default (or null): no VLAN" }))
}

/// An object of `props` and no other field, none required.
fn only(props: Value) -> Value {
    json!({ "type": "object", "properties": props, "additionalProperties": false })
}

/// A port group's security policy (the fields given change).
pub fn security() -> Schema {
    let flag = json!({ "type": "boolean" });
    from_json(only(
        json!({ "promiscuous": flag, "mac_changes": flag, "forged_transmits": flag }),
    ))
}

/// A port group's traffic shaping: a rule per direction, or null for none.
/// That peak_bps must not be below average_bps is a rule between two
/// fields, which JSON Schema cannot say.
pub fn shaping() -> Schema {
    let bound = |min: u64, description: Option<&str>| {
        let mut b = json!({ "type": "integer", "minimum": min, "maximum": 1_000_000_000_000_u64 });
        if let Some(d) = description {
            b["description"] = json!(d);
        }
        b
    };
    let rule = json!({ "type": "object", "required": ["average_bps", "peak_bps", "burst_bytes"],
        "properties": { "average_bps": bound(8000, None),
                        "peak_bps": bound(8000, Some("At least average_bps")),
                        "burst_bytes": bound(1518, Some("At least one frame")) },
        "additionalProperties": false,
        "description": "Bits per second sustained and at peak (peak_bps >= average_bps), and the burst allowance in bytes" });
    from_json(only(
        json!({ "ingress": { "oneOf": [{ "type": "null" }, rule] },
                           "egress": { "oneOf": [{ "type": "null" }, rule] } }),
    ))
}

/// A port group's NIC teaming.
pub fn teaming() -> Schema {
    let names = json!({ "type": "array", "maxItems": MAX_UPLINKS,
                        "items": { "type": "string", "pattern": OBJECT_NAME } });
    from_json(only(json!({
        "policy": { "type": "string", "enum": ["originating_port", "source_mac", "ip_hash", "failover_order"] },
        "active": names, "standby": names })))
}

/// A switch as sfera-vswitchd reports it.
pub fn switch() -> Schema {
    from_json(
        json!({ "type": "object", "required": ["name"], "properties": {
        "name": { "type": "string" },
        "uplinks": { "type": "array", "items": { "type": "object" } },
        "mac_ageing_s": { "type": "integer" } } }),
    )
}

/// A port group as sfera-vswitchd reports it.
pub fn port_group() -> Schema {
    let vlan = json!({ "type": "object",
        "description": "{\"mode\":\"none\"}, {\"mode\":\"access\",\"id\":N} or {\"mode\":\"trunk\",\"allowed\":[...],\"native\":N}",
        "required": ["mode"],
        "properties": { "mode": { "type": "string", "enum": ["none", "access", "trunk"] } } });
    let object = json!({ "type": "object" });
    from_json(
        json!({ "type": "object", "required": ["name"], "properties": {
        "name": { "type": "string" }, "switch": { "type": "string" }, "vlan": vlan,
        "security": object, "shaping": object, "teaming": object } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_schemas_survive() {
        // from_json checks each (debug builds).
        let all: [fn() -> Schema; 37] = [
            boot_or_null,
            new_volume_name,
            disk_size_or_null,
            volume_or_null,
            template,
            vcpus,
            new_vcpus,
            memory,
            new_memory,
            new_disks,
            new_nics,
            removed_disks,
            removed_nics,
            switch,
            port_group,
            task_state,
            daemon_state,
            kvm_kind,
            driver,
            default_driver,
            severity,
            metric_kind,
            object_name,
            volume_name,
            interface_name,
            switch_or_null,
            disk_size,
            new_disk_size,
            mac_ageing,
            token_name,
            role,
            uplinks,
            vlan,
            vlan_or_null,
            security,
            shaping,
            teaming,
        ];
        for make in all {
            assert!(serde_json::to_value(make()).unwrap().is_object());
        }
        assert_eq!(
            serde_json::to_value(object_name()).unwrap(),
            json!({ "type": "string", "pattern": OBJECT_NAME })
        );
    }
}
