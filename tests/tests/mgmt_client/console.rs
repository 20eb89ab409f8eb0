//! A VM's serial console as the mgmtd tests read it: on its Unix socket
//! ([`console_wait`]) or through mgmtd's WebSocket ([`WsConsole`]), both
//! until a line holds what the test waits for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// One read with the stream's read timeout: `None` when nothing came in
/// time, `Some(0)` at its end.
fn read_or_idle(stream: &mut impl Read, buf: &mut [u8]) -> Result<Option<usize>> {
    match stream.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the VM's serial console socket until `needle` shows up.
pub(crate) fn console_wait(
    socket: &Path,
    send: Option<&str>,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("console {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    if let Some(line) = send {
        s.write_all(format!("{line}\n").as_bytes())?;
    }
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match read_or_idle(&mut s, &mut buf)? {
            None => {}
            Some(0) => bail!(
                "the console closed; it said: {}",
                String::from_utf8_lossy(&seen)
            ),
            Some(n) => {
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if text.lines().any(|l| l.contains(needle)) {
                    return Ok(text.into_owned());
                }
            }
        }
    }
    bail!(
        "no {needle:?} on the console within {timeout:?}; it said: {}",
        String::from_utf8_lossy(&seen)
    )
}

/// Asks mgmtd to upgrade `path` to a WebSocket with a bearer `token`: the
/// connection and the answer's head (status line and headers).
pub(crate) fn ws_upgrade(port: u16, path: &str, token: &str) -> Result<(TcpStream, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(Instant::now() < deadline, "no WebSocket answer");
        match read_or_idle(&mut stream, &mut byte)? {
            None => {}
            Some(0) => bail!("closed: {}", String::from_utf8_lossy(&head)),
            Some(_) => head.push(byte[0]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    Ok((stream, head))
}

/// A VM's serial console through mgmtd's WebSocket
/// (`GET /api/v1/vms/{vm}/console`), as a minimal client: the upgrade, then
/// the server's unmasked binary frames.
pub(crate) struct WsConsole {
    stream: TcpStream,
    pending: Vec<u8>,
    seen: Vec<u8>,
    /// The first two frames, opcode and payload: the session event and
    /// the history.
    opening: Vec<(u8, Vec<u8>)>,
}

impl WsConsole {
    pub(crate) fn open(port: u16, vm: &str, token: &str) -> Result<Self> {
        let (stream, head) = ws_upgrade(port, &format!("/api/v1/vms/{vm}/console"), token)?;
        ensure!(head.starts_with("HTTP/1.1 101"), "console: {head}");
        Ok(WsConsole {
            stream,
            pending: Vec::new(),
            seen: Vec::new(),
            opening: Vec::new(),
        })
    }

    /// The console's first two frames: the session event (text) and the
    /// history (binary).
    pub(crate) fn opening(&mut self, timeout: Duration) -> Result<(String, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        while self.frames() && self.opening.len() < 2 {
            ensure!(
                Instant::now() < deadline,
                "no two frames within {timeout:?}"
            );
            match read_or_idle(&mut self.stream, &mut buf)? {
                None => {}
                Some(0) => bail!("the console connection ended"),
                Some(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        match &self.opening[..] {
            [(1, event), (2, history), ..] => {
                Ok((String::from_utf8_lossy(event).into_owned(), history.clone()))
            }
            other => bail!(
                "the console opened with frames (opcode, bytes) {:?}",
                other
                    .iter()
                    .map(|(op, p)| (op, p.len()))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Moves whole frames from `pending` to `seen`; false on a close frame.
    fn frames(&mut self) -> bool {
        loop {
            let p = &self.pending;
            if p.len() < 2 {
                return true;
            }
            let (len, at) = match p[1] & 0x7f {
                126 if p.len() >= 4 => (usize::from(u16::from_be_bytes([p[2], p[3]])), 4),
                127 if p.len() >= 10 => (
                    usize::try_from(u64::from_be_bytes(p[2..10].try_into().expect("8 bytes")))
                        .unwrap_or(usize::MAX),
                    10,
                ),
                126 | 127 => return true,
                n => (usize::from(n), 2),
            };
            if p.len() < at + len {
                return true;
            }
            let opcode = p[0] & 0x0f;
            if opcode == 8 {
                return false;
            }
            if opcode <= 2 {
                let payload = p[at..at + len].to_vec();
                if self.opening.len() < 2 {
                    self.opening.push((opcode, payload.clone()));
                }
                self.seen.extend_from_slice(&payload);
            }
            self.pending.drain(..at + len);
        }
    }

    /// Reads until a whole line (its newline arrived) contains `needle`;
    /// returns all the text so far.
    pub(crate) fn wait(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            let open = self.frames();
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            // Whole lines only: a line still arriving may be cut short.
            if text
                .split_inclusive('\n')
                .any(|l| l.ends_with('\n') && l.contains(needle))
            {
                return Ok(text);
            }
            ensure!(open, "the console closed before {needle:?}: {text}");
            ensure!(
                Instant::now() < deadline,
                "no {needle:?} on the console within {timeout:?}: {text}"
            );
            match read_or_idle(&mut self.stream, &mut buf)? {
                None => {}
                Some(0) => bail!("the console connection ended before {needle:?}: {text}"),
                Some(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }
}
