//! How long events and finished tasks are kept: by age and by count, so
//! the database cannot grow without bound however busy the host is.

use rusqlite::params;

use super::{Db, DbError};

/// What is kept of events and of finished tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rows older than this (seconds) go.
    pub max_age_s: i64,
    /// At most this many rows stay, the newest.
    pub max_rows: u32,
}

impl Default for Retention {
    /// 30 days, 10,000 rows.
    fn default() -> Self {
        Retention {
            max_age_s: 30 * 24 * 3600,
            max_rows: 10_000,
        }
    }
}

impl Db {
    /// Deletes the events `keep` does not keep at time `now`; how many went.
    pub fn prune_events(&self, keep: Retention, now: i64) -> Result<usize, DbError> {
        // With fewer rows than max_rows the subquery is NULL and `id <= NULL`
        // is never true.
        Ok(self.conn().execute(
            "DELETE FROM events WHERE time < ?1
                OR id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![now - keep.max_age_s, keep.max_rows],
        )?)
    }

    /// Deletes the finished tasks `keep` does not keep at time `now`; a
    /// queued or running task always stays. How many went.
    pub fn prune_tasks(&self, keep: Retention, now: i64) -> Result<usize, DbError> {
        Ok(self.conn().execute(
            "DELETE FROM tasks WHERE finished_at IS NOT NULL AND (finished_at < ?1
                OR id <= (SELECT id FROM tasks WHERE finished_at IS NOT NULL
                          ORDER BY id DESC LIMIT 1 OFFSET ?2))",
            params![now - keep.max_age_s, keep.max_rows],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::now;

    const KEEP: Retention = Retention {
        max_age_s: 3600,
        max_rows: 3,
    };

    fn age_events(db: &Db, ids: &[i64], time: i64) {
        for id in ids {
            db.conn()
                .execute(
                    "UPDATE events SET time = ?2 WHERE id = ?1",
                    params![id, time],
                )
                .unwrap();
        }
    }

    #[test]
    fn old_events_go() {
        let db = Db::in_memory().unwrap();
        for i in 0..3 {
            db.event("info", "test", &format!("t{i}"), "m", None);
        }
        let t = now();
        age_events(&db, &[1], t - 3601);
        assert_eq!(db.prune_events(KEEP, t).unwrap(), 1);
        let (events, total) = db.events(10, 0).unwrap();
        assert_eq!(total, 2);
        assert_eq!(events.last().unwrap().target, "t1");
    }

    #[test]
    fn only_the_newest_events_stay() {
        let db = Db::in_memory().unwrap();
        for i in 0..5 {
            db.event("info", "test", &format!("t{i}"), "m", None);
        }
        let t = now();
        assert_eq!(db.prune_events(KEEP, t).unwrap(), 2);
        let (events, total) = db.events(10, 0).unwrap();
        assert_eq!(total, 3);
        assert_eq!(events.last().unwrap().target, "t2");
        // Within both limits nothing goes.
        assert_eq!(db.prune_events(KEEP, t).unwrap(), 0);
    }

    #[test]
    fn finished_tasks_go_by_age_and_count_running_ones_stay() {
        let db = Db::in_memory().unwrap();
        let running = db.insert_task("vm.create", "old", "admin").unwrap();
        let ids: Vec<i64> = (0..5)
            .map(|i| {
                let task = db
                    .insert_task("vm.power", &format!("vm{i}"), "admin")
                    .unwrap();
                db.finish_task(task.id, &Ok(serde_json::Value::Null))
                    .unwrap();
                task.id
            })
            .collect();
        let t = now();
        for id in [running.id, ids[4]] {
            db.conn()
                .execute(
                    "UPDATE tasks SET created_at = ?2 WHERE id = ?1",
                    params![id, t - 7200],
                )
                .unwrap();
        }
        db.conn()
            .execute(
                "UPDATE tasks SET finished_at = ?2 WHERE id = ?1",
                params![ids[4], t - 7200],
            )
            .unwrap();
        // The newest finished task is too old; it and the two beyond the
        // newest three finished ones go; the running one stays, however old.
        assert_eq!(db.prune_tasks(KEEP, t).unwrap(), 3);
        let (tasks, _) = db.tasks(10, 0).unwrap();
        let left: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        assert_eq!(left, [ids[3], ids[2], running.id]);
    }
}
