//! Answers: JSON (with a cookie, perhaps), Prometheus text, a file to
//! save, or nothing; and the helpers that make the usual ones.

use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;

/// An answer.
#[derive(Debug)]
pub enum Reply {
    Json(StatusCode, Value),
    /// JSON with a `Set-Cookie` header.
    JsonWithCookie(StatusCode, Value, String),
    Text(String),
    /// A file to save (`Content-Disposition: attachment`), its bytes as
    /// they are: a console log holds escape sequences and may not be UTF-8.
    Download {
        filename: String,
        bytes: Vec<u8>,
    },
    Empty,
}

impl Reply {
    pub fn into_response(self) -> Response {
        let mut attachment = None;
        let (status, content_type, body, cookie) = match self {
            Reply::Json(s, v) => (s, "application/json", v.to_string().into_bytes(), None),
            Reply::JsonWithCookie(s, v, c) => {
                let body = if s == StatusCode::NO_CONTENT {
                    String::new()
                } else {
                    v.to_string()
                };
                (s, "application/json", body.into_bytes(), Some(c))
            }
            Reply::Text(t) => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                t.into_bytes(),
                None,
            ),
            Reply::Download { filename, bytes } => {
                attachment = Some(filename);
                (StatusCode::OK, "application/octet-stream", bytes, None)
            }
            Reply::Empty => (StatusCode::NO_CONTENT, "application/json", Vec::new(), None),
        };
        let mut r = Response::new(body.into());
        *r.status_mut() = status;
        let headers = r.headers_mut();
        headers.insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static(content_type),
        );
        headers.insert(
            warp::http::header::CACHE_CONTROL,
            warp::http::HeaderValue::from_static("no-store"),
        );
        // Our own file names: ASCII without quotes.
        if let Some(v) = attachment.and_then(|f| {
            warp::http::HeaderValue::from_str(&format!("attachment; filename=\"{f}\"")).ok()
        }) {
            headers.insert(warp::http::header::CONTENT_DISPOSITION, v);
        }
        if let Some(c) = cookie.and_then(|c| warp::http::HeaderValue::from_str(&c).ok()) {
            headers.insert(warp::http::header::SET_COOKIE, c);
        }
        r
    }
}

/// 200 with `v`.
pub fn ok(v: impl serde::Serialize) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::OK, to_json(&v)?))
}

/// 201 with what was made.
pub fn created(v: impl serde::Serialize) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::CREATED, to_json(&v)?))
}

/// 202 with the task that does the work.
pub fn accepted(task: &crate::db::Task) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::ACCEPTED, json!(task)))
}

/// `v` as JSON.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// The items of a list as JSON.
pub fn to_json_all<T: serde::Serialize>(items: &[T]) -> Result<Vec<Value>, ApiError> {
    items.iter().map(to_json).collect()
}
