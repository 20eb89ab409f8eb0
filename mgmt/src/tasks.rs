//! Long operations run as tasks: a row in the database that the client
//! polls for progress and result, and a future on the runtime that does
//! the work.

use std::future::Future;
use std::sync::Arc;

use crate::Error;
use crate::db::{Db, Task};

/// What a running task reports through.
#[derive(Debug, Clone)]
pub struct TaskCtx {
    db: Arc<Db>,
    pub id: i64,
}

impl TaskCtx {
    /// Records progress (percent) and what the task is doing.
    pub fn progress(&self, percent: u8, message: &str) {
        if let Err(e) = self.db.task_progress(self.id, percent, message) {
            tracing::warn!(task = self.id, "Cannot record progress: {e}");
        }
    }
}

/// Runs `work` as a task recorded here and waits for its end: the work a
/// host does for a task of another host (which reports the outcome).
pub async fn run<F, Fut>(
    db: &Arc<Db>,
    kind: &str,
    target: &str,
    user: &str,
    work: F,
) -> Result<serde_json::Value, Error>
where
    F: FnOnce(TaskCtx) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, Error>>,
{
    let task = db.insert_task(kind, target, user)?;
    let ctx = TaskCtx {
        db: Arc::clone(db),
        id: task.id,
    };
    let outcome = work(ctx).await;
    let recorded = outcome
        .as_ref()
        .map(Clone::clone)
        .map_err(|e| e.to_string());
    if let Err(e) = db.finish_task(task.id, &recorded) {
        tracing::error!(task = task.id, "Cannot record the task's end: {e}");
    }
    outcome
}

/// Starts `work` as a task and returns the task as recorded; the task's
/// error, if it fails, is the text of `work`'s [`Error`].
pub fn spawn<F, Fut>(
    db: &Arc<Db>,
    kind: &str,
    target: &str,
    user: &str,
    work: F,
) -> Result<Task, Error>
where
    F: FnOnce(TaskCtx) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, Error>> + Send + 'static,
{
    let task = db.insert_task(kind, target, user)?;
    let ctx = TaskCtx {
        db: Arc::clone(db),
        id: task.id,
    };
    let fut = work(ctx);
    let db = Arc::clone(db);
    let (id, kind) = (task.id, kind.to_owned());
    tokio::spawn(async move {
        // The task records what the API would answer; the log has the
        // causes too (a database error's, say).
        let outcome = fut.await.map_err(|e| {
            tracing::error!(task = id, kind, "Task failed: {}", control::error_chain(&e));
            e.to_string()
        });
        if let Err(e) = db.finish_task(id, &outcome) {
            tracing::error!(task = id, "Cannot record the task's end: {e}");
        }
    });
    Ok(task)
}
