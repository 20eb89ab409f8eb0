//! The API's routes: a method, path and body become a typed [`Request`];
//! `control::server` serves them over HTTP/1.1 on the Unix socket, and
//! [`crate::control_plane::service::Vswitchd`] does the work.
//!
//! ```text
//! GET|PUT           /v1/config                          the whole configuration
//! GET|POST          /v1/switches                        list | {"name","mac_ageing_s","uplinks"}
//! GET|PUT|DELETE    /v1/switches/{sw}                   show | {"mac_ageing_s","uplinks"?} | remove
//! GET|POST          /v1/switches/{sw}/uplinks           list | {"name","type","interface"}
//! GET|DELETE        /v1/switches/{sw}/uplinks/{name}
//! GET               /v1/switches/{sw}/mac-table
//! GET|POST          /v1/port-groups                     list | {"name","switch","vlan","security","shaping","teaming"}
//! GET|PUT|DELETE    /v1/port-groups/{name}              PUT: {"vlan","security","shaping","teaming"}
//! GET|POST          /v1/ports                           list | {"name","socket","mode","mac","port_group","mtu","queues"}
//! GET|PUT|DELETE    /v1/ports/{name}                    PUT: {"port_group","mac","mtu"}
//! GET               /v1/ports/{name}/stats
//! GET               /v1/stats
//! GET               /metrics                            Prometheus text
//! ```

use std::sync::Arc;

use hyper::Method;
use serde::de::DeserializeOwned;

use control::server::{Api, Reply};

use super::request::{ApiError, Change, Query, Request, invalid};
use crate::control_plane::service::{Control, Vswitchd};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The API of a running switch: what `control::server::serve` serves.
pub struct VswitchdApi<D>(pub Arc<Vswitchd<D>>);

impl<D> std::fmt::Debug for VswitchdApi<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VswitchdApi").field(&self.0).finish()
    }
}

impl<D: Control> Api for VswitchdApi<D> {
    type Request = Request;

    fn route(&self, method: &Method, path: &str, body: &[u8]) -> Result<Request, ApiError> {
        route(method, path, body)
    }

    /// Runs on a blocking thread: the switch may take a while to apply a
    /// change (sockets, TAPs).
    fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        self.0.handle(request)
    }
}

/// A 400 from `control`'s parsers, with vswitchd's code (`invalid`).
fn with_our_code(e: ApiError) -> ApiError {
    invalid(e.message)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    control::path::parse_body(body).map_err(with_our_code)
}

