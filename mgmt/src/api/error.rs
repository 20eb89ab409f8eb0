//! Errors as the API answers them: `{ "error": { "code", "message" } }`
//! with an HTTP status. mgmtd's own errors ([`crate::Error`]) become
//! answers here, and only here.

use serde::Serialize;
use utoipa::ToSchema;

use crate::Error;
use crate::db::DbError;
use crate::vswitchd::SwitchError;

pub use control::ApiError;

/// The error code of a host path outside the directories a client may
/// name, or of the wrong kind.
pub const PATH_NOT_ALLOWED: &str = "path_not_allowed";

/// The error code of an image that names other files or is not in the
/// format it was said to be in.
pub const IMAGE_NOT_ALLOWED: &str = "image_not_allowed";

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

/// Each kind of failure as its answer: the client's mistakes are 400s,
/// a daemon's refusal is passed on and its failure is a 503 (as
/// [`control::client::CallError`] says), the database's is logged.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid(_) => ApiError::invalid(message),
            Error::PathNotAllowed(_) => ApiError::new(400, PATH_NOT_ALLOWED, message),
            Error::ImageNotAllowed(_) => ApiError::new(400, IMAGE_NOT_ALLOWED, message),
            Error::NotFound { .. } => ApiError::not_found(message),
            Error::NameTaken { .. } | Error::Conflict(_) => ApiError::conflict(message),
            Error::Forbidden(_) => ApiError::new(403, "forbidden", message),
            Error::Unavailable(_) => ApiError::unavailable(message),
            Error::Daemon(c) => c.into(),
            Error::Db(d) => d.into(),
            Error::Store(s) => store_error(s),
            Error::Internal(_) => ApiError::internal(message),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!("Database: {e}: {:?}", std::error::Error::source(&e));
        ApiError::internal("Database error (see mgmtd's log)")
    }
}

/// The cluster's store: 503 while it has no quorum, 409 for an edit that
/// lost to another (read again and retry), 404 for a record that is gone.
fn store_error(e: cluster::StoreError) -> ApiError {
    use cluster::StoreError as S;
    let message = e.to_string();
    match e {
        S::Unavailable(_) => ApiError::unavailable(message),
        S::Conflict { .. } | S::Exists { .. } => ApiError::conflict(message),
        S::NotFound { .. } => ApiError::not_found(message),
        S::Corrupt { .. } | S::Refused(_) => {
            tracing::error!(
                "Cluster store: {message}: {:?}",
                std::error::Error::source(&e)
            );
            ApiError::internal(message)
        }
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
    use std::time::Duration;

    use control::client::CallError;

    use super::*;

    fn refused(status: u16) -> CallError {
        CallError::Refused {
            daemon: "sfera-blockd",
            method: hyper::Method::DELETE,
            path: "/v1/exports/e".into(),
            status,
            code: None,
            message: "No export e".into(),
        }
    }

    #[test]
    fn each_kind_of_error_has_its_answer() {
        let timeout = CallError::Timeout {
            daemon: "sfera-blockd",
            timeout: Duration::from_secs(30),
        };
        let db = DbError::Sql(rusqlite::Error::QueryReturnedNoRows);
        let cases = [
            (
                Error::Invalid("vcpus must be 1 to 64".into()),
                400,
                "invalid_request",
            ),
            (
                Error::PathNotAllowed("source /etc/shadow".into()),
                400,
                "path_not_allowed",
            ),
            (
                Error::ImageNotAllowed("source a.qcow2".into()),
                400,
                "image_not_allowed",
            ),
            (
                Error::NotFound {
                    kind: "VM",
                    name: "a".into(),
                },
                404,
                "not_found",
            ),
            (
                Error::NameTaken {
                    kind: "VM",
                    name: "a".into(),
                },
                409,
                "conflict",
            ),
            (Error::Conflict("VM a is running".into()), 409, "conflict"),
            (
                Error::Unavailable("sfera-blockd is not running".into()),
                503,
                "unavailable",
            ),
            (Error::from(refused(404)), 404, "not_found"),
            (Error::from(refused(409)), 409, "conflict"),
            (Error::from(refused(422)), 422, "invalid_request"),
            (Error::from(refused(500)), 503, "unavailable"),
            (Error::from(timeout), 503, "unavailable"),
            (
                Error::from(SwitchError::Mac("zz".into())),
                400,
                "invalid_request",
            ),
            (Error::Db(db), 500, "internal"),
            (Error::Internal("Cannot sync /d".into()), 500, "internal"),
            (
                Error::Store(cluster::StoreError::Unavailable(
                    "no answer within 4 s".into(),
                )),
                503,
                "unavailable",
            ),
            (
                Error::Store(cluster::StoreError::Conflict {
                    key: "/sfera/vms/1".into(),
                    expected: 7,
                }),
                409,
                "conflict",
            ),
        ];
        for (e, status, code) in cases {
            // The answer says what the error's text says, as a failed task does.
            let text = e.to_string();
            let answer = ApiError::from(e);
            assert_eq!((answer.status, answer.code), (status, code), "{text}");
            assert_eq!(answer.message, text);
            assert_eq!((answer.allow, answer.retry_after), (None, None), "{text}");
        }
    }

    #[test]
    fn the_error_body_is_what_control_sends() {
        let e = ApiError::not_found("No VM \"x\"");
        assert_eq!(serde_json::to_value(ErrorBody::from(&e)).unwrap(), e.body());
    }
}
