//! Tasks: long operations with progress and a result.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Db, DbError, now};

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: i64,
    /// What it does: `vm.create`, `vm.power_on`...
    pub kind: String,
    /// The object it works on (a VM id...).
    pub target: String,
    /// `queued`, `running`, `success` or `error`.
    #[schema(schema_with = crate::api::schema::task_state)]
    pub state: String,
    /// Percent done.
    #[schema(maximum = 100)]
    pub progress: u8,
    pub message: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub user: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let result: Option<String> = r.get("result")?;
    Ok(Task {
        id: r.get("id")?,
        kind: r.get("kind")?,
        target: r.get("target")?,
        state: r.get("state")?,
        progress: r.get("progress")?,
        message: r.get("message")?,
        result: result.and_then(|t| serde_json::from_str(&t).ok()),
        error: r.get("error")?,
        user: r.get("user")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
    })
}

impl Db {
    /// Records a new running task.
    pub fn insert_task(&self, kind: &str, target: &str, user: &str) -> Result<Task, DbError> {
        let t = now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tasks (kind, target, state, user, created_at, started_at)
             VALUES (?1, ?2, 'running', ?3, ?4, ?4)",
            params![kind, target, user, t],
        )?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.task(id)?
            .ok_or(DbError::Sql(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Updates a running task's progress.
    pub fn task_progress(&self, id: i64, progress: u8, message: &str) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE tasks SET progress = ?2, message = ?3 WHERE id = ?1 AND state = 'running'",
            params![id, progress.min(100), message],
        )?;
        Ok(())
    }

    /// Ends a task with its result or error.
    pub fn finish_task(
        &self,
        id: i64,
        outcome: &Result<serde_json::Value, String>,
    ) -> Result<(), DbError> {
        let (state, result, error) = match outcome {
            Ok(v) => ("success", Some(v.to_string()), None),
            Err(e) => ("error", None, Some(e.as_str())),
        };
        self.conn().execute(
            "UPDATE tasks SET state = ?2, result = ?3, error = ?4, finished_at = ?5,
                 progress = CASE WHEN ?2 = 'success' THEN 100 ELSE progress END
             WHERE id = ?1",
            params![id, state, result, error, now()],
        )?;
        Ok(())
    }

    /// Marks tasks left running by a previous mgmtd as failed.
    pub fn abandon_running_tasks(&self) -> Result<usize, DbError> {
        Ok(self.conn().execute(
            "UPDATE tasks SET state = 'error', error = 'mgmtd stopped while the task ran',
                 finished_at = ?1 WHERE state IN ('queued', 'running')",
            params![now()],
        )?)
    }

    pub fn task(&self, id: i64) -> Result<Option<Task>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM tasks WHERE id = ?1",
                params![id],
                task_from_row,
            )
            .optional()?)
    }

    /// Tasks, newest first, and how many there are in all.
    pub fn tasks(&self, limit: u32, offset: u32) -> Result<(Vec<Task>, u64), DbError> {
        let conn = self.conn();
        let total: u64 = conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("SELECT * FROM tasks ORDER BY id DESC LIMIT ?1 OFFSET ?2")?;
        let rows = stmt
            .query_map(params![limit, offset], task_from_row)?
            .collect::<Result<_, _>>()?;
        Ok((rows, total))
    }

    /// How many tasks there are of each kind in each state.
    pub fn task_counts(&self) -> Result<Vec<(String, String, u64)>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT kind, state, COUNT(*) FROM tasks GROUP BY kind, state ORDER BY kind, state",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_progress_finish_and_page() {
        let db = Db::in_memory().unwrap();
        let a = db.insert_task("vm.create", "vm-1", "admin").unwrap();
        assert_eq!(a.state, "running");
        db.task_progress(a.id, 50, "disks").unwrap();
        assert_eq!(db.task(a.id).unwrap().unwrap().progress, 50);
        db.finish_task(a.id, &Ok(serde_json::json!({"id": "vm-1"})))
            .unwrap();
        let done = db.task(a.id).unwrap().unwrap();
        assert_eq!((done.state.as_str(), done.progress), ("success", 100));
        assert_eq!(done.result.unwrap()["id"], "vm-1");
        let b = db.insert_task("vm.power_on", "vm-1", "admin").unwrap();
        db.finish_task(b.id, &Err("QEMU failed".into())).unwrap();
        let c = db.insert_task("vm.delete", "vm-1", "admin").unwrap();
        assert_eq!(db.abandon_running_tasks().unwrap(), 1);
        assert_eq!(db.task(c.id).unwrap().unwrap().state, "error");
        let (page, total) = db.tasks(2, 0).unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            page.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![c.id, b.id]
        );
        let (page, _) = db.tasks(2, 2).unwrap();
        assert_eq!(page[0].id, a.id);
    }
}
