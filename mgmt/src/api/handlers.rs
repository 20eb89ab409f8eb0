//! The handlers: each turns a routed, authenticated request into a call on
//! [`Mgmt`] and its answer. Long operations answer 202 with their task.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::routes::{Op, Params};
use crate::auth::{self, Principal, Role};
use crate::db::VmState;
use crate::db::metrics as metrics_db;
use crate::service::Mgmt;
use crate::vm::request::{CreateVm, templates};
use crate::vm::service::PowerAction;

/// A request, routed and authenticated.
#[derive(Debug)]
pub struct ApiRequest {
    pub op: Op,
    pub params: Params,
    pub query: HashMap<String, String>,
    pub body: Bytes,
    /// `None` only on public routes.
    pub principal: Option<Principal>,
    /// Over HTTPS (the session cookie is then `Secure`).
    pub tls: bool,
    /// The client's address (for login throttling).
    pub peer: Option<std::net::IpAddr>,
}

/// An answer.
#[derive(Debug)]
pub enum Reply {
    Json(StatusCode, Value),
    /// JSON with a `Set-Cookie` header.
    JsonWithCookie(StatusCode, Value, String),
    Text(String),
    /// A file to save (`Content-Disposition: attachment`), its bytes as
    /// they are: a console log holds escape sequences and may not be UTF-8.
    Download {
        filename: String,
        bytes: Vec<u8>,
    },
    Empty,
}

impl Reply {
    pub fn into_response(self) -> Response {
        let mut attachment = None;
        let (status, content_type, body, cookie) = match self {
            Reply::Json(s, v) => (s, "application/json", v.to_string().into_bytes(), None),
            Reply::JsonWithCookie(s, v, c) => {
                let body = if s == StatusCode::NO_CONTENT {
                    String::new()
                } else {
                    v.to_string()
                };
                (s, "application/json", body.into_bytes(), Some(c))
            }
            Reply::Text(t) => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                t.into_bytes(),
                None,
            ),
            Reply::Download { filename, bytes } => {
                attachment = Some(filename);
                (StatusCode::OK, "application/octet-stream", bytes, None)
            }
            Reply::Empty => (StatusCode::NO_CONTENT, "application/json", Vec::new(), None),
        };
        let mut r = Response::new(body.into());
        *r.status_mut() = status;
        let headers = r.headers_mut();
        headers.insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static(content_type),
        );
        headers.insert(
            warp::http::header::CACHE_CONTROL,
            warp::http::HeaderValue::from_static("no-store"),
        );
        // Our own file names: ASCII without quotes.
        if let Some(v) = attachment.and_then(|f| {
            warp::http::HeaderValue::from_str(&format!("attachment; filename=\"{f}\"")).ok()
        }) {
            headers.insert(warp::http::header::CONTENT_DISPOSITION, v);
        }
        if let Some(c) = cookie.and_then(|c| warp::http::HeaderValue::from_str(&c).ok()) {
            headers.insert(warp::http::header::SET_COOKIE, c);
        }
        r
    }
}

/// A VM's console log as a file: `current` (this power-on's, or the last
/// one's while stopped) or `previous` (the power-on before it).
fn console_log(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let vm = mgmt.find_vm(param(r, "vm"))?;
    let paths = mgmt.vm_paths(&vm.id);
    let path = match param(r, "session") {
        "current" => paths.console_log(),
        "previous" => paths.previous_console_log(),
        other => {
            return Err(ApiError::not_found(format!(
                "No console log {other:?}: current or previous"
            )));
        }
    };
    let session = param(r, "session");
    if !path.exists() {
        return Err(ApiError::not_found(format!(
            "VM {} has no {session} console log",
            vm.name
        )));
    }
    // The VM's process can replace its console log (a symlink to a host
    // file, a FIFO), so it is opened as a VM's file, and read up to a
    // bound: the newest MAX_DOWNLOAD bytes.
    let mut file = crate::jail::open_vm_file(&path, false)
        .map_err(|e| ApiError::internal(control::error_chain(&e)))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    std::io::Seek::seek(
        &mut file,
        std::io::SeekFrom::Start(len.saturating_sub(MAX_DOWNLOAD)),
    )
    .and_then(|_| {
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_DOWNLOAD), &mut bytes)
    })
    .map_err(|e| ApiError::internal(format!("Cannot read {}: {e}", path.display())))?;
    Ok(Reply::Download {
        filename: format!("{}-console-{session}.log", vm.name),
        bytes,
    })
}

