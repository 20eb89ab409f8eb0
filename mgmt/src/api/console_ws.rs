//! `GET /api/v1/vms/{vm}/console` upgraded to a WebSocket: the bridge
//! between a browser's terminal and the VM's serial console hub
//! ([`crate::console`]). It is authenticated like every other call (the
//! session cookie, or a bearer token), for administrators only (a console
//! is the guest's root shell), and refused from another origin, so a page
//! elsewhere cannot open it with the user's cookie.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use warp::Reply as _;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::ws::{Message, WebSocket, Ws};

use super::error::ApiError;
use super::handlers::Reply;
use super::server::authenticate;
use crate::auth::Role;
use crate::console::{Output, Viewer};
use crate::db::VmState;
use crate::service::Mgmt;

/// Largest message a browser may send (keystrokes and pastes).
const MAX_MESSAGE: usize = 64 * 1024;

/// Answers the upgrade request: the WebSocket, or the error as JSON.
pub async fn upgrade(mgmt: Arc<Mgmt>, vm: String, ws: Ws, headers: HeaderMap) -> Response {
    match attach(&mgmt, &vm, &headers).await {
        Ok((viewer, name)) => ws
            .max_message_size(MAX_MESSAGE)
            .on_upgrade(move |socket| bridge(socket, viewer, name))
            .into_response(),
        Err(e) => Reply::Json(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.body(),
        )
        .into_response(),
    }
}

/// The `Origin` a browser sent is this server's (`Host`).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok());
    let Some(origin) = get(warp::http::header::ORIGIN) else {
        // Not a browser: nothing to forge.
        return true;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match (authority, get(warp::http::header::HOST)) {
        (Some(a), Some(host)) => a.eq_ignore_ascii_case(host),
        _ => false,
    }
}

async fn attach(mgmt: &Mgmt, vm: &str, headers: &HeaderMap) -> Result<(Viewer, String), ApiError> {
    let principal = authenticate(mgmt, headers)?.ok_or_else(ApiError::unauthorized)?;
    if principal.role != Role::Administrator {
        return Err(ApiError::forbidden());
    }
    if !same_origin(headers) {
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
    Ok((viewer, vm.name))
}

/// Moves bytes between the WebSocket and the console until either closes.
async fn bridge(socket: WebSocket, mut viewer: Viewer, vm: String) {
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_our_own_origin() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8443")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://127.0.0.1:8443")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "https://127.0.0.1:8443"
        )])));
    }
}
