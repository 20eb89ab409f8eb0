//! Sessions, API tokens and users: logging in and out, who the caller is,
//! the caller's tokens, and the users an administrator manages.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use warp::http::StatusCode;

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, created, ok, to_json};
use super::request::ApiRequest;
use super::{rules, schema};
use crate::auth::{self, Role};
use crate::service::Mgmt;

/// Body of `POST /api/v1/session`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    #[schema(schema_with = schema::token_name)]
    pub name: String,
}

/// Body of `POST /api/v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    // What rules::check_user_name takes.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    // What rules::check_password takes.
    #[schema(min_length = 12, max_length = 256)]
    password: String,
    #[schema(schema_with = schema::role)]
    role: Role,
}

/// Body of `PATCH /api/v1/users/{name}`: what is left out stays; `null`
/// is refused, as the document says.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserEdit {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = schema::role)]
    role: Option<Role>,
    /// A new password (12 to 256 characters): the user's sessions on
    /// this host end
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 12, max_length = 256)]
    password: Option<String>,
}

/// Body of `POST /api/v1/session/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    // What rules::check_password takes.
    #[schema(min_length = 12, max_length = 256)]
    new_password: String,
}

/// A field that may be left out but not given as `null`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    user: String,
    #[schema(schema_with = schema::role)]
    role: Role,
    /// When a session made by logging in ends (seconds since the epoch);
    /// absent for the session of a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64)]
    expires_at: Option<i64>,
}

/// A new API token, with its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewToken {
    id: i64,
    name: String,
    user: String,
    /// Seconds since the epoch
    created_at: i64,
    last_used_at: Option<i64>,
    /// The secret, for Authorization: Bearer; shown only here
    token: String,
}

impl NewToken {
    fn new(t: crate::db::ApiToken, secret: String) -> Self {
        let crate::db::ApiToken {
            id,
            name,
            user,
            created_at,
            last_used_at,
        } = t;
        NewToken {
            id,
            name,
            user,
            created_at,
            last_used_at,
            token: secret,
        }
    }
}

// Passwords stay out of debug output.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UserCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreate")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UserEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEdit")
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange").finish_non_exhaustive()
    }
}

fn session_cookie(value: &str, max_age: i64, tls: bool) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        auth::SESSION_COOKIE,
        if tls { "; Secure" } else { "" }
    )
}

/// A hash no password matches, checked for unknown users so that the
/// time a failed login takes does not tell whether the user exists.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        auth::new_secret()
            .and_then(|s| auth::hash_password(&s))
            .unwrap_or_default()
    })
}

/// Logs in: throttled per address and user name (a locked login is
/// refused before its password is hashed), the hashing bounded by the gate.
pub async fn login(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: Login = r.body()?;
    mgmt.login_limiter()
        .check(r.peer, &body.username, std::time::Instant::now())
        .map_err(super::error::too_many_logins)?;
    let admission = mgmt.hash_gate.admit().ok_or_else(super::error::busy)?;
    let creds = mgmt.accounts.credentials(&body.username).await?;
    // Hash even for an unknown user, so timing does not tell.
    let hash_owned = match &creds {
        Some((h, _)) => h.clone(),
        None => dummy_hash().to_owned(),
    };
    let password = body.password.clone();
    let good = admission
        .run(move || auth::verify_password(&password, &hash_owned))
        .await;
    let Some((_, role)) = creds.filter(|_| good) else {
        mgmt.login_limiter()
            .failed(r.peer, &body.username, std::time::Instant::now());
        mgmt.db.event(
            "warning",
            "session.login_failed",
            &body.username,
            "Login failed",
            None,
        );
        return Err(ApiError::new(
            401,
            "unauthorized",
            "Invalid user name or password",
        ));
    };
    mgmt.login_limiter().succeeded(&body.username);
    let secret = auth::new_secret()?;
    mgmt.db.create_session(
        &auth::secret_hash(&secret),
        &body.username,
        auth::SESSION_SECONDS,
    )?;
    mgmt.db.event(
        "info",
        "session.login",
        &body.username,
        "Logged in",
        Some(&body.username),
    );
    let session = Session {
        user: body.username,
        role,
        expires_at: Some(crate::db::now() + auth::SESSION_SECONDS),
    };
    Ok(Reply::JsonWithCookie(
        StatusCode::OK,
        to_json(&session)?,
        session_cookie(&secret, auth::SESSION_SECONDS, r.tls),
    ))
}

/// `GET /api/v1/session`.
pub fn who_am_i(r: &ApiRequest) -> Result<Reply, ApiError> {
    let p = r.principal()?;
    ok(Session {
        user: p.user.clone(),
        role: p.role,
        expires_at: None,
    })
}

/// `DELETE /api/v1/session`: ends the session and clears the cookie.
pub fn logout(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    if let Some(hash) = &r.principal()?.session {
        mgmt.db.delete_session(hash)?;
        // No console is listening when nobody has one open.
        let _ = mgmt.session_ended.send(hash.clone());
    }
    Ok(Reply::JsonWithCookie(
        StatusCode::NO_CONTENT,
        Value::Null,
        session_cookie("", 0, r.tls),
    ))
}

/// `GET /api/v1/tokens`: the caller's.
pub async fn list_tokens(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let tokens = mgmt.accounts.tokens(&r.principal()?.user).await?;
    ok(page.of(tokens))
}

