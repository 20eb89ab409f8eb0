//! The cluster's users and API tokens, in etcd: one set of accounts for
//! every host, so a user made or deleted through any host's mgmtd is made
//! or deleted on all of them.
//!
//! - `users/<name>`: the password hash and role.
//! - `api-tokens/<hash>`: a token (by its secret's hash, as a request
//!   presents it), its id, name and user.
//! - `api-token-ids/<id>`: the hash of token `id`, so an id is unique in
//!   the cluster and `DELETE /api/v1/tokens/{id}` finds its token at once.
//! - `api-token-use/<hash>`: when the token was last used, written at most
//!   once a minute by each host and apart from the token, so use is not a
//!   change of it.
//!
//! Login sessions stay in each host's SQLite: a session cookie belongs to
//! the one host (origin) the browser logged in to. Each use of a session
//! reads its user's record here, so a deleted user's sessions end on every
//! host, and a changed role applies at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cluster::{Batch, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::db::{ApiToken, Db, User, now};
use crate::error::Error;

/// How stale a token's last use may be before a request notes a new one.
const TOKEN_TOUCH_S: i64 = 60;

/// `users/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    name: String,
    password_hash: String,
    role: Role,
    created_at: i64,
}

/// `api-tokens/<hash>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    id: i64,
    name: String,
    user: String,
    created_at: i64,
}

/// `api-token-ids/<id>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenId {
    hash: String,
}

/// `api-token-use/<hash>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenUse {
    at: i64,
}

/// The cluster's accounts.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Store,
    /// When this host last wrote each token's use (by hash), so that a
    /// request reads no use record to decide whether to write one.
    noted: Arc<Mutex<HashMap<String, i64>>>,
}

impl Accounts {
    pub fn new(store: Store) -> Self {
        Accounts {
            store,
            noted: Arc::default(),
        }
    }

    fn user_key(&self, name: &str) -> String {
        self.store.key("users", name)
    }

    /// Whether the cluster has any user yet.
    pub async fn any_user(&self) -> Result<bool, Error> {
        Ok(!self.store.list::<UserRecord>("users").await?.is_empty())
    }

    /// Creates a user; 409 when the name is taken.
    pub async fn create_user(&self, name: &str, hash: &str, role: Role) -> Result<User, Error> {
        self.create_user_at(name, hash, role, now()).await
    }

    async fn create_user_at(
        &self,
        name: &str,
        hash: &str,
        role: Role,
        created_at: i64,
    ) -> Result<User, Error> {
        let record = UserRecord {
            name: name.to_owned(),
            password_hash: hash.to_owned(),
            role,
            created_at,
        };
        match self.store.create(&self.user_key(name), &record).await {
            Ok(_) => Ok(User {
                name: record.name,
                role,
                created_at,
            }),
            Err(StoreError::Exists { .. }) => Err(Error::Conflict(format!("User {name:?} exists"))),
            Err(e) => Err(e.into()),
        }
    }

    /// A user's password hash and role.
    pub async fn credentials(&self, name: &str) -> Result<Option<(String, Role)>, Error> {
        Ok(self
            .store
            .get::<UserRecord>(&self.user_key(name))
            .await?
            .map(|r| (r.value.password_hash, r.value.role)))
    }

    /// A user's role, if the user exists.
    pub async fn role(&self, name: &str) -> Result<Option<Role>, Error> {
        Ok(self.credentials(name).await?.map(|(_, role)| role))
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        Ok(self
            .store
            .list::<UserRecord>("users")
            .await?
            .into_iter()
            .map(|(_, r)| User {
                name: r.value.name,
                role: r.value.role,
                created_at: r.value.created_at,
            })
            .collect())
    }

