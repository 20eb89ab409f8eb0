//! The client of the daemons' APIs: one HTTP/1.1 request per connection
//! over the Unix socket. Async for mgmtd ([`UnixApi::call`]), blocking
//! for the command-line tools ([`UnixApi::call_blocking`]), typed for
//! whoever knows the answer's type ([`UnixApi::call_as`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// How long one call may take unless [`UnixApi::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors reaching a daemon, or answers it gave with an error status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
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
    #[error("Cannot build the request to {daemon} for {path}")]
    Request {
        daemon: &'static str,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{daemon} did not answer within {timeout:?}")]
    Timeout {
        daemon: &'static str,
        timeout: Duration,
    },
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
    #[error("{daemon} answered {method} {path} with a body that is not what was expected: {why}")]
    BadBody {
        daemon: &'static str,
        method: Method,
        path: String,
        why: String,
    },
    #[error("Cannot start the client runtime")]
    Runtime(#[source] std::io::Error),
}

impl CallError {
    /// The HTTP status the daemon answered with, if it refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The daemon's error code, if it refused with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The daemon's refusal of the request itself (a 4xx: a name taken, a
    /// path that does not exist): its status and message, which a caller
    /// passes on to its own client. Anything else is the daemon's failure.
    pub fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            CallError::Refused {
                status, message, ..
            } if (400..500).contains(status) => Some((*status, message)),
            _ => None,
        }
    }

    /// The message a caller's own error answer gives: a refusal's, or the
    /// whole failure.
    pub fn answer_message(&self) -> String {
        match self.refusal() {
            Some((_, message)) => message.to_owned(),
            None => self.to_string(),
        }
    }
}

/// A failed call to another daemon as the caller's own answer: the
/// daemon's refusals of the request (4xx: a name taken, a path that does
/// not exist) are passed on with their status, anything else (the daemon
/// down, broken, or failing itself) is a 503.
impl From<CallError> for crate::ApiError {
    fn from(e: CallError) -> Self {
        match e.refusal() {
            Some((status, message)) => {
                let code = match status {
                    404 => "not_found",
                    409 => "conflict",
                    _ => "invalid_request",
                };
                crate::ApiError::new(status, code, message)
            }
            None => crate::ApiError::unavailable(e.to_string()),
        }
    }
}

/// A daemon's API: its name (for messages and the `Host` header) and its
/// socket.
#[derive(Debug, Clone)]
pub struct UnixApi {
    pub daemon: &'static str,
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl UnixApi {
    pub fn new(daemon: &'static str, socket: &Path) -> Self {
        UnixApi {
            daemon,
            socket: socket.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(self, timeout: Duration) -> Self {
        UnixApi { timeout, ..self }
    }

    /// Sends one request; returns the status and the raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), CallError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| CallError::Timeout {
                daemon: self.daemon,
                timeout: self.timeout,
            })?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), CallError> {
        let daemon = self.daemon;
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| CallError::Connect {
                daemon,
                socket: self.socket.clone(),
                source,
            })?;
        let http = |source| CallError::Http { daemon, source };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, daemon);
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request
            .body(Full::new(Bytes::from(text)))
            .map_err(|source| CallError::Request {
                daemon,
                path: path.to_owned(),
                source,
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
    }

    /// Sends one request and returns its JSON answer (`null` for an empty
    /// one); an error status becomes [`CallError::Refused`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, CallError> {
        let (status, bytes) = self.raw(method.clone(), path, body).await?;
        self.answer(method, path, status, &bytes)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, CallError> {
        self.call(Method::GET, path, None).await
    }

    /// Sends one request and reads its answer as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CallError> {
        let value = self.call(method.clone(), path, body).await?;
        serde_json::from_value(value).map_err(|e| CallError::BadBody {
            daemon: self.daemon,
            method,
            path: path.to_owned(),
            why: e.to_string(),
        })
    }

    /// `GET path`, read as `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call_as(Method::GET, path, None).await
    }

    /// [`UnixApi::raw`] for a program without a runtime (the command-line
    /// tools): the status and the body as text.
    pub fn call_blocking(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String), CallError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(CallError::Runtime)?;
        let (status, bytes) = runtime.block_on(self.raw(method, path, body))?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn answer(
        &self,
        method: Method,
        path: &str,
        status: u16,
        bytes: &[u8],
    ) -> Result<serde_json::Value, CallError> {
        let parsed: Result<serde_json::Value, String> = if bytes.is_empty() {
            Ok(serde_json::Value::Null)
        } else {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())
        };
        if status >= 400 {
            let v = parsed.unwrap_or_default();
            return Err(CallError::Refused {
                daemon: self.daemon,
                method,
                path: path.to_owned(),
                status,
                code: v["error"]["code"].as_str().map(str::to_owned),
                message: v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned()),
            });
        }
        parsed.map_err(|why| CallError::BadBody {
            daemon: self.daemon,
            method,
            path: path.to_owned(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> CallError {
        CallError::Refused {
            daemon: "sfera-blockd",
            method: Method::POST,
            path: "/v1/exports".into(),
            status,
            code: Some("conflict".into()),
            message: "Export e exists".into(),
        }
    }

    #[test]
    fn refusals_are_passed_on_and_failures_are_503() {
        let e = refused(409);
        assert_eq!(e.refusal(), Some((409, "Export e exists")));
        assert_eq!(e.answer_message(), "Export e exists");
        let answer = crate::ApiError::from(e);
        assert_eq!((answer.status, answer.code), (409, "conflict"));
        assert_eq!(answer.message, "Export e exists");

        let e = refused(500);
        assert_eq!(e.refusal(), None);
        let text = e.to_string();
        assert_eq!(e.answer_message(), text);
        let answer = crate::ApiError::from(e);
        assert_eq!((answer.status, answer.code), (503, "unavailable"));
        assert_eq!(answer.message, text);
    }
}