/// Turns a method, path and body into a typed request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<Request, ApiError> {
    let segments = control::path::segments(path).map_err(with_our_code)?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let name = |s: &str| s.to_owned();
    let query = |q: Query| Ok(Request::Query(q));
    let change = |c: Change| Ok(Request::Change(c));
    let not_allowed = |allow: &[&str]| {
        Err(ApiError::method_not_allowed(
            format!(
                "{method} is not allowed on {path} (allowed: {})",
                allow.join(", ")
            ),
            allow,
        ))
    };
    const GET: &[&str] = &["GET"];
    const GET_PUT: &[&str] = &["GET", "PUT"];
    const GET_POST: &[&str] = &["GET", "POST"];
    const GET_DELETE: &[&str] = &["GET", "DELETE"];
    const GET_PUT_DELETE: &[&str] = &["GET", "PUT", "DELETE"];
    match (segs.as_slice(), method.clone()) {
        (["metrics"], Method::GET) => query(Query::Metrics),
        (["metrics"], _) => not_allowed(GET),

        (["v1", "config"], Method::GET) => query(Query::Config),
        (["v1", "config"], Method::PUT) => change(Change::ReplaceConfig(parse(body)?)),
        (["v1", "config"], _) => not_allowed(GET_PUT),

        (["v1", "switches"], Method::GET) => query(Query::Switches),
        (["v1", "switches"], Method::POST) => change(Change::AddSwitch(parse(body)?)),
        (["v1", "switches"], _) => not_allowed(GET_POST),
        (["v1", "switches", sw], Method::GET) => query(Query::Switch { name: name(sw) }),
        (["v1", "switches", sw], Method::PUT) => change(Change::SetSwitch {
            name: name(sw),
            body: parse(body)?,
        }),
        (["v1", "switches", sw], Method::DELETE) => change(Change::RemoveSwitch { name: name(sw) }),
        (["v1", "switches", _], _) => not_allowed(GET_PUT_DELETE),
        (["v1", "switches", sw, "uplinks"], Method::GET) => {
            query(Query::Uplinks { switch: name(sw) })
        }
        (["v1", "switches", sw, "uplinks"], Method::POST) => change(Change::AddUplink {
            switch: name(sw),
            body: parse(body)?,
        }),
        (["v1", "switches", _, "uplinks"], _) => not_allowed(GET_POST),
        (["v1", "switches", sw, "uplinks", up], Method::GET) => query(Query::Uplink {
            switch: name(sw),
            name: name(up),
        }),
        (["v1", "switches", sw, "uplinks", up], Method::DELETE) => change(Change::RemoveUplink {
            switch: name(sw),
            name: name(up),
        }),
        (["v1", "switches", _, "uplinks", _], _) => not_allowed(GET_DELETE),
        (["v1", "switches", sw, "mac-table"], Method::GET) => {
            query(Query::MacTable { switch: name(sw) })
        }
        (["v1", "switches", _, "mac-table"], _) => not_allowed(GET),

        (["v1", "port-groups"], Method::GET) => query(Query::PortGroups),
        (["v1", "port-groups"], Method::POST) => change(Change::AddPortGroup(parse(body)?)),
        (["v1", "port-groups"], _) => not_allowed(GET_POST),
        (["v1", "port-groups", pg], Method::GET) => query(Query::PortGroup { name: name(pg) }),
        (["v1", "port-groups", pg], Method::PUT) => change(Change::SetPortGroup {
            name: name(pg),
            body: parse(body)?,
        }),
        (["v1", "port-groups", pg], Method::DELETE) => {
            change(Change::RemovePortGroup { name: name(pg) })
        }
        (["v1", "port-groups", _], _) => not_allowed(GET_PUT_DELETE),

        (["v1", "ports"], Method::GET) => query(Query::Ports),
        (["v1", "ports"], Method::POST) => change(Change::AddPort(parse(body)?)),
        (["v1", "ports"], _) => not_allowed(GET_POST),
        (["v1", "ports", p], Method::GET) => query(Query::Port { name: name(p) }),
        (["v1", "ports", p], Method::PUT) => change(Change::SetPort {
            name: name(p),
            body: parse(body)?,
        }),
        (["v1", "ports", p], Method::DELETE) => change(Change::RemovePort { name: name(p) }),
        (["v1", "ports", _], _) => not_allowed(GET_PUT_DELETE),
        (["v1", "ports", p, "stats"], Method::GET) => query(Query::PortStats { name: name(p) }),
        (["v1", "ports", _, "stats"], _) => not_allowed(GET),

        (["v1", "stats"], Method::GET) => query(Query::Stats),
        (["v1", "stats"], _) => not_allowed(GET),

        _ => Err(ApiError::no_route(path)),
    }
}

