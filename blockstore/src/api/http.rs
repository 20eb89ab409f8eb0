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

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;

use control::peers::{ApiPeers, admit};

use super::request::{ApiError, Request, Response};
use crate::service::Blockd;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Serves the API on `listener` until the process ends, to the peers
/// `peers` allows.
pub async fn serve(
    listener: UnixListener,
    blockd: Arc<Mutex<Blockd>>,
    peers: ApiPeers,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let Some(stream) = admit(stream, &peers) else {
            continue;
        };
        let blockd = Arc::clone(&blockd);
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, Arc::clone(&blockd)));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("API connection ended: {e}");
            }
        });
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
    blockd: Arc<Mutex<Blockd>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error_response(&ApiError {
                status: 413,
                code: "body_too_large",
                message: format!("Request bodies are limited to {MAX_BODY} bytes"),
            }));
        }
    };
    let result = match route(&method, &path, &body) {
        Ok(request) => tokio::task::spawn_blocking(move || {
            blockd
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .handle(request)
        })
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("Request handler failed: {e}")))),
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(Response::Json { created, body }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            respond(status, "application/json", body.to_string())
        }
        Ok(Response::Empty) => respond(StatusCode::NO_CONTENT, "application/json", String::new()),
        Ok(Response::Metrics(text)) => respond(StatusCode::OK, "text/plain; version=0.0.4", text),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%method, %path, "{}", e.message);
            }
            error_response(&e)
        }
    })
}

fn respond(status: StatusCode, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn error_response(e: &ApiError) -> hyper::Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, "application/json", e.body().to_string())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("Invalid JSON body: {e}")))
}

fn method_not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError {
        status: 405,
        code: "method_not_allowed",
        message: format!("{method} is not allowed on {path}"),
    }
}

/// Turns a method, path and body into a typed request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<Request, ApiError> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method;
    let not_allowed = || Err(method_not_allowed(method, path));
    match segs.as_slice() {
        ["metrics"] => match *m {
            Method::GET => Ok(Request::Metrics),
            _ => not_allowed(),
        },
        ["v1", "datastores"] => match *m {
            Method::GET => Ok(Request::ListDatastores),
            Method::POST => Ok(Request::AddDatastore(parse(body)?)),
            _ => not_allowed(),
        },
        ["v1", "datastores", ds] => {
            let name = (*ds).to_owned();
            match *m {
                Method::GET => Ok(Request::GetDatastore { name }),
                Method::DELETE => Ok(Request::RemoveDatastore { name }),
                _ => not_allowed(),
            }
        }
        ["v1", "datastores", ds, "volumes"] => {
            let datastore = (*ds).to_owned();
            match *m {
                Method::GET => Ok(Request::ListVolumes { datastore }),
                Method::POST => Ok(Request::CreateVolume {
                    datastore,
                    body: parse(body)?,
                }),
                _ => not_allowed(),
            }
        }
        ["v1", "datastores", ds, "volumes", rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
            let datastore = (*ds).to_owned();
            let name = rest.join("/");
            match *m {
                Method::GET => Ok(Request::GetVolume { datastore, name }),
                Method::PATCH => Ok(Request::ResizeVolume {
                    datastore,
                    name,
                    body: parse(body)?,
                }),
                Method::DELETE => Ok(Request::DeleteVolume { datastore, name }),
                _ => not_allowed(),
            }
        }
        ["v1", "exports"] => match *m {
            Method::GET => Ok(Request::ListExports),
            Method::POST => Ok(Request::CreateExport(parse(body)?)),
            _ => not_allowed(),
        },
        ["v1", "exports", id] => {
            let id = (*id).to_owned();
            match *m {
                Method::GET => Ok(Request::GetExport { id }),
                Method::DELETE => Ok(Request::DeleteExport { id }),
                _ => not_allowed(),
            }
        }
        ["v1", "exports", id, "qos"] => match *m {
            Method::PUT => Ok(Request::SetQos {
                id: (*id).to_owned(),
                qos: parse(body)?,
            }),
            _ => not_allowed(),
        },
        _ => Err(ApiError::not_found(format!("No such resource: {path}"))),
    }
}

/// Decodes `%XX` escapes of a path segment.
fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ApiError::invalid(format!("Bad escape in path segment {segment:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::invalid(format!("Path segment {segment:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/v1/datastores", b""),
            Ok(Request::ListDatastores)
        );
        assert_eq!(
            route(
                &Method::GET,
                "/v1/datastores/local/volumes/vm1%2Fdisk0",
                b""
            ),
            Ok(Request::GetVolume {
                datastore: "local".into(),
                name: "vm1/disk0".into()
            })
        );
        assert_eq!(
            route(
                &Method::DELETE,
                "/v1/datastores/local/volumes/vm1/disk0",
                b""
            ),
            Ok(Request::DeleteVolume {
                datastore: "local".into(),
                name: "vm1/disk0".into()
            })
        );
        assert!(matches!(
            route(
                &Method::POST,
                "/v1/datastores/local/volumes",
                br#"{"name":"v","size":4096}"#
            ),
            Ok(Request::CreateVolume { .. })
        ));
        assert_eq!(route(&Method::GET, "/metrics", b""), Ok(Request::Metrics));
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_status() {
        assert_eq!(route(&Method::GET, "/v2/x", b"").unwrap_err().status, 404);
        assert_eq!(
            route(&Method::PUT, "/v1/datastores", b"")
                .unwrap_err()
                .status,
            405
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
