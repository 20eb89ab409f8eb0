//! REST/JSON over HTTP/1.1 on a Unix socket. This layer parses and answers;
//! [`crate::service::Blockd`] does the work.
//!
//! ```text
//! GET    /v1/datastores                       list
//! POST   /v1/datastores                       {"name","path"}
//! GET    /v1/datastores/{ds}                  show
//! DELETE /v1/datastores/{ds}                  unregister (data stays)
//! GET    /v1/datastores/{ds}/volumes          list
//! POST   /v1/datastores/{ds}/volumes          {"name","size"}
//! GET    /v1/datastores/{ds}/volumes/{name}   show ({name} may be FOLDER/NAME)
//! PATCH  /v1/datastores/{ds}/volumes/{name}   {"size"} (grow)
//! DELETE /v1/datastores/{ds}/volumes/{name}
//! GET    /v1/exports                          list, with stats
//! POST   /v1/exports                          {"id","datastore","volume","read_only","queues","qos"}
//! GET    /v1/exports/{id}                     show, with stats
//! DELETE /v1/exports/{id}
//! PUT    /v1/exports/{id}/qos                 {"iops","iops_burst","bytes_per_sec","bytes_burst"}
//! GET    /metrics                             Prometheus text
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use hyper::Method;

use control::ApiError;
use control::path::{parse_body, segments};
use control::server::{Api, Reply, ServeOptions};

use super::request::{DatastoreRequest, ExportRequest, Request, VolumeRequest};
use crate::service::Blockd;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The API served on [`control::server::serve`]: requests are parsed here
/// and carried out by [`Blockd`], one at a time.
#[derive(Debug)]
pub struct BlockdApi {
    blockd: Arc<Mutex<Blockd>>,
}

impl BlockdApi {
    pub fn new(blockd: Blockd) -> Self {
        BlockdApi {
            blockd: Arc::new(Mutex::new(blockd)),
        }
    }

    /// How blockd serves: bodies up to [`MAX_BODY`], root and its own
    /// user only.
    pub fn options() -> ServeOptions {
        ServeOptions::new(MAX_BODY).with_peers(control::peers::ApiPeers::new())
    }
}

impl Api for BlockdApi {
    type Request = Request;

    fn route(&self, method: &Method, path: &str, body: &[u8]) -> Result<Request, ApiError> {
        route(method, path, body)
    }

    fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        self.blockd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .handle(request)
    }
}

/// Turns a method, path and body into a typed request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<Request, ApiError> {
    let segments = segments(path)?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let not_allowed = |allow: &[&str]| Err(method_not_allowed(method, path, allow));
    let owned = |s: &str| s.to_owned();
    match (segs.as_slice(), method) {
        (["metrics"], &Method::GET) => Ok(Request::Metrics),
        (["metrics"], _) => not_allowed(&["GET"]),
        (["v1", "datastores"], &Method::GET) => Ok(Request::Datastore(DatastoreRequest::List)),
        (["v1", "datastores"], &Method::POST) => {
            Ok(Request::Datastore(DatastoreRequest::Add(parse_body(body)?)))
        }
        (["v1", "datastores"], _) => not_allowed(&["GET", "POST"]),
        (["v1", "datastores", ds], &Method::GET) => Ok(Request::Datastore(DatastoreRequest::Get {
            name: owned(ds),
        })),
        (["v1", "datastores", ds], &Method::DELETE) => {
            Ok(Request::Datastore(DatastoreRequest::Remove {
                name: owned(ds),
            }))
        }
        (["v1", "datastores", _], _) => not_allowed(&["GET", "DELETE"]),
        (["v1", "datastores", ds, "volumes", rest @ ..], _) if rest.len() <= 2 => {
            volume_route(method, path, ds, rest, body).map(Request::Volume)
        }
        (["v1", "exports"], &Method::GET) => Ok(Request::Export(ExportRequest::List)),
        (["v1", "exports"], &Method::POST) => {
            Ok(Request::Export(ExportRequest::Create(parse_body(body)?)))
        }
        (["v1", "exports"], _) => not_allowed(&["GET", "POST"]),
        (["v1", "exports", id], &Method::GET) => {
            Ok(Request::Export(ExportRequest::Get { id: owned(id) }))
        }
        (["v1", "exports", id], &Method::DELETE) => {
            Ok(Request::Export(ExportRequest::Delete { id: owned(id) }))
        }
        (["v1", "exports", _], _) => not_allowed(&["GET", "DELETE"]),
        (["v1", "exports", id, "qos"], &Method::PUT) => {
            Ok(Request::Export(ExportRequest::SetQos {
                id: owned(id),
                qos: parse_body(body)?,
            }))
        }
        (["v1", "exports", _, "qos"], _) => not_allowed(&["PUT"]),
        _ => Err(ApiError::no_route(path)),
    }
}

