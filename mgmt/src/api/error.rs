//! Errors as the API answers them: `{ "error": { "code", "message" } }`
//! with an HTTP status.

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;
use crate::vswitchd::SwitchError;

pub use control::ApiError;

/// The body of every error answer, as [`ApiError::body`] writes it (the
/// shared server code of `control` sends it; this type describes it, and a
/// unit test holds the two together).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    #[schema(inline)]
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What a program matches on: `invalid_request`, `not_found`...
    code: &'static str,
    /// What a person reads.
    message: String,
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: e.code,
                message: e.message.clone(),
            },
        }
    }
}

/// Too many failed logins: locked out for `wait` (rounded up).
pub fn too_many_logins(wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        429,
        "too_many_requests",
        format!("Too many failed logins: try again in {secs} s"),
    )
    .retry_after(wait)
}

/// Too many logins at once.
pub fn busy() -> ApiError {
    ApiError::new(503, "busy", "Too many logins at once: try again shortly")
        .retry_after(std::time::Duration::from_secs(1))
}

/// A request with the session cookie from another site (CSRF).
pub fn cross_origin() -> ApiError {
    ApiError::new(
        403,
        "cross_origin",
        "Changes with the session cookie need an Origin or Referer of this server",
    )
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!("Database: {e}: {:?}", std::error::Error::source(&e));
        ApiError::internal("Database error (see mgmtd's log)")
    }
}

impl From<SwitchError> for ApiError {
    fn from(e: SwitchError) -> Self {
        match e {
            SwitchError::Call(c) => c.into(),
            SwitchError::Mac(_) => ApiError::invalid(e.to_string()),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_body_is_what_control_sends() {
        let e = ApiError::not_found("No VM \"x\"");
        assert_eq!(serde_json::to_value(ErrorBody::from(&e)).unwrap(), e.body());
    }
}
