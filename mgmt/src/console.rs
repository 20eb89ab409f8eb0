//! VM serial consoles for the web: one hub per VM while someone watches.
//!
//! QEMU's serial chardev is a Unix socket that takes one client at a time.
//! A hub is that one client: it reads everything the guest prints into a
//! scrollback buffer and out to every viewer, and writes what any viewer
//! types. A viewer that joins gets the scrollback first (seeded when the
//! hub starts with what the guest printed before, [`History`], so the boot
//! messages printed before anyone looked are there), then the live output.
//! The hub lets go of the socket when its last viewer leaves.
//!
//! A hub belongs to one power-on (one hypervisor process, [`PowerOn`]): a
//! viewer of a later power-on never joins it, even before it has seen its
//! socket close, and its viewers are told it closed. So no viewer of a new
//! boot is shown an earlier one. The scrollback a viewer is shown has the
//! terminal's queries taken out ([`queries`]): its terminal would answer
//! them into the guest.

mod queries;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};

/// Bytes of output a new viewer is shown first.
pub const SCROLLBACK: usize = 64 * 1024;
/// Chunks of output a slow viewer may fall behind before it loses some.
const FANOUT: usize = 1024;

/// How long a console socket may take to send its framed history.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors attaching to a console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("Cannot connect to the serial console {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The serial console {} sent no history", socket.display())]
    History {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a new hub gets what the guest printed before it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// The tail of a log the hypervisor writes beside the socket (QEMU's
    /// chardev log), read once connected. Not seamless: QEMU accepts the
    /// connection in its own time, so what the guest prints between the
    /// read and the accept is in neither, and what it prints between the
    /// accept and the read is in both.
    Log(PathBuf),
    /// A header line giving its length and the history itself, at the
    /// start of the socket's stream (sfera-vmm's framed history,
    /// `vmm::config::ConsoleHistory::Framed`): the history ends where the
    /// live output starts, nothing lost or repeated.
    Framed,
    /// None: whatever the socket sends is live output (a sfera-vmm started
    /// with its plain replay, by an older mgmtd).
    Live,
}

/// What a viewer receives.
#[derive(Debug, Clone)]
pub enum Output {
    Data(Bytes),
    /// The console closed (the VM powered off); no more output.
    Closed,
}

/// One power-on of a VM: its hypervisor process, told from a later one
/// that got the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerOn {
    pub pid: u32,
    /// Clock ticks since the host booted ([`crate::pid::start_ticks`]).
    pub start_ticks: Option<u64>,
}

impl PowerOn {
    /// The power-on whose hypervisor process is `pid`.
    pub fn of(pid: u32) -> PowerOn {
        PowerOn {
            pid,
            start_ticks: crate::pid::start_ticks(pid),
        }
    }
}

/// Last `SCROLLBACK` bytes of output.
#[derive(Debug, Default)]
struct Scrollback {
    bytes: VecDeque<u8>,
    closed: bool,
}

impl Scrollback {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let extra = self.bytes.len().saturating_sub(SCROLLBACK);
        self.bytes.drain(..extra);
    }
}

/// One VM's console while it has viewers.
#[derive(Debug)]
struct Hub {
    power_on: PowerOn,
    scrollback: Mutex<Scrollback>,
    output: broadcast::Sender<Output>,
    input: mpsc::Sender<Bytes>,
}

impl Hub {
    fn scrollback(&self) -> std::sync::MutexGuard<'_, Scrollback> {
        self.scrollback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the console closed and tells its viewers, once.
    fn close(&self) {
        let mut s = self.scrollback();
        if !s.closed {
            s.closed = true;
            let _ = self.output.send(Output::Closed);
        }
    }
}

/// A viewer of a console: the scrollback at the time it joined, then
/// every output after it.
#[derive(Debug)]
pub struct Viewer {
    hub: Arc<Hub>,
    /// What the guest printed before the viewer joined, queries taken out.
    pub scrollback: Bytes,
    pub output: broadcast::Receiver<Output>,
    /// The console had closed already when the viewer joined.
    pub closed: bool,
}

impl Viewer {
    /// Sends keystrokes to the guest; false once the console is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.hub.input.send(data).await.is_ok()
    }
}

/// The hubs, by VM id.
#[derive(Debug, Default)]
pub struct Consoles {
    hubs: Mutex<HashMap<String, Weak<Hub>>>,
}

