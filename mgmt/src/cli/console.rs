//! `sfera vm console`: the VM's serial console on this terminal, through
//! mgmtd's console WebSocket (so from any machine that reaches the API).
//! Ctrl-] leaves.

use std::io::{IsTerminal, Read, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};
use futures_util::{SinkExt, StreamExt};
use hyper::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use mgmt::api::console_ws::ConsoleEvent;
use mgmt::client::Client;

/// Ctrl-].
const ESCAPE: u8 = 0x1d;

/// The terminal's settings, put back when dropped.
struct RawTerminal {
    saved: String,
}

impl RawTerminal {
    fn enter() -> Option<Self> {
        let stty = |args: &[&str]| {
            Command::new("stty")
                .args(args)
                .stdin(Stdio::inherit())
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        let saved = String::from_utf8_lossy(&stty(&["-g"])?.stdout)
            .trim()
            .to_owned();
        stty(&["raw", "-echo"])?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = Command::new("stty")
            .arg(&self.saved)
            .stdin(Stdio::inherit())
            .status();
    }
}

/// Attaches this terminal to VM `vm`'s serial console through mgmtd's
/// console WebSocket (what the guest printed lately comes first) until
/// Ctrl-] or, when stdin is not a terminal, until the console ends.
pub(crate) async fn attach(client: &Client, vm: &str, name: &str) -> Result<()> {
    let (stream, authority) = client.connect().await?;
    let url = format!("ws://{authority}/api/v1/vms/{vm}/console");
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("{url:?} is not a console URL"))?;
    if let Some(token) = client.token() {
        request
            .headers_mut()
            .insert(AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| match e {
            WsError::Http(response) => {
                let body = response.body().as_deref().unwrap_or_default();
                let body = String::from_utf8_lossy(body);
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| body.into_owned());
                anyhow!(
                    "mgmtd refused {name}'s console: {message} (HTTP {})",
                    response.status().as_u16()
                )
            }
            e => anyhow!("Cannot open {name}'s console: {e}"),
        })?;
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!("Connected to {name}'s serial console; Ctrl-] leaves.\r");
    }
    let (mut to_vm, mut from_vm) = ws.split();
    let (keys, mut typed) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    // Stdin blocks: a thread reads it. `None` means leave (Ctrl-]); the
    // channel closing means input ended.
    std::thread::spawn(move || {
        let mut input = std::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            match chunk.iter().position(|b| *b == ESCAPE) {
                Some(i) if tty => {
                    let _ = keys.blocking_send(Some(chunk[..i].to_vec()));
                    let _ = keys.blocking_send(None);
                    return;
                }
                _ => {
                    if keys.blocking_send(Some(chunk.to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let raw = if tty { RawTerminal::enter() } else { None };
    let mut out = std::io::stdout();
    let mut input_open = true;
    let result = loop {
        tokio::select! {
            message = from_vm.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                        break Ok(());
                    }
                }
                // Where this power-on's console starts: here, already.
                Some(Ok(Message::Text(text)))
                    if serde_json::from_str::<ConsoleEvent>(&text).is_ok() => {}
                Some(Ok(Message::Text(text))) => {
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                }
                Some(Ok(Message::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(anyhow!("{name}'s console: {e}")),
            },
            key = typed.recv(), if input_open => match key {
                Some(Some(bytes)) => {
                    if !bytes.is_empty() && to_vm.send(Message::binary(bytes)).await.is_err() {
                        break Ok(());
                    }
                }
                Some(None) => break Ok(()),
                // Input ended: show what the VM still says until it closes.
                None => input_open = false,
            },
        }
    };
    drop(raw);
    let _ = to_vm.send(Message::Close(None)).await;
    if tty {
        eprintln!();
    }
    result
}
