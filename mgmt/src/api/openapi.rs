//! The OpenAPI 3 document of `/api/v1`: its paths generated from
//! [`super::routes::ROUTES`], the schemas of request bodies and records
//! derived (utoipa) from the types the handlers parse and serialise, and
//! the schemas of what is built as JSON written below.

use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::routes::{Access, Op, ROUTES};
use super::rules::{OBJECT_NAME, VOLUME_NAME};
use super::{auth, datastores, networks};

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

/// A schema as JSON.
fn json_of(schema: impl serde::Serialize) -> Value {
    serde_json::to_value(schema).expect("a schema is JSON")
}

/// The schema of `T`, by its name.
fn named<T: ToSchema>() -> (String, Value) {
    (T::name().into_owned(), json_of(T::schema()))
}

/// The schemas derived from the types the handlers take (request bodies)
/// and serialise (records of the inventory).
fn derived() -> Map<String, Value> {
    [
        named::<auth::Login>(),
        named::<auth::TokenCreate>(),
        named::<auth::UserCreate>(),
        named::<datastores::DatastoreCreate>(),
        named::<datastores::VolumeCreate>(),
        named::<datastores::VolumeResize>(),
        named::<networks::SwitchCreate>(),
        named::<networks::PortGroupCreate>(),
        named::<networks::PortGroupEdit>(),
        named::<crate::db::ApiToken>(),
        named::<crate::db::User>(),
        named::<crate::db::Task>(),
        named::<crate::db::Event>(),
        named::<crate::db::metrics::SampledObject>(),
    ]
    .into_iter()
    .collect()
}

/// The schemas the routes name: the derived ones, and those of what is
/// built as JSON (answers that carry a daemon's JSON, bodies of types
/// outside the API layer).
fn schemas() -> Map<String, Value> {
    let mut s = derived();
    s.extend(session_and_host_schemas());
    s.extend(inventory_schemas());
    s.extend(vm_schemas());
    s.extend(metric_and_page_schemas());
    s
}

/// A VM's state.
fn vm_state() -> Value {
    json!({ "type": "string", "enum": ["creating", "stopped", "running", "paused", "deleting"] })
}

/// A hypervisor driver.
fn driver() -> Value {
    json!({ "type": "string", "enum": crate::driver::Driver::NAMES })
}

/// Sessions, the host and its daemons, and the answers every route shares.
fn session_and_host_schemas() -> Map<String, Value> {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let nullable_int = json!({ "type": ["integer", "null"] });
    let time = json!({ "type": "integer", "description": "Seconds since the epoch" });
    let role = json_of(super::schema::role());
    let vm_state = vm_state();
    let driver = driver();
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
    put(
        "Session",
        obj(
            &["user", "role"],
            json!({ "user": string, "role": role, "expires_at": nullable_int }),
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
    s
}

/// Datastores, volumes, switches and port groups as the daemons report them.
fn inventory_schemas() -> Map<String, Value> {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let nullable_int = json!({ "type": ["integer", "null"] });
    let time = json!({ "type": "integer", "description": "Seconds since the epoch" });
    let mut s = Map::new();
    let mut put = |name: &str, v: Value| {
        s.insert(name.to_owned(), v);
    };
    put(
        "Datastore",
        obj(
            &["name", "path"],
            json!({ "name": string, "path": string, "kind": string, "capacity": int, "free": int, "volumes": int,
                    "capacity_bytes": nullable_int, "free_bytes": nullable_int, "updated_at": time }),
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
    put(
        "PortGroup",
        obj(
            &["name"],
            json!({ "name": string, "switch": string, "vlan": vlan, "security": { "type": "object" },
                                             "shaping": { "type": "object" }, "teaming": { "type": "object" } }),
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
    s
}

/// Templates and VMs, and the bodies of types outside the API layer (vm/, import/).
fn vm_schemas() -> Map<String, Value> {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let mut s = Map::new();
    let mut put = |name: &str, v: Value| {
        s.insert(name.to_owned(), v);
    };
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
    put("DiskImport", disk_import());
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
    put("Vm", vm_record(boot));
    s
}

/// The body of `POST /api/v1/datastores/{datastore}/import`.
fn disk_import() -> Value {
    input(
        &["volume", "source", "format"],
        json!({
            "volume": { "type": "string", "pattern": VOLUME_NAME,
                        "description": "The new volume: NAME or FOLDER/NAME" },
            "source": { "type": "string", "pattern": "^/", "description": "A regular file inside an import directory (<data-dir>/import, or the --import-dir of sfera-mgmtd), checked after symlinks and .. are resolved (else 400 path_not_allowed). The image must be in the format given, as qemu-img probes it, and name no other file: no backing file, no qcow2 data file, no vmdk extent in another file (else 400 image_not_allowed)" },
            "format": { "type": "string", "enum": crate::import::ImageFormat::NAMES }
        }),
    )
}

/// A VM as the API shows it; `boot` is the schema of its boot source.
fn vm_record(boot: Value) -> Value {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let nullable_int = json!({ "type": ["integer", "null"] });
    let time = json!({ "type": "integer", "description": "Seconds since the epoch" });
    let vm_state = vm_state();
    let driver = driver();
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
    )
}

/// Ports, metrics and the pages of every list.
fn metric_and_page_schemas() -> Map<String, Value> {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let time = json!({ "type": "integer", "description": "Seconds since the epoch" });
    let mut s = Map::new();
    let mut put = |name: &str, v: Value| {
        s.insert(name.to_owned(), v);
    };
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
        // Names as the daemons take them in paths.
        "datastore" | "switch" | "port_group" => {
            json!({ "type": "string", "pattern": OBJECT_NAME })
        }
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
    fn request_bodies_refuse_unknown_fields_and_name_their_required_ones() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for r in ROUTES {
            let Some(body) = r.body else { continue };
            assert_eq!(schemas[body]["additionalProperties"], false, "{body}");
        }
        // Derived from the types: what serde needs is required, what has a
        // default is not.
        assert_eq!(schemas["SwitchCreate"]["required"], json!(["name"]));
        assert_eq!(
            schemas["VolumeCreate"]["required"],
            json!(["name", "size_bytes"])
        );
        let uplink = &schemas["SwitchCreate"]["properties"]["uplinks"]["items"];
        assert_eq!(uplink["required"], json!(["name", "type", "interface"]));
        assert_eq!(
            uplink["properties"]["type"]["enum"],
            json!(["tap", "af_packet"])
        );
        assert_eq!(schemas["Task"]["properties"]["progress"]["maximum"], 100);
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