/// The most of a console log one download returns (its newest part).
const MAX_DOWNLOAD: u64 = 64 << 20;

pub(super) fn ok(v: Value) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::OK, v))
}

pub(super) fn created(v: Value) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::CREATED, v))
}

pub(super) fn accepted(task: &crate::db::Task) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::ACCEPTED, json!(task)))
}

/// Reads a JSON body. Numbers with a zero fraction (`2.0`) count as the
/// integers they are, as JSON Schema has it, so a client that writes every
/// number as a float is not refused where an integer is due.
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("Invalid JSON body: {e}"));
    let mut v: Value = serde_json::from_slice(body).map_err(invalid)?;
    integral_floats_to_integers(&mut v);
    serde_json::from_value(v).map_err(invalid)
}

fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| < 2^53.
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *v = Value::from(i);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(o) => o.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// `limit` and `offset` of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

impl Page {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let num = |name: &str, default: u32| -> Result<u32, ApiError> {
            match q.get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ApiError::invalid(format!("{name} must be a non-negative integer"))
                }),
            }
        };
        let limit = num("limit", DEFAULT_LIMIT)?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")));
        }
        Ok(Page {
            limit,
            offset: num("offset", 0)?,
        })
    }

    /// The page of a whole list.
    pub fn of(self, items: Vec<Value>) -> Value {
        let total = items.len();
        let start = usize::try_from(self.offset)
            .unwrap_or(usize::MAX)
            .min(total);
        let end = start
            .saturating_add(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .min(total);
        json!({ "items": items[start..end], "total": total, "limit": self.limit, "offset": self.offset })
    }

    /// A page fetched already, with the total.
    pub fn wrap(self, items: Value, total: u64) -> Value {
        json!({ "items": items, "total": total, "limit": self.limit, "offset": self.offset })
    }
}

pub(super) fn param<'a>(r: &'a ApiRequest, name: &str) -> &'a str {
    r.params.get(name).map(String::as_str).unwrap_or_default()
}

pub(super) fn principal(r: &ApiRequest) -> Result<&Principal, ApiError> {
    r.principal.as_ref().ok_or_else(ApiError::unauthorized)
}

