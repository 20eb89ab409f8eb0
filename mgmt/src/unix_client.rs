//! A small HTTP/1.1 client for the daemons' Unix-socket APIs: one
//! connection per request, as sfera-blockd's own CLI does it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors reaching a daemon, or answers it gave with an error status.
#[derive(Debug, thiserror::Error)]
pub enum DaemonCallError {
    #[error("Cannot connect to {daemon} on {}", socket.display())]
    Connect {
        daemon: &'static str,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with {daemon} failed")]
    Http {
        daemon: &'static str,
        #[source]
        source: hyper::Error,
    },
    #[error("{daemon} did not answer within {CALL_TIMEOUT:?}")]
    Timeout { daemon: &'static str },
    #[error("{daemon} refused {method} {path}: {message} (HTTP {status})")]
    Refused {
        daemon: &'static str,
        method: Method,
        path: String,
        status: u16,
        /// The daemon's `error.code`, when it gave one.
        code: Option<String>,
        message: String,
    },
    #[error("{daemon} answered {method} {path} with a body that is not JSON")]
    BadBody {
        daemon: &'static str,
        method: Method,
        path: String,
    },
}

impl DaemonCallError {
    /// The HTTP status the daemon answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DaemonCallError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A daemon's API.
#[derive(Debug, Clone)]
pub struct UnixApi {
    pub daemon: &'static str,
    pub socket: PathBuf,
}

impl UnixApi {
    pub fn new(daemon: &'static str, socket: &Path) -> Self {
        UnixApi {
            daemon,
            socket: socket.to_owned(),
        }
    }

    /// Sends one request; returns the status and the raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), DaemonCallError> {
        let daemon = self.daemon;
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DaemonCallError::Connect {
                    daemon,
                    socket: self.socket.clone(),
                    source,
                })?;
            let http = |source| DaemonCallError::Http { daemon, source };
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http)?;
            tokio::spawn(connection);
            let text = body.map(|b| b.to_string()).unwrap_or_default();
            let request = hyper::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, daemon)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(text)))
                .map_err(|_| DaemonCallError::BadBody {
                    daemon,
                    method: method.clone(),
                    path: path.to_owned(),
                })?;
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(http)?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| DaemonCallError::Timeout { daemon })?
    }

    /// Sends one request and returns its JSON answer (`null` for an empty
    /// one); an error status becomes [`DaemonCallError::Refused`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, DaemonCallError> {
        let (status, bytes) = self.raw(method.clone(), path, body).await?;
        let parsed: Option<serde_json::Value> = if bytes.is_empty() {
            Some(serde_json::Value::Null)
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if status >= 400 {
            let v = parsed.unwrap_or_default();
            return Err(DaemonCallError::Refused {
                daemon: self.daemon,
                method,
                path: path.to_owned(),
                status,
                code: v["error"]["code"].as_str().map(str::to_owned),
                message: v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        parsed.ok_or(DaemonCallError::BadBody {
            daemon: self.daemon,
            method,
            path: path.to_owned(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value, DaemonCallError> {
        self.call(Method::GET, path, None).await
    }
}
