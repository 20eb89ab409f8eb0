//! The OpenAPI 3 document of `/api/v1`, generated from [`super::routes::ROUTES`]
//! and the schemas below.

use serde_json::{Map, Value, json};

use super::routes::{Access, Op, ROUTES};
use super::rules::{
    INTERFACE_NAME, MAX_MAC_AGEING_S, MAX_TOKEN_NAME, MAX_UPLINKS, OBJECT_NAME, VOLUME_NAME,
};

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

/// A request body's object: its handler refuses fields it does not know.
fn input(required: &[&str], props: Value) -> Value {
    let mut o = obj(required, props);
    o["additionalProperties"] = json!(false);
    o
}

fn page(item: &str) -> Value {
    obj(
        &["items", "total", "limit", "offset"],
        json!({
            "items": { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } },
            "total": { "type": "integer", "description": "Items in all pages" },
            "limit": { "type": "integer" },
            "offset": { "type": "integer" },
            "stale": { "type": "boolean", "description": "The daemon could not be asked: this is the inventory's last copy" }
        }),
    )
}

/// The schemas the routes name.
fn schemas() -> Map<String, Value> {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let nullable_int = json!({ "type": ["integer", "null"] });
    let time = json!({ "type": "integer", "description": "Seconds since the epoch" });
    let mut s = Map::new();
    let mut put = |name: &str, v: Value| {
        s.insert(name.to_owned(), v);
    };
    put("Object", json!({ "type": "object" }));
    put(
        "Health",
        obj(
            &["status"],
            json!({ "status": { "type": "string", "enum": ["ok"] } }),
        ),
    );
    put(
        "Error",
        obj(
            &["error"],
            json!({ "error": obj(&["code", "message"], json!({ "code": string, "message": string })) }),
        ),
    );
    let role = json!({ "type": "string", "enum": ["administrator", "read-only"] });
    put(
        "Login",
        input(
            &["username", "password"],
            json!({ "username": string, "password": string }),
        ),
    );
    put(
        "Session",
        obj(
            &["user", "role"],
            json!({ "user": string, "role": role, "expires_at": nullable_int }),
        ),
    );
    put(
        "TokenCreate",
        input(
            &["name"],
            json!({ "name": { "type": "string", "minLength": 1, "maxLength": MAX_TOKEN_NAME } }),
        ),
    );
    put(
        "Token",
        obj(
            &["id", "name", "user", "created_at"],
            json!({ "id": int, "name": string, "user": string, "created_at": time, "last_used_at": nullable_int }),
        ),
    );
    put(
        "NewToken",
        obj(
            &["id", "name", "token"],
            json!({ "id": int, "name": string, "user": string, "created_at": time,
                    "token": { "type": "string", "description": "The secret, for Authorization: Bearer; shown only here" } }),
        ),
    );
    put(
        "UserCreate",
        input(
            &["name", "password", "role"],
            json!({ "name": { "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$" },
                    "password": { "type": "string", "minLength": 12, "maxLength": 256 }, "role": role }),
        ),
    );
    put(
        "User",
        obj(
            &["name", "role"],
            json!({ "name": string, "role": role, "created_at": time }),
        ),
    );
    let vm_state = json!({ "type": "string", "enum": ["creating", "stopped", "running", "paused", "deleting"] });
    let driver = json!({ "type": "string", "enum": crate::driver::Driver::NAMES });
    put(
        "Host",
        obj(
            &[
                "hostname",
                "cpus",
                "memory_bytes",
                "kvm",
                "kvm_kind",
                "default_driver",
                "accel",
                "driver_reason",
            ],
            json!({
                "hostname": string, "cpus": int, "memory_bytes": int,
                "kvm": { "type": "boolean" },
                "kvm_kind": { "type": "string", "enum": ["intel", "amd", "pvm", "unknown", "none"] },
                "default_driver": { "type": "string", "enum": crate::driver::Driver::NAMES, "description": "The driver of new kernel-boot VMs" },
                "accel": { "type": "string", "enum": ["kvm", "tcg"] },
                "qemu_cpu": { "type": ["string", "null"], "description": "The -cpu model QEMU guests get under KVM (null under TCG)" },
                "driver_reason": string,
                "sfera_vmm_available": { "type": "boolean", "description": "sfera-vmm can run VMs here (a VM may ask for it)" },
                "vms": obj(&["total", "running", "paused"], json!({ "total": int, "running": int, "paused": int })),
                "vm_drivers": { "type": "array", "description": "Each VM's driver and why it got it",
                    "items": obj(&["id", "name", "state", "driver", "driver_reason"],
                        json!({ "id": string, "name": string, "state": vm_state.clone(),
                                "driver": driver.clone(), "driver_reason": string })) }
            }),
        ),
    );
    put(
        "Daemon",
        obj(
            &["name", "state", "restarts"],
            json!({ "name": string, "state": { "type": "string", "enum": ["starting", "running", "restarting", "stopped"] },
                    "pid": nullable_int, "adopted": { "type": "boolean" }, "restarts": int,
                    "started_at": nullable_int, "last_exit": { "type": ["string", "null"] } }),
        ),
    );
    put(
        "Datastore",
        obj(
            &["name", "path"],
            json!({ "name": string, "path": string, "kind": string, "capacity": int, "free": int, "volumes": int,
                    "capacity_bytes": nullable_int, "free_bytes": nullable_int, "updated_at": time }),
        ),
    );
    put(
        "DatastoreCreate",
        input(
            &["name", "path"],
            json!({ "name": { "type": "string", "pattern": OBJECT_NAME },
                    "path": { "type": "string", "pattern": "^/", "description": "An existing directory inside a datastore root (<data-dir>/datastores, or a --datastore-root of sfera-mgmtd), or a block device that is a root or inside one; symlinks are resolved before the check. Elsewhere (/, /etc): 400 path_not_allowed" } }),
        ),
    );
    put(
        "Volume",
        obj(
            &["name", "size"],
            json!({ "datastore": string, "name": string, "size": int, "allocated": int, "path": string }),
        ),
    );
    put(
        "Switch",
        obj(
            &["name"],
            json!({ "name": string, "uplinks": { "type": "array", "items": { "type": "object" } }, "mac_ageing_s": int }),
        ),
    );
    let vlan = json!({ "type": "object", "description": "{\"mode\":\"none\"}, {\"mode\":\"access\",\"id\":N} or {\"mode\":\"trunk\",\"allowed\":[...],\"native\":N}",
                       "required": ["mode"], "properties": { "mode": { "type": "string", "enum": ["none", "access", "trunk"] } } });
    let vlan_id = json!({ "type": "integer", "minimum": 1, "maximum": 4094 });
    let vlan_in = json!({ "oneOf": [
        input(&["mode"], json!({ "mode": { "const": "none" } })),
        input(&["mode", "id"], json!({ "mode": { "const": "access" }, "id": vlan_id })),
        input(&["mode", "allowed"], json!({ "mode": { "const": "trunk" },
            "allowed": { "type": "array", "minItems": 1, "items": vlan_id }, "native": vlan_id })),
    ] });
    put(
        "PortGroup",
        obj(
            &["name"],
            json!({ "name": string, "switch": string, "vlan": vlan, "security": { "type": "object" },
                                             "shaping": { "type": "object" }, "teaming": { "type": "object" } }),
        ),
    );
    put(
        "PortGroupCreate",
        input(
            &["name"],
            json!({ "name": { "type": "string", "pattern": OBJECT_NAME },
                    "switch": { "type": ["string", "null"], "pattern": OBJECT_NAME, "description": "Default (or null): vSwitch0" },
                    "vlan": { "oneOf": [{ "type": "null" }, vlan_in], "description": "Default (or null): no VLAN" } }),
        ),
    );
    let uplink = input(
        &["name", "type", "interface"],
        json!({ "name": { "type": "string", "pattern": OBJECT_NAME },
                "type": { "type": "string", "enum": ["tap", "af_packet"], "description": "tap: a TAP device the switch creates; af_packet: an existing host interface" },
                "interface": { "type": "string", "pattern": INTERFACE_NAME, "description": "The host interface name" } }),
    );
    put(
        "SwitchCreate",
        input(
            &["name"],
            json!({ "name": { "type": "string", "pattern": OBJECT_NAME },
                    "mac_ageing_s": { "type": ["integer", "null"], "minimum": 1, "maximum": MAX_MAC_AGEING_S, "description": "Default (or null): 300" },
                    "uplinks": { "type": "array", "maxItems": MAX_UPLINKS, "items": uplink } }),
        ),
    );
    // sfera-vswitchd's limits; that peak_bps must not be below average_bps
    // is a rule between two fields, which JSON Schema cannot say.
    let mut rule = input(
        &["average_bps", "peak_bps", "burst_bytes"],
        json!({ "average_bps": { "type": "integer", "minimum": 8000, "maximum": 1_000_000_000_000_u64 },
                "peak_bps": { "type": "integer", "minimum": 8000, "maximum": 1_000_000_000_000_u64,
                              "description": "At least average_bps" },
                "burst_bytes": { "type": "integer", "minimum": 1518, "maximum": 1_000_000_000_000_u64,
                                 "description": "At least one frame" } }),
    );
    rule["description"] = json!(
        "Bits per second sustained and at peak (peak_bps >= average_bps), and the burst allowance in bytes"
    );
    put(
        "PortGroupEdit",
        input(
            &[],
            json!({ "vlan": vlan_in.clone(),
                    "security": input(&[], json!({ "promiscuous": { "type": "boolean" }, "mac_changes": { "type": "boolean" },
                                                   "forged_transmits": { "type": "boolean" } })),
                    "shaping": input(&[], json!({ "ingress": { "oneOf": [{ "type": "null" }, rule.clone()] },
                                                  "egress": { "oneOf": [{ "type": "null" }, rule] } })),
                    "teaming": input(&[], json!({ "policy": { "type": "string", "enum": ["originating_port", "source_mac", "ip_hash", "failover_order"] },
                                                  "active": { "type": "array", "maxItems": 8, "items": { "type": "string", "pattern": OBJECT_NAME } },
                                                  "standby": { "type": "array", "maxItems": 8, "items": { "type": "string", "pattern": OBJECT_NAME } } })) }),
        ),
    );
    put(
        "VolumeCreate",
        input(
            &["name", "size_bytes"],
            json!({ "name": { "type": "string", "pattern": VOLUME_NAME, "description": "NAME or FOLDER/NAME" },
                    "size_bytes": { "type": "integer", "minimum": crate::vm::request::MIN_DISK_BYTES,
                                    "maximum": crate::vm::request::MAX_DISK_BYTES, "multipleOf": 512 } }),
        ),
    );
    put(
        "VolumeResize",
        input(
            &["size_bytes"],
            json!({ "size_bytes": { "type": "integer", "minimum": crate::vm::request::MIN_DISK_BYTES,
                                    "maximum": crate::vm::request::MAX_DISK_BYTES, "multipleOf": 512,
                                    "description": "The new size: larger than the current one" } }),
        ),
    );
    put(
        "Networks",
        obj(
            &["switches", "port_groups", "stale"],
            json!({ "switches": { "type": "array", "items": { "$ref": "#/components/schemas/Switch" } },
                    "port_groups": { "type": "array", "items": { "$ref": "#/components/schemas/PortGroup" } },
                    "stale": { "type": "boolean" } }),
        ),
    );
    put(
        "Template",
        obj(
            &["name", "vcpus", "memory_mib", "available"],
            json!({ "name": string, "description": string, "vcpus": int, "memory_mib": int,
                    "available": { "type": "boolean" }, "kernel": string, "initrd": string }),
        ),
    );
    let iso_boot = json!({ "type": "string", "enum": ["iso"],
        "description": "iso: through firmware (QEMU), from an ISO image on the host as a CD-ROM" });
    let disk_boot = json!({ "type": "string", "enum": ["disk"],
        "description": "disk: through firmware (QEMU), from the boot loader on the first disk" });
    let boot = json!({ "oneOf": [
        obj(
            &["kind", "kernel"],
            json!({ "kind": { "type": "string", "enum": ["kernel"] }, "kernel": string, "initrd": string, "cmdline": string }),
        ),
        obj(&["kind"], json!({ "kind": disk_boot.clone() })),
        obj(&["kind", "iso"], json!({ "kind": iso_boot.clone(), "iso": string })),
    ] });
    let host_path =
        json!({ "type": "string", "pattern": "^/", "description": "An existing file on the host" });
    let iso_path = json!({ "type": "string", "pattern": "^/",
        "description": "A regular file inside an import directory or a datastore root, checked after symlinks are resolved (else 400 path_not_allowed)" });
    let boot_in = input(
        &["kind", "kernel"],
        json!({ "kind": { "type": "string", "enum": ["kernel"] }, "kernel": host_path,
                "initrd": { "type": ["string", "null"], "pattern": "^/", "description": "An existing file on the host, or null for none" },
                "cmdline": { "type": "string", "maxLength": 2048, "pattern": "^[^\\n]*$" } }),
    );
    put(
        "DiskImport",
        input(
            &["volume", "source", "format"],
            json!({
                "volume": { "type": "string", "pattern": VOLUME_NAME,
                            "description": "The new volume: NAME or FOLDER/NAME" },
                "source": { "type": "string", "pattern": "^/", "description": "A regular file inside an import directory (<data-dir>/import, or the --import-dir of sfera-mgmtd), checked after symlinks and .. are resolved (else 400 path_not_allowed). The image must be in the format given, as qemu-img probes it, and name no other file: no backing file, no qcow2 data file, no vmdk extent in another file (else 400 image_not_allowed)" },
                "format": { "type": "string", "enum": crate::import::ImageFormat::NAMES }
            }),
        ),
    );
    // A new disk (size_bytes) or an existing volume, exactly one of them
    // (null counts as absent).
    let mut disk_in = input(
        &["datastore"],
        json!({ "datastore": { "type": "string", "pattern": OBJECT_NAME },
                "size_bytes": { "type": ["integer", "null"], "minimum": crate::vm::request::MIN_DISK_BYTES,
                                "maximum": crate::vm::request::MAX_DISK_BYTES, "multipleOf": 512,
                                "description": "A new thin volume of this size" },
                "volume": { "type": ["string", "null"], "pattern": VOLUME_NAME,
                            "description": "An existing volume of the datastore (an imported image) that no other VM has" } }),
    );
    disk_in["oneOf"] = json!([
        { "required": ["size_bytes"], "properties": { "size_bytes": { "type": "integer" } } },
        { "required": ["volume"], "properties": { "volume": { "type": "string" } } }
    ]);
    let vm_create = input(
        &["name"],
        json!({
            "name": { "type": "string", "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$" },
            "template": { "type": ["string", "null"], "enum": [crate::vm::request::TINY_LINUX, null], "description": "A template's boot source, vCPUs and memory (unless given here); without one, boot is required" },
            "vcpus": { "type": ["integer", "null"], "minimum": 1, "maximum": crate::vm::request::MAX_VCPUS, "description": "Default (or null): the template's, else 1" },
            "memory_mib": { "type": ["integer", "null"], "minimum": crate::vm::request::MIN_MEMORY_MIB, "description": "At most the host's memory; default (or null): the template's, else 512" },
            "boot": { "oneOf": [{ "type": "null" }, boot_in, input(&["kind"], json!({ "kind": disk_boot })),
                                input(&["kind", "iso"], json!({ "kind": iso_boot, "iso": iso_path.clone() }))] },
            "disks": { "type": "array", "maxItems": crate::vm::request::MAX_DISKS, "items": disk_in },
            "nics": { "type": "array", "maxItems": crate::vm::request::MAX_NICS, "items": input(&["port_group"],
                json!({ "port_group": { "type": "string", "pattern": OBJECT_NAME },
                        "mac": { "type": ["string", "null"], "pattern": "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$", "description": "Unicast; generated when left out or null" } })) },
            "power_on": { "type": "boolean" },
            "driver": { "type": ["string", "null"], "enum": ["sfera-vmm", "qemu", null],
                        "description": "The hypervisor driver; default (or null): sfera-vmm for a kernel boot on hardware virtualization, QEMU otherwise. sfera-vmm needs /dev/kvm" }
        }),
    );
    put("VmCreate", vm_create.clone());
    let mac_in = json!({ "type": "string", "pattern": "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$" });
    put(
        "VmEdit",
        input(
            &[],
            json!({
                "name": { "type": ["string", "null"], "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", "description": "A new name (any time)" },
                "vcpus": { "type": ["integer", "null"], "minimum": 1, "maximum": crate::vm::request::MAX_VCPUS },
                "memory_mib": { "type": ["integer", "null"], "minimum": crate::vm::request::MIN_MEMORY_MIB, "description": "At most the host's memory" },
                "boot": vm_create["properties"]["boot"].clone(),
                "driver": vm_create["properties"]["driver"].clone(),
                "add_disks": vm_create["properties"]["disks"].clone(),
                "remove_disks": { "type": "array", "maxItems": crate::vm::request::MAX_DISKS, "items": input(&["datastore", "volume"],
                    json!({ "datastore": { "type": "string", "pattern": OBJECT_NAME },
                            "volume": { "type": "string", "pattern": VOLUME_NAME },
                            "delete_volume": { "type": "boolean", "description": "Delete the volume too (default false)" } })) },
                "add_nics": vm_create["properties"]["nics"].clone(),
                "remove_nics": { "type": "array", "maxItems": crate::vm::request::MAX_NICS,
                    "items": input(&["mac"], json!({ "mac": mac_in })) }
            }),
        ),
    );
    put(
        "Vm",
        obj(
            &[
                "id",
                "name",
                "vcpus",
                "memory_mib",
                "boot",
                "driver",
                "state",
                "disks",
                "nics",
            ],
            json!({
                "id": string, "name": string, "vcpus": int, "memory_mib": int, "boot": boot,
                "driver": driver,
                "driver_reason": { "type": "string", "description": "Why the VM got its driver" },
                "state": vm_state,
                "pid": nullable_int,
                "disks": { "type": "array", "items": obj(&["datastore", "volume", "size_bytes", "export_id"],
                    json!({ "datastore": string, "volume": string, "size_bytes": int, "export_id": string })) },
                "nics": { "type": "array", "items": obj(&["port_group", "mac", "port"],
                    json!({ "port_group": string, "mac": string, "port": string })) },
                "console_socket": { "type": "string", "description": "The serial console's Unix socket on the host" },
                "console_log": { "type": "string", "description": "Everything the serial console printed" },
                "paused_reason": { "type": ["string", "null"],
                    "description": "Why mgmtd paused the VM (its datastore is out of space); null otherwise" },
                "created_at": time, "updated_at": time
            }),
        ),
    );
    put(
        "Task",
        obj(
            &["id", "kind", "target", "state", "progress"],
            json!({ "id": int, "kind": string, "target": string,
                    "state": { "type": "string", "enum": ["queued", "running", "success", "error"] },
                    "progress": { "type": "integer", "minimum": 0, "maximum": 100 },
                    "message": string, "result": {}, "error": { "type": ["string", "null"] }, "user": string,
                    "created_at": time, "started_at": nullable_int, "finished_at": nullable_int }),
        ),
    );
    put(
        "Event",
        obj(
            &["id", "time", "severity", "kind", "target", "message"],
            json!({ "id": int, "time": time, "severity": { "type": "string", "enum": ["info", "warning", "error"] },
                    "kind": string, "target": string, "message": string, "user": { "type": ["string", "null"] } }),
        ),
    );
    put(
        "Port",
        obj(
            &["name", "port_group", "mac", "connected"],
            json!({ "name": string, "port_group": string, "mac": string, "mtu": int,
                    "vm": { "oneOf": [{ "type": "null" }, obj(&["id", "name"], json!({ "id": string, "name": string }))] },
                    "connected": { "type": "boolean", "description": "A VMM is connected and the port's queues run" },
                    "stats": { "type": ["object", "null"], "description": "The switch's counters of the port" } }),
        ),
    );
    let kind = json!({ "type": "string", "enum": crate::metrics::KINDS });
    put(
        "SampledObject",
        obj(
            &["kind", "object", "metrics"],
            json!({ "kind": kind, "object": string, "metrics": { "type": "array", "items": string } }),
        ),
    );
    let columns = |description: &str| {
        json!({ "type": "object", "description": description,
                "additionalProperties": { "type": "array", "items": { "type": ["number", "null"] } } })
    };
    put(
        "MetricSeries",
        obj(
            &[
                "kind",
                "object",
                "resolution",
                "interval_s",
                "times",
                "series",
            ],
            json!({
                "kind": kind, "object": string,
                "resolution": { "type": "string", "enum": ["raw", "5m"] },
                "interval_s": { "type": "integer", "description": "Seconds between points" },
                "times": { "type": "array", "items": time, "description": "Seconds since the epoch, oldest first" },
                "series": columns("Per metric, its value at each time (the average of the period for 5m)"),
                "min": columns("5m only: per metric, the smallest sample of each period"),
                "max": columns("5m only: per metric, the largest sample of each period")
            }),
        ),
    );
    let mut sampled = page("SampledObject");
    sampled["properties"]["interval_s"] =
        json!({ "type": "integer", "description": "Seconds between samples" });
    sampled["properties"]["raw_keep_s"] =
        json!({ "type": "integer", "description": "Seconds samples are kept" });
    sampled["properties"]["rollup_s"] =
        json!({ "type": "integer", "description": "Seconds a rollup covers" });
    sampled["properties"]["rollup_keep_s"] =
        json!({ "type": "integer", "description": "Seconds rollups are kept" });
    for item in [
        "Token",
        "User",
        "Daemon",
        "Datastore",
        "Volume",
        "Switch",
        "PortGroup",
        "Template",
        "Vm",
        "Task",
        "Event",
        "Port",
    ] {
        s.insert(format!("{item}Page"), page(item));
    }
    s.insert("SampledObjectPage".to_owned(), sampled);
    s
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The schema of a path parameter, by its name: what the handlers accept.
fn path_schema(name: &str) -> Value {
    match name {
        "id" => json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX }),
        // Datastore names as sfera-blockd takes them in paths.
        "datastore" => {
            json!({ "type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$" })
        }
        "switch" | "port_group" => json!({ "type": "string", "pattern": OBJECT_NAME }),
        "volume" => json!({ "type": "string", "pattern": VOLUME_NAME }),
        "kind" => json!({ "type": "string", "enum": crate::metrics::KINDS }),
        "daemon" => json!({ "type": "string", "enum": ["blockd", "vswitchd"] }),
        "action" => {
            json!({ "type": "string", "enum": ["on", "off", "reset", "pause", "resume"] })
        }
        "session" => json!({ "type": "string", "enum": ["current", "previous"] }),
        _ => json!({ "type": "string" }),
    }
}