fn session_cookie(value: &str, max_age: i64, tls: bool) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        auth::SESSION_COOKIE,
        if tls { "; Secure" } else { "" }
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    name: String,
    password: String,
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatastoreBody {
    name: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortGroupBody {
    name: String,
    #[serde(default)]
    switch: Option<String>,
    #[serde(default)]
    vlan: Option<Value>,
}

/// A name of a datastore or port group: what the daemons accept in paths.
pub(super) fn check_object_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
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

/// A VM as the API shows it: the record with where its console is.
fn vm_json(mgmt: &Mgmt, vm: &crate::db::Vm) -> Result<Value, ApiError> {
    let mut v = to_json(vm)?;
    let paths = mgmt.vm_paths(&vm.id);
    v["console_socket"] = json!(paths.console());
    v["console_log"] = json!(paths.console_log());
    v["paused_reason"] = json!(mgmt.paused_reason(&vm.id));
    Ok(v)
}

/// The switch's ports, with their VM and counters.
async fn ports(mgmt: &Mgmt) -> Result<Vec<Value>, ApiError> {
    let config = mgmt.vswitchd.config().await?;
    let stats = mgmt.vswitchd.stats().await?;
    let vms = mgmt.db.vms()?;
    let mut out = Vec::new();
    for p in config["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = p["name"].as_str().unwrap_or_default();
        let vm = vms.iter().find(|v| v.nics.iter().any(|n| n.port == name));
        let counters = stats["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or(Value::Null);
        out.push(json!({
            "name": name,
            "port_group": p["port_group"],
            "mac": p["mac"],
            "mtu": p["mtu"],
            "vm": vm.map(|v| json!({ "id": v.id, "name": v.name })),
            "connected": counters["connected"].as_bool().unwrap_or(false),
            "stats": counters,
        }));
    }
    Ok(out)
}

/// `GET /api/v1/metrics/{kind}/{object}`: the series as columns, one
/// `times` array and, per metric, its values at those times (`null` where
/// it has none), as charts take them.
fn metric_series(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let kind = param(r, "kind");
    if !crate::metrics::KINDS.contains(&kind) {
        return Err(ApiError::not_found(format!(
            "No kind {kind:?} (host, vm, volume or port)"
        )));
    }
    let mut object = param(r, "object").to_owned();
    match kind {
        "vm" => {
            object = mgmt.find_vm(&object)?.id;
        }
        "host" if object != mgmt.host.hostname => {
            return Err(ApiError::not_found(format!(
                "The host is {:?}",
                mgmt.host.hostname
            )));
        }
        _ => {}
    }
    let (resolution, keep) = match r.query.get("resolution").map(String::as_str) {
        None | Some("raw") => (metrics_db::Resolution::Raw, metrics_db::RAW_KEEP_S),
        Some("5m") => (metrics_db::Resolution::Rollup, metrics_db::ROLLUP_KEEP_S),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "resolution {other:?} must be raw or 5m"
            )));
        }
    };
    let since = match r.query.get("since") {
        None => crate::db::now() - keep,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("since must be an integer (seconds since the epoch)"))?,
    };
    let rows = mgmt.db.metric_series(kind, &object, resolution, since)?;
    let mut times: Vec<i64> = rows.iter().map(|x| x.time).collect();
    times.dedup();
    let mut series = serde_json::Map::new();
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    for row in &rows {
        let Ok(i) = times.binary_search(&row.time) else {
            continue;
        };
        let set = |m: &mut serde_json::Map<String, Value>, v: Option<f64>| {
            let col = m
                .entry(row.metric.clone())
                .or_insert_with(|| Value::Array(vec![Value::Null; times.len()]));
            if let Some(slot) = col.as_array_mut().and_then(|c| c.get_mut(i)) {
                *slot = v.map_or(Value::Null, |v| json!(v));
            }
        };
        set(&mut series, Some(row.value));
        if resolution == metrics_db::Resolution::Rollup {
            set(&mut min, row.min);
            set(&mut max, row.max);
        }
    }
    let mut v = json!({
        "kind": kind,
        "object": object,
        "resolution": if resolution == metrics_db::Resolution::Raw { "raw" } else { "5m" },
        "interval_s": if resolution == metrics_db::Resolution::Raw {
            mgmt.paths.sample_every.as_secs()
        } else {
            metrics_db::ROLLUP_S.unsigned_abs()
        },
        "times": times,
        "series": series,
    });
    if resolution == metrics_db::Resolution::Rollup {
        v["min"] = Value::Object(min);
        v["max"] = Value::Object(max);
    }
    ok(v)
}

/// Logs in: throttled per address and user name (a locked login is
/// refused before its password is hashed), the hashing bounded by the gate.
async fn login(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: LoginBody = parse(&r.body)?;
    mgmt.login_limiter()
        .check(r.peer, &body.username, std::time::Instant::now())
        .map_err(ApiError::too_many_logins)?;
    let admission = mgmt.hash_gate.admit().ok_or_else(ApiError::busy)?;
    let creds = mgmt.db.user_credentials(&body.username)?;
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
    let secret = auth::new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
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
    Ok(Reply::JsonWithCookie(
        StatusCode::OK,
        json!({ "user": body.username, "role": role, "expires_at": crate::db::now() + auth::SESSION_SECONDS }),
        session_cookie(&secret, auth::SESSION_SECONDS, r.tls),
    ))
}

