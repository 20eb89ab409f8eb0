//! A daemon's REST/JSON API over HTTP/1.1 on a Unix socket. The daemon
//! says how a request is parsed ([`Api::route`]) and answered
//! ([`Api::handle`]); this module does the rest, the same for every
//! daemon: it admits the peer, reads the body up to a limit, runs the
//! handler on a blocking thread (handlers take locks, create files and
//! sockets), and writes the answer or the error body.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::error::ApiError;
use crate::peers::{ApiPeers, admit};

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with a JSON body.
    Json(serde_json::Value),
    /// 201 with a JSON body.
    Created(serde_json::Value),
    /// 204.
    Empty,
    /// 200 with a body of another type (Prometheus text).
    Text {
        content_type: &'static str,
        body: String,
    },
}

/// What a daemon's API does with a request.
pub trait Api: Send + Sync + 'static {
    /// The daemon's typed request.
    type Request: Send + 'static;

    /// Parses a method, path and body into a typed request (no side
    /// effects: it runs on the runtime's thread).
    fn route(&self, method: &Method, path: &str, body: &[u8]) -> Result<Self::Request, ApiError>;

    /// Carries a request out (on a blocking thread).
    fn handle(&self, request: Self::Request) -> Result<Reply, ApiError>;
}

/// How an API is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest request body accepted (a 413 beyond).
    pub max_body: usize,
    /// Who may connect; `None` lets in whoever can reach the socket (its
    /// mode and directory are the access control).
    pub peers: Option<Arc<ApiPeers>>,
    /// Counts the connections being served, so the process can let the
    /// answer to a shutdown go out before it exits.
    pub open: Arc<AtomicUsize>,
}

impl ServeOptions {
    pub fn new(max_body: usize) -> Self {
        ServeOptions {
            max_body,
            peers: None,
            open: Arc::default(),
        }
    }

    /// Lets in only root and the daemon's own user.
    pub fn with_peers(self, peers: ApiPeers) -> Self {
        ServeOptions {
            peers: Some(Arc::new(peers)),
            ..self
        }
    }
}

/// How long to wait after a failed `accept` (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `api` on `listener` until the future is dropped.
pub async fn serve<A: Api>(listener: UnixListener, api: Arc<A>, options: ServeOptions) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Refuse this one, keep serving.
                tracing::warn!("Cannot accept an API connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let stream = match &options.peers {
            Some(peers) => match admit(stream, peers) {
                Some(stream) => stream,
                None => continue,
            },
            None => stream,
        };
        let api = Arc::clone(&api);
        let max_body = options.max_body;
        let open = Arc::clone(&options.open);
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, Arc::clone(&api), max_body));
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

async fn answer<A: Api>(
    req: hyper::Request<Incoming>,
    api: Arc<A>,
    max_body: usize,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(error_response(&ApiError::too_large(max_body)));
        }
        Err(e) => {
            return Ok(error_response(&ApiError::invalid(format!(
                "Cannot read the request body: {e}"
            ))));
        }
    };
    let result = match api.route(&method, &path, &body) {
        Ok(request) => tokio::task::spawn_blocking(move || api.handle(request))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("Request handler failed: {e}")))),
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(reply) => reply_response(reply),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%method, %path, "{}", e.message);
            }
            error_response(&e)
        }
    })
}

/// The HTTP response of a successful answer.
pub fn reply_response(reply: Reply) -> hyper::Response<Full<Bytes>> {
    match reply {
        Reply::Json(body) => respond(StatusCode::OK, "application/json", body.to_string()),
        Reply::Created(body) => respond(StatusCode::CREATED, "application/json", body.to_string()),
        Reply::Empty => respond(StatusCode::NO_CONTENT, "application/json", String::new()),
        Reply::Text { content_type, body } => respond(StatusCode::OK, content_type, body),
    }
}

/// The HTTP response of an error: its status, body and headers.
pub fn error_response(e: &ApiError) -> hyper::Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = respond(status, "application/json", e.body().to_string());
    let headers = response.headers_mut();
    if let Some(v) = e
        .allow
        .as_deref()
        .and_then(|a| header::HeaderValue::from_str(a).ok())
    {
        headers.insert(header::ALLOW, v);
    }
    if let Some(secs) = e.retry_after {
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    response
}

fn respond(status: StatusCode, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::UnixApi;

    /// A toy API: `GET /v1/echo/{x}` answers `{"x": x}`, `PUT /v1/fail`
    /// fails inside the handler.
    #[derive(Debug)]
    struct Echo;

    impl Api for Echo {
        type Request = Result<String, ApiError>;

        fn route(&self, method: &Method, path: &str, _: &[u8]) -> Result<Self::Request, ApiError> {
            let segs = crate::path::segments(path)?;
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            match (segs.as_slice(), method) {
                (["v1", "echo", x], &Method::GET) => Ok(Ok((*x).to_owned())),
                (["v1", "echo", _], _) => Err(ApiError::method_not_allowed("no", &["GET"])),
                (["v1", "fail"], &Method::PUT) => Ok(Err(ApiError::internal("broken"))),
                _ => Err(ApiError::no_route(path)),
            }
        }

        fn handle(&self, request: Self::Request) -> Result<Reply, ApiError> {
            request.map(|x| Reply::Json(serde_json::json!({ "x": x })))
        }
    }

    #[tokio::test]
    async fn serves_routes_errors_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let socket = crate::socket::bind(&path).unwrap();
        let listener = UnixListener::from_std(socket.listener).unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Echo), ServeOptions::new(16)));
        let api = UnixApi::new("echo", &path);

        let v = api.get("/v1/echo/a%2Fb").await.unwrap();
        assert_eq!(v["x"], "a/b");
        let (status, _) = api.raw(Method::POST, "/v1/echo/a", None).await.unwrap();
        assert_eq!(status, 405);
        let e = api.get("/v1/nothing").await.unwrap_err();
        assert_eq!(e.status(), Some(404));
        let e = api.call(Method::PUT, "/v1/fail", None).await.unwrap_err();
        assert_eq!((e.status(), e.code()), (Some(500), Some("internal")));
        let big = serde_json::json!({ "padding": "x".repeat(64) });
        let (status, _) = api
            .raw(Method::GET, "/v1/echo/a", Some(&big))
            .await
            .unwrap();
        assert_eq!(status, 413);
        server.abort();
    }
}
