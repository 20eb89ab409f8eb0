//! REST/JSON over HTTP/1.1 on a Unix socket. This layer parses and answers;
//! [`super::service`] does the work.
//!
//! ```text
//! PUT /v1/vm            create from a JSON VmConfig (validated first)
//! GET /v1/vm            {"state", "config", "end"}
//! PUT /v1/vm/boot       build and start
//! PUT /v1/vm/pause
//! PUT /v1/vm/resume
//! PUT /v1/vm/shutdown   stop; the process exits with status 0
//! GET /v1/vm/counters   {"exits": {...}, "devices": [...]}
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::request::{ApiError, Response, VmmAction};
use super::service::{SharedVmm, handle};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Serves the API on `listener` until the process ends; `open` counts the
/// connections being served (so the process can let the answer to a
/// shutdown go out before it exits).
pub async fn serve(
    listener: UnixListener,
    vmm: SharedVmm,
    open: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let vmm = SharedVmm::clone(&vmm);
        let open = Arc::clone(&open);
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, SharedVmm::clone(&vmm)));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("API connection ended: {e}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
    vmm: SharedVmm,
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
        Ok(action) => tokio::task::spawn_blocking(move || handle(&vmm, action))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("Request handler failed: {e}")))),
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(Response::Json(body)) => respond(StatusCode::OK, body.to_string()),
        Ok(Response::Empty) => respond(StatusCode::NO_CONTENT, String::new()),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%method, %path, "{}", e.message);
            }
            error_response(&e)
        }
    })
}

fn respond(status: StatusCode, body: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(e: &ApiError) -> hyper::Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, e.body().to_string())
}

/// Turns a method, path and body into a typed request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<VmmAction, ApiError> {
    let not_allowed = || ApiError {
        status: 405,
        code: "method_not_allowed",
        message: format!("{method} is not allowed on {path}"),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segments.as_slice(), method) {
        (["v1", "vm"], &Method::PUT) => {
            let config = serde_json::from_slice(body)
                .map_err(|e| ApiError::invalid(format!("Invalid VM configuration: {e}")))?;
            Ok(VmmAction::CreateVm(Box::new(config)))
        }
        (["v1", "vm"], &Method::GET) => Ok(VmmAction::GetVmInfo),
        (["v1", "vm"], _) => Err(not_allowed()),
        (["v1", "vm", "counters"], &Method::GET) => Ok(VmmAction::GetCounters),
        (["v1", "vm", "boot"], &Method::PUT) => Ok(VmmAction::BootVm),
        (["v1", "vm", "pause"], &Method::PUT) => Ok(VmmAction::PauseVm),
        (["v1", "vm", "resume"], &Method::PUT) => Ok(VmmAction::ResumeVm),
        (["v1", "vm", "shutdown"], &Method::PUT) => Ok(VmmAction::ShutdownVm),
        (
            [
                "v1",
                "vm",
                "counters" | "boot" | "pause" | "resume" | "shutdown",
            ],
            _,
        ) => Err(not_allowed()),
        _ => Err(ApiError::not_found(format!("No such resource: {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/v1/vm", b""), Ok(VmmAction::GetVmInfo));
        assert_eq!(
            route(&Method::PUT, "/v1/vm/boot", b""),
            Ok(VmmAction::BootVm)
        );
        assert_eq!(
            route(&Method::GET, "/v1/vm/counters", b""),
            Ok(VmmAction::GetCounters)
        );
        let body = br#"{"memory_mib": 64, "kernel": "/k"}"#;
        assert!(matches!(
            route(&Method::PUT, "/v1/vm", body),
            Ok(VmmAction::CreateVm(c)) if c.memory_mib == 64 && c.vcpus == 1
        ));
    }

    #[test]
    fn bad_requests_get_the_right_status() {
        assert_eq!(route(&Method::GET, "/v2/vm", b"").unwrap_err().status, 404);
        assert_eq!(
            route(&Method::POST, "/v1/vm/boot", b"").unwrap_err().status,
            405
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/vm", b"").unwrap_err().status,
            405
        );
        let e = route(&Method::PUT, "/v1/vm", b"{not json").unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        let e = route(
            &Method::PUT,
            "/v1/vm",
            br#"{"memory_mib":1,"kernel":"/k","x":1}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
    }
}
