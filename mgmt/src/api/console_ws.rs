//! `GET /api/v1/vms/{vm}/console` upgraded to a WebSocket: the bridge
//! between a browser's terminal and the VM's serial console hub
//! ([`crate::console`]). It is authenticated like every other call (the
//! session cookie, or a bearer token), for administrators only (a console
//! is the guest's root shell), and refused from another origin, so a page
//! elsewhere cannot open it with the user's cookie. A console opened with
//! a session closes when the session ends (logout, idle timeout, expiry,
//! the user deleted).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use warp::Reply as _;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::ws::{Message, WebSocket, Ws};

use super::error::ApiError;
use super::handlers::Reply;
use super::origin::{self, Source};
use super::server::authenticate;
use crate::auth::Role;
use crate::console::{Output, Viewer};
use crate::db::VmState;
use crate::service::Mgmt;

/// Largest message a browser may send (keystrokes and pastes).
const MAX_MESSAGE: usize = 64 * 1024;
/// How often a console checks that its session still lives (logging out
/// closes it at once; an idle timeout or expiry within this).
const SESSION_CHECK: Duration = Duration::from_secs(15);

/// The session a console was opened with.
struct Session {
    db: Arc<crate::db::Db>,
    idle_s: i64,
    hash: String,
    ended: broadcast::Receiver<String>,
    check: tokio::time::Interval,
}

impl Session {
    fn new(
        db: Arc<crate::db::Db>,
        idle_s: i64,
        hash: String,
        ended: broadcast::Receiver<String>,
    ) -> Self {
        Session {
            db,
            idle_s,
            hash,
            ended,
            check: tokio::time::interval_at(
                tokio::time::Instant::now() + SESSION_CHECK,
                SESSION_CHECK,
            ),
        }
    }

