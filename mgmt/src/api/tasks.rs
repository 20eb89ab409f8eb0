//! Tasks (what long operations report) and events (what happened), each
//! newest first.

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, ok};
use super::request::ApiRequest;
use crate::service::Mgmt;

/// `GET /api/v1/tasks`.
pub fn list(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let (tasks, total) = mgmt.db.tasks(page.limit, page.offset)?;
    ok(page.wrap(tasks, total))
}

/// `GET /api/v1/tasks/{id}`.
pub fn get(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let id: i64 = r
        .param("id")
        .parse()
        .map_err(|_| ApiError::invalid("task id must be an integer"))?;
    let task = mgmt
        .db
        .task(id)?
        .ok_or_else(|| ApiError::not_found(format!("No task {id}")))?;
    ok(task)
}

/// `GET /api/v1/events`.
pub fn list_events(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let (events, total) = mgmt.db.events(page.limit, page.offset)?;
    ok(page.wrap(events, total))
}
