//! The one error answer of every daemon's API: an HTTP status and the body
//! `{"error": {"code": ..., "message": ...}}`.
//!
//! The codes are part of each API's contract, so a daemon may keep its own
//! (sfera-vswitchd has always answered `invalid` where the others answer
//! `invalid_request`): [`ApiError::new`] takes any code; the named
//! constructors give the usual ones.

use std::time::Duration;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The methods the path allows, for a 405's `Allow` header.
    pub allow: Option<String>,
    /// Seconds for a 429's or 503's `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }

    /// 400: malformed JSON, unknown fields, invalid values.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }

    /// 401: the one answer to a request without valid credentials; it says
    /// nothing about what was asked.
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "Authentication required")
    }

    /// 403: the caller's role does not allow this.
    pub fn forbidden() -> Self {
        Self::new(403, "forbidden", "Your role does not allow this")
    }

    /// 404: no such object (in the path, or named by the body).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 404 for a path no route matches.
    pub fn no_route(path: &str) -> Self {
        Self::not_found(format!("No such resource: {path}"))
    }

    /// 405, with the methods the resource allows for the `Allow` header.
    pub fn method_not_allowed(message: impl Into<String>, allow: &[&str]) -> Self {
        ApiError {
            allow: Some(allow.join(", ")),
            ..Self::new(405, "method_not_allowed", message)
        }
    }

    /// 409: a duplicate, or an object still in use.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 413: a body over `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("Request bodies are limited to {limit} bytes"),
        )
    }

    /// 500: the daemon's own failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }

    /// 503: a daemon the answer depends on is down or failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// The same error with a `Retry-After` of `wait`, rounded up to whole
    /// seconds.
    pub fn retry_after(self, wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs),
            ..self
        }
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Cannot open the volume")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn bodies_and_headers() {
        let e = ApiError::not_found("No port \"a\"");
        assert_eq!(e.body()["error"]["code"], "not_found");
        assert_eq!(e.body()["error"]["message"], "No port \"a\"");
        let e = ApiError::method_not_allowed("PATCH is not allowed", &["GET", "POST"]);
        assert_eq!((e.status, e.allow.as_deref()), (405, Some("GET, POST")));
        let e = ApiError::new(429, "too_many_requests", "slow down")
            .retry_after(Duration::from_millis(1500));
        assert_eq!(e.retry_after, Some(2));
        assert_eq!(ApiError::too_large(10).status, 413);
    }

    #[test]
    fn chains_join_the_sources() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "Cannot open the volume: disk on fire");
    }
}
