//! The HTTP(S) server: warp filters for `/api/v1` and the web console's
//! static files, over plain TCP or rustls. Every API request is
//! authenticated here (session cookie or bearer token) before its route is
//! even looked up, so a request without credentials learns nothing, not
//! even whether a path exists.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::origin::{self, Credential};
use super::reply::Reply;
use super::request::ApiRequest;
use super::routes::{self, Access};
use crate::auth::{self, Principal, Role};
use crate::service::Mgmt;

/// Largest request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// The client's address, put in each request's extensions by [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The header the web console puts on the requests it repeats by itself
/// (polling): they do not count as use of the session, so an open but
/// unattended console still reaches the idle timeout.
pub const BACKGROUND_HEADER: &str = "x-sfera-background";

/// Whether a request counts as use of its session (see [`BACKGROUND_HEADER`]).
fn is_use(headers: &HeaderMap) -> bool {
    !headers.contains_key(BACKGROUND_HEADER)
}

/// Who is calling, from the request's headers. A token is the cluster's;
/// a session is this host's, and its user's role is read from the
/// cluster's accounts on each use (a deleted user's session is ended).
pub async fn authenticate(mgmt: &Mgmt, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    let header = |name: warp::http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(token) = header(warp::http::header::AUTHORIZATION)
        .as_deref()
        .and_then(auth::bearer)
    {
        return Ok(mgmt
            .accounts
            .token_user(&auth::secret_hash(token))
            .await?
            .map(|(user, role)| Principal {
                user,
                role,
                session: None,
            }));
    }
    for cookie in headers.get_all(warp::http::header::COOKIE) {
        let Some(secret) = cookie
            .to_str()
            .ok()
            .and_then(auth::session_from_cookie_header)
        else {
            continue;
        };
        let hash = auth::secret_hash(secret);
        let Some(user) = mgmt.db.session_user_at(
            &hash,
            mgmt.session_idle_s,
            crate::db::now(),
            is_use(headers),
        )?
        else {
            continue;
        };
        match mgmt.accounts.role(&user).await? {
            Some(role) => {
                return Ok(Some(Principal {
                    user,
                    role,
                    session: Some(hash),
                }));
            }
            None => mgmt.db.delete_session(&hash)?,
        }
    }
    Ok(None)
}

async fn read_body<S, B>(body: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = BytesMut::new();
    let mut body = body;
    while let Some(mut chunk) = body
        .try_next()
        .await
        .map_err(|e| ApiError::invalid(format!("Cannot read the request body: {e}")))?
    {
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(ApiError::too_large(MAX_BODY));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

pub(super) fn parse_query(raw: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut q = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        q.insert(
            routes::percent_decode(&k.replace('+', " "))?,
            routes::percent_decode(&v.replace('+', " "))?,
        );
    }
    Ok(q)
}

/// Turns one API request into its answer. `prefix` is the path before
/// `tail` (`api/v1`, or `metrics` for mgmtd's own metrics).
#[allow(clippy::too_many_arguments)]
async fn api(
    mgmt: Arc<Mgmt>,
    tls: bool,
    peer: Option<Peer>,
    prefix: &'static [&'static str],
    tail: String,
    method: Method,
    headers: HeaderMap,
    query: String,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
) -> Response {
    // The route template the request matched, for mgmtd's own metrics.
    let mut matched: &'static str = "unmatched";
    let result = async {
        let principal = authenticate(&mgmt, &headers).await?;
        let credential = match &principal {
            None => Credential::None,
            Some(p) if p.session.is_some() => Credential::Cookie,
            Some(_) => Credential::Token,
        };
        if !origin::allowed(&method, &headers, tls, credential) {
            return Err(super::error::cross_origin());
        }
        let segments: Vec<String> = prefix
            .iter()
            .map(|s| (*s).to_owned())
            .chain(
                tail.split('/')
                    .filter(|s| !s.is_empty())
                    .map(routes::percent_decode)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        if principal.is_some() {
                            e
                        } else {
                            ApiError::unauthorized()
                        }
                    })?,
            )
            .collect();
        let found = routes::find(method.as_str(), &segments);
        let (route, params) = match (found, &principal) {
            (Ok(f), _) => f,
            (Err(e), Some(_)) => return Err(e),
            // A public path's methods are no secret: 405 with Allow.
            (Err(e), None) if e.status == 405 && routes::is_public_path(&segments) => {
                return Err(e);
            }
            (Err(_), None) => return Err(ApiError::unauthorized()),
        };
        matched = route.path;
        match (route.access, &principal) {
            (Access::Public, _) => {}
            (_, None) => return Err(ApiError::unauthorized()),
            (Access::Admin, Some(p)) if p.role != Role::Administrator => {
                return Err(ApiError::forbidden());
            }
            _ => {}
        }
        let body = read_body(body).await?;
        let query = parse_query(&query)?;
        super::dispatch::handle(
            Arc::clone(&mgmt),
            ApiRequest {
                op: route.op,
                params,
                query,
                body,
                principal,
                tls,
                peer: peer.map(|p| p.0.ip()),
            },
        )
        .await
    }
    .await;
    let response = match result {
        Ok(reply) => reply.into_response(),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%method, path = %tail, "{}", e.message);
            }
            let mut r = Reply::Json(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.body(),
            )
            .into_response();
            if let Some(v) = e
                .allow
                .as_deref()
                .and_then(|a| warp::http::HeaderValue::from_str(a).ok())
            {
                r.headers_mut().insert(warp::http::header::ALLOW, v);
            }
            if let Some(secs) = e.retry_after {
                r.headers_mut()
                    .insert(warp::http::header::RETRY_AFTER, secs.into());
            }
            r
        }
    };
    mgmt.own_metrics
        .request(method.as_str(), matched, response.status().as_u16());
    response
}