/// Carries out one request.
pub async fn handle(mgmt: Arc<Mgmt>, r: ApiRequest) -> Result<Reply, ApiError> {
    match r.op {
        Op::Login => login(&mgmt, &r).await,
        Op::WhoAmI => {
            let p = principal(&r)?;
            ok(json!({ "user": p.user, "role": p.role }))
        }
        Op::Logout => {
            if let Some(hash) = &principal(&r)?.session {
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
        Op::ListTokens => {
            let page = Page::from_query(&r.query)?;
            let tokens = mgmt.db.tokens(&principal(&r)?.user)?;
            ok(page.of(tokens.iter().map(to_json).collect::<Result<_, _>>()?))
        }
        Op::CreateToken => {
            let body: TokenBody = parse(&r.body)?;
            if !(1..=128).contains(&body.name.chars().count()) {
                return Err(ApiError::invalid("name must be 1 to 128 characters"));
            }
            let user = principal(&r)?.user.clone();
            let secret = auth::new_secret().map_err(|e| ApiError::internal(e.to_string()))?;
            let token = mgmt
                .db
                .create_token(&body.name, &user, &auth::secret_hash(&secret))?;
            mgmt.db.event(
                "info",
                "token.created",
                &user,
                &format!("API token {:?} created", body.name),
                Some(&user),
            );
            let mut v = to_json(&token)?;
            v["token"] = json!(secret);
            created(v)
        }
        Op::DeleteToken => {
            let id: i64 = param(&r, "id")
                .parse()
                .map_err(|_| ApiError::invalid("token id must be an integer"))?;
            if mgmt.db.delete_token(id, &principal(&r)?.user)? {
                Ok(Reply::Empty)
            } else {
                Err(ApiError::not_found(format!("You have no token {id}")))
            }
        }
        Op::ListUsers => {
            let page = Page::from_query(&r.query)?;
            ok(page.of(mgmt
                .db
                .users()?
                .iter()
                .map(to_json)
                .collect::<Result<_, _>>()?))
        }
        Op::CreateUser => {
            let body: UserBody = parse(&r.body)?;
            auth::check_user_name(&body.name).map_err(ApiError::invalid)?;
            auth::check_password(&body.password).map_err(ApiError::invalid)?;
            if mgmt.db.user_credentials(&body.name)?.is_some() {
                return Err(ApiError::conflict(format!("User {:?} exists", body.name)));
            }
            let password = body.password;
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(e.to_string()))?;
            mgmt.db.create_user(&body.name, &hash, body.role)?;
            let by = principal(&r)?.user.clone();
            mgmt.db.event(
                "info",
                "user.created",
                &body.name,
                &format!("User {} ({}) created", body.name, body.role.as_str()),
                Some(&by),
            );
            created(json!({ "name": body.name, "role": body.role, "created_at": crate::db::now() }))
        }
        Op::DeleteUser => {
            let name = param(&r, "name");
            let by = principal(&r)?.user.clone();
            if name == by {
                return Err(ApiError::conflict("You cannot delete yourself"));
            }
            if mgmt.db.delete_user(name)? {
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
        Op::Host => {
            let vms = mgmt.db.vms()?;
            let mut v = to_json(&mgmt.host)?;
            v["vms"] = json!({
                "total": vms.len(),
                "running": vms.iter().filter(|v| v.state == VmState::Running).count(),
                "paused": vms.iter().filter(|v| v.state == VmState::Paused).count(),
            });
            // Which driver each VM uses and why, for the host page.
            v["vm_drivers"] = json!(
                vms.iter()
                    .map(
                        |vm| json!({ "id": vm.id, "name": vm.name, "state": vm.state,
                                      "driver": vm.driver, "driver_reason": vm.driver_reason })
                    )
                    .collect::<Vec<_>>()
            );
            ok(v)
        }
        Op::Daemons => {
            let page = Page::from_query(&r.query)?;
            let b = to_json(&mgmt.blockd_supervisor.status())?;
            let s = to_json(&mgmt.vswitchd.supervisor.status())?;
            ok(page.of(vec![b, s]))
        }
        Op::ListDatastores => {
            let page = Page::from_query(&r.query)?;
            let (rows, stale) = mgmt.sync_datastores().await?;
            let mut v = page.of(rows.iter().map(to_json).collect::<Result<_, _>>()?);
            v["stale"] = json!(stale);
            ok(v)
        }
        Op::AddDatastore => {
            let body: DatastoreBody = parse(&r.body)?;
            check_object_name("datastore", &body.name)?;
            if body.path == "/" {
                return Err(ApiError::new(
                    400,
                    crate::host_paths::PATH_NOT_ALLOWED,
                    "path / is the host's root: give a directory or block device for the datastore",
                ));
            }
            let path = mgmt.paths.datastore_roots.datastore("path", &body.path)?;
            mgmt.need_blockd().await?;
            // A directory becomes sfera-blockd's (made by root, it could not
            // write its metadata); a block device is reached through its group.
            if path.is_dir() {
                crate::daemon_users::give(&path, mgmt.paths.users.blockd.as_ref())
                    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            }
            let path = path.display().to_string();
            let v = mgmt.blockd.add_datastore(&body.name, &path).await?;
            mgmt.sync_datastores().await?;
            let by = principal(&r)?.user.clone();
            mgmt.db.event(
                "info",
                "datastore.added",
                &body.name,
                &format!("Datastore {} at {path}", body.name),
                Some(&by),
            );
            created(v)
        }
        Op::GetDatastore => {
            let ds = param(&r, "datastore");
            check_object_name("datastore", ds)?;
            ok(mgmt
                .blockd
                .api
                .get(&format!(
                    "/v1/datastores/{}",
                    crate::blockd::encode_segment(ds)
                ))
                .await?)
        }
        Op::ListVolumes => {
            let page = Page::from_query(&r.query)?;
            let ds = param(&r, "datastore");
            check_object_name("datastore", ds)?;
            let v = mgmt.blockd.volumes(ds).await?;
            ok(page.of(v.as_array().cloned().unwrap_or_default()))
        }
        Op::Networks => {
            let (switches, port_groups, stale) = mgmt.sync_networks().await?;
            ok(json!({ "switches": switches, "port_groups": port_groups, "stale": stale }))
        }
        Op::ListSwitches => {
            let page = Page::from_query(&r.query)?;
            let (switches, _, stale) = mgmt.sync_networks().await?;
            let mut v = page.of(switches);
            v["stale"] = json!(stale);
            ok(v)
        }
        Op::ListPortGroups => {
            let page = Page::from_query(&r.query)?;
            let (_, groups, stale) = mgmt.sync_networks().await?;
            let mut v = page.of(groups);
            v["stale"] = json!(stale);
            ok(v)
        }
        Op::AddPortGroup => {
            let body: PortGroupBody = parse(&r.body)?;
            check_object_name("port group", &body.name)?;
            let mut g = json!({ "name": body.name, "vlan": body.vlan.unwrap_or(json!({ "mode": "none" })) });
            if let Some(s) = &body.switch {
                check_object_name("switch", s)?;
                g["switch"] = json!(s);
            }
            mgmt.need_vswitchd().await?;
            mgmt.vswitchd.add_port_group(&g).await?;
            mgmt.sync_networks().await?;
            let by = principal(&r)?.user.clone();
            mgmt.db.event(
                "info",
                "port_group.added",
                &body.name,
                &format!("Port group {} created", body.name),
                Some(&by),
            );
            created(g)
        }
        Op::NetworkStats => ok(mgmt.vswitchd.stats().await?),
        Op::ListPorts => {
            let page = Page::from_query(&r.query)?;
            ok(page.of(ports(&mgmt).await?))
        }
        Op::Templates => {
            let page = Page::from_query(&r.query)?;
            ok(page.of(templates(&mgmt.paths.guest_dir)
                .iter()
                .map(to_json)
                .collect::<Result<_, _>>()?))
        }
        Op::ListVms => {
            let page = Page::from_query(&r.query)?;
            let vms = mgmt.db.vms()?;
            ok(page.of(vms
                .iter()
                .map(|v| vm_json(&mgmt, v))
                .collect::<Result<_, _>>()?))
        }
        Op::GetVm => ok(vm_json(&mgmt, &mgmt.find_vm(param(&r, "vm"))?)?),
        Op::CreateVm => {
            let body: CreateVm = parse(&r.body)?;
            let plan = body.plan(
                &mgmt.paths.guest_dir,
                &mgmt.paths.boot_dirs(),
                mgmt.host.memory_bytes >> 20,
            )?;
            let vm = mgmt.reserve_vm(&plan).await?;
            let user = principal(&r)?.user.clone();
            let m = Arc::clone(&mgmt);
            let (id, by) = (vm.id.clone(), user.clone());
            let attached = plan.disks.iter().map(|d| d.volume.is_some()).collect();
            let task = crate::tasks::spawn(&mgmt.db, "vm.create", &id, &by, move |ctx| {
                m.create_vm(vm, attached, plan.power_on, user, ctx)
            })?;
            accepted(&task)
        }
        Op::DeleteVm => {
            let vm = mgmt.find_vm(param(&r, "vm"))?;
            let with_disks = match r.query.get("disks").map(String::as_str) {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err(ApiError::invalid("disks must be true or false")),
            };
            if matches!(vm.state, VmState::Running | VmState::Paused) {
                return Err(ApiError::conflict(format!(
                    "VM {} is {}: power it off first",
                    vm.name,
                    vm.state.as_str()
                )));
            }
            let user = principal(&r)?.user.clone();
            let m = Arc::clone(&mgmt);
            let id = vm.id.clone();
            let by = user.clone();
            let task = crate::tasks::spawn(&mgmt.db, "vm.delete", &vm.id, &by, move |_| {
                m.delete_vm(id, with_disks, user)
            })?;
            accepted(&task)
        }
        Op::PowerVm => {
            let vm = mgmt.find_vm(param(&r, "vm"))?;
            let action = PowerAction::parse(param(&r, "action")).ok_or_else(|| {
                ApiError::invalid("action must be on, off, reset, pause or resume")
            })?;
            let user = principal(&r)?.user.clone();
            let m = Arc::clone(&mgmt);
            let id = vm.id.clone();
            let by = user.clone();
            let task = crate::tasks::spawn(&mgmt.db, action.task_kind(), &vm.id, &by, move |_| {
                m.power(id, action, user)
            })?;
            accepted(&task)
        }
        Op::ListTasks => {
            let page = Page::from_query(&r.query)?;
            let (tasks, total) = mgmt.db.tasks(page.limit, page.offset)?;
            ok(page.wrap(to_json(&tasks)?, total))
        }
        Op::GetTask => {
            let id: i64 = param(&r, "id")
                .parse()
                .map_err(|_| ApiError::invalid("task id must be an integer"))?;
            let task = mgmt
                .db
                .task(id)?
                .ok_or_else(|| ApiError::not_found(format!("No task {id}")))?;
            ok(to_json(&task)?)
        }
        Op::ListEvents => {
            let page = Page::from_query(&r.query)?;
            let (events, total) = mgmt.db.events(page.limit, page.offset)?;
            ok(page.wrap(to_json(&events)?, total))
        }
        Op::Metrics => match param(&r, "daemon") {
            "blockd" => Ok(Reply::Text(mgmt.blockd.metrics().await?)),
            "vswitchd" => Ok(Reply::Text(mgmt.vswitchd.metrics().await?)),
            other => Err(ApiError::not_found(format!(
                "No daemon {other:?} (blockd or vswitchd)"
            ))),
        },
        Op::Health => ok(json!({ "status": "ok" })),
        Op::SampledObjects => {
            let page = Page::from_query(&r.query)?;
            let objects = mgmt.db.sampled_objects()?;
            let mut v = page.of(objects.iter().map(to_json).collect::<Result<_, _>>()?);
            v["interval_s"] = json!(mgmt.paths.sample_every.as_secs());
            v["raw_keep_s"] = json!(metrics_db::RAW_KEEP_S);
            v["rollup_s"] = json!(metrics_db::ROLLUP_S);
            v["rollup_keep_s"] = json!(metrics_db::ROLLUP_KEEP_S);
            ok(v)
        }
        Op::MetricSeries => metric_series(&mgmt, &r),
        // Reached only without an upgrade: the WebSocket itself is taken
        // by the server before routing.
        Op::VmConsoleLog => console_log(&mgmt, &r),
        Op::VmConsole | Op::VmDisplay => {
            mgmt.find_vm(param(&r, "vm"))?;
            Err(ApiError::invalid(
                "This is a WebSocket: connect with Upgrade: websocket",
            ))
        }
        Op::OpenApi => ok(super::openapi::document()),
        Op::MgmtdMetrics => Ok(Reply::Text(crate::metrics::own::render(&mgmt)?)),
        Op::EditVm
        | Op::AddSwitch
        | Op::DeleteSwitch
        | Op::EditPortGroup
        | Op::DeletePortGroup
        | Op::RemoveDatastore
        | Op::CreateVolume
        | Op::ResizeVolume
        | Op::DeleteVolume => super::changes::handle(mgmt, r).await,
        Op::ImportDisk => {
            let ds = param(&r, "datastore").to_owned();
            check_object_name("datastore", &ds)?;
            let body: crate::import::ImportDisk = parse(&r.body)?;
            let source = body.check(&mgmt.paths.import_dirs)?;
            mgmt.need_blockd().await?;
            let (stores, _) = mgmt.sync_datastores().await?;
            if !stores.iter().any(|s| s.name == ds) {
                return Err(ApiError::not_found(format!("No datastore {ds:?}")));
            }
            let existing = mgmt.blockd.volumes(&ds).await?;
            if existing
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v["name"] == body.volume.as_str()))
            {
                return Err(ApiError::conflict(format!(
                    "Datastore {ds} has a volume {} already",
                    body.volume
                )));
            }
            let size =
                crate::import::image::inspect(&mgmt.paths.qemu_img, &source, body.format).await?;
            let size = size.div_ceil(512) * 512;
            let user = principal(&r)?.user.clone();
            let target = format!("{ds}/{}", body.volume);
            let m = Arc::clone(&mgmt);
            let by = user.clone();
            let task = crate::tasks::spawn(&mgmt.db, "volume.import", &target, &by, move |ctx| {
                m.import_disk(ds, body, source, size, user, ctx)
            })?;
            accepted(&task)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let p = Page::from_query(&q(&[("limit", "2"), ("offset", "1")])).unwrap();
        let v = p.of((0..5).map(|i| json!(i)).collect());
        assert_eq!(v["items"], json!([1, 2]));
        assert_eq!(v["total"], 5);
        let far = Page::from_query(&q(&[("offset", "99")]))
            .unwrap()
            .of(vec![json!(1)]);
        assert_eq!(far["items"], json!([]));
        assert!(Page::from_query(&q(&[("limit", "0")])).is_err());
        assert!(Page::from_query(&q(&[("limit", "501")])).is_err());
        assert!(Page::from_query(&q(&[("offset", "-1")])).is_err());
    }

    #[test]
    fn integral_floats_are_integers() {
        #[derive(Deserialize, Debug)]
        struct B {
            n: u16,
            v: Vec<u32>,
        }
        let b: B = parse(br#"{"n": 154.0, "v": [1, 2.0]}"#).unwrap();
        assert_eq!((b.n, b.v), (154, vec![1, 2]));
        assert!(parse::<B>(br#"{"n": 1.5, "v": []}"#).is_err());
        assert!(parse::<B>(br#"{"n": 1e300, "v": []}"#).is_err());
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("datastore", "local").is_ok());
        assert!(check_object_name("datastore", "../x").is_err());
        assert!(check_object_name("datastore", "").is_err());
    }
}
