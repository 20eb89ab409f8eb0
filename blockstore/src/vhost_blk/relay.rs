//! The relay between a frontend and vhost-user-backend's message handler,
//! which answers the inflight messages (GET_INFLIGHT_FD, SET_INFLIGHT_FD)
//! itself and passes every other message through unchanged.
//!
//! Why a relay: vhost-user-backend 0.24 answers both messages with an
//! error, and its handler (`VhostUserHandler`) is private, so it can be
//! neither wrapped nor given these two messages; replacing it would mean
//! writing our own handler for the thirty other messages and our own
//! per-queue epoll threads, to change two. The relay keeps the crate's
//! handler for everything else, at the cost of one more hop per control
//! message (never per I/O: the rings are in shared memory).
//!
//! The relay reads only message headers (and the two inflight messages,
//! and SET_PROTOCOL_FEATURES to know what was negotiated); messages larger
//! than vhost-user allows end the connection, as they would in the crate.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost::vhost_user::message::{FrontendReq, MAX_MSG_SIZE, VhostUserInflight};
use vhost_user_backend::VhostUserDaemon;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::device::BlkDevice;

const HEADER_LEN: usize = 12;
/// The most descriptors one message carries (vhost's limit too).
const MAX_FDS: usize = 32;
const FLAG_VERSION_1: u32 = 0x1;
const FLAG_VERSION_MASK: u32 = 0x3;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
/// VhostUserInflight on the wire: two u64, two u16, padding to 24.
const INFLIGHT_LEN: usize = 24;

/// One vhost-user message as read off a socket.
struct Message {
    request: u32,
    flags: u32,
    body: Vec<u8>,
    files: Vec<File>,
}

impl Message {
    fn encode(request: u32, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&request.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    /// Reads one message; None at the end of the stream.
    fn read(sock: &UnixStream) -> io::Result<Option<Message>> {
        let mut header = [0u8; HEADER_LEN];
        let mut fds = [-1 as RawFd; MAX_FDS];
        let mut iov = [libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: HEADER_LEN,
        }];
        // SAFETY: the iovec points into `header`, which outlives the call
        // and may hold any bytes.
        let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut fds) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let files = fds[..nfds]
            .iter()
            // SAFETY: recv_with_fds hands the caller `nfds` new descriptors
            // that nothing else owns.
            .map(|&fd| unsafe { File::from_raw_fd(fd) })
            .collect();
        if n == 0 {
            return Ok(None);
        }
        (&*sock).read_exact(&mut header[n..])?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let size = word(8) as usize;
        if size > MAX_MSG_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {size}-byte message"),
            ));
        }
        let mut body = vec![0u8; size];
        (&*sock).read_exact(&mut body)?;
        Ok(Some(Message {
            request: word(0),
            flags: word(4),
            body,
            files,
        }))
    }

    /// Writes the message, its descriptors with its first bytes.
    fn write(&self, sock: &UnixStream) -> io::Result<()> {
        let fds: Vec<RawFd> = self.files.iter().map(AsRawFd::as_raw_fd).collect();
        send(
            sock,
            &Message::encode(self.request, self.flags, &self.body),
            &fds,
        )
    }

    fn is(&self, request: FrontendReq) -> bool {
        self.request == u32::from(request)
    }
}

fn send(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let sent = sock
        .send_with_fds(&[bytes], fds)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    (&*sock).write_all(&bytes[sent..])
}

/// A relay serving one connection.
pub(crate) struct Relay {
    frontend: UnixStream,
    handler: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Connects `daemon` to a relay of `frontend`, through a socket in a
    /// private directory, and starts relaying.
    pub(crate) fn start(
        frontend: UnixStream,
        daemon: &mut VhostUserDaemon<BlkDevice>,
        device: &BlkDevice,
    ) -> io::Result<Relay> {
        let handler = connect_daemon(daemon)?;
        let replies = Arc::new(Mutex::new(frontend.try_clone()?));
        let up = Upstream {
            frontend: frontend.try_clone()?,
            handler: handler.try_clone()?,
            replies: Arc::clone(&replies),
            device: device.clone(),
            protocol: VhostUserProtocolFeatures::empty(),
            tracking: false,
        };
        let down = (handler.try_clone()?, replies);
        let threads = vec![
            std::thread::Builder::new()
                .name("blk-relay-req".to_owned())
                .spawn(move || up.run())?,
            std::thread::Builder::new()
                .name("blk-relay-rep".to_owned())
                .spawn(move || relay_replies(&down.0, &down.1))?,
        ];
        Ok(Relay {
            frontend,
            handler,
            threads,
        })
    }