/// `/v1/datastores/{ds}/volumes[/{name}]`, `{name}` one segment or two
/// (`FOLDER/NAME`).
fn volume_route(
    method: &Method,
    path: &str,
    ds: &str,
    rest: &[&str],
    body: &[u8],
) -> Result<VolumeRequest, ApiError> {
    let datastore = ds.to_owned();
    if rest.is_empty() {
        return match *method {
            Method::GET => Ok(VolumeRequest::List { datastore }),
            Method::POST => Ok(VolumeRequest::Create {
                datastore,
                body: parse_body(body)?,
            }),
            _ => Err(method_not_allowed(method, path, &["GET", "POST"])),
        };
    }
    let name = rest.join("/");
    match *method {
        Method::GET => Ok(VolumeRequest::Get { datastore, name }),
        Method::PATCH => Ok(VolumeRequest::Resize {
            datastore,
            name,
            body: parse_body(body)?,
        }),
        Method::DELETE => Ok(VolumeRequest::Delete { datastore, name }),
        _ => Err(method_not_allowed(
            method,
            path,
            &["GET", "PATCH", "DELETE"],
        )),
    }
}

fn method_not_allowed(method: &Method, path: &str, allow: &[&str]) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {path}"), allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/v1/datastores", b""),
            Ok(Request::Datastore(DatastoreRequest::List))
        );
        assert_eq!(
            route(
                &Method::GET,
                "/v1/datastores/local/volumes/vm1%2Fdisk0",
                b""
            ),
            Ok(Request::Volume(VolumeRequest::Get {
                datastore: "local".into(),
                name: "vm1/disk0".into()
            }))
        );
        assert_eq!(
            route(
                &Method::DELETE,
                "/v1/datastores/local/volumes/vm1/disk0",
                b""
            ),
            Ok(Request::Volume(VolumeRequest::Delete {
                datastore: "local".into(),
                name: "vm1/disk0".into()
            }))
        );
        assert!(matches!(
            route(
                &Method::POST,
                "/v1/datastores/local/volumes",
                br#"{"name":"v","size":4096}"#
            ),
            Ok(Request::Volume(VolumeRequest::Create { .. }))
        ));
        assert_eq!(route(&Method::GET, "/metrics", b""), Ok(Request::Metrics));
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_status() {
        assert_eq!(route(&Method::GET, "/v2/x", b"").unwrap_err().status, 404);
        let e = route(&Method::PUT, "/v1/datastores", b"").unwrap_err();
        assert_eq!((e.status, e.allow.as_deref()), (405, Some("GET, POST")));
        let e = route(&Method::GET, "/v1/exports/e/qos", b"").unwrap_err();
        assert_eq!((e.status, e.allow.as_deref()), (405, Some("PUT")));
        assert_eq!(
            route(&Method::GET, "/v1/datastores/d/volumes/a/b/c", b"")
                .unwrap_err()
                .status,
            404
        );
        let e = route(&Method::POST, "/v1/datastores", b"{not json").unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        let e = route(
            &Method::POST,
            "/v1/datastores",
            br#"{"name":"a","path":"/x","extra":1}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(
            route(&Method::GET, "/v1/datastores/a%zz", b"")
                .unwrap_err()
                .status,
            400
        );
    }
}
