//! The event log: what happened, to what, by whom.

use rusqlite::params;
use serde::Serialize;

use super::{Db, DbError, now};

/// An event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub time: i64,
    /// `info`, `warning` or `error`.
    #[schema(schema_with = crate::api::schema::severity)]
    pub severity: String,
    /// `vm.created`, `daemon.restarted`...
    pub kind: String,
    pub target: String,
    pub message: String,
    pub user: Option<String>,
}

impl Db {
    /// Appends an event; failures to log are logged, not returned.
    pub fn event(
        &self,
        severity: &str,
        kind: &str,
        target: &str,
        message: &str,
        user: Option<&str>,
    ) {
        let r = self.conn().execute(
            "INSERT INTO events (time, severity, kind, target, message, user)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![now(), severity, kind, target, message, user],
        );
        if let Err(e) = r {
            tracing::warn!(kind, target, "Cannot record an event: {e}");
        }
    }

    /// Events, newest first, and how many there are in all.
    pub fn events(&self, limit: u32, offset: u32) -> Result<(Vec<Event>, u64), DbError> {
        let conn = self.conn();
        let total: u64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let mut stmt = conn.prepare(
            "SELECT id, time, severity, kind, target, message, user FROM events
             ORDER BY id DESC LIMIT ?1 OFFSET ?2",
        )?;
        let rows = stmt
            .query_map(params![limit, offset], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    severity: r.get(2)?,
                    kind: r.get(3)?,
                    target: r.get(4)?,
                    message: r.get(5)?,
                    user: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok((rows, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_newest_first() {
        let db = Db::in_memory().unwrap();
        for i in 0..5 {
            db.event("info", "test", &format!("t{i}"), "m", Some("admin"));
        }
        let (page, total) = db.events(2, 1).unwrap();
        assert_eq!(total, 5);
        assert_eq!(page[0].target, "t3");
        assert_eq!(page[1].target, "t2");
    }
}
