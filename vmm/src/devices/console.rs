//! Where the serial console's output goes and its input comes from:
//! standard output and/or a Unix socket. Socket clients (the management
//! plane's web console) get the recent output first, then the live stream,
//! with a header line giving the recent output's length when they need to
//! tell the two apart ([`ConsoleHistory::Framed`]); what they type goes to
//! the guest.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{ConsoleHistory, history_header};

/// Output kept for clients that connect later.
const BACKLOG: usize = 64 * 1024;

/// Output shared by the serial device and the socket's accept thread.
#[derive(Debug, Default)]
struct Sinks {
    stdout: bool,
    clients: Vec<UnixStream>,
    backlog: VecDeque<u8>,
    dropped: u64,
}

/// The serial device's writer.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOut {
    sinks: Arc<Mutex<Sinks>>,
}

impl ConsoleOut {
    /// Output to stdout when `stdout` is set (and to socket clients once a
    /// socket is attached).
    pub fn new(stdout: bool) -> ConsoleOut {
        ConsoleOut {
            sinks: Arc::new(Mutex::new(Sinks {
                stdout,
                ..Sinks::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes lost because a socket client could not keep up.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Adds a socket client, sent the backlog first (after its length's
    /// header line when `history` is framed). Under the sinks' lock, which
    /// every write takes: each byte of output is in the backlog sent or
    /// goes to the client live, never both or neither.
    fn add_client(&self, mut client: UnixStream, history: ConsoleHistory) {
        let mut sinks = self.lock();
        let (a, b) = sinks.backlog.as_slices();
        let header = match history {
            ConsoleHistory::Replay => String::new(),
            ConsoleHistory::Framed => history_header(a.len() + b.len()),
        };
        if client
            .write_all(header.as_bytes())
            .and_then(|()| client.write_all(a))
            .and_then(|()| client.write_all(b))
            .is_ok()
            && client.set_nonblocking(true).is_ok()
        {
            sinks.clients.push(client);
        }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut sinks = self.lock();
        if sinks.stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(buf).and_then(|()| out.flush());
        }
        let mut dropped = 0;
        sinks.clients.retain_mut(|c| match c.write(buf) {
            Ok(n) => {
                dropped += (buf.len() - n) as u64;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                dropped += buf.len() as u64;
                true
            }
            Err(_) => false,
        });
        sinks.dropped += dropped;
        sinks.backlog.extend(buf);
        let excess = sinks.backlog.len().saturating_sub(BACKLOG);
        sinks.backlog.drain(..excess);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Something that takes console input (the serial device's receive FIFO).
pub trait ConsoleInput: Send + Sync + 'static {
    fn input(&self, bytes: &[u8]);
}

/// The console's Unix socket: its accept thread ends and the socket is
/// removed when dropped.
#[derive(Debug)]
pub struct ConsoleSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl ConsoleSocket {
    /// Listens on `path`; each client gets the output (via `out`, the
    /// backlog first as `history` says) and its input goes to `input`.
    pub fn listen(
        path: &Path,
        out: ConsoleOut,
        input: Arc<dyn ConsoleInput>,
        history: ConsoleHistory,
    ) -> std::io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("console".to_owned())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(reader) = client.try_clone() else {
                        continue;
                    };
                    out.add_client(client, history);
                    let input = Arc::clone(&input);
                    let _ = std::thread::Builder::new()
                        .name("console-in".to_owned())
                        .spawn(move || read_input(reader, &*input));
                }
            })?;
        Ok(ConsoleSocket {
            path: path.to_path_buf(),
            stop,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        // Wake the accept thread so it sees the stop flag, then remove the
        // socket.
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_input(mut reader: UnixStream, input: &dyn ConsoleInput) {
    // The writer side made the socket non-blocking; reads block here.
    let _ = reader.set_nonblocking(false);
    let mut buf = [0u8; 256];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => input.input(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::counting::{CountingGuest, assert_rounds_count_on};

    struct Collect(Mutex<Vec<u8>>);

    impl ConsoleInput for Collect {
        fn input(&self, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }

    #[test]
    fn clients_get_backlog_then_live_output_and_send_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let mut out = ConsoleOut::new(false);
        let input = Arc::new(Collect(Mutex::new(Vec::new())));
        let _sock =
            ConsoleSocket::listen(&path, out.clone(), input.clone(), ConsoleHistory::Replay)
                .unwrap();
        out.write_all(b"early ").unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut got = vec![0u8; 6];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"early ");
        // Wait until the accept thread has registered the client.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while out.lock().clients.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        out.write_all(b"late").unwrap();
        let mut got = vec![0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
        client.write_all(b"typed").unwrap();
        while input.0.lock().unwrap().len() < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(&*input.0.lock().unwrap(), b"typed");
        drop(_sock);
        assert!(!path.exists());
    }

    /// Reads a framed socket's header line and history.
    fn read_history(client: &mut UnixStream) -> Vec<u8> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte != *b"\n" {
            client.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        line.pop();
        let len = crate::config::parse_history_header(&line).expect("a header line");
        let mut history = vec![0u8; len];
        client.read_exact(&mut history).unwrap();
        history
    }

    fn wait_for_clients(out: &ConsoleOut, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while out.lock().clients.len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_framed_client_gets_the_historys_length_then_it_then_live_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let mut out = ConsoleOut::new(false);
        let input = Arc::new(Collect(Mutex::new(Vec::new())));
        let _sock =
            ConsoleSocket::listen(&path, out.clone(), input, ConsoleHistory::Framed).unwrap();
        out.write_all(b"early\n").unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        wait_for_clients(&out, 1);
        out.write_all(b"late").unwrap();
        let mut head = vec![0u8; b"sfera-console history 6\nearly\nlate".len()];
        client.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"sfera-console history 6\nearly\nlate");
    }

    #[test]
    fn framed_history_and_live_output_meet_exactly_while_the_guest_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let out = ConsoleOut::new(false);
        let input = Arc::new(Collect(Mutex::new(Vec::new())));
        let _sock =
            ConsoleSocket::listen(&path, out.clone(), input, ConsoleHistory::Framed).unwrap();
        let guest = CountingGuest::start(out.clone());
        // Clients connect one after another while the guest prints: each
        // one's history and live output together count on without a gap.
        assert_rounds_count_on(
            20,
            || out.dropped(),
            || {
                let mut client = UnixStream::connect(&path).unwrap();
                client
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let mut stream = read_history(&mut client);
                let history = stream.len();
                stream.resize(history + 16 * 1024, 0);
                client.read_exact(&mut stream[history..]).unwrap();
                stream
            },
        );
        drop(guest);
    }
}
