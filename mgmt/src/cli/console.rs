//! `sfera vm console`: the VM's serial console socket on this terminal.
//! Ctrl-] leaves.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

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

/// Attaches this terminal to the console at `socket` until Ctrl-] (or,
/// when stdin is not a terminal, until stdin or the console ends).
pub(crate) fn attach(socket: &Path, name: &str) -> Result<()> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "Cannot connect to the console of {name} at {} (is the VM running on this host?)",
            socket.display()
        )
    })?;
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!("Connected to {name}'s serial console; Ctrl-] leaves.\r");
    }
    let mut from_vm = stream.try_clone()?;
    let output = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_vm.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    let raw = if tty { RawTerminal::enter() } else { None };
    let mut to_vm = stream;
    let mut input = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let (send, leave) = match chunk.iter().position(|b| *b == ESCAPE) {
            Some(i) if tty => (&chunk[..i], true),
            _ => (chunk, false),
        };
        if to_vm.write_all(send).is_err() || leave {
            break;
        }
    }
    drop(raw);
    if tty {
        let _ = to_vm.shutdown(std::net::Shutdown::Both);
        eprintln!();
    } else {
        // Input ended: show what the VM still says until it closes.
        let _ = to_vm.shutdown(std::net::Shutdown::Write);
    }
    let _ = output.join();
    Ok(())
}
