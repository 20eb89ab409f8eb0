//! A QMP client for the few commands mgmtd sends a running QEMU:
//! `system_reset`, `system_powerdown`, `quit`, `query-status`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `command` (with `arguments`) on the QMP socket and returns its
/// `return` value.
pub async fn execute(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, String> {
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("Cannot connect to QMP {}: {e}", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        // The greeting.
        next_reply(&mut lines, true).await?;
        let mut send = async |v: Value| {
            write
                .write_all(format!("{v}\n").as_bytes())
                .await
                .map_err(|e| format!("QMP write failed: {e}"))
        };
        send(json!({ "execute": "qmp_capabilities" })).await?;
        next_reply(&mut lines, false).await?;
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        send(msg).await?;
        next_reply(&mut lines, false).await
    };
    tokio::time::timeout(QMP_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("QMP {command} timed out"))?
}

/// The next message that is not an event: the greeting, or a command's
/// `return` (an `error` becomes `Err`).
async fn next_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    greeting: bool,
) -> Result<Value, String> {
    loop {
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| format!("QMP read failed: {e}"))?
        else {
            return Err("QEMU closed the QMP connection".to_owned());
        };
        let v: Value = serde_json::from_str(&line).map_err(|_| format!("Bad QMP line {line:?}"))?;
        if greeting && v.get("QMP").is_some() {
            return Ok(v);
        }
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(format!(
                "QEMU refused: {}",
                e["desc"].as_str().unwrap_or("unknown error")
            ));
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
        let v = execute(&path, "query-status", None).await.unwrap();
        assert_eq!(v["status"], "running");
        let e = execute(&path, "system_reset", None).await.unwrap_err();
        assert!(e.contains("nope"), "{e}");
        server.await.unwrap();
    }
}
