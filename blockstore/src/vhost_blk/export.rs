//! A running export: a device listening on its socket in its own thread,
//! serving one frontend after another until stopped.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use datapath::log_limit::LogLimit;
use vhost::vhost_user::Listener;
use vhost_user_backend::ShutdownHandle;

use super::device::{BlkDevice, DeviceError};

/// A device serving on a socket.
pub struct ExportServer {
    device: BlkDevice,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    active: Arc<Mutex<Option<ShutdownHandle>>>,
    thread: Option<JoinHandle<()>>,
    /// A second descriptor of the listening socket, to wake the thread's
    /// accept() with shutdown(2) when the export stops. Connecting to the
    /// socket's path did that until mgmtd began giving the socket to the
    /// VM's user (0600): a daemon running as its own user can no longer
    /// connect to it, and stopping the export hung in join().
    wake: OwnedFd,
}

impl std::fmt::Debug for ExportServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportServer")
            .field("socket", &self.socket)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl ExportServer {
    /// Binds `socket` (replacing a stale one) and starts serving.
    pub fn start(device: BlkDevice, socket: &Path) -> Result<Self, DeviceError> {
        let mut listener = Listener::new(socket, true).map_err(|e| DeviceError::VhostUser {
            socket: socket.to_owned(),
            message: e.to_string(),
        })?;
        // SAFETY: the listener's descriptor stays open during this call,
        // which only duplicates it.
        let wake = unsafe { BorrowedFd::borrow_raw(listener.as_raw_fd()) }
            .try_clone_to_owned()
            .map_err(|e| DeviceError::VhostUser {
                socket: socket.to_owned(),
                message: format!("cannot duplicate the listening socket: {e}"),
            })?;
        // The daemon's user alone; mgmtd gives the socket to the VM's user.
        datapath::privileges::set_mode(socket, 0o600).map_err(|e| DeviceError::VhostUser {
            socket: socket.to_owned(),
            message: format!("cannot set the socket's mode: {e}"),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(Mutex::new(None));
        let thread = {
            let (device, stop, active) = (device.clone(), Arc::clone(&stop), Arc::clone(&active));
            let socket = socket.to_owned();
            std::thread::Builder::new()
                .name("blk-export".to_owned())
                .spawn(move || {
                    // A frontend that connects and hangs up in a loop gets
                    // one line a second.
                    let log = LogLimit::bursts();
                    while !stop.load(Ordering::Acquire) {
                        match device.serve_connection(&mut listener, &stop, &active) {
                            Ok(()) => datapath::log_limited!(
                                info,
                                limit: &log,
                                socket = %socket.display(),
                                "Frontend disconnected"
                            ),
                            Err(e) => datapath::log_limited!(
                                warn,
                                limit: &log,
                                socket = %socket.display(),
                                "Connection ended: {e}"
                            ),
                        }
                    }
                })
                .map_err(|source| DeviceError::Register { queue: 0, source })?
        };
        Ok(ExportServer {
            device,
            socket: socket.to_owned(),
            stop,
            active,
            thread: Some(thread),
            wake,
        })
    }

    /// The device.
    pub fn device(&self) -> &BlkDevice {
        &self.device
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Blocks until the export stops by itself (it does not, unless its
    /// thread fails): the daemon's single-export mode.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Disconnects the frontend, stops listening and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            handle.shutdown();
        }
        // Wake an accept() that waits for the next frontend: on Linux,
        // shutdown(2) of a listening socket makes it fail at once.
        // SAFETY: shutdown(2) on a descriptor this server owns.
        unsafe { libc::shutdown(self.wake.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = thread.join();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for ExportServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