/// The document.
pub fn document() -> Value {
    let error = json!({
        "description": "Error",
        "content": { "application/json": { "schema": schema_ref("Error") } }
    });
    let mut paths = Map::new();
    for r in ROUTES {
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": path_schema(name) }))
            .collect();
        parameters.extend(r.query.iter().map(|q| {
            let schema: Value = serde_json::from_str(q.schema)
                .expect("query parameter schemas are valid JSON (a unit test reads them all)");
            json!({ "name": q.name, "in": "query", "required": false,
                    "description": q.description, "schema": schema })
        }));
        let success = match r.response {
            None if r.status == 101 => {
                json!({ "description": "Switching to the WebSocket protocol" })
            }
            None => json!({ "description": "Done" }),
            Some("text") => json!({ "description": "Prometheus text",
                                   "content": { "text/plain": { "schema": { "type": "string" } } } }),
            Some("file") => json!({ "description": "The file",
                                   "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } }),
            Some(name) => json!({ "description": "Done",
                                  "content": { "application/json": { "schema": schema_ref(name) } } }),
        };
        let mut op = json!({
            "operationId": format!("{:?}", r.op),
            "summary": r.summary,
            "tags": [r.tag],
            "parameters": parameters,
            "responses": {
                r.status.to_string(): success,
                "400": error, "401": error, "403": error, "404": error, "409": error,
                "413": error, "500": error, "503": error
            },
        });
        if let Some(body) = r.body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref(body) } }
            });
        }
        if r.access == Access::Public {
            op["security"] = json!([]);
        }
        if r.op == Op::Login {
            op["responses"]["429"] = json!({
                "description": "Too many failed logins from this address or for this user: locked out for a while",
                "headers": { "Retry-After": {
                    "description": "Seconds until the lock passes",
                    "schema": { "type": "integer", "minimum": 1 }
                } },
                "content": { "application/json": { "schema": schema_ref("Error") } }
            });
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sfera management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "sfera-mgmtd: the host, datastores, networks, VMs, tasks and events. Log in with POST /api/v1/session (a cookie) or send Authorization: Bearer with an API token. Errors are {\"error\":{\"code\",\"message\"}}."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "cookie": [] }, { "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "cookie": { "type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE },
                "bearer": { "type": "http", "scheme": "bearer" }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                documented.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
        // And the router finds each documented operation.
        for (method, path) in &documented {
            let concrete: Vec<String> = path
                .trim_matches('/')
                .split('/')
                .map(|s| {
                    if s.starts_with('{') {
                        "x".to_owned()
                    } else {
                        s.to_owned()
                    }
                })
                .collect();
            let (r, _) = crate::api::routes::find(method, &concrete).unwrap();
            assert_eq!(
                doc["paths"][path][method.to_ascii_lowercase()]["operationId"],
                format!("{:?}", r.op)
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} is not defined"
            );
        }
    }

    #[test]
    fn only_login_documents_429() {
        let doc = document();
        let login = &doc["paths"]["/api/v1/session"]["post"]["responses"];
        assert_eq!(
            login["429"]["headers"]["Retry-After"]["schema"]["type"],
            "integer"
        );
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["responses"]["403"].is_object(), "{method} {path}: 403");
                assert!(op["responses"]["503"].is_object(), "{method} {path}: 503");
                if !(path == "/api/v1/session" && method == "post") {
                    assert!(op["responses"]["429"].is_null(), "{method} {path}");
                }
            }
        }
    }

    #[test]
    fn only_login_and_health_are_public() {
        let doc = document();
        let public: Vec<_> = ROUTES
            .iter()
            .filter(|r| {
                doc["paths"][r.path][r.method.to_ascii_lowercase()]
                    .get("security")
                    .is_some()
            })
            .map(|r| (r.method, r.path))
            .collect();
        assert_eq!(
            public,
            vec![("POST", "/api/v1/session"), ("GET", "/api/v1/health")]
        );
    }
}
