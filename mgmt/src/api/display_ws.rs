//! `GET /api/v1/vms/{vm}/display` upgraded to a WebSocket: the VM's screen,
//! keyboard and mouse for the web console's VNC viewer (noVNC). The bytes
//! are the RFB protocol of QEMU's VNC server, passed through unchanged in
//! binary frames both ways; the server listens on a Unix socket in the
//! VM's private directory and asks for no password, so this WebSocket is
//! the only way in. Whoever holds it can type into the VM, so it is let in
//! exactly as the serial console is ([`super::console_ws::authorize`]:
//! administrators only, our origin only) and closes when its session
//! ends. sfera-vmm's VMs have no framebuffer: their answer is 409.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::ws::{Message, WebSocket, Ws};

use super::console_ws::{FromClient, Session, answer, authorize, close, from_client, session_end};
use super::error::ApiError;
use crate::driver::{self, Driver};
use crate::service::Mgmt;

/// Largest message a browser may send: key and pointer events are a few
/// bytes; a clipboard paste is the large one.
const MAX_MESSAGE: usize = 256 * 1024;

/// Answers the upgrade request: the WebSocket, or the error as JSON.
pub async fn upgrade(
    mgmt: Arc<Mgmt>,
    tls: bool,
    vm: String,
    ws: Ws,
    headers: HeaderMap,
) -> Response {
    let connected = connect(&mgmt, tls, &vm, &headers).await;
    answer(&mgmt, ws, MAX_MESSAGE, connected, bridge)
}

/// A connection to the VM's VNC server, the VM's name and the session's
/// hash (none for a token).
async fn connect(
    mgmt: &Mgmt,
    tls: bool,
    vm: &str,
    headers: &HeaderMap,
) -> Result<(UnixStream, String, Option<String>), ApiError> {
    let (vm, principal) = authorize(mgmt, tls, vm, headers).await?;
    let d = Driver::parse(&vm.driver);
    if !driver::has_display(d) {
        return Err(ApiError::conflict(format!(
            "VM {} runs under {}, which has no framebuffer: it has a serial console only",
            vm.name,
            d.as_str()
        )));
    }
    let socket = mgmt.vm_paths(&vm.id).display();
    let stream = UnixStream::connect(&socket).await.map_err(|e| {
        ApiError::unavailable(format!(
            "Cannot connect to VM {}'s display at {} (a VM powered on before displays existed has none until its next power-on): {e}",
            vm.name,
            socket.display()
        ))
    })?;
    tracing::info!(vm = vm.name, user = principal.user, "Display opened");
    Ok((stream, vm.name, principal.session))
}

/// Moves bytes between the WebSocket and the VNC server until either
/// closes or the session ends.
async fn bridge(socket: WebSocket, stream: UnixStream, vm: String, mut session: Option<Session>) {
    let (mut tx, mut rx) = socket.split();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            () = session_end(&mut session) => {
                tracing::info!(vm, "Display closed: its session ended");
                close(&mut tx, 1008, "Your session ended").await;
                return;
            }
            r = rd.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(vm, "Display read failed: {e}");
                    break;
                }
            },
            msg = rx.next() => match from_client(msg, &vm) {
                FromClient::Data(m) if m.is_binary() => {
                    if let Err(e) = wr.write_all(m.as_bytes()).await {
                        tracing::debug!(vm, "Display write failed: {e}");
                        break;
                    }
                }
                // RFB is binary: a text frame is not from a VNC client.
                FromClient::Data(_) => {
                    close(&mut tx, 1003, "The display takes binary frames only").await;
                    return;
                }
                FromClient::Other => {}
                FromClient::Gone => return,
            },
        }
    }
    close(&mut tx, 1000, "The VM's display closed").await;
}
