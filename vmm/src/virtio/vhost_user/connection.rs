//! One vhost-user session with a backend: reaching the socket (connect to
//! a listening backend, or listen for one, as QEMU's server mode does), the
//! handshake (owner, features, protocol features, queue count), handing the
//! driver's rings to the backend, and doing it all again after the backend
//! restarts.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::config::SocketMode;
use crate::virtio::Activation;

/// How long the VMM waits for a backend to connect to a listening socket,
/// or for a restarted backend to come back.
pub const BACKEND_WAIT: Duration = Duration::from_secs(30);

/// Protocol features the frontend asks for (when the backend has them).
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
}

/// Errors talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("Cannot connect to the backend at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot listen for the backend at {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("No backend connected to {path} within {secs} s")]
    NoBackend { path: PathBuf, secs: u64 },
    #[error("vhost-user {step} failed")]
    Protocol {
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("Queue {queue}'s {ring} at {addr:#x} is not in guest memory")]
    BadRing {
        queue: usize,
        ring: &'static str,
        addr: u64,
    },
    #[error("Guest memory region without a file cannot be shared")]
    Memory(#[source] vhost::Error),
}

fn step(step: &'static str) -> impl FnOnce(vhost::Error) -> SessionError {
    move |source| SessionError::Protocol { step, source }
}

/// Where the backend is.
#[derive(Debug)]
pub struct Endpoint {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Endpoint {
    /// For `listen`, binds the socket now (replacing a stale one).
    pub fn new(path: &Path, mode: SocketMode) -> Result<Endpoint, SessionError> {
        let listener = match mode {
            SocketMode::Connect => None,
            SocketMode::Listen => {
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path).map_err(|source| SessionError::Listen {
                    path: path.to_path_buf(),
                    source,
                })?;
                l.set_nonblocking(true)
                    .map_err(|source| SessionError::Listen {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some(l)
            }
        };
        Ok(Endpoint {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A stream to the backend, waiting up to `wait` (until `stop` says so).
    pub fn reach(
        &self,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<UnixStream, SessionError> {
        let deadline = Instant::now() + wait;
        loop {
            let attempt = match &self.listener {
                Some(l) => l.accept().map(|(s, _)| s),
                None => UnixStream::connect(&self.path),
            };
            match attempt {
                Ok(s) => {
                    s.set_nonblocking(false)
                        .map_err(|source| SessionError::Connect {
                            path: self.path.clone(),
                            source,
                        })?;
                    return Ok(s);
                }
                Err(e) if Instant::now() >= deadline || stop() => {
                    return Err(if self.listener.is_some() {
                        SessionError::NoBackend {
                            path: self.path.clone(),
                            secs: wait.as_secs(),
                        }
                    } else {
                        SessionError::Connect {
                            path: self.path.clone(),
                            source: e,
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A live session.
pub struct Session {
    pub frontend: Frontend,
    pub backend_features: u64,
    pub protocol: VhostUserProtocolFeatures,
    /// Queues the backend serves (1 without MQ).
    pub queue_num: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("backend_features", &self.backend_features)
            .field("protocol", &self.protocol)
            .field("queue_num", &self.queue_num)
            .finish()
    }
}

impl Session {
    /// The handshake: owner, features, protocol features, queue count.
    pub fn open(stream: UnixStream, max_queues: u64) -> Result<Session, SessionError> {
        let mut frontend = Frontend::from_stream(stream, max_queues);
        frontend.set_owner().map_err(step("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(step("GET_FEATURES"))?;
        let mut protocol = VhostUserProtocolFeatures::empty();
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend
                .get_protocol_features()
                .map_err(step("GET_PROTOCOL_FEATURES"))?;
            protocol = offered & wanted_protocol_features();
            frontend
                .set_protocol_features(protocol)
                .map_err(step("SET_PROTOCOL_FEATURES"))?;
        }
        let queue_num = if protocol.contains(VhostUserProtocolFeatures::MQ) {
            frontend.get_queue_num().map_err(step("GET_QUEUE_NUM"))?
        } else {
            1
        };
        Ok(Session {
            frontend,
            backend_features,
            protocol,
            queue_num,
        })
    }

    /// Whether the backend's socket has hung up.
    pub fn hung_up(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.frontend.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call; poll(2)
        // only writes its `revents`.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Hands the driver's rings to the backend. `from_used` starts each
    /// ring at its used index (after a reconnect) instead of 0.
    pub fn start(
        &mut self,
        activation: &Activation,
        backend_features: u64,
        from_used: bool,
    ) -> Result<(), SessionError> {
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let features =
            (backend_features & self.backend_features) | (self.backend_features & protocol_bit);
        self.frontend
            .set_features(features)
            .map_err(step("SET_FEATURES"))?;
        let mem = &activation.ram.memory;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(SessionError::Memory)?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(step("SET_MEM_TABLE"))?;
        // vhost-user rings are given as addresses in this process, which
        // the backend translates through the memory table.
        let host = |queue: usize, ring: &'static str, addr: u64, len: usize| {
            let bad = SessionError::BadRing { queue, ring, addr };
            if !mem.check_range(GuestAddress(addr), len) {
                return Err(bad);
            }
            mem.get_host_address(GuestAddress(addr))
                .map(|p| p as u64)
                .map_err(|_| bad)
        };
        for q in &activation.queues {
            let size = usize::from(q.size);
            let config = VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: host(q.index, "descriptor table", q.desc, 16 * size)?,
                used_ring_addr: host(q.index, "used ring", q.used, 6 + 8 * size)?,
                avail_ring_addr: host(q.index, "available ring", q.avail, 6 + 2 * size)?,
                log_addr: None,
            };
            let base = if from_used {
                mem.read_obj::<u16>(GuestAddress(q.used + 2)).map_err(|_| {
                    SessionError::BadRing {
                        queue: q.index,
                        ring: "used ring",
                        addr: q.used,
                    }
                })?
            } else {
                0
            };
            let f = &mut self.frontend;
            f.set_vring_num(q.index, q.size)
                .map_err(step("SET_VRING_NUM"))?;
            f.set_vring_addr(q.index, &config)
                .map_err(step("SET_VRING_ADDR"))?;
            f.set_vring_base(q.index, base)
                .map_err(step("SET_VRING_BASE"))?;
            f.set_vring_call(q.index, &q.call)
                .map_err(step("SET_VRING_CALL"))?;
            f.set_vring_kick(q.index, &q.kick)
                .map_err(step("SET_VRING_KICK"))?;
            if features & protocol_bit != 0 {
                f.set_vring_enable(q.index, true)
                    .map_err(step("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// Stops the rings (driver reset): GET_VRING_BASE stops a ring.
    pub fn stop(&mut self, activation: &Activation) {
        for q in &activation.queues {
            if let Err(e) = self.frontend.get_vring_base(q.index) {
                tracing::warn!("GET_VRING_BASE of queue {} failed: {e}", q.index);
            }
        }
    }
}
