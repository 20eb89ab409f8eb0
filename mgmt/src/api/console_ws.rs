//! `GET /api/v1/vms/{vm}/console` upgraded to a WebSocket: the bridge
//! between a browser's terminal and the VM's serial console hub
//! ([`crate::console`]). It is authenticated like every other call (the
//! session cookie, or a bearer token), for administrators only (a console
//! is the guest's root shell), and refused from another origin, so a page
//! elsewhere cannot open it with the user's cookie. A console opened with
//! a session closes when the session ends (logout, idle timeout, expiry,
//! the user deleted).
//!
//! What the server sends, in order: a text frame, [`ConsoleEvent::Session`]
//! as JSON, which says which power-on this console shows (a terminal starts
//! clean there: nothing of an earlier boot belongs in it); one binary frame
//! with the history (what the guest printed since that power-on before the
//! client connected, its terminal queries taken out, empty when there is
//! none); then binary frames of live output until the console closes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use warp::Reply as _;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::ws::{Message, WebSocket, Ws};

use super::error::ApiError;
use super::origin::{self, Source};
use super::reply::Reply;
use super::server::authenticate;
use crate::auth::{Principal, Role};
use crate::console::{Output, PowerOn, Viewer};
use crate::db::VmState;
use crate::service::Mgmt;

/// Largest message a browser may send (keystrokes and pastes).
const MAX_MESSAGE: usize = 64 * 1024;
/// How often a console checks that its session still lives (logging out
/// closes it at once; an idle timeout or expiry within this).
const SESSION_CHECK: Duration = Duration::from_secs(15);

/// A text frame of the console's WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConsoleEvent {
    /// The console of one power-on starts: a terminal resets here.
    Session {
        /// When the VM's process started (seconds since the epoch), if known.
        powered_on_at: Option<i64>,
    },
}

/// The session a console was opened with.
pub(super) struct Session {
    db: Arc<crate::db::Db>,
    /// The cluster's accounts, where the session's user must still be
    /// (none in unit tests, which have no cluster store).
    accounts: Option<crate::accounts::Accounts>,
    idle_s: i64,
    hash: String,
    ended: broadcast::Receiver<String>,
    check: tokio::time::Interval,
    /// A running look-up of the session's user: true if the user is gone.
    /// A task, so a console busy with output does not cancel it.
    user_gone: Option<tokio::task::JoinHandle<bool>>,
}

impl Session {
    pub(super) fn new(
        db: Arc<crate::db::Db>,
        accounts: Option<crate::accounts::Accounts>,
        idle_s: i64,
        hash: String,
        ended: broadcast::Receiver<String>,
    ) -> Self {
        Session {
            db,
            accounts,
            idle_s,
            hash,
            ended,
            check: tokio::time::interval_at(
                tokio::time::Instant::now() + SESSION_CHECK,
                SESSION_CHECK,
            ),
            user_gone: None,
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
                    match live {
                        Ok(None) => return,
                        Ok(Some(user)) => self.look_up(user),
                        Err(_) => {}
                    }
                },
                gone = async { self.user_gone.as_mut().expect("guarded").await },
                    if self.user_gone.is_some() => {
                    self.user_gone = None;
                    // A store error is not the session's end either.
                    if matches!(gone, Ok(true)) {
                        return;
                    }
                }
            }
        }
    }

    /// Starts looking the session's user up in the cluster's accounts.
    fn look_up(&mut self, user: String) {
        if let (Some(accounts), None) = (&self.accounts, &self.user_gone) {
            let accounts = accounts.clone();
            self.user_gone = Some(tokio::spawn(async move {
                matches!(accounts.role(&user).await, Ok(None))
            }));
        }
    }
}

/// Returns when `session` ends; never without one (a bearer token).
pub(super) async fn session_end(session: &mut Option<Session>) {
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
    let attached = attach(&mgmt, tls, &vm, &headers).await;
    answer(&mgmt, ws, MAX_MESSAGE, attached, bridge)
}

/// Answers a console's upgrade request once it is known whether it may
/// open (`attached`: what to bridge to, the VM's name and the session's
/// hash): the WebSocket, run by `bridge` with the session it was opened
/// with, or the error as JSON.
pub(super) fn answer<T, F, Fut>(
    mgmt: &Mgmt,
    ws: Ws,
    max_message: usize,
    attached: Result<(T, String, Option<String>), ApiError>,
    bridge: F,
) -> Response
where
    T: Send + 'static,
    F: FnOnce(WebSocket, T, String, Option<Session>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    match attached {
        Ok((target, name, session)) => {
            let session = session.map(|hash| {
                Session::new(
                    Arc::clone(&mgmt.db),
                    Some(mgmt.accounts.clone()),
                    mgmt.session_idle_s,
                    hash,
                    mgmt.session_ended.subscribe(),
                )
            });
            ws.max_message_size(max_message)
                .on_upgrade(move |socket| bridge(socket, target, name, session))
                .into_response()
        }
        Err(e) => Reply::Json(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.body(),
        )
        .into_response(),
    }
}

/// A message from a console's client, sorted for the bridges.
pub(super) enum FromClient {
    /// A binary or text frame.
    Data(Message),
    /// A ping or pong (the WebSocket layer answers pings).
    Other,
    /// The client closed, failed or went away.
    Gone,
}