/// `POST /api/v1/tokens`: its secret is in this answer only.
pub async fn create_token(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: TokenCreate = r.body()?;
    rules::check_token_name(&body.name)?;
    let user = r.user()?;
    let secret = auth::new_secret()?;
    let token = mgmt
        .accounts
        .create_token(&body.name, &user, &auth::secret_hash(&secret))
        .await?;
    mgmt.db.event(
        "info",
        "token.created",
        &user,
        &format!("API token {:?} created", body.name),
        Some(&user),
    );
    created(NewToken::new(token, secret))
}

/// `DELETE /api/v1/tokens/{id}`: one of the caller's.
pub async fn delete_token(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let id: i64 = r
        .param("id")
        .parse()
        .map_err(|_| ApiError::invalid("token id must be an integer"))?;
    if mgmt.accounts.delete_token(id, &r.principal()?.user).await? {
        Ok(Reply::Empty)
    } else {
        Err(ApiError::not_found(format!("You have no token {id}")))
    }
}

/// `GET /api/v1/users`.
pub async fn list_users(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    ok(page.of(mgmt.accounts.users().await?))
}

/// `POST /api/v1/users`.
pub async fn create_user(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: UserCreate = r.body()?;
    rules::check_user_name(&body.name)?;
    rules::check_password(&body.password)?;
    if mgmt.accounts.credentials(&body.name).await?.is_some() {
        return Err(ApiError::conflict(format!("User {:?} exists", body.name)));
    }
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let user = mgmt
        .accounts
        .create_user(&body.name, &hash, body.role)
        .await?;
    let by = r.user()?;
    mgmt.db.event(
        "info",
        "user.created",
        &body.name,
        &format!("User {} ({}) created", body.name, body.role.as_str()),
        Some(&by),
    );
    created(user)
}

/// `DELETE /api/v1/users/{name}`: with their sessions and tokens; not
/// the caller.
pub async fn delete_user(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let name = r.param("name");
    let by = r.user()?;
    if name == by {
        return Err(ApiError::conflict("You cannot delete yourself"));
    }
    if mgmt.accounts.delete_user(name).await? {
        // This host's sessions of the user end now, with their consoles;
        // other hosts' sessions end at their next use, which finds no user.
        for hash in mgmt.db.delete_sessions_of(name)? {
            let _ = mgmt.session_ended.send(hash);
        }
        mgmt.db.event(
            "info",
            "user.deleted",
            name,
            &format!("User {name} deleted"),
            Some(&by),
        );
        Ok(Reply::Empty)
    } else {
        Err(ApiError::not_found(format!("No user {name:?}")))
    }
}

/// `PATCH /api/v1/users/{name}`: another user's role or password (an
/// administrator's own go through `POST /api/v1/session/password` and
/// another administrator, so that the cluster keeps one).
pub async fn edit_user(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: UserEdit = r.body()?;
    let name = r.param("name");
    let by = r.user()?;
    if body.role.is_none() && body.password.is_none() {
        return Err(ApiError::invalid("give a role, a password or both"));
    }
    if let Some(password) = &body.password {
        rules::check_password(password)?;
    }
    if name == by {
        return Err(ApiError::conflict(
            "You cannot change your own role or reset your own password: another administrator can (change your password with your current one)",
        ));
    }
    let mut user = None;
    if let Some(role) = body.role {
        user = mgmt.accounts.set_role(name, role, &by).await?;
        if let Some(u) = &user {
            let message = format!("User {name} is now {}", u.role.as_str());
            mgmt.db
                .event("info", "user.role_changed", name, &message, Some(&by));
        }
    }
    if let Some(password) = body.password {
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        user = mgmt.accounts.set_password(name, &hash).await?;
        if user.is_some() {
            // As for a deleted user: this host's sessions end now, other
            // hosts' sessions stay until they end (tokens stay).
            for hash in mgmt.db.delete_sessions_of(name)? {
                let _ = mgmt.session_ended.send(hash);
            }
            let message = format!("Password of user {name} reset");
            mgmt.db
                .event("info", "user.password_reset", name, &message, Some(&by));
        }
    }
    match user {
        Some(u) => ok(u),
        None => Err(ApiError::not_found(format!("No user {name:?}"))),
    }
}

/// `POST /api/v1/session/password`: the caller changes their own password,
/// giving the current one. A wrong one counts as a failed login of the
/// user (throttled the same way), and the hashing is bounded by the gate.
pub async fn change_password(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: PasswordChange = r.body()?;
    let user = r.user()?;
    rules::check_password(&body.new_password)?;
    if body.new_password == body.current_password {
        return Err(ApiError::invalid(
            "new_password must differ from the current password",
        ));
    }
    let now = std::time::Instant::now();
    if let Err(wait) = mgmt.login_limiter().check(r.peer, &user, now) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(ApiError::new(
            403,
            "too_many_attempts",
            format!("Too many wrong passwords: try again in {secs} s"),
        ));
    }
    let admission = mgmt.hash_gate.admit().ok_or_else(super::error::busy)?;
    let (stored, _) = mgmt
        .accounts
        .credentials(&user)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let (current, new) = (body.current_password, body.new_password);
    let new_hash = admission
        .run(move || auth::verify_password(&current, &stored).then(|| auth::hash_password(&new)))
        .await;
    let Some(new_hash) = new_hash else {
        mgmt.login_limiter()
            .failed(r.peer, &user, std::time::Instant::now());
        return Err(ApiError::new(
            403,
            "wrong_password",
            "current_password is wrong",
        ));
    };
    mgmt.accounts.set_password(&user, &new_hash?).await?;
    mgmt.db.event(
        "info",
        "session.password_changed",
        &user,
        "Password changed",
        Some(&user),
    );
    Ok(Reply::Empty)
}