/// The last `max` bytes of a file, from the start of a line when the cut
/// falls inside one.
pub fn log_tail(path: &Path, max: usize) -> Vec<u8> {
    let Ok(mut f) = crate::jail::open_vm_file(path, false) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let max = u64::try_from(max).unwrap_or(u64::MAX);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if f.read_to_end(&mut out).is_err() {
        return Vec::new();
    }
    if start > 0
        && let Some(nl) = out.iter().position(|b| *b == b'\n')
    {
        out.drain(..=nl);
    }
    out
}

impl Consoles {
    /// Joins the console hub of the VM's `power_on`, starting one
    /// (connected to `socket`, its scrollback from `history`) when it has
    /// none; a hub of an earlier power-on is closed.
    pub async fn attach(
        &self,
        vm_id: &str,
        power_on: PowerOn,
        socket: &Path,
        history: &History,
    ) -> Result<Viewer, ConsoleError> {
        if let Some(v) = self.join(vm_id, power_on) {
            return Ok(v);
        }
        let mut stream =
            UnixStream::connect(socket)
                .await
                .map_err(|source| ConsoleError::Connect {
                    socket: socket.to_owned(),
                    source,
                })?;
        let mut scrollback = Scrollback::default();
        match history {
            History::Log(log) => scrollback.push(&log_tail(log, SCROLLBACK)),
            History::Framed => read_framed_history(&mut stream, &mut scrollback)
                .await
                .map_err(|source| ConsoleError::History {
                    socket: socket.to_owned(),
                    source,
                })?,
            History::Live => {}
        }
        let (output, _) = broadcast::channel(FANOUT);
        let (input, input_rx) = mpsc::channel(64);
        let hub = Arc::new(Hub {
            power_on,
            scrollback: Mutex::new(scrollback),
            output,
            input,
        });
        {
            let mut hubs = self
                .hubs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Another viewer may have started one meanwhile: use theirs.
            if let Some(other) = hubs.get(vm_id).and_then(Weak::upgrade) {
                if other.power_on == power_on && !other.scrollback().closed {
                    drop(hubs);
                    return Ok(Self::viewer(other));
                }
                if other.power_on != power_on {
                    other.close();
                }
            }
            hubs.insert(vm_id.to_owned(), Arc::downgrade(&hub));
        }
        tokio::spawn(pump(
            stream,
            Arc::downgrade(&hub),
            input_rx,
            vm_id.to_owned(),
        ));
        Ok(Self::viewer(hub))
    }

    fn join(&self, vm_id: &str, power_on: PowerOn) -> Option<Viewer> {
        let hub = self
            .hubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(vm_id)
            .and_then(Weak::upgrade)?;
        if hub.power_on != power_on {
            // The VM has powered on again since: that console is over,
            // whether or not its socket has said so yet.
            hub.close();
            return None;
        }
        if hub.scrollback().closed {
            return None;
        }
        Some(Self::viewer(hub))
    }

    fn viewer(hub: Arc<Hub>) -> Viewer {
        // Under the scrollback's lock, so that the pump's next chunk goes
        // either into the copy or to the receiver, not both or neither.
        let (bytes, output, closed) = {
            let s = hub.scrollback();
            let bytes: Vec<u8> = s.bytes.iter().copied().collect();
            (bytes, hub.output.subscribe(), s.closed)
        };
        let scrollback = Bytes::from(queries::strip(&bytes));
        Viewer {
            hub,
            scrollback,
            output,
            closed,
        }
    }
}

