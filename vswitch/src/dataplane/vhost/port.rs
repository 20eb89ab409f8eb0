//! A port's socket: as a server it accepts one frontend after another; as
//! a client (OVS's `dpdkvhostuserclient`) it connects and reconnects every
//! second. Each connection gets a fresh [`NetBackend`] behind the
//! [`qemu_compat`] relay; when it ends the port's rings stop and the
//! guest's memory is unmapped, and the port waits for the next one.
//!
//! [`qemu_compat`]: super::qemu_compat

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vhost::vhost_user::{BackendReqHandler, Error as VhostError};

use super::backend::{NetBackend, PortShared};
use super::qemu_compat;
use crate::control_plane::config::SocketMode;

/// Errors starting a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("Cannot listen on {}", socket.display())]
    Bind {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start the thread of port {port}")]
    Thread {
        port: String,
        #[source]
        source: std::io::Error,
    },
}

/// How often a stopping port notices.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How often a client port retries its connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// A running port's control thread.
#[derive(Debug)]
pub struct PortThread {
    stop: Arc<AtomicBool>,
    conn: Arc<Mutex<Option<UnixStream>>>,
    handle: Option<JoinHandle<()>>,
    socket: PathBuf,
    /// Device and inode of the socket file this port bound, so stopping
    /// never removes a socket a newer port bound at the same path.
    bound: Option<(u64, u64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl PortThread {
    /// Starts serving `shared` on `socket`. A server socket is bound here,
    /// so a bad path is reported to the caller.
    pub fn start(
        shared: Arc<PortShared>,
        socket: &Path,
        mode: SocketMode,
    ) -> Result<PortThread, PortError> {
        let listener = match mode {
            SocketMode::Server => {
                let _ = std::fs::remove_file(socket);
                let l = UnixListener::bind(socket).map_err(|source| PortError::Bind {
                    socket: socket.to_owned(),
                    source,
                })?;
                // The daemon's user alone; mgmtd gives the socket to the
                // VM's user.
                datapath::privileges::set_mode(socket, 0o600)
                    .and_then(|()| l.set_nonblocking(true))
                    .map_err(|source| PortError::Bind {
                        socket: socket.to_owned(),
                        source,
                    })?;
                Some(l)
            }
            SocketMode::Client => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let conn = Arc::new(Mutex::new(None));
        let ctx = Ctx {
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
            conn: Arc::clone(&conn),
            socket: socket.to_owned(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("port-{}", shared.name))
            .spawn(move || match listener {
                Some(l) => ctx.serve(&l),
                None => ctx.connect_loop(),
            })
            .map_err(|source| PortError::Thread {
                port: shared.name.clone(),
                source,
            })?;
        Ok(PortThread {
            stop,
            conn,
            handle: Some(handle),
            socket: socket.to_owned(),
            bound: (mode == SocketMode::Server)
                .then(|| file_id(socket))
                .flatten(),
        })
    }

    /// Closes the connection and the socket and waits for the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(c) = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if self.bound.is_some() && self.bound == file_id(&self.socket) {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for PortThread {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.halt();
        }
    }
}

struct Ctx {
    shared: Arc<PortShared>,
    stop: Arc<AtomicBool>,
    conn: Arc<Mutex<Option<UnixStream>>>,
    socket: PathBuf,
}

impl Ctx {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn serve(&self, listener: &UnixListener) {
        while !self.stopping() {
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on the stack, valid for the call.
            let n = unsafe { libc::poll(&mut pfd, 1, STOP_CHECK.as_millis() as i32) };
            if n <= 0 {
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    self.connection(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    datapath::log_limited!(warn, limit: &self.shared.log, port = %self.shared.name, "accept: {e}");
                    std::thread::sleep(STOP_CHECK);
                }
            }
        }
    }

    fn connect_loop(&self) {
        let mut reported = false;
        while !self.stopping() {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => {
                    reported = false;
                    self.connection(stream);
                }
                Err(e) => {
                    if !reported {
                        tracing::info!(port = %self.shared.name, socket = %self.socket.display(),
                            "Waiting for the VMM's socket: {e}");
                        reported = true;
                    }
                    let mut waited = Duration::ZERO;
                    while waited < RECONNECT && !self.stopping() {
                        std::thread::sleep(STOP_CHECK);
                        waited += STOP_CHECK;
                    }
                }
            }
        }
    }

    /// Serves one frontend until it leaves (or the port stops).
    fn connection(&self, vmm: UnixStream) {
        datapath::log_limited!(info, limit: &self.shared.log, port = %self.shared.name, "Frontend connected");
        let (relay_end, handler_end) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(port = %self.shared.name, "socketpair: {e}");
                return;
            }
        };
        if let Ok(c) = vmm.try_clone() {
            *self
                .conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
        }
        if self.stopping() {
            let _ = vmm.shutdown(std::net::Shutdown::Both);
        }
        let relay = std::thread::Builder::new()
            .name(format!("relay-{}", self.shared.name))
            .spawn(move || qemu_compat::relay(vmm, relay_end));
        let backend = Arc::new(Mutex::new(NetBackend::new(Arc::clone(&self.shared))));
        let mut handler = BackendReqHandler::from_stream(handler_end, backend);
        let ended = loop {
            match handler.handle_request() {
                Ok(()) => {}
                Err(e) => break e,
            }
        };
        match ended {
            VhostError::Disconnected | VhostError::PartialMessage => {
                datapath::log_limited!(info, limit: &self.shared.log, port = %self.shared.name, "Frontend disconnected");
            }
            e => {
                datapath::log_limited!(info, limit: &self.shared.log, port = %self.shared.name, "Connection ended: {e}");
            }
        }
        self.shared.reset();
        *self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        drop(handler);
        if let Ok(r) = relay {
            let _ = r.join();
        }
    }
}
