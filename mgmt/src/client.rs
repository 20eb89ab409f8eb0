//! An HTTP(S) client of mgmtd's API, one request per connection: the
//! CLI's, and a joining host's (pinned to the certificate its token names).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where mgmtd is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Client {
    base: Uri,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A connection to mgmtd, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub set_cookie: Option<String>,
}

impl Client {
    /// `server` is `http://HOST:PORT` or `https://HOST:PORT`; HTTPS trusts
    /// only the certificate in `ca_cert`.
    pub fn new(server: &str, token: Option<String>, ca_cert: Option<&Path>) -> Result<Self> {
        let base: Uri = server
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("{server:?} is not a URL"))?;
        let tls = match base.scheme_str() {
            Some("http") => None,
            Some("https") => {
                let Some(ca) = ca_cert else {
                    bail!(
                        "HTTPS needs the server's certificate: --ca-cert FILE (mgmtd's is <data-dir>/tls/cert.pem)"
                    );
                };
                Some(crate::tls::client_config(ca)?)
            }
            _ => bail!("{server:?}: the URL must start with http:// or https://"),
        };
        if base.authority().is_none() {
            bail!("{server:?} has no host");
        }
        Ok(Client { base, token, tls })
    }

    /// A client of `server` (`https://HOST:PORT`) that trusts only the
    /// certificate whose SHA-256 is `sha256` (a join token's pin).
    pub fn pinned(server: &str, sha256: &str) -> Result<Self> {
        let base: Uri = server
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("{server:?} is not a URL"))?;
        if base.scheme_str() != Some("https") || base.authority().is_none() {
            bail!("{server:?}: the cluster's address must be https://HOST:PORT");
        }
        Ok(Client {
            base,
            token: None,
            tls: Some(crate::tls::pinned_client_config(sha256)?),
        })
    }

    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    /// The bearer token, if the client has one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Opens a connection to mgmtd (TLS when the URL is https) and says
    /// which authority it reached.
    pub async fn connect(&self) -> Result<(Box<dyn Stream>, String)> {
        let authority = self
            .base
            .authority()
            .ok_or_else(|| anyhow!("no host"))?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("Cannot connect to {authority}"))?;
        let stream: Box<dyn Stream> = match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .with_context(|| format!("{host:?} is not a valid server name"))?;
                Box::new(
                    tokio_rustls::TlsConnector::from(Arc::clone(config))
                        .connect(name, tcp)
                        .await
                        .with_context(|| format!("TLS with {authority} failed"))?,
                )
            }
            None => Box::new(tcp),
        };
        Ok((stream, authority.to_string()))
    }

    /// Sends one request; `cookie` is sent as the Cookie header.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        cookie: Option<&str>,
    ) -> Result<Answer> {
        let (stream, authority) = self.connect().await?;
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(c) = cookie {
            // mgmtd refuses changes made with the session cookie that do
            // not say they come from itself (CSRF), as a browser says.
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            request = request
                .header(hyper::header::COOKIE, c)
                .header(hyper::header::ORIGIN, format!("{scheme}://{authority}"));
        }
        let request = request.body(Full::new(Bytes::from(text)))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let set_cookie = response
            .headers()
            .get(hyper::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            set_cookie,
        })
    }

    /// Sends a request and returns its JSON; an error status becomes an
    /// error with the server's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let answer = self.send(method, path, body, None).await?;
        json_of(&answer)
    }

    /// [`Client::call`] with a body of one of the API's request types.
    pub async fn call_with<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &T,
    ) -> Result<serde_json::Value> {
        self.call(method, path, Some(&to_body(body)?)).await
    }
}

/// A request body as JSON.
pub fn to_body<T: serde::Serialize>(body: &T) -> Result<serde_json::Value> {
    serde_json::to_value(body).context("a request body as JSON")
}

/// The JSON of an answer, or its error as an error.
pub fn json_of(answer: &Answer) -> Result<serde_json::Value> {
    let v: serde_json::Value = if answer.body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&answer.body).unwrap_or(serde_json::Value::String(answer.body.clone()))
    };
    if answer.status >= 400 {
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| answer.body.clone());
        if answer.status == 401 {
            bail!("{message} (HTTP 401): log in with `sfera login`, or set SFERA_TOKEN");
        }
        bail!("{message} (HTTP {})", answer.status);
    }
    Ok(v)
}
