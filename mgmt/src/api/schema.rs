//! The JSON Schema forms of the request rules ([`super::rules`]) and of
//! the fields the handlers pass on to a daemon as they are (a port
//! group's VLAN, security, shaping and teaming, which sfera-vswitchd
//! checks). The request types name these in `#[schema(schema_with = ...)]`
//! where what a field takes is a rule of ours rather than its Rust type.

use serde_json::{Value, json};
use utoipa::openapi::schema::Schema;

use super::rules::{
    INTERFACE_NAME, MAX_MAC_AGEING_S, MAX_TOKEN_NAME, MAX_UPLINKS, OBJECT_NAME, VOLUME_NAME,
};
use crate::vm::request::{MAX_DISK_BYTES, MIN_DISK_BYTES};

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

/// A kind of sampled object.
pub fn metric_kind() -> Schema {
    from_json(json!({ "type": "string", "enum": crate::metrics::KINDS }))
}

/// A switch's uplinks.
pub fn uplinks() -> Schema {
    let uplink = serde_json::to_value(<super::networks::Uplink as utoipa::PartialSchema>::schema())
        .expect("a schema is JSON");
    from_json(json!({ "type": "array", "maxItems": MAX_UPLINKS, "items": uplink }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_schemas_survive() {
        // from_json checks each (debug builds).
        let all: [fn() -> Schema; 18] = [
            task_state,
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
