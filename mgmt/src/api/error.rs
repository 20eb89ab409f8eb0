//! Errors as the API answers them: `{ "error": { "code", "message" } }`
//! with an HTTP status.

use crate::db::DbError;
use crate::vswitchd::SwitchError;
use control::client::CallError;

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

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }

    /// The one answer to a request without valid credentials: it says
    /// nothing about what was asked.
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "Authentication required")
    }

    pub fn forbidden() -> Self {
        Self::new(403, "forbidden", "Your role does not allow this")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// `allow`: the methods the path has, for the `Allow` header.
    pub fn method_not_allowed(message: impl Into<String>, allow: &[&str]) -> Self {
        ApiError {
            allow: Some(allow.join(", ")),
            ..Self::new(405, "method_not_allowed", message)
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("Request bodies are limited to {limit} bytes"),
        )
    }

    /// Too many failed logins: locked out for `wait` (rounded up).
    pub fn too_many_logins(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs),
            ..Self::new(
                429,
                "too_many_requests",
                format!("Too many failed logins: try again in {secs} s"),
            )
        }
    }

    /// Too many logins at once.
    pub fn busy() -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(503, "busy", "Too many logins at once: try again shortly")
        }
    }

    /// A request with the session cookie from another site (CSRF).
    pub fn cross_origin() -> Self {
        Self::new(
            403,
            "cross_origin",
            "Changes with the session cookie need an Origin or Referer of this server",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }

    /// A daemon mgmtd depends on is down or failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!("Database: {e}: {:?}", std::error::Error::source(&e));
        ApiError::internal("Database error (see mgmtd's log)")
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match &e {
            // The daemon's own refusal, with its status for the client
            // errors (a name taken, a datastore path that does not exist).
            CallError::Refused {
                status, message, ..
            } if (400..500).contains(status) => {
                let code = match status {
                    404 => "not_found",
                    409 => "conflict",
                    _ => "invalid_request",
                };
                ApiError::new(*status, code, message.clone())
            }
            _ => ApiError::unavailable(e.to_string()),
        }
    }
}

impl From<SwitchError> for ApiError {
    fn from(e: SwitchError) -> Self {
        match e {
            SwitchError::Call(c) => c.into(),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::internal(e.to_string())
    }
}