    /// Closes both sides and waits for the relay's threads.
    pub(crate) fn finish(self) {
        let _ = self.frontend.shutdown(Shutdown::Both);
        let _ = self.handler.shutdown(Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A directory only this user can enter, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "sfera-blk-relay-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `daemon` on a new connection and returns our end of it. The
/// crate connects only to a path (or accepts on a listener), never to a
/// socket pair, so the path is in a private directory, gone once connected.
fn connect_daemon(daemon: &mut VhostUserDaemon<BlkDevice>) -> io::Result<UnixStream> {
    let dir = PrivateDir::new()?;
    let path = dir.0.join("handler.sock");
    let listener = UnixListener::bind(&path)?;
    let path = path
        .to_str()
        .ok_or_else(|| io::Error::other("The temporary directory is not UTF-8"))?;
    daemon
        .start_client(path)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let (stream, _) = listener.accept()?;
    Ok(stream)
}

/// Replies from the handler go to the frontend unchanged; when the handler
/// ends the connection, the frontend's side closes too.
fn relay_replies(handler: &UnixStream, frontend: &Mutex<UnixStream>) {
    while let Ok(Some(message)) = Message::read(handler) {
        let frontend = frontend
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if message.write(&frontend).is_err() {
            break;
        }
    }
    let frontend = frontend
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = frontend.shutdown(Shutdown::Both);
}

/// The frontend's requests: the inflight ones answered here, the others
/// passed to the handler.
struct Upstream {
    frontend: UnixStream,
    handler: UnixStream,
    replies: Arc<Mutex<UnixStream>>,
    device: BlkDevice,
    protocol: VhostUserProtocolFeatures,
    /// Whether an inflight area is set up on this connection.
    tracking: bool,
}

/// A frontend that sends garbage and reconnects in a loop gets a few lines
/// and then a count.
static CONNECTION_LOG: datapath::log_limit::LogLimit = datapath::log_limit::LogLimit::bursts();

impl Upstream {
    fn run(mut self) {
        loop {
            let message = match Message::read(&self.frontend) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    datapath::log_limited!(warn, limit: &CONNECTION_LOG, "Ending a vhost-user connection: {e}");
                    break;
                }
            };
            if let Err(e) = self.relay(message) {
                datapath::log_limited!(warn, limit: &CONNECTION_LOG, "Ending a vhost-user connection: {e}");
                break;
            }
        }
        // The handler sees the end of the connection and stops.
        let _ = self.handler.shutdown(Shutdown::Both);
    }

    fn relay(&mut self, message: Message) -> io::Result<()> {
        let inflight = self
            .protocol
            .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD);
        if message.is(FrontendReq::SET_PROTOCOL_FEATURES)
            && let Ok(bytes) = <[u8; 8]>::try_from(&message.body[..])
        {
            self.protocol =
                VhostUserProtocolFeatures::from_bits_truncate(u64::from_le_bytes(bytes));
        }
        // Before the feature is negotiated, the handler refuses these as
        // the protocol says.
        if inflight && message.is(FrontendReq::GET_INFLIGHT_FD) {
            return self.get_inflight_fd(&message);
        }
        if inflight && message.is(FrontendReq::SET_INFLIGHT_FD) {
            return self.set_inflight_fd(message);
        }
        message.write(&self.handler)?;
        if self.tracking && message.is(FrontendReq::SET_VRING_KICK) {
            // The guest may wait for requests the previous backend left in
            // flight and never kick again: the ring's first kick is ours.
            if let Some(kick) = message.files.first() {
                kick_once(kick);
            }
        }
        Ok(())
    }

    fn get_inflight_fd(&mut self, message: &Message) -> io::Result<()> {
        let asked = parse_inflight(message)?;
        let (file, area) = self
            .device
            .get_inflight(&asked)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut body = Vec::with_capacity(INFLIGHT_LEN);
        body.extend_from_slice(&area.mmap_size.to_le_bytes());
        body.extend_from_slice(&area.mmap_offset.to_le_bytes());
        body.extend_from_slice(&area.num_queues.to_le_bytes());
        body.extend_from_slice(&area.queue_size.to_le_bytes());
        body.resize(INFLIGHT_LEN, 0);
        let bytes = Message::encode(message.request, FLAG_VERSION_1 | FLAG_REPLY, &body);
        let frontend = self
            .replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        send(&frontend, &bytes, &[file.as_raw_fd()])
    }

    fn set_inflight_fd(&mut self, mut message: Message) -> io::Result<()> {
        let area = parse_inflight(&message)?;
        if message.files.len() != 1 {
            return Err(io::Error::other("SET_INFLIGHT_FD without exactly one fd"));
        }
        let file = message.files.remove(0);
        let result = self.device.set_inflight(&area, &file);
        self.tracking = result.is_ok();
        if message.flags & FLAG_NEED_REPLY != 0
            && self.protocol.contains(VhostUserProtocolFeatures::REPLY_ACK)
        {
            let status = u64::from(result.is_err()).to_le_bytes();
            let bytes = Message::encode(message.request, FLAG_VERSION_1 | FLAG_REPLY, &status);
            let frontend = self
                .replies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            send(&frontend, &bytes, &[])?;
        }
        // As the handler does for a request it cannot carry out.
        result.map_err(|e| io::Error::other(e.to_string()))
    }
}