/// The API on `<dir>/api.sock`, served by a thread of its own with the
/// stand-in switch, saving to `dir`'s state file (for tests; the thread
/// ends with the test process).
#[cfg(test)]
pub(crate) fn spawn_test_server(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    Arc<Vswitchd<crate::control_plane::service::fake::FakeDaemon>>,
) {
    let socket = dir.join("api.sock");
    let bound = control::socket::bind(&socket).expect("bind the test socket");
    let state = crate::control_plane::persist::StateFile::in_dir(dir);
    let vswitchd = Arc::new(Vswitchd::new(
        crate::control_plane::service::fake::FakeDaemon::default(),
        Some(state),
    ));
    let server = Arc::clone(&vswitchd);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime");
        runtime.block_on(async move {
            // Held for as long as the server runs.
            let _lock = bound.lock;
            let listener =
                tokio::net::UnixListener::from_std(bound.listener).expect("a tokio listener");
            let options = control::server::ServeOptions::new(MAX_BODY)
                .with_peers(control::peers::ApiPeers::new());
            control::server::serve(listener, Arc::new(VswitchdApi(server)), options).await;
        });
    });
    (socket, vswitchd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, path: &str, body: &str) -> Request {
        route(&method, path, body.as_bytes()).unwrap()
    }

    fn err(method: Method, path: &str, body: &str) -> ApiError {
        route(&method, path, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn routes_reads() {
        let q = |path: &str| ok(Method::GET, path, "");
        assert_eq!(q("/v1/config"), Request::Query(Query::Config));
        assert_eq!(q("/v1/switches/"), Request::Query(Query::Switches));
        assert_eq!(
            q("/v1/switches/vSwitch0/uplinks/u0"),
            Request::Query(Query::Uplink {
                switch: "vSwitch0".into(),
                name: "u0".into()
            })
        );
        assert_eq!(
            q("/v1/switches/sw%31/mac-table"),
            Request::Query(Query::MacTable {
                switch: "sw1".into()
            })
        );
        assert_eq!(
            q("/v1/port-groups/pg"),
            Request::Query(Query::PortGroup { name: "pg".into() })
        );
        assert_eq!(
            q("/v1/ports/a/stats"),
            Request::Query(Query::PortStats { name: "a".into() })
        );
        assert_eq!(q("/v1/stats"), Request::Query(Query::Stats));
        assert_eq!(q("/metrics"), Request::Query(Query::Metrics));
    }

    #[test]
    fn routes_changes_with_typed_bodies() {
        let Request::Change(Change::AddPort(p)) = ok(
            Method::POST,
            "/v1/ports",
            r#"{"name":"a","socket":"/s","mac":"52:54:00:00:00:01","port_group":"pg"}"#,
        ) else {
            panic!("not AddPort");
        };
        assert_eq!((p.name.as_str(), p.mtu, p.queues), ("a", 1500, 1));
        assert!(matches!(
            ok(Method::PUT, "/v1/port-groups/pg", r#"{"vlan":{"mode":"access","id":5}}"#),
            Request::Change(Change::SetPortGroup { name, .. }) if name == "pg"
        ));
        assert!(matches!(
            ok(Method::POST, "/v1/switches/sw/uplinks", r#"{"name":"u","type":"tap","interface":"t0"}"#),
            Request::Change(Change::AddUplink { switch, .. }) if switch == "sw"
        ));
        assert_eq!(
            ok(Method::DELETE, "/v1/switches/sw/uplinks/u", ""),
            Request::Change(Change::RemoveUplink {
                switch: "sw".into(),
                name: "u".into()
            })
        );
        assert_eq!(
            ok(Method::DELETE, "/v1/switches/sw", ""),
            Request::Change(Change::RemoveSwitch { name: "sw".into() })
        );
        assert!(matches!(
            ok(Method::PUT, "/v1/config", "{}"),
            Request::Change(Change::ReplaceConfig(c)) if c == crate::control_plane::config::SwitchConfig::default()
        ));
        assert!(matches!(
            ok(Method::PUT, "/v1/ports/a", r#"{"port_group":"pg2","mac":"52:54:00:00:00:01","mtu":9000}"#),
            Request::Change(Change::SetPort { body, .. }) if body.mtu == 9000
        ));
    }

    #[test]
    fn refusals_have_the_right_status_and_code() {
        for (method, path, body, status, code) in [
            (Method::GET, "/v2/switches", "", 404, "not_found"),
            (Method::GET, "/v1/switches/a/b", "", 404, "not_found"),
            (Method::GET, "/v1/nothing", "", 404, "not_found"),
            (Method::PATCH, "/v1/ports/a", "", 405, "method_not_allowed"),
            (Method::DELETE, "/v1/ports", "", 405, "method_not_allowed"),
            (Method::POST, "/v1/config", "{}", 405, "method_not_allowed"),
            (
                Method::PUT,
                "/v1/switches/sw/uplinks/u",
                "{}",
                405,
                "method_not_allowed",
            ),
            (Method::POST, "/metrics", "", 405, "method_not_allowed"),
            (Method::POST, "/v1/ports", "{not json", 400, "invalid"),
            (Method::POST, "/v1/ports", "", 400, "invalid"),
            (
                Method::POST,
                "/v1/switches",
                r#"{"name":"s","colour":"red"}"#,
                400,
                "invalid",
            ),
            (
                Method::POST,
                "/v1/port-groups",
                r#"{"name":"p","vlan":{"mode":"none","id":3}}"#,
                400,
                "invalid",
            ),
            (
                Method::POST,
                "/v1/port-groups",
                r#"{"name":"p","security":{"promisc":true}}"#,
                400,
                "invalid",
            ),
            (
                Method::POST,
                "/v1/ports",
                r#"{"name":"a","socket":"/s","mac":"zz","port_group":"pg"}"#,
                400,
                "invalid",
            ),
            (
                Method::POST,
                "/v1/ports",
                r#"{"name":"a","socket":"/s","mac":"52:54:00:00:00:01","port_group":"pg","mtu":70000}"#,
                400,
                "invalid",
            ),
            (
                Method::POST,
                "/v1/switches/sw/uplinks",
                r#"{"name":"u","type":"vxlan","interface":"x"}"#,
                400,
                "invalid",
            ),
            (
                Method::PUT,
                "/v1/config",
                r#"{"switches":"no"}"#,
                400,
                "invalid",
            ),
            (Method::GET, "/v1/ports/a%zz", "", 400, "invalid"),
            (Method::GET, "/v1/ports/%ff", "", 400, "invalid"),
        ] {
            let e = err(method.clone(), path, body);
            assert_eq!(
                (e.status, e.code),
                (status, code),
                "{method} {path} {body}: {e:?}"
            );
            assert!(!e.message.is_empty());
        }
        let e = err(Method::PATCH, "/v1/port-groups/pg", "");
        assert_eq!(e.allow.as_deref(), Some("GET, PUT, DELETE"));
        let e = err(Method::POST, "/v1/ports", r#"{"name":"a","extra":1}"#);
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    /// The server on a real socket, with the stand-in switch, through the
    /// CLI's client.
    #[test]
    fn serves_over_a_unix_socket() {
        use crate::control_plane::persist::StateFile;
        use serde_json::json;

        let dir = tempfile::tempdir().unwrap();
        let (socket, vswitchd) = spawn_test_server(dir.path());
        let state = StateFile::in_dir(dir.path());
        let call = |method: Method, path: &str, body: Option<serde_json::Value>| {
            let (status, text) = control::client::UnixApi::new("sfera-vswitchd", &socket)
                .call_blocking(method, path, body.as_ref())
                .unwrap();
            let json = if text.is_empty() || path == "/metrics" {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            };
            (status, json, text)
        };

        let (status, group, _) = call(
            Method::POST,
            "/v1/port-groups",
            Some(json!({"name": "pg", "vlan": {"mode": "access", "id": 10}})),
        );
        assert_eq!((status, group["vlan"]["id"].clone()), (201, json!(10)));
        let (status, port, _) = call(
            Method::POST,
            "/v1/ports",
            Some(
                json!({"name": "a", "socket": "/run/a.sock", "mac": "52:54:00:00:00:01", "port_group": "pg"}),
            ),
        );
        assert_eq!((status, port["queues"].clone()), (201, json!(1)));
        let (status, port, _) = call(
            Method::PUT,
            "/v1/ports/a",
            Some(json!({"port_group": "pg", "mac": "52:54:00:00:00:01", "mtu": 9000})),
        );
        assert_eq!((status, port["mtu"].clone()), (200, json!(9000)));
        let saved = std::fs::read(state.path()).unwrap();

        let (status, error, _) = call(Method::DELETE, "/v1/port-groups/pg", None);
        assert_eq!(
            (status, error["error"]["code"].clone()),
            (409, json!("conflict"))
        );
        let (status, error, _) = call(Method::POST, "/v1/ports", Some(json!("x".repeat(MAX_BODY))));
        assert_eq!(
            (status, error["error"]["code"].clone()),
            (413, json!("body_too_large"))
        );
        let (status, error, _) = call(Method::PATCH, "/v1/ports/a", Some(json!({})));
        assert_eq!(
            (status, error["error"]["code"].clone()),
            (405, json!("method_not_allowed"))
        );
        let (status, error, _) = call(Method::GET, "/v1/ports/b", None);
        assert_eq!(
            (status, error["error"]["code"].clone()),
            (404, json!("not_found"))
        );
        let (status, error, _) = call(Method::PUT, "/v1/config", Some(json!({"ports": 1})));
        assert_eq!(
            (status, error["error"]["code"].clone()),
            (400, json!("invalid"))
        );
        assert_eq!(
            std::fs::read(state.path()).unwrap(),
            saved,
            "refusals saved nothing"
        );

        let (status, _, text) = call(Method::GET, "/metrics", None);
        assert_eq!(status, 200);
        assert!(
            text.contains("# TYPE sfera_vswitch_mac_table_entries gauge"),
            "{text}"
        );
        let (status, body, text) = call(Method::DELETE, "/v1/ports/a", None);
        assert_eq!(
            (status, body, text.as_str()),
            (204, serde_json::Value::Null, "")
        );
        let (_, config, _) = call(Method::GET, "/v1/config", None);
        assert_eq!(
            config,
            serde_json::to_value(vswitchd.daemon().config()).unwrap()
        );
        assert_eq!(state.load().unwrap(), Some(vswitchd.daemon().config()));
    }
}