/// Reads a framed history (`vmm::config::history_header`, then that many
/// bytes) off the start of `stream` into `scrollback`, from the start of a
/// line when it was cut. Byte by byte up to the header's end, so that no
/// live output is read ahead.
async fn read_framed_history(
    stream: &mut UnixStream,
    scrollback: &mut Scrollback,
) -> std::io::Result<()> {
    let read = async {
        let mut line = Vec::new();
        loop {
            let byte = stream.read_u8().await?;
            if byte == b'\n' {
                break;
            }
            line.push(byte);
            if line.len() >= vmm::config::HISTORY_HEADER_MAX {
                break;
            }
        }
        let len = vmm::config::parse_history_header(&line).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "The history's header is {:?}",
                    String::from_utf8_lossy(&line)
                ),
            )
        })?;
        let mut left = len;
        let mut buf = vec![0u8; 16 * 1024];
        while left > 0 {
            let n = left.min(buf.len());
            stream.read_exact(&mut buf[..n]).await?;
            scrollback.push(&buf[..n]);
            left -= n;
        }
        if len >= SCROLLBACK
            && let Some(nl) = scrollback.bytes.iter().position(|b| *b == b'\n')
        {
            scrollback.bytes.drain(..=nl);
        }
        Ok(())
    };
    tokio::time::timeout(HISTORY_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Moves bytes between the console socket and the hub until the socket
/// closes or the last viewer leaves.
async fn pump(stream: UnixStream, hub: Weak<Hub>, mut input: mpsc::Receiver<Bytes>, vm: String) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(vm, "Console read failed: {e}");
                        break;
                    }
                };
                let Some(hub) = hub.upgrade() else { return };
                let data = Bytes::copy_from_slice(&buf[..n]);
                let mut s = hub.scrollback();
                if s.closed {
                    // A later power-on's hub took over.
                    return;
                }
                s.push(&data);
                // No receiver is not an error: viewers come and go.
                let _ = hub.output.send(Output::Data(data));
            }
            keys = input.recv() => {
                // None: every viewer left (the hub, which holds the
                // sender, is gone).
                let Some(keys) = keys else { return };
                if let Err(e) = wr.write_all(&keys).await {
                    tracing::debug!(vm, "Console write failed: {e}");
                    break;
                }
            }
        }
    }
    if let Some(hub) = hub.upgrade() {
        hub.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn next_data(v: &mut Viewer) -> Vec<u8> {
        match tokio::time::timeout(Duration::from_secs(5), v.output.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Output::Data(d) => d.to_vec(),
            Output::Closed => panic!("closed"),
        }
    }

    const BOOT: PowerOn = PowerOn {
        pid: 100,
        start_ticks: Some(5),
    };

    #[test]
    fn the_log_tail_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"first line\nsecond\nthird\n").unwrap();
        assert_eq!(log_tail(&log, 1000), b"first line\nsecond\nthird\n");
        assert_eq!(log_tail(&log, 10), b"third\n");
        assert!(log_tail(&dir.path().join("none"), 10).is_empty());
        let mut s = Scrollback::default();
        s.push(&vec![b'x'; SCROLLBACK + 10]);
        s.push(b"end");
        assert_eq!(s.bytes.len(), SCROLLBACK);
        assert!(s.bytes.iter().rev().take(3).eq(b"dne".iter()));
    }

    #[tokio::test]
    async fn viewers_share_one_connection_and_see_the_scrollback() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"booted earlier\n").unwrap();
        let listener = UnixListener::bind(&socket).unwrap();
        let consoles = Consoles::default();

        let mut first = consoles
            .attach("vm-1", BOOT, &socket, &History::Log(log.clone()))
            .await
            .unwrap();
        let (mut guest, _) = listener.accept().await.unwrap();
        assert_eq!(&first.scrollback[..], b"booted earlier\n");
        guest.write_all(b"login: ").await.unwrap();
        assert_eq!(next_data(&mut first).await, b"login: ");

        // A second viewer joins the same hub: no second connection, and
        // the scrollback has what the first one saw.
        let mut second = consoles
            .attach("vm-1", BOOT, &socket, &History::Log(log.clone()))
            .await
            .unwrap();
        assert_eq!(&second.scrollback[..], b"booted earlier\nlogin: ");
        assert!(second.send(Bytes::from_static(b"root\n")).await);
        let mut typed = [0u8; 5];
        guest.read_exact(&mut typed).await.unwrap();
        assert_eq!(&typed, b"root\n");
        guest.write_all(b"#").await.unwrap();
        assert_eq!(next_data(&mut first).await, b"#");
        assert_eq!(next_data(&mut second).await, b"#");

        // The guest side closes: viewers are told.
        drop(guest);
        let closed = tokio::time::timeout(Duration::from_secs(5), first.output.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(closed, Output::Closed));

        // When every viewer has left, the hub lets go of the socket and
        // the next viewer makes a new connection.
        drop((first, second));
        let third = consoles
            .attach("vm-1", BOOT, &socket, &History::Log(log.clone()))
            .await
            .unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(accepted.is_ok(), "no new connection");
        assert!(!third.closed);
    }

    #[tokio::test]
    async fn a_new_power_on_never_sees_the_last_ones_console() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let consoles = Consoles::default();
        let mut first = consoles
            .attach("vm-1", BOOT, &socket, &History::Live)
            .await
            .unwrap();
        let (mut old_guest, _) = listener.accept().await.unwrap();
        old_guest.write_all(b"first boot\r\n~ # ").await.unwrap();
        assert_eq!(next_data(&mut first).await, b"first boot\r\n~ # ");

        // The VM powers off and on again (a new process, here with the
        // same pid: its start time tells them apart) before the old hub
        // has seen its socket close: a viewer of the new boot gets a new
        // connection and none of the old output, and the old viewer is
        // told its console closed.
        let again = PowerOn {
            start_ticks: Some(6),
            ..BOOT
        };
        let mut second = consoles
            .attach("vm-1", again, &socket, &History::Live)
            .await
            .unwrap();
        let (mut new_guest, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("no new connection")
            .unwrap();
        assert!(second.scrollback.is_empty(), "{:?}", second.scrollback);
        let closed = tokio::time::timeout(Duration::from_secs(5), first.output.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(closed, Output::Closed));

        // What the old process still prints goes nowhere; the new one's
        // output and keys are the new boot's.
        old_guest.write_all(b"late").await.unwrap();
        new_guest.write_all(b"second boot").await.unwrap();
        assert_eq!(next_data(&mut second).await, b"second boot");
        assert!(second.send(Bytes::from_static(b"ls\n")).await);
        let mut typed = [0u8; 3];
        new_guest.read_exact(&mut typed).await.unwrap();
        assert_eq!(&typed, b"ls\n");
        let third = consoles
            .attach("vm-1", again, &socket, &History::Live)
            .await
            .unwrap();
        assert_eq!(&third.scrollback[..], b"second boot");
    }

    #[tokio::test]
    async fn the_scrollback_is_shown_without_the_terminal_queries_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"\x1b[6n~ # free\r\n").unwrap();
        let listener = UnixListener::bind(&socket).unwrap();
        let consoles = Consoles::default();
        let mut first = consoles
            .attach("vm-1", BOOT, &socket, &History::Log(log.clone()))
            .await
            .unwrap();
        let (mut guest, _) = listener.accept().await.unwrap();
        assert_eq!(&first.scrollback[..], b"~ # free\r\n");
        // Live, the query goes through: the shell waits for its answer.
        guest.write_all(b"\x1b[6n~ # ").await.unwrap();
        assert_eq!(next_data(&mut first).await, b"\x1b[6n~ # ");
        let second = consoles
            .attach("vm-1", BOOT, &socket, &History::Log(log.clone()))
            .await
            .unwrap();
        assert_eq!(&second.scrollback[..], b"~ # free\r\n~ # ");
    }

    #[test]
    fn sfera_vmms_history_and_live_output_meet_exactly_while_the_guest_prints() {
        // The seam that made mgmt_api flaky: a viewer's scrollback and the
        // live output after it, taken while the guest prints without a
        // pause, must be one stream. Each round is a new hub (the last
        // viewer left), so a new connection to sfera-vmm's own console
        // socket with its framed history (each round's VM id is new, so
        // no round joins the last one's hub while that one winds down).
        use vmm::config::ConsoleHistory;
        use vmm::devices::console::{ConsoleInput, ConsoleOut, ConsoleSocket};
        use vmm::testing::counting::{CountingGuest, assert_rounds_count_on};
        struct Ignore;
        impl ConsoleInput for Ignore {
            fn input(&self, _: &[u8]) {}
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("console.sock");
        let out = ConsoleOut::new(false);
        let _listening = ConsoleSocket::listen(
            &socket,
            out.clone(),
            Arc::new(Ignore),
            ConsoleHistory::Framed,
        )
        .unwrap();
        let guest = CountingGuest::start(out.clone());
        let consoles = Consoles::default();
        let mut round = 0;
        assert_rounds_count_on(
            20,
            || out.dropped(),
            || {
                round += 1;
                runtime.block_on(async {
                    let mut viewer = consoles
                        .attach(&format!("vm-{round}"), BOOT, &socket, &History::Framed)
                        .await
                        .unwrap();
                    let mut stream = viewer.scrollback.to_vec();
                    let seen = stream.len();
                    while stream.len() < seen + 16 * 1024 {
                        stream.extend(next_data(&mut viewer).await);
                    }
                    stream
                })
            },
        );
        drop(guest);
    }
}
