//! A QMP client for the few commands mgmtd sends a running QEMU:
//! pause and resume, `system_reset`, `system_powerdown`, `quit`,
//! `query-status`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// The QMP commands mgmtd sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stops the vCPUs (pause).
    Stop,
    /// Runs them again (resume).
    Cont,
    QueryStatus,
    SystemReset,
    /// Presses the ACPI power button: the guest decides what to do.
    SystemPowerdown,
    /// Ends QEMU at once (the power cord).
    Quit,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Stop => "stop",
            Command::Cont => "cont",
            Command::QueryStatus => "query-status",
            Command::SystemReset => "system_reset",
            Command::SystemPowerdown => "system_powerdown",
            Command::Quit => "quit",
        }
    }
}

/// A QMP command that did not return.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("Cannot connect to QMP {}", socket.display())]
    Connect {
        socket: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP {step} failed")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("Bad QMP line {0:?}")]
    BadLine(String),
    #[error("QEMU refused: {desc}")]
    Refused { class: String, desc: String },
    #[error("QMP {command} timed out")]
    Timeout { command: &'static str },
}

/// Sends `command` on the QMP socket and returns its `return` value.
pub async fn execute(socket: &Path, command: Command) -> Result<Value, QmpError> {
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| QmpError::Connect {
                socket: socket.to_owned(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        // The greeting.
        next_reply(&mut lines, true).await?;
        let mut send = async |v: Value| {
            write
                .write_all(format!("{v}\n").as_bytes())
                .await
                .map_err(|source| QmpError::Io {
                    step: "write",
                    source,
                })
        };
        send(json!({ "execute": "qmp_capabilities" })).await?;
        next_reply(&mut lines, false).await?;
        send(json!({ "execute": command.as_str() })).await?;
        next_reply(&mut lines, false).await
    };
    tokio::time::timeout(QMP_TIMEOUT, exchange)
        .await
        .map_err(|_| QmpError::Timeout {
            command: command.as_str(),
        })?
}

/// The next message that is not an event: the greeting, or a command's
/// `return` (an `error` becomes `Err`).
async fn next_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    greeting: bool,
) -> Result<Value, QmpError> {
    loop {
        let Some(line) = lines.next_line().await.map_err(|source| QmpError::Io {
            step: "read",
            source,
        })?
        else {
            return Err(QmpError::Closed);
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            return Err(QmpError::BadLine(line));
        };
        if greeting && v.get("QMP").is_some() {
            return Ok(v);
        }
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            let text = |key: &str, default: &str| e[key].as_str().unwrap_or(default).to_owned();
            return Err(QmpError::Refused {
                class: text("class", "GenericError"),
                desc: text("desc", "unknown error"),
            });
        }
        // An event: not ours.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn commands_skip_events_and_report_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            for reply in [
                r#"{"return": {"status": "running"}}"#,
                r#"{"error": {"class": "GenericError", "desc": "nope"}}"#,
            ] {
                let (s, _) = listener.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"{\"QMP\": {\"version\": {}}}\n")
                    .await
                    .unwrap();
                lines.next_line().await.unwrap();
                w.write_all(b"{\"return\": {}}\n").await.unwrap();
                lines.next_line().await.unwrap();
                w.write_all(b"{\"event\": \"RESET\"}\n").await.unwrap();
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
        });
        let v = execute(&path, Command::QueryStatus).await.unwrap();
        assert_eq!(v["status"], "running");
        let e = execute(&path, Command::SystemReset).await.unwrap_err();
        assert!(
            matches!(&e, QmpError::Refused { class, desc } if class == "GenericError" && desc == "nope"),
            "{e}"
        );
        server.await.unwrap();
    }
}