/// The body of an inflight message, checked as vhost checks the others.
fn parse_inflight(message: &Message) -> io::Result<VhostUserInflight> {
    let body = &message.body;
    if message.flags & FLAG_VERSION_MASK != FLAG_VERSION_1 || body.len() != INFLIGHT_LEN {
        return Err(io::Error::other("A malformed inflight message"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let u16_at = |i: usize| u16::from_le_bytes(body[i..i + 2].try_into().expect("2 bytes"));
    Ok(VhostUserInflight::new(
        u64_at(0),
        u64_at(8),
        u16_at(16),
        u16_at(18),
    ))
}

/// Signals the kick eventfd once, if it is a nonblocking eventfd (QEMU's
/// are): the frontend's descriptor could be anything, and writing to a
/// full blocking one would stall the relay.
fn kick_once(kick: &File) {
    let fd = kick.as_raw_fd();
    let is_eventfd = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]");
    // SAFETY: F_GETFL on a descriptor `kick` owns; no memory involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if is_eventfd && flags >= 0 && flags & libc::O_NONBLOCK != 0 {
        let _ = (&*kick).write(&1u64.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(request: FrontendReq, flags: u32, body: &[u8]) -> Vec<u8> {
        Message::encode(u32::from(request), flags, body)
    }

    #[test]
    fn messages_pass_with_their_descriptors() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let file = tempfile::tempfile().expect("file");
        let bytes = message(FrontendReq::SET_VRING_KICK, FLAG_VERSION_1, &[0; 8]);
        send(&a, &bytes, &[file.as_raw_fd()]).expect("send");
        let m = Message::read(&b).expect("read").expect("a message");
        assert!(m.is(FrontendReq::SET_VRING_KICK));
        assert_eq!(
            (m.flags, m.body.len(), m.files.len()),
            (FLAG_VERSION_1, 8, 1)
        );
        drop(a);
        assert!(Message::read(&b).expect("end").is_none(), "end of stream");
    }

    #[test]
    fn an_oversized_message_ends_the_connection() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let mut header = message(FrontendReq::SET_CONFIG, FLAG_VERSION_1, &[]);
        header[8..12].copy_from_slice(&(MAX_MSG_SIZE as u32 + 1).to_le_bytes());
        (&a).write_all(&header).expect("write");
        assert!(Message::read(&b).is_err());
    }

    #[test]
    fn inflight_bodies_are_checked() {
        let read = |flags, body: &[u8]| {
            let (a, b) = UnixStream::pair().expect("socket pair");
            send(&a, &message(FrontendReq::GET_INFLIGHT_FD, flags, body), &[]).expect("send");
            parse_inflight(&Message::read(&b).expect("read").expect("a message"))
        };
        let mut body = [0u8; INFLIGHT_LEN];
        body[0..8].copy_from_slice(&4096u64.to_le_bytes());
        body[16..18].copy_from_slice(&2u16.to_le_bytes());
        body[18..20].copy_from_slice(&128u16.to_le_bytes());
        let parsed = read(FLAG_VERSION_1, &body).expect("a well-formed body");
        assert_eq!(
            (parsed.mmap_size, parsed.num_queues, parsed.queue_size),
            (4096, 2, 128)
        );
        assert!(read(FLAG_VERSION_1, &body[..20]).is_err(), "short");
        assert!(read(0x2, &body).is_err(), "another protocol version");
    }

    /// A new eventfd with `flags`.
    fn eventfd(flags: i32) -> File {
        // SAFETY: eventfd(2) with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, flags | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd");
        // SAFETY: a new descriptor nothing else owns.
        unsafe { File::from_raw_fd(fd) }
    }

    /// Whether the eventfd was signalled (read without blocking).
    fn signalled(file: &File) -> bool {
        // SAFETY: F_SETFL on a descriptor `file` owns; no memory involved.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        (&*file).read(&mut [0u8; 8]).is_ok()
    }

    #[test]
    fn only_a_nonblocking_eventfd_is_kicked() {
        let nonblocking = eventfd(libc::EFD_NONBLOCK);
        kick_once(&nonblocking);
        assert!(signalled(&nonblocking));

        // A blocking one could stall the relay when its counter is full.
        let blocking = eventfd(0);
        kick_once(&blocking);
        assert!(!signalled(&blocking));

        let plain = tempfile::tempfile().expect("file");
        kick_once(&plain);
        assert_eq!(plain.metadata().expect("stat").len(), 0, "not written");
    }
}