pub(super) fn from_client(msg: Option<Result<Message, warp::Error>>, vm: &str) -> FromClient {
    match msg {
        Some(Ok(m)) if m.is_binary() || m.is_text() => FromClient::Data(m),
        Some(Ok(m)) if m.is_close() => FromClient::Gone,
        Some(Ok(_)) => FromClient::Other,
        Some(Err(e)) => {
            tracing::debug!(vm, "Console WebSocket failed: {e}");
            FromClient::Gone
        }
        None => FromClient::Gone,
    }
}

/// Closes a console's WebSocket with a code and the reason shown to the
/// user: 1000 (normal) when the VM's side closed, 1008 (policy) when the
/// session ended.
pub(super) async fn close(tx: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let _ = tx.send(Message::close_with(code, reason)).await;
    let _ = tx.close().await;
}

/// Lets an administrator at a running or paused VM from our origin (or
/// with a token): the VM and the session's hash (none for a token). Used
/// by every WebSocket that can type into a VM (the serial and graphical
/// consoles): a read-only user gets 403.
pub(super) async fn authorize(
    mgmt: &Mgmt,
    tls: bool,
    vm: &str,
    headers: &HeaderMap,
) -> Result<(crate::db::Vm, Principal), ApiError> {
    let principal = authenticate(mgmt, headers)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
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
    let vm = mgmt.find_vm_here(vm).await?;
    if !matches!(vm.state, VmState::Running | VmState::Paused) {
        return Err(ApiError::conflict(format!(
            "VM {} is {}: power it on first",
            vm.name,
            vm.state.as_str()
        )));
    }
    Ok((vm, principal))
}

/// A viewer of the console and the event that starts it.
pub(super) struct Attached {
    viewer: Viewer,
    session: ConsoleEvent,
}

/// The viewer, the VM's name and the session's hash (none for a token).
async fn attach(
    mgmt: &Mgmt,
    tls: bool,
    vm: &str,
    headers: &HeaderMap,
) -> Result<(Attached, String, Option<String>), ApiError> {
    let (vm, principal) = authorize(mgmt, tls, vm, headers).await?;
    let paths = mgmt.vm_paths(&vm.id);
    // A running or paused VM has its process; 0 would only make a hub of
    // its own, never share one with another power-on.
    let pid = vm.pid.unwrap_or(0);
    let viewer = mgmt
        .consoles
        .attach(
            &vm.id,
            PowerOn::of(pid),
            &paths.console(),
            &crate::driver::console_history(crate::driver::Driver::parse(&vm.driver), &paths),
        )
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::info!(vm = vm.name, user = principal.user, "Console opened");
    let session = ConsoleEvent::Session {
        powered_on_at: crate::pid::started_at(pid),
    };
    Ok((Attached { viewer, session }, vm.name, principal.session))
}

/// Moves bytes between the WebSocket and the console until either closes.
async fn bridge(socket: WebSocket, attached: Attached, vm: String, mut session: Option<Session>) {
    let Attached {
        mut viewer,
        session: start,
    } = attached;
    let (mut tx, mut rx) = socket.split();
    // Which power-on this is, then the history, as one frame even when
    // empty, so that a client can tell it from live output: the server
    // takes the queries it knows out of the history, and a terminal that
    // replays it should still not send what it answers while it does
    // (those answers are for a shell long gone, not input for the guest).
    let start = serde_json::to_string(&start).expect("a console event serializes");
    if tx.send(Message::text(start)).await.is_err()
        || tx
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
                close(&mut tx, 1008, "Your session ended").await;
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
            msg = rx.next() => match from_client(msg, &vm) {
                FromClient::Data(m) => {
                    if !viewer.send(m.into_bytes()).await {
                        closed = true;
                    }
                }
                FromClient::Other => {}
                FromClient::Gone => return,
            },
        }
    }
    close(&mut tx, 1000, "The VM's console closed").await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn db_with_session(hash: &str) -> Arc<Db> {
        let db = Arc::new(Db::in_memory().unwrap());
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

    #[test]
    fn the_session_event_is_tagged_json() {
        let e = ConsoleEvent::Session {
            powered_on_at: Some(1_765_100_000),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"type":"session","powered_on_at":1765100000}"#);
        assert_eq!(serde_json::from_str::<ConsoleEvent>(&text).unwrap(), e);
    }

    #[tokio::test(start_paused = true)]
    async fn logging_out_ends_the_console_of_that_session_only() {
        let db = db_with_session("mine");
        let (tx, rx) = broadcast::channel(4);
        let mut s = Session::new(db, None, 1800, "mine".into(), rx);
        tx.send("someone-else".into()).unwrap();
        assert!(!has_ended(&mut s).await);
        tx.send("mine".into()).unwrap();
        assert!(has_ended(&mut s).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_gone_from_the_database_ends_the_console_at_the_next_check() {
        let db = db_with_session("mine");
        let (_tx, rx) = broadcast::channel(4);
        let mut s = Session::new(Arc::clone(&db), None, 1800, "mine".into(), rx);
        tokio::time::advance(SESSION_CHECK).await;
        assert!(!has_ended(&mut s).await, "a live session");
        db.delete_session("mine").unwrap();
        assert!(!has_ended(&mut s).await, "not before the check");
        tokio::time::advance(SESSION_CHECK).await;
        assert!(has_ended(&mut s).await);
    }
}
