//! Login sessions (this host's), and the users and API tokens a host
//! kept before the cluster held them (`crate::accounts`).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Db, DbError, now};
use crate::auth::Role;

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub name: String,
    #[schema(schema_with = crate::api::schema::role)]
    pub role: Role,
    pub created_at: i64,
}

/// An API token as the API lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub user: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// How stale a session's last use may be before a request notes a new one.
const SESSION_TOUCH_S: i64 = 10;

fn role(s: &str) -> Role {
    // The column's CHECK constraint allows only the two names.
    Role::parse(s).unwrap_or(Role::ReadOnly)
}

/// A user of the SQLite inventory of a host that ran before the cluster
/// kept its accounts (moved by `Accounts::move_local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyUser {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
}

/// An API token of such a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyToken {
    pub id: i64,
    pub name: String,
    pub user: String,
    pub hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl Db {
    /// The users and tokens left in this host's SQLite inventory.
    pub fn legacy_accounts(&self) -> Result<(Vec<LegacyUser>, Vec<LegacyToken>), DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, password_hash, role, created_at FROM users ORDER BY name")?;
        let users = stmt
            .query_map([], |r| {
                Ok(LegacyUser {
                    name: r.get(0)?,
                    password_hash: r.get(1)?,
                    role: role(&r.get::<_, String>(2)?),
                    created_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare(
            "SELECT id, name, user, token_hash, created_at, last_used_at FROM api_tokens ORDER BY id",
        )?;
        let tokens = stmt
            .query_map([], |r| {
                Ok(LegacyToken {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    user: r.get(2)?,
                    hash: r.get(3)?,
                    created_at: r.get(4)?,
                    last_used_at: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok((users, tokens))
    }

    /// Forgets the local users and tokens, once they are in the cluster.
    pub fn forget_legacy_accounts(&self) -> Result<(), DbError> {
        let conn = self.conn();
        conn.execute("DELETE FROM api_tokens", [])?;
        conn.execute("DELETE FROM users", [])?;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn create_legacy_user(
        &self,
        name: &str,
        hash: &str,
        r: Role,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, hash, r.as_str(), now()],
        )?;
        Ok(())
    }

    pub fn create_session(&self, hash: &str, user: &str, lifetime_s: i64) -> Result<(), DbError> {
        self.create_session_at(hash, user, lifetime_s, now())
    }

    /// [`Db::create_session`] at time `t`.
    pub fn create_session_at(
        &self,
        hash: &str,
        user: &str,
        lifetime_s: i64,
        t: i64,
    ) -> Result<(), DbError> {
        let conn = self.conn();
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![t])?;
        conn.execute(
            "INSERT INTO sessions (token_hash, user, created_at, expires_at, last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?3)",
            params![hash, user, t, t + lifetime_s],
        )?;
        Ok(())
    }

    /// The user of a live session (neither expired nor unused for
    /// `idle_s`), noting its use. Whether the user still exists, and their
    /// role, is the cluster's (`Accounts`).
    pub fn session_user(&self, hash: &str, idle_s: i64) -> Result<Option<String>, DbError> {
        self.session_user_at(hash, idle_s, now(), true)
    }

    /// [`Db::session_user`] at time `t`; `touch`: note the use (a request),
    /// or only look (a console checking that its session still lives).
    pub fn session_user_at(
        &self,
        hash: &str,
        idle_s: i64,
        t: i64,
        touch: bool,
    ) -> Result<Option<String>, DbError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT user, last_seen_at FROM sessions
                 WHERE token_hash = ?1 AND expires_at > ?2 AND last_seen_at > ?2 - ?3",
                params![hash, t, idle_s],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        let Some((user, last_seen)) = found else {
            return Ok(None);
        };
        // Not a write per request: the idle timeout is minutes long.
        if touch && t - last_seen >= SESSION_TOUCH_S {
            conn.execute(
                "UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1",
                params![hash, t],
            )?;
        }
        Ok(Some(user))
    }

    pub fn delete_session(&self, hash: &str) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM sessions WHERE token_hash = ?1", params![hash])?;
        Ok(())
    }

    /// Ends a user's sessions on this host: their hashes.
    pub fn delete_sessions_of(&self, user: &str) -> Result<Vec<String>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("DELETE FROM sessions WHERE user = ?1 RETURNING token_hash")?;
        let hashes = stmt
            .query_map(params![user], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_deleted_or_expired() {
        let db = Db::in_memory().unwrap();
        db.create_session("s1", "admin", 60).unwrap();
        db.create_session("s2", "admin", 60).unwrap();
        db.create_session("v", "viewer", 60).unwrap();
        db.create_session("old", "admin", -1).unwrap();
        assert_eq!(db.session_user("s1", 60).unwrap(), Some("admin".into()));
        assert_eq!(db.session_user("old", 60).unwrap(), None);
        db.delete_session("s1").unwrap();
        assert_eq!(db.session_user("s1", 60).unwrap(), None);
        let mut ended = db.delete_sessions_of("admin").unwrap();
        ended.sort();
        assert_eq!(ended, ["old", "s2"]);
        assert_eq!(db.session_user("s2", 60).unwrap(), None);
        assert_eq!(db.session_user("v", 60).unwrap(), Some("viewer".into()));
    }

    #[test]
    fn legacy_accounts_are_read_then_forgotten_without_ending_sessions() {
        let db = Db::in_memory().unwrap();
        db.create_legacy_user("admin", "h", Role::Administrator)
            .unwrap();
        db.conn()
            .execute(
                "INSERT INTO api_tokens (name, user, token_hash, created_at) VALUES ('cli', 'admin', 't1', 5)",
                [],
            )
            .unwrap();
        db.create_session("s", "admin", 60).unwrap();
        let (users, tokens) = db.legacy_accounts().unwrap();
        assert_eq!(users[0].name, "admin");
        assert_eq!(users[0].role, Role::Administrator);
        assert_eq!(tokens[0].hash, "t1");
        assert_eq!(tokens[0].user, "admin");
        db.forget_legacy_accounts().unwrap();
        assert_eq!(db.legacy_accounts().unwrap(), (vec![], vec![]));
        assert_eq!(db.session_user("s", 60).unwrap(), Some("admin".into()));
    }

    #[test]
    fn a_session_ends_when_unused_for_the_idle_timeout() {
        let db = Db::in_memory().unwrap();
        let t0 = 1_000_000;
        db.create_session_at("s", "admin", 12 * 3600, t0).unwrap();
        let live = |t, touch| db.session_user_at("s", 1800, t, touch).unwrap().is_some();
        // Used at 20 min: the idle clock restarts there.
        assert!(live(t0 + 1200, true));
        assert!(live(t0 + 1200 + 1799, false));
        // Looking does not keep it alive.
        assert!(!live(t0 + 1200 + 1800, false));
        assert!(!live(t0 + 1200 + 1800, true));
    }

    #[test]
    fn a_used_session_still_ends_at_its_lifetime() {
        let db = Db::in_memory().unwrap();
        let t0 = 1_000_000;
        db.create_session_at("s", "admin", 3600, t0).unwrap();
        for t in (t0..t0 + 3600).step_by(600) {
            assert!(db.session_user_at("s", 1800, t, true).unwrap().is_some());
        }
        assert!(
            db.session_user_at("s", 1800, t0 + 3600, true)
                .unwrap()
                .is_none()
        );
    }
}
