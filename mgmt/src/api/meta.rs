//! The API about itself: the health check, the OpenAPI document and
//! mgmtd's own Prometheus metrics.

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::reply::{Reply, ok};
use crate::service::Mgmt;

/// The answer of the health check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(inline)]
    status: HealthStatus,
}

/// Only ever `ok`: a mgmtd that cannot serve does not answer.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
}

/// `GET /api/v1/health`: answers while mgmtd serves the API.
pub fn health() -> Result<Reply, ApiError> {
    ok(Health {
        status: HealthStatus::Ok,
    })
}

/// `GET /api/v1/openapi.json`.
pub fn openapi() -> Result<Reply, ApiError> {
    ok(super::openapi::document())
}

/// `GET /metrics`: mgmtd's own.
pub async fn mgmtd_metrics(mgmt: &Mgmt) -> Result<Reply, ApiError> {
    Ok(Reply::Text(crate::metrics::own::render(mgmt).await?))
}
