//! mgmtd's inventory and state in SQLite: one connection behind a mutex.
//! Every statement is short (the inventory is small), so callers on the
//! async runtime run them in place.

mod migrations;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

pub mod auth;
pub mod events;
pub mod inventory;
pub mod metrics;
pub mod retention;
pub mod tasks;

pub(crate) use migrations::MIGRATIONS;

pub use auth::{ApiToken, User};
pub use events::Event;
pub use inventory::{Boot, DatastoreRow, Vm, VmDisk, VmNic, VmState};
pub use tasks::Task;

/// Errors of the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("Cannot open the database {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("Cannot make the database file {path} private (mode 0600)")]
    Mode {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("The database is at schema version {found}, newer than this mgmtd knows ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("Migration to schema version {version} failed")]
    Migration {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("Database error")]
    Sql(#[from] rusqlite::Error),
    #[error("Stored value is not valid JSON")]
    Json(#[from] serde_json::Error),
}

/// The database.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        make_private(path)?;
        let conn = Connection::open(path).map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let db = Self::setup(conn)?;
        // SQLite gives its WAL and shared-memory files the database's mode;
        // ones an older release left keep theirs until set here.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = std::path::PathBuf::from(side);
            if side.exists() {
                make_private(&side)?;
            }
        }
        Ok(db)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, DbError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self, DbError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        // WAL survives a crash mid-write and lets readers go on; an
        // in-memory database ignores it.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for one short piece of work.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, DbError> {
        Ok(current_version(&self.conn())?)
    }
}

/// Creates `path` with mode 0600 unless it exists, and sets 0600 on one
/// that does (made by a release that used the umask's mode).
fn make_private(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .map_err(|source| DbError::Mode {
            path: path.display().to_string(),
            source,
        })
}

fn current_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .optional()
    .map(|v| v.flatten().unwrap_or(0))
}

/// Applies the migrations after the database's version, in order, each in
/// a transaction with its version row.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<i64, DbError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let found = current_version(conn)?;
    if found > known {
        return Err(DbError::TooNew { found, known });
    }
    for (i, sql) in migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let apply = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![version, now()],
            )?;
            tx.commit()
        };
        apply(conn).map_err(|source| DbError::Migration { version, source })?;
        tracing::info!(version, "Database migrated");
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration() {
        let db = Db::in_memory().unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let t = tables(&db.conn());
        for name in [
            "vms",
            "tasks",
            "events",
            "users",
            "api_tokens",
            "metric_samples",
            "metric_rollups",
            "schema_version",
        ] {
            assert!(t.iter().any(|x| x == name), "{name} missing from {t:?}");
        }
    }

    #[test]
    fn an_old_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgmt.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            assert_eq!(migrate(&mut conn, &MIGRATIONS[..1]).unwrap(), 1);
            conn.execute(
                "INSERT INTO vms (id, name, vcpus, memory_mib, boot, driver, state, created_at, updated_at)
                 VALUES ('vm-1', 'old', 1, 512, '{}', 'qemu', 'stopped', 0, 0)",
                [],
            )
            .unwrap();
            assert!(!tables(&conn).iter().any(|t| t == "users"));
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let name: String = db
            .conn()
            .query_row("SELECT name FROM vms WHERE id = 'vm-1'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "old");
        assert!(tables(&db.conn()).iter().any(|t| t == "users"));
        // Opening again applies nothing twice.
        drop(db);
        let db = Db::open(&path).unwrap();
        let rows: i64 = db
            .conn()
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, MIGRATIONS).unwrap();
        conn.execute("INSERT INTO schema_version VALUES (99, 0)", [])
            .unwrap();
        assert!(matches!(
            migrate(&mut conn, MIGRATIONS),
            Err(DbError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn a_failing_migration_leaves_the_version_as_it_was() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS[..1]).unwrap();
        let broken = [MIGRATIONS[0], "CREATE TABLE x (a); CREATE TABLE x (a);"];
        assert!(matches!(
            migrate(&mut conn, &broken),
            Err(DbError::Migration { version: 2, .. })
        ));
        assert_eq!(current_version(&conn).unwrap(), 1);
        assert!(!tables(&conn).iter().any(|t| t == "x"));
    }
}
