//! The API about itself: the health check, the OpenAPI document and
//! mgmtd's own Prometheus metrics.

use serde_json::json;

use super::error::ApiError;
use super::reply::{Reply, ok};
use crate::service::Mgmt;

/// `GET /api/v1/health`: answers while mgmtd serves the API.
pub fn health() -> Result<Reply, ApiError> {
    ok(json!({ "status": "ok" }))
}

/// `GET /api/v1/openapi.json`.
pub fn openapi() -> Result<Reply, ApiError> {
    ok(super::openapi::document())
}

/// `GET /metrics`: mgmtd's own.
pub fn mgmtd_metrics(mgmt: &Mgmt) -> Result<Reply, ApiError> {
    Ok(Reply::Text(crate::metrics::own::render(mgmt)?))
}