    /// Returns when the session ends (cancel-safe: the bridge calls it
    /// again after each message).
    async fn ended(&mut self) {
        loop {
            tokio::select! {
                ended = self.ended.recv() => match ended {
                    Ok(hash) if hash == self.hash => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = self.check.tick() => {
                    let live = self.db.session_user_at(
                        &self.hash,
                        self.idle_s,
                        crate::db::now(),
                        false,
                    );
                    // A database error is not the session's end.
                    if matches!(live, Ok(None)) {
                        return;
                    }
                }
            }
        }
    }
}

/// Returns when `session` ends; never without one (a bearer token).
async fn session_end(session: &mut Option<Session>) {
    match session {
        Some(s) => s.ended().await,
        None => std::future::pending().await,
    }
}

/// Answers the upgrade request: the WebSocket, or the error as JSON.
pub async fn upgrade(
    mgmt: Arc<Mgmt>,
    tls: bool,
    vm: String,
    ws: Ws,
    headers: HeaderMap,
) -> Response {
    match attach(&mgmt, tls, &vm, &headers).await {
        Ok((viewer, name, session)) => {
            let session = session.map(|hash| {
                Session::new(
                    Arc::clone(&mgmt.db),
                    mgmt.session_idle_s,
                    hash,
                    mgmt.session_ended.subscribe(),
                )
            });
            ws.max_message_size(MAX_MESSAGE)
                .on_upgrade(move |socket| bridge(socket, viewer, name, session))
                .into_response()
        }
        Err(e) => Reply::Json(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.body(),
        )
        .into_response(),
    }
}

/// The viewer, the VM's name and the session's hash (none for a token).
async fn attach(
    mgmt: &Mgmt,
    tls: bool,
    vm: &str,
    headers: &HeaderMap,
) -> Result<(Viewer, String, Option<String>), ApiError> {
    let principal = authenticate(mgmt, headers)?.ok_or_else(ApiError::unauthorized)?;
    if principal.role != Role::Administrator {
        return Err(ApiError::forbidden());
    }
    // WebSocket upgrades are GETs, so the rule for changes does not cover
    // them: any browser sends an Origin here, and it must be ours.
    if origin::source(headers, tls) == Source::Other {
        return Err(ApiError::new(
            403,
            "forbidden",
            "A console cannot be opened from another origin",
        ));
    }
    let vm = mgmt.find_vm(vm)?;
    if !matches!(vm.state, VmState::Running | VmState::Paused) {
        return Err(ApiError::conflict(format!(
            "VM {} is {}: power it on first",
            vm.name,
            vm.state.as_str()
        )));
    }
    let paths = mgmt.vm_paths(&vm.id);
    let viewer = mgmt
        .consoles
        .attach(
            &vm.id,
            &paths.console(),
            crate::driver::console_seed(crate::driver::Driver::parse(&vm.driver), &paths)
                .as_deref(),
        )
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::info!(vm = vm.name, user = principal.user, "Console opened");
    Ok((viewer, vm.name, principal.session))
}

/// Moves bytes between the WebSocket and the console until either closes.
async fn bridge(socket: WebSocket, mut viewer: Viewer, vm: String, mut session: Option<Session>) {
    let (mut tx, mut rx) = socket.split();
    if !viewer.scrollback.is_empty()
        && tx
            .send(Message::binary(viewer.scrollback.clone()))
            .await
            .is_err()
    {
        return;
    }
    let mut closed = viewer.closed;
    while !closed {
        tokio::select! {
            () = session_end(&mut session) => {
                tracing::info!(vm, "Console closed: its session ended");
                // 1008: policy violation; the reason is shown to the user.
                let _ = tx
                    .send(Message::close_with(1008u16, "Your session ended"))
                    .await;
                let _ = tx.close().await;
                return;
            }
            out = viewer.output.recv() => match out {
                Ok(Output::Data(data)) => {
                    if tx.send(Message::binary(data)).await.is_err() {
                        return;
                    }
                }
                Ok(Output::Closed) | Err(RecvError::Closed) => closed = true,
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(vm, chunks = n, "A slow console viewer missed output");
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(m)) if m.is_binary() || m.is_text() => {
                    if !viewer.send(m.into_bytes()).await {
                        closed = true;
                    }
                }
                Some(Ok(m)) if m.is_close() => return,
                // Pings are answered by the WebSocket layer.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(vm, "Console WebSocket failed: {e}");
                    return;
                }
                None => return,
            },
        }
    }
    // 1000: normal closure; the reason is shown to the user.
    let _ = tx
        .send(Message::close_with(1000u16, "The VM's console closed"))
        .await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::db::Db;

    fn db_with_session(hash: &str) -> Arc<Db> {
        let db = Arc::new(Db::in_memory().unwrap());
        db.create_user("admin", "h", Role::Administrator).unwrap();
        db.create_session(hash, "admin", 3600).unwrap();
        db
    }

    /// Whether `session` has ended by the time every ready task has run.
    async fn has_ended(session: &mut Session) -> bool {
        tokio::select! {
            biased;
            () = session.ended() => true,
            () = std::future::ready(()) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn logging_out_ends_the_console_of_that_session_only() {
        let db = db_with_session("mine");
        let (tx, rx) = broadcast::channel(4);
        let mut s = Session::new(db, 1800, "mine".into(), rx);
        tx.send("someone-else".into()).unwrap();
        assert!(!has_ended(&mut s).await);
        tx.send("mine".into()).unwrap();
        assert!(has_ended(&mut s).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_gone_from_the_database_ends_the_console_at_the_next_check() {
        let db = db_with_session("mine");
        let (_tx, rx) = broadcast::channel(4);
        let mut s = Session::new(Arc::clone(&db), 1800, "mine".into(), rx);
        tokio::time::advance(SESSION_CHECK).await;
        assert!(!has_ended(&mut s).await, "a live session");
        db.delete_user("admin").unwrap();
        assert!(!has_ended(&mut s).await, "not before the check");
        tokio::time::advance(SESSION_CHECK).await;
        assert!(has_ended(&mut s).await);
    }
}
