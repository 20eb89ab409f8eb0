//! A daemon's end: SIGTERM (what mgmtd, systemd and `kill` send) and
//! SIGINT (Ctrl-C) both stop it cleanly.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The signals that stop a daemon, listened for from the moment this is
/// made (make it before the daemon starts work, so a signal from then on
/// is not lost).
#[derive(Debug)]
pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT; needs a tokio runtime entered.
    pub fn listen() -> std::io::Result<Self> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for one; returns its name, for the log.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
