//! A client of the control API for the CLI: one HTTP/1.1 request over the
//! Unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;

/// How long the daemon has to answer (applying a change may create TAPs
/// and sockets, but never takes this long).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Errors reaching the daemon (as opposed to errors it answers with).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
    #[error("Cannot build the request")]
    Request(#[from] hyper::http::Error),
    #[error("No answer within {0:?}")]
    Timeout(Duration),
    #[error("Cannot start the client runtime")]
    Runtime(#[source] std::io::Error),
}

/// Sends one request with an optional JSON body; returns the status and the
/// body.
pub fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, String), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(ClientError::Runtime)?;
    runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, exchange(socket, method, path, body))
            .await
            .unwrap_or(Err(ClientError::Timeout(TIMEOUT)))
    })
}

async fn exchange(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, String), ClientError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "sfera-vswitchd");
    let bytes = match body {
        Some(b) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            b.to_string()
        }
        None => String::new(),
    };
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(bytes)))?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