    /// Deletes a user with their tokens, in one transaction; false if
    /// there was none. A token made meanwhile makes the transaction fail
    /// on the user's revision, and it is tried again.
    pub async fn delete_user(&self, name: &str) -> Result<bool, Error> {
        loop {
            let key = self.user_key(name);
            let Some(user) = self.store.get::<UserRecord>(&key).await? else {
                return Ok(false);
            };
            let mut batch = Batch::new().delete(&key, user.revision);
            for (hash, token) in self.store.list::<TokenRecord>("api-tokens").await? {
                if token.value.user == name {
                    batch = self.forget_token(batch, &hash, token.value.id);
                }
            }
            match self.store.commit(batch).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Gives user `name` another role, on behalf of administrator `by`,
    /// who must still be one when it is written: two administrators
    /// demoting each other at once cannot leave the cluster without one
    /// (one of the two changes fails). `None` when there is no such user.
    pub async fn set_role(&self, name: &str, role: Role, by: &str) -> Result<Option<User>, Error> {
        loop {
            let key = self.user_key(name);
            let Some(user) = self.store.get::<UserRecord>(&key).await? else {
                return Ok(None);
            };
            let by_key = self.user_key(by);
            let caller = self.store.get::<UserRecord>(&by_key).await?;
            let Some(caller) = caller.filter(|c| c.value.role == Role::Administrator) else {
                return Err(Error::Forbidden(format!(
                    "{by} is no longer an administrator"
                )));
            };
            let record = UserRecord { role, ..user.value };
            let batch = Batch::new().require(&by_key, caller.revision).update(
                &key,
                &record,
                user.revision,
            )?;
            match self.store.commit(batch).await {
                Ok(_) => {
                    return Ok(Some(User {
                        name: record.name,
                        role,
                        created_at: record.created_at,
                    }));
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Replaces user `name`'s password hash; `None` if there is no such
    /// user. The role stays what it is when written.
    pub async fn set_password(&self, name: &str, hash: &str) -> Result<Option<User>, Error> {
        loop {
            let key = self.user_key(name);
            let Some(user) = self.store.get::<UserRecord>(&key).await? else {
                return Ok(None);
            };
            let record = UserRecord {
                password_hash: hash.to_owned(),
                ..user.value
            };
            match self.store.update(&key, &record, user.revision).await {
                Ok(_) => {
                    return Ok(Some(User {
                        name: record.name,
                        role: record.role,
                        created_at: record.created_at,
                    }));
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn forget_token(&self, batch: Batch, hash: &str, id: i64) -> Batch {
        batch
            .remove(&self.store.key("api-tokens", hash))
            .remove(&self.store.key("api-token-ids", &id.to_string()))
            .remove(&self.store.key("api-token-use", hash))
    }

    /// Records a token of `user` (who must still exist: the user's record
    /// is required at the revision read).
    pub async fn create_token(
        &self,
        name: &str,
        user: &str,
        hash: &str,
    ) -> Result<ApiToken, Error> {
        let id = crate::auth::new_token_id().map_err(|e| Error::Internal(e.to_string()))?;
        let token = TokenRecord {
            id,
            name: name.to_owned(),
            user: user.to_owned(),
            created_at: now(),
        };
        self.insert_token(&token, hash, None).await?;
        Ok(ApiToken {
            id,
            name: token.name,
            user: token.user,
            created_at: token.created_at,
            last_used_at: None,
        })
    }

    async fn insert_token(
        &self,
        token: &TokenRecord,
        hash: &str,
        last_used: Option<i64>,
    ) -> Result<(), Error> {
        let user = self
            .store
            .get::<UserRecord>(&self.user_key(&token.user))
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "user",
                name: token.user.clone(),
            })?;
        let mut batch = Batch::new()
            .require(&self.user_key(&token.user), user.revision)
            .create(&self.store.key("api-tokens", hash), token)?
            .create(
                &self.store.key("api-token-ids", &token.id.to_string()),
                &TokenId {
                    hash: hash.to_owned(),
                },
            )?;
        if let Some(at) = last_used {
            batch = batch.put(
                &self.store.key("api-token-use", hash),
                &TokenUse { at },
                None,
            )?;
        }
        match self.store.commit(batch).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(Error::Conflict(format!(
                "User {} changed while the token was made: try again",
                token.user
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The user and role of a token, noting its use.
    pub async fn token_user(&self, hash: &str) -> Result<Option<(String, Role)>, Error> {
        let key = self.store.key("api-tokens", hash);
        let Some(token) = self.store.get::<TokenRecord>(&key).await? else {
            return Ok(None);
        };
        let Some(role) = self.role(&token.value.user).await? else {
            return Ok(None);
        };
        let t = now();
        let due = {
            let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
            let last = noted.entry(hash.to_owned()).or_insert(i64::MIN);
            let due = t.saturating_sub(*last) >= TOKEN_TOUCH_S;
            if due {
                *last = t;
            }
            due
        };
        if due {
            // Only while the token exists: a use racing its deletion must
            // not leave a record behind. Losing the race is not an error.
            let batch = Batch::new().require(&key, token.revision).put(
                &self.store.key("api-token-use", hash),
                &TokenUse { at: t },
                None,
            )?;
            match self.store.commit(batch).await {
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some((token.value.user, role)))
    }

    /// A user's tokens, by id.
    pub async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>, Error> {
        let uses: HashMap<String, i64> = self
            .store
            .list::<TokenUse>("api-token-use")
            .await?
            .into_iter()
            .map(|(hash, u)| (hash, u.value.at))
            .collect();
        let mut out: Vec<ApiToken> = self
            .store
            .list::<TokenRecord>("api-tokens")
            .await?
            .into_iter()
            .filter(|(_, t)| t.value.user == user)
            .map(|(hash, t)| ApiToken {
                id: t.value.id,
                name: t.value.name,
                user: t.value.user,
                created_at: t.value.created_at,
                last_used_at: uses.get(&hash).copied(),
            })
            .collect();
        out.sort_by_key(|t| t.id);
        Ok(out)
    }

    /// Deletes one of a user's tokens; false if the user has no such token.
    pub async fn delete_token(&self, id: i64, user: &str) -> Result<bool, Error> {
        let id_key = self.store.key("api-token-ids", &id.to_string());
        let Some(found) = self.store.get::<TokenId>(&id_key).await? else {
            return Ok(false);
        };
        let hash = found.value.hash;
        let key = self.store.key("api-tokens", &hash);
        let Some(token) = self.store.get::<TokenRecord>(&key).await? else {
            return Ok(false);
        };
        if token.value.user != user {
            return Ok(false);
        }
        let batch = self.forget_token(Batch::new().require(&key, token.revision), &hash, id);
        match self.store.commit(batch).await {
            Ok(_) => Ok(true),
            // Deleted meanwhile (with its user, or by another request).
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves the users and tokens this host's SQLite still holds (a host
    /// that ran before the cluster) into the cluster, then forgets them
    /// locally. A name the cluster has already keeps the cluster's
    /// account: the local one is left out, and said in the answer. A crash
    /// in between is harmless: what moved already is there and is skipped.
    /// The users moved and the names left out.
    pub async fn move_local(&self, db: &Db) -> Result<(usize, Vec<String>), Error> {
        let (users, tokens) = db.legacy_accounts()?;
        let mut moved = 0;
        let mut left_out = Vec::new();
        for u in &users {
            match self
                .create_user_at(&u.name, &u.password_hash, u.role, u.created_at)
                .await
            {
                Ok(_) => moved += 1,
                Err(Error::Conflict(_)) => {
                    let same = self
                        .credentials(&u.name)
                        .await?
                        .is_some_and(|(h, _)| h == u.password_hash);
                    if !same {
                        left_out.push(u.name.clone());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        for t in tokens.iter().filter(|t| !left_out.contains(&t.user)) {
            let record = TokenRecord {
                id: t.id,
                name: t.name.clone(),
                user: t.user.clone(),
                created_at: t.created_at,
            };
            let exists = self
                .store
                .get::<TokenRecord>(&self.store.key("api-tokens", &t.hash))
                .await?
                .is_some();
            if !exists {
                self.insert_token(&record, &t.hash, t.last_used_at).await?;
            }
        }
        db.forget_legacy_accounts()?;
        Ok((moved, left_out))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cluster::{Member, MemberConfig, member::free_loopback_port};

    use super::*;

    /// A one-member etcd (Debian's etcd-server, which `make test` installs)
    /// and the accounts on it.
    async fn accounts(dir: &std::path::Path) -> (Member, Accounts) {
        let (client, peer) = (free_loopback_port().unwrap(), free_loopback_port().unwrap());
        let url = format!("http://127.0.0.1:{client}");
        let config = MemberConfig {
            name: "m0".into(),
            data_dir: dir.join("m0"),
            client_url: url.clone(),
            peer_url: format!("http://127.0.0.1:{peer}"),
            initial_cluster: vec![("m0".into(), format!("http://127.0.0.1:{peer}"))],
            new_cluster: true,
            cluster_token: "test".into(),
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
            log: dir.join("m0.log"),
            tls: None,
        };
        let mut m = Member::start(config).expect("etcd starts");
        m.wait_serving(Duration::from_secs(20), None)
            .await
            .expect("etcd serves");
        let store = Store::connect(&[url], "/sfera/", None).await.unwrap();
        (m, Accounts::new(store))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_belong_to_their_user_and_go_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let (member, a) = accounts(dir.path()).await;
        assert!(!a.any_user().await.unwrap());
        a.create_user("admin", "h1", Role::Administrator)
            .await
            .unwrap();
        a.create_user("viewer", "h2", Role::ReadOnly).await.unwrap();
        let again = a.create_user("admin", "h3", Role::ReadOnly).await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        assert_eq!(
            a.credentials("admin").await.unwrap(),
            Some(("h1".into(), Role::Administrator))
        );
        let t = a.create_token("cli", "viewer", "t1").await.unwrap();
        a.create_token("ci", "admin", "t2").await.unwrap();
        let nobody = a.create_token("x", "nobody", "t3").await;
        assert!(matches!(nobody, Err(Error::NotFound { .. })), "{nobody:?}");
        assert_eq!(
            a.token_user("t1").await.unwrap(),
            Some(("viewer".into(), Role::ReadOnly))
        );
        assert_eq!(a.token_user("t3").await.unwrap(), None);
        let listed = a.tokens("viewer").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, t.id);
        assert!(listed[0].last_used_at.is_some(), "its use is noted");
        // Another user's token is not theirs to delete.
        assert!(!a.delete_token(t.id, "admin").await.unwrap());
        assert!(a.delete_user("viewer").await.unwrap());
        assert!(!a.delete_user("viewer").await.unwrap());
        assert_eq!(a.token_user("t1").await.unwrap(), None);
        // Nothing of the token is left behind.
        for kind in ["api-token-ids", "api-token-use"] {
            let left = a.store.list::<serde_json::Value>(kind).await.unwrap();
            assert!(
                left.iter()
                    .all(|(name, _)| !name.contains("t1") && name != &t.id.to_string()),
                "{kind}: {left:?}"
            );
        }
        assert_eq!(a.tokens("admin").await.unwrap().len(), 1);
        drop(member);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn roles_change_only_by_a_standing_administrator_and_passwords_keep_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let (member, a) = accounts(dir.path()).await;
        a.create_user("root", "h1", Role::Administrator)
            .await
            .unwrap();
        a.create_user("ops", "h2", Role::ReadOnly).await.unwrap();
        let ops = a
            .set_role("ops", Role::Administrator, "root")
            .await
            .unwrap();
        assert_eq!(ops.map(|u| u.role), Some(Role::Administrator));
        assert_eq!(
            a.set_role("nobody", Role::ReadOnly, "root").await.unwrap(),
            None
        );
        a.set_role("root", Role::ReadOnly, "ops").await.unwrap();
        // root is no administrator now: it cannot take ops's role away.
        let refused = a.set_role("ops", Role::ReadOnly, "root").await;
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
        let root = a.set_password("root", "h3").await.unwrap();
        assert_eq!(root.map(|u| u.role), Some(Role::ReadOnly));
        assert_eq!(
            a.credentials("root").await.unwrap(),
            Some(("h3".into(), Role::ReadOnly))
        );
        assert_eq!(a.set_password("nobody", "h4").await.unwrap(), None);
        drop(member);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hosts_own_accounts_move_in_once_and_the_clusters_name_stands() {
        let dir = tempfile::tempdir().unwrap();
        let (member, a) = accounts(dir.path()).await;
        a.create_user("admin", "cluster-hash", Role::Administrator)
            .await
            .unwrap();
        let db = Db::in_memory().unwrap();
        db.create_legacy_user("admin", "local-hash", Role::Administrator)
            .unwrap();
        db.create_legacy_user("ops", "ops-hash", Role::ReadOnly)
            .unwrap();
        for (user, hash) in [("admin", "a-tok"), ("ops", "o-tok")] {
            db.conn()
                .execute(
                    "INSERT INTO api_tokens (name, user, token_hash, created_at, last_used_at)
                     VALUES ('cli', ?1, ?2, 5, 7)",
                    rusqlite::params![user, hash],
                )
                .unwrap();
        }
        let (moved, left_out) = a.move_local(&db).await.unwrap();
        assert_eq!((moved, left_out), (1, vec!["admin".to_owned()]));
        assert_eq!(
            a.credentials("admin").await.unwrap(),
            Some(("cluster-hash".into(), Role::Administrator))
        );
        // The left-out admin's token would open the cluster's admin: dropped.
        assert_eq!(a.token_user("a-tok").await.unwrap(), None);
        let ops = a.tokens("ops").await.unwrap();
        assert_eq!((ops[0].created_at, ops[0].last_used_at), (5, Some(7)));
        assert_eq!(
            a.token_user("o-tok").await.unwrap(),
            Some(("ops".into(), Role::ReadOnly))
        );
        assert_eq!(db.legacy_accounts().unwrap(), (vec![], vec![]));
        // Nothing left to move: a second start moves nothing.
        assert_eq!(a.move_local(&db).await.unwrap(), (0, vec![]));
        drop(member);
    }
}
