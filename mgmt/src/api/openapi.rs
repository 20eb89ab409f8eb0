//! The OpenAPI 3 document of `/api/v1`: its paths generated from
//! [`super::routes::ROUTES`], its schemas derived (utoipa) from the types
//! the handlers parse and answer with.

use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::page::PageOf;
use super::routes::{Access, Op, ROUTES};
use super::rules::{OBJECT_NAME, VOLUME_NAME};
use super::{auth, datastores, error, hosts, meta, networks, vms};
use crate::db;
use blockstore::api::types::{DatastoreInfo, VolumeInfo};

/// A schema as JSON.
fn json_of(schema: impl serde::Serialize) -> Value {
    serde_json::to_value(schema).expect("a schema is JSON")
}

/// The schemas, by name.
#[derive(Default)]
struct Schemas(Map<String, Value>);

impl Schemas {
    /// `T`'s schema under `name`, and those it refers to under theirs.
    fn put<T: ToSchema>(&mut self, name: &str) -> &mut Self {
        let mut all = vec![(name.to_owned(), T::schema())];
        T::schemas(&mut all);
        for (name, schema) in all {
            let schema = json_of(schema);
            // Two types of one name would be one schema (the unit tests
            // build the document).
            if let Some(other) = self.0.insert(name.clone(), schema.clone()) {
                debug_assert_eq!(other, schema, "two schemas named {name}");
            }
        }
        self
    }

    /// `T`'s schema under its name.
    fn add<T: ToSchema>(&mut self) -> &mut Self {
        self.put::<T>(&T::name())
    }

    /// `T`'s schema, and that of a page of `T` (`{T}Page`).
    fn listed<T: ToSchema>(&mut self) -> &mut Self {
        self.add::<T>()
            .put::<PageOf<T>>(&format!("{}Page", T::name()))
    }
}

/// The schemas the routes name: of the request bodies the handlers parse
/// and of the answers they serialise.
fn schemas() -> Map<String, Value> {
    let mut s = Schemas::default();
    // Request bodies.
    s.add::<auth::Login>()
        .add::<auth::TokenCreate>()
        .add::<auth::UserCreate>()
        .add::<auth::UserEdit>()
        .add::<auth::PasswordChange>()
        .add::<datastores::DatastoreCreate>()
        .add::<datastores::VolumeCreate>()
        .add::<datastores::VolumeResize>()
        .add::<crate::import::ImportDisk>()
        .add::<networks::SwitchCreate>()
        .add::<networks::PortGroupCreate>()
        .add::<networks::PortGroupEdit>()
        .add::<crate::vm::request::CreateVm>()
        .add::<crate::vm::edit::EditVm>()
        .add::<crate::join::JoinTokenCreate>()
        .add::<crate::join::JoinRequest>();
    // Answers.
    s.add::<error::ErrorBody>()
        .add::<super::console_ws::ConsoleEvent>()
        .add::<meta::Health>()
        .add::<auth::Session>()
        .add::<auth::NewToken>()
        .add::<hosts::Host>()
        .listed::<crate::membership::ClusterHost>()
        .listed::<crate::host::Nic>()
        .add::<crate::join::JoinToken>()
        .add::<crate::join::JoinAnswer>()
        .add::<hosts::MetricSeries>()
        .add::<networks::Networks>()
        .add::<DatastoreInfo>()
        .add::<db::DatastoreRow>()
        .put::<PageOf<db::DatastoreRow>>("DatastorePage")
        .listed::<db::ApiToken>()
        .listed::<db::User>()
        .listed::<super::roles::RoleInfo>()
        .listed::<crate::supervisor::DaemonStatus>()
        .listed::<VolumeInfo>()
        .listed::<networks::Switch>()
        .listed::<networks::PortGroup>()
        .listed::<networks::Port>()
        .listed::<crate::vm::request::Template>()
        .listed::<vms::VmReply>()
        .listed::<db::Task>()
        .listed::<db::Event>()
        .add::<db::metrics::SampledObject>()
        .put::<hosts::SampledObjects>("SampledObjectPage");
    // What mgmtd passes on as the daemon wrote it (sfera-vswitchd's
    // counters), and this document.
    s.0.insert("Object".to_owned(), json!({ "type": "object" }));
    // What utoipa does not derive: an edit of a user changes something.
    if let Some(Value::Object(edit)) = s.0.get_mut("UserEdit") {
        edit.insert("minProperties".to_owned(), json!(1));
    }
    s.0
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The schema of a path parameter, by its name: what the handlers accept.
fn path_schema(name: &str) -> Value {
    match name {
        "id" => json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX }),
        // Names as the daemons take them in paths.
        "datastore" | "switch" | "port_group" | "host" => {
            json!({ "type": "string", "pattern": OBJECT_NAME })
        }
        "volume" => json!({ "type": "string", "pattern": VOLUME_NAME }),
        "kind" => json!({ "type": "string", "enum": crate::metrics::KINDS }),
        "daemon" => json!({ "type": "string", "enum": ["blockd", "vswitchd"] }),
        "action" => {
            // shutdown and reboot have routes of their own.
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
    fn a_user_edit_needs_no_field_and_a_password_change_both() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert!(schemas["UserEdit"].get("required").is_none());
        assert_eq!(schemas["UserEdit"]["minProperties"], 1);
        assert_eq!(
            schemas["UserEdit"]["properties"]["role"]["enum"][0],
            "administrator"
        );
        assert_eq!(
            schemas["PasswordChange"]["required"],
            json!(["current_password", "new_password"])
        );
        assert!(schemas["RolePage"].is_object() && schemas["Role"].is_object());
    }

    #[test]
    fn only_login_health_and_the_join_are_public() {
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
            vec![
                ("POST", "/api/v1/session"),
                ("GET", "/api/v1/health"),
                // A join token's secret is the joining host's credential.
                ("POST", "/api/v1/cluster/join")
            ]
        );
    }
}
