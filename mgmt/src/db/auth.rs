//! Users, sessions and API tokens.

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

impl Db {
    pub fn user_count(&self) -> Result<u64, DbError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    /// Creates a user; a constraint error when the name is taken.
    pub fn create_user(&self, name: &str, hash: &str, r: Role) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, hash, r.as_str(), now()],
        )?;
        Ok(())
    }

    /// A user's password hash and role.
    pub fn user_credentials(&self, name: &str) -> Result<Option<(String, Role)>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT password_hash, role FROM users WHERE name = ?1",
                params![name],
                |r| Ok((r.get::<_, String>(0)?, role(&r.get::<_, String>(1)?))),
            )
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<User>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, role, created_at FROM users ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(User {
                    name: r.get(0)?,
                    role: role(&r.get::<_, String>(1)?),
                    created_at: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Deletes a user with its sessions and tokens; false if there was none.
    pub fn delete_user(&self, name: &str) -> Result<bool, DbError> {
        Ok(self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", params![name])?
            > 0)
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

    /// The user and role of a live session (neither expired nor unused for
    /// `idle_s`), noting its use.
    pub fn session_user(&self, hash: &str, idle_s: i64) -> Result<Option<(String, Role)>, DbError> {
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
    ) -> Result<Option<(String, Role)>, DbError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT s.user, u.role, s.last_seen_at FROM sessions s
                 JOIN users u ON u.name = s.user
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND s.last_seen_at > ?2 - ?3",
                params![hash, t, idle_s],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        role(&r.get::<_, String>(1)?),
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((user, role, last_seen)) = found else {
            return Ok(None);
        };
        // Not a write per request: the idle timeout is minutes long.
        if touch && t - last_seen >= SESSION_TOUCH_S {
            conn.execute(
                "UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1",
                params![hash, t],
            )?;
        }
        Ok(Some((user, role)))
    }

    pub fn delete_session(&self, hash: &str) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM sessions WHERE token_hash = ?1", params![hash])?;
        Ok(())
    }

    pub fn create_token(&self, name: &str, user: &str, hash: &str) -> Result<ApiToken, DbError> {
        let t = now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (name, user, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, user, hash, t],
        )?;
        Ok(ApiToken {
            id: conn.last_insert_rowid(),
            name: name.to_owned(),
            user: user.to_owned(),
            created_at: t,
            last_used_at: None,
        })
    }

    /// The user and role of a token, noting its use.
    pub fn token_user(&self, hash: &str) -> Result<Option<(String, Role)>, DbError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT t.user, u.role FROM api_tokens t JOIN users u ON u.name = t.user
                 WHERE t.token_hash = ?1",
                params![hash],
                |r| Ok((r.get::<_, String>(0)?, role(&r.get::<_, String>(1)?))),
            )
            .optional()?;
        if found.is_some() {
            conn.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE token_hash = ?1",
                params![hash, now()],
            )?;
        }
        Ok(found)
    }

    /// A user's tokens.
    pub fn tokens(&self, user: &str) -> Result<Vec<ApiToken>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, user, created_at, last_used_at FROM api_tokens
             WHERE user = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![user], |r| {
                Ok(ApiToken {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    user: r.get(2)?,
                    created_at: r.get(3)?,
                    last_used_at: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Deletes one of a user's tokens; false if the user has no such token.
    pub fn delete_token(&self, id: i64, user: &str) -> Result<bool, DbError> {
        Ok(self.conn().execute(
            "DELETE FROM api_tokens WHERE id = ?1 AND user = ?2",
            params![id, user],
        )? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_tokens_follow_their_user() {
        let db = Db::in_memory().unwrap();
        db.create_user("admin", "h", Role::Administrator).unwrap();
        db.create_user("viewer", "h", Role::ReadOnly).unwrap();
        assert!(db.create_user("admin", "h", Role::ReadOnly).is_err());
        db.create_session("s1", "admin", 60).unwrap();
        db.create_session("old", "admin", -1).unwrap();
        assert_eq!(
            db.session_user("s1", 60).unwrap(),
            Some(("admin".into(), Role::Administrator))
        );
        assert_eq!(db.session_user("old", 60).unwrap(), None);
        let t = db.create_token("cli", "viewer", "t1").unwrap();
        assert_eq!(
            db.token_user("t1").unwrap(),
            Some(("viewer".into(), Role::ReadOnly))
        );
        assert!(db.tokens("viewer").unwrap()[0].last_used_at.is_some());
        assert!(!db.delete_token(t.id, "admin").unwrap());
        assert!(db.delete_user("viewer").unwrap());
        assert_eq!(db.token_user("t1").unwrap(), None);
        db.delete_session("s1").unwrap();
        assert_eq!(db.session_user("s1", 60).unwrap(), None);
    }

    #[test]
    fn a_session_ends_when_unused_for_the_idle_timeout() {
        let db = Db::in_memory().unwrap();
        db.create_user("admin", "h", Role::Administrator).unwrap();
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
        db.create_user("admin", "h", Role::Administrator).unwrap();
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