/// The filters: `/api/v1/...`, and the web console's files at `/` when
/// there is a directory of them.
pub fn filters(
    mgmt: Arc<Mgmt>,
    tls: bool,
    web_dir: Option<PathBuf>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let peer = warp::ext::optional::<Peer>();
    // The console's WebSocket: an upgrade request there is answered here;
    // any other request to the path goes on to the API (and is refused).
    let console_mgmt = Arc::clone(&mgmt);
    let console = warp::path!("api" / "v1" / "vms" / String / "console")
        .and(warp::ws())
        .and(warp::header::headers_cloned())
        .then(move |vm: String, ws: warp::ws::Ws, headers: HeaderMap| {
            super::console_ws::upgrade(Arc::clone(&console_mgmt), tls, vm, ws, headers)
        });
    // The VM's screen (VNC over a WebSocket), likewise.
    let display_mgmt = Arc::clone(&mgmt);
    let display = warp::path!("api" / "v1" / "vms" / String / "display")
        .and(warp::ws())
        .and(warp::header::headers_cloned())
        .then(move |vm: String, ws: warp::ws::Ws, headers: HeaderMap| {
            super::display_ws::upgrade(Arc::clone(&display_mgmt), tls, vm, ws, headers)
        });
    // mgmtd's own metrics, at the conventional /metrics, through the same
    // authentication and route table as the API.
    let metrics_mgmt = Arc::clone(&mgmt);
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(peer)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query)
        .and(warp::body::stream())
        .then(move |peer, method, headers, query, body| {
            api(
                Arc::clone(&metrics_mgmt),
                tls,
                peer,
                &["metrics"],
                String::new(),
                method,
                headers,
                query,
                Box::pin(body),
            )
        });
    let api = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path::tail())
        .and(peer)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query)
        .and(warp::body::stream())
        .then(
            move |tail: warp::path::Tail, peer, method, headers, query, body| {
                api(
                    Arc::clone(&mgmt),
                    tls,
                    peer,
                    &["api", "v1"],
                    tail.as_str().to_owned(),
                    method,
                    headers,
                    query,
                    Box::pin(body),
                )
            },
        );
    let web = warp::any()
        .and_then(move || {
            let present = web_dir.clone().filter(|d| d.is_dir());
            async move { present.ok_or_else(warp::reject::not_found) }
        })
        .and(warp::path::tail())
        .and_then(|dir: PathBuf, tail: warp::path::Tail| async move {
            static_file(&dir, tail.as_str())
                .await
                .ok_or_else(warp::reject::not_found)
        });
    console
        .or(display)
        .unify()
        .or(metrics)
        .unify()
        .or(api)
        .unify()
        .or(web)
        .unify()
        .recover(|_| async {
            Ok::<_, Infallible>(
                Reply::Json(
                    StatusCode::NOT_FOUND,
                    ApiError::not_found("Not found").body(),
                )
                .into_response(),
            )
        })
        .unify()
}

/// A file of the web console, `index.html` for a directory; paths that
/// leave the directory are refused.
async fn static_file(dir: &std::path::Path, tail: &str) -> Option<Response> {
    let tail = routes::percent_decode(tail).ok()?;
    if tail.split('/').any(|s| s == ".." || s.starts_with('.')) {
        return None;
    }
    let mut path = dir.join(tail.trim_start_matches('/'));
    if path.is_dir() {
        path = path.join("index.html");
    }
    let data = tokio::fs::read(&path).await.ok()?;
    let mime = match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    let mut r = Response::new(data.into());
    if let Ok(v) = warp::http::HeaderValue::from_str(mime) {
        r.headers_mut().insert(warp::http::header::CONTENT_TYPE, v);
    }
    Some(r)
}

/// Limits on connections, against clients that open many or hold them
/// open without finishing a request (slowloris).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// HTTP connections served at once; more wait in the listen backlog.
    /// (A connection upgraded to a console WebSocket no longer counts.)
    pub max_connections: usize,
    /// A request's headers must arrive within this, the first request's
    /// counted from the connection's start (idle keep-alive included).
    pub header_read: Duration,
    /// A TLS handshake must finish within this.
    pub tls_handshake: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 256,
            header_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mgmt: Arc<Mgmt>,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let web_dir = mgmt.paths.web_dir.clone();
    let service = warp::service(filters(mgmt, tls.is_some(), web_dir));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first: past the limit, connections wait in the backlog.
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => {
                s.expect("the connection semaphore is never closed")
            }
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, say: keep serving.
                    tracing::warn!("Cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let inner = TowerToHyperService::new(service.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(Peer(peer));
            hyper::service::Service::call(&inner, req)
        });
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let ended = match acceptor {
                Some(a) => match tokio::time::timeout(limits.tls_handshake, a.accept(stream)).await
                {
                    Ok(Ok(s)) => {
                        http.serve_connection(TokioIo::new(s), service)
                            .with_upgrades()
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                None => {
                    http.serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "Connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_is_no_use_of_a_session() {
        let mut h = HeaderMap::new();
        assert!(is_use(&h));
        h.insert("X-Sfera-Background", "1".parse().unwrap());
        assert!(!is_use(&h));
    }
}
