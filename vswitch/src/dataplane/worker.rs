//! The forwarding worker: one poll-mode thread that owns every port's
//! rings and every uplink, and the MAC tables. Each round it picks up
//! control changes (a generation number per port, one atomic load), takes
//! a burst from each transmit ring and uplink, forwards it ([`forward`]),
//! and flushes used entries and notifications once per destination. After
//! `poll_us` without traffic it asks the guests to kick and sleeps on
//! their kick eventfds, the uplinks and its wake eventfd.
//!
//! [`forward`]: crate::dataplane::forward

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::eventfd::EventFd;

use crate::control_plane::config::Shaping;
use crate::dataplane::counters::{PortCounters, WorkerCounters, cycles};
use crate::dataplane::fdb::{Fdb, FdbEntry};
use crate::dataplane::frame::MacAddr;
use crate::dataplane::policy::{Security, VlanMode};
use crate::dataplane::shaping::Shaper;
use crate::dataplane::teaming::Team;
use crate::dataplane::uplink::Uplink;
use crate::dataplane::vhost::backend::PortShared;
use crate::dataplane::vhost::frames::{MAX_RX_CHAINS, RxFormat};
use crate::dataplane::vhost::ring::{Chain, SplitRing};

/// Frames taken from one ring or uplink per round.
pub const BURST: usize = 32;
/// Largest frame an uplink delivers (9000-byte MTU, header and tag).
pub const MAX_FRAME: usize = 9018 + 4;
/// Addresses a MAC table holds.
const FDB_CAPACITY: usize = 64 * 1024;
/// How often link states are read and MAC tables aged.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// What a port does with frames, from its port group.
#[derive(Debug, Clone)]
pub struct PortPolicy {
    pub switch: usize,
    pub vlan: VlanMode,
    pub security: Security,
    pub mac: MacAddr,
    pub mtu: u16,
    pub shaping: Shaping,
    pub team: Team,
}

/// A port as the daemon hands it to the worker.
#[derive(Debug, Clone)]
pub struct PortEntry {
    pub shared: Arc<PortShared>,
    pub counters: Arc<PortCounters>,
    pub policy: PortPolicy,
}

/// An uplink as the daemon hands it to the worker.
#[derive(Debug, Clone)]
pub struct UplinkEntry {
    pub name: String,
    pub switch: usize,
    pub counters: Arc<PortCounters>,
    pub link_up: Arc<AtomicBool>,
}

/// A switch's settings the worker needs.
#[derive(Debug, Clone)]
pub struct SwitchEntry {
    pub name: String,
    pub ageing_ns: u64,
}

/// Where a learned address lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacPlace {
    Port(String),
    Uplink(String),
}

/// Messages from the daemon.
pub enum Command {
    /// The new set of switches, ports and uplinks. Uplinks in `open` are
    /// new (by name); the worker keeps the ones it has that `uplinks`
    /// still names, and closes the rest. `done` is signalled once the
    /// worker runs the new tables.
    Update {
        switches: Vec<SwitchEntry>,
        ports: Vec<PortEntry>,
        uplinks: Vec<UplinkEntry>,
        open: Vec<Uplink>,
        done: mpsc::Sender<()>,
    },
    /// The MAC table of switch `switch`.
    MacTable {
        switch: usize,
        reply: mpsc::Sender<Vec<(FdbEntry, MacPlace)>>,
    },
}

/// A queue of a port, as the worker runs it.
#[derive(Debug, Default)]
pub(crate) struct WQueue {
    pub(crate) ring: Option<SplitRing>,
    epoch: u64,
    kick: Option<Arc<File>>,
    /// Used entries were pushed this round.
    pub(crate) dirty: bool,
}

/// A port as the worker runs it.
pub(crate) struct WPort {
    pub(crate) entry: PortEntry,
    generation: u64,
    /// Queues in virtio order: rx0, tx0, rx1, tx1, ...
    pub(crate) queues: Vec<WQueue>,
    pub(crate) fmt: RxFormat,
    /// Receive queues that run.
    pub(crate) rx_running: Vec<usize>,
    pub(crate) ingress: Option<Shaper>,
    pub(crate) egress: Option<Shaper>,
    /// A transmit ring waits for ingress shaping until this time.
    pub(crate) held_until_ns: Option<u64>,
    /// The last source address learned, and when: the same source in the
    /// next frames is not looked up again within a second.
    pub(crate) learned: Option<(u16, MacAddr, u64)>,
    /// The last delivery to this port ran out of retries: the guest is not
    /// draining its receive ring, so frames for it are not retried (one
    /// failed attempt each, as OVS stops retrying a send that makes no
    /// progress) until a delivery succeeds again.
    pub(crate) rx_stalled: bool,
}

/// An uplink as the worker runs it.
pub(crate) struct WUplink {
    pub(crate) entry: UplinkEntry,
    pub(crate) dev: Uplink,
    pub(crate) link_up: bool,
}

/// The worker's state.
pub struct Worker {
    pub(crate) ports: Vec<WPort>,
    pub(crate) uplinks: Vec<WUplink>,
    /// Link state of each uplink, by index (for teaming).
    pub(crate) links: Vec<bool>,
    pub(crate) switches: Vec<SwitchEntry>,
    pub(crate) fdbs: Vec<Fdb>,
    /// Receive chains of the frame being delivered.
    pub(crate) rx_chains: Vec<Chain>,
    /// Rings with used entries this round: (port, queue).
    pub(crate) dirty: Vec<(usize, usize)>,
    pub(crate) frame_buf: Vec<u8>,
    pub(crate) now_ns: u64,
    origin: Instant,
    counters: Arc<WorkerCounters>,
    commands: mpsc::Receiver<Command>,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    poll_ns: u64,
}

/// Handle to start the worker with.
pub struct WorkerSetup {
    pub commands: mpsc::Receiver<Command>,
    pub wake: Arc<EventFd>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<WorkerCounters>,
    pub poll_us: u32,
}

impl Worker {
    /// A worker with no ports.
    pub fn new(setup: WorkerSetup) -> Self {
        Worker {
            ports: Vec::new(),
            uplinks: Vec::new(),
            links: Vec::new(),
            switches: Vec::new(),
            fdbs: Vec::new(),
            rx_chains: (0..MAX_RX_CHAINS).map(|_| Chain::default()).collect(),
            dirty: Vec::with_capacity(64),
            frame_buf: vec![0u8; MAX_FRAME],
            now_ns: 0,
            origin: Instant::now(),
            counters: setup.counters,
            commands: setup.commands,
            wake: setup.wake,
            stop: setup.stop,
            poll_ns: u64::from(setup.poll_us) * 1000,
        }
    }

    fn clock(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) {
        let mut tx_chain = Chain::default();
        let mut idle_since = self.clock();
        let mut housekeeping = idle_since;
        while !self.stop.load(Ordering::Acquire) {
            self.commands();
            let start = cycles();
            self.now_ns = self.clock();
            for p in 0..self.ports.len() {
                if self.ports[p].entry.shared.generation() != self.ports[p].generation {
                    self.sync(p);
                }
            }
            let mut moved = 0usize;
            for p in 0..self.ports.len() {
                for q in (1..self.ports[p].queues.len()).step_by(2) {
                    moved += self.tx_burst(p, q, &mut tx_chain);
                }
            }
            for u in 0..self.uplinks.len() {
                moved += self.uplink_burst(u);
            }
            self.flush();
            if moved > 0 {
                self.counters.busy_rounds.inc();
                self.counters.busy_cycles.add(cycles().wrapping_sub(start));
                self.counters.packets.add(moved as u64);
                idle_since = self.now_ns;
            } else if self.now_ns.saturating_sub(idle_since) >= self.poll_ns {
                self.sleep();
                idle_since = self.clock();
            }
            if self.now_ns.saturating_sub(housekeeping) >= HOUSEKEEPING.as_nanos() as u64 {
                housekeeping = self.now_ns;
                self.housekeeping();
            }
        }
    }

    /// Publishes used entries and notifies each guest once.
    fn flush(&mut self) {
        for i in 0..self.dirty.len() {
            let (p, q) = self.dirty[i];
            let queue = &mut self.ports[p].queues[q];
            queue.dirty = false;
            if let Some(ring) = queue.ring.as_mut() {
                ring.flush_used();
                ring.notify();
            }
        }
        self.dirty.clear();
    }

    fn housekeeping(&mut self) {
        for (i, u) in self.uplinks.iter_mut().enumerate() {
            let up = u.dev.link_up();
            if up != u.link_up {
                tracing::info!(uplink = %u.entry.name, link = up, "Uplink link changed");
            }
            u.link_up = up;
            u.entry.link_up.store(up, Ordering::Relaxed);
            self.links[i] = up;
        }
        for f in &mut self.fdbs {
            f.expire(self.now_ns);
        }
    }

    fn commands(&mut self) {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Update {
                    switches,
                    ports,
                    uplinks,
                    open,
                    done,
                } => {
                    self.update(switches, ports, uplinks, open);
                    let _ = done.send(());
                }
                Command::MacTable { switch, reply } => {
                    let _ = reply.send(self.mac_table(switch));
                }
            }
        }
    }

    fn mac_table(&self, switch: usize) -> Vec<(FdbEntry, MacPlace)> {
        let Some(fdb) = self.fdbs.get(switch) else {
            return Vec::new();
        };
        fdb.entries(self.clock())
            .into_iter()
            .filter_map(|e| {
                let place = crate::dataplane::forward::place_of(self, e.port)?;
                Some((e, place))
            })
            .collect()
    }

    pub(crate) fn update(
        &mut self,
        switches: Vec<SwitchEntry>,
        ports: Vec<PortEntry>,
        uplinks: Vec<UplinkEntry>,
        open: Vec<Uplink>,
    ) {
        let now = self.clock();
        // Ports: keep the running state of ports that stay (same shared
        // object), take the new policy.
        let mut old: Vec<WPort> = std::mem::take(&mut self.ports);
        for entry in ports {
            let pos = old
                .iter()
                .position(|w| Arc::ptr_eq(&w.entry.shared, &entry.shared));
            let mut w = match pos {
                Some(i) => old.swap_remove(i),
                None => WPort::new(entry.clone()),
            };
            if pos.is_none() || w.entry.policy.shaping != entry.policy.shaping {
                w.ingress = entry.policy.shaping.ingress.map(|r| Shaper::new(&r, now));
                w.egress = entry.policy.shaping.egress.map(|r| Shaper::new(&r, now));
                w.held_until_ns = None;
            }
            w.entry = entry;
            w.learned = None;
            self.ports.push(w);
        }
        // Ports left in `old` are gone: their rings drop here.
        drop(old);
        // Uplinks: keep open devices that are still named.
        let mut devices: Vec<Uplink> = self.uplinks.drain(..).map(|u| u.dev).collect();
        devices.extend(open);
        for entry in uplinks {
            if let Some(i) = devices.iter().position(|d| d.name() == entry.name) {
                let dev = devices.swap_remove(i);
                let up = dev.link_up();
                entry.link_up.store(up, Ordering::Relaxed);
                self.uplinks.push(WUplink {
                    entry,
                    dev,
                    link_up: up,
                });
            }
        }
        drop(devices);
        self.links = self.uplinks.iter().map(|u| u.link_up).collect();
        // MAC tables: one per switch; learned places are indices, which
        // changed, so the tables start afresh (flooding relearns them
        // within a round trip).
        self.fdbs = switches
            .iter()
            .map(|s| Fdb::new(s.ageing_ns, FDB_CAPACITY))
            .collect();
        self.switches = switches;
        // Every port resyncs its rings against the (possibly new) tables.
        for w in &mut self.ports {
            w.generation = u64::MAX;
        }
    }

    /// Applies a port's control changes: rings started, stopped or moved.
    fn sync(&mut self, p: usize) {
        let w = &mut self.ports[p];
        let shared = Arc::clone(&w.entry.shared);
        let generation = shared.generation();
        let mut s = shared.lock();
        let event_idx = s.has(VIRTIO_RING_F_EVENT_IDX);
        let mergeable = s.has(VIRTIO_NET_F_MRG_RXBUF);
        w.fmt = RxFormat {
            hdr_len: if mergeable || s.has(VIRTIO_F_VERSION_1) {
                12
            } else {
                10
            },
            mergeable,
        };
        let mem = s.mem.clone();
        for (i, wq) in w.queues.iter_mut().enumerate() {
            let Some(qs) = s.queues.get_mut(i) else {
                continue;
            };
            if let Some(ring) = &wq.ring {
                qs.last_avail = ring.last_avail;
            }
            let run = qs.started && qs.enabled && qs.addrs.size > 0 && mem.is_some();
            if !run {
                wq.ring = None;
                wq.kick = None;
                continue;
            }
            if wq.ring.is_some() && wq.epoch == qs.epoch {
                continue;
            }
            let base = match (qs.base.take(), &wq.ring) {
                (Some(b), _) => b,
                (None, Some(r)) => r.last_avail,
                (None, None) => qs.last_avail,
            };
            let Some(mem) = mem.clone() else { continue };
            match SplitRing::new(mem, qs.addrs, base, event_idx, qs.call.clone()) {
                Ok(mut ring) => {
                    if i % 2 == 1 {
                        ring.suppress_kicks();
                    }
                    wq.ring = Some(ring);
                    wq.kick = qs.kick.clone();
                    wq.epoch = qs.epoch;
                }
                Err(e) => {
                    datapath::log_limited!(warn, limit: &shared.log, port = %shared.name, queue = i, "Ring refused: {e}");
                    wq.ring = None;
                    wq.kick = None;
                    wq.epoch = qs.epoch;
                }
            }
        }
        drop(s);
        w.rx_running = (0..w.queues.len())
            .step_by(2)
            .filter(|&i| w.queues[i].ring.is_some())
            .collect();
        w.generation = generation;
        shared.synced_to(generation);
    }

    /// Sleeps until a guest kicks, an uplink has frames, the daemon wakes
    /// the worker, shaping allows a held ring, or housekeeping is due.
    fn sleep(&mut self) {
        let mut timeout = HOUSEKEEPING;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(16);
        let pollfd = |fd: i32| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        fds.push(pollfd(self.wake.as_raw_fd()));
        for w in &mut self.ports {
            if let Some(until) = w.held_until_ns {
                timeout = timeout.min(Duration::from_nanos(until.saturating_sub(self.now_ns)));
                continue;
            }
            for q in (1..w.queues.len()).step_by(2) {
                let wq = &mut w.queues[q];
                if let Some(ring) = wq.ring.as_mut() {
                    if ring.enable_kicks() {
                        // Frames arrived meanwhile: no sleep.
                        ring.suppress_kicks();
                        return;
                    }
                    if let Some(k) = &wq.kick {
                        fds.push(pollfd(k.as_raw_fd()));
                    }
                }
            }
        }
        for u in &self.uplinks {
            fds.push(pollfd(u.dev.fd()));
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds owned here;
        // the timespec lives on the stack for the call.
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n > 0 {
            // Drain the eventfds that fired (uplink sockets are read by
            // their bursts). The first is the wake fd; kick fds follow.
            let uplink_fds = self.uplinks.len();
            let eventfds = fds.len() - uplink_fds;
            for f in &fds[..eventfds] {
                if f.revents & libc::POLLIN != 0 {
                    let mut b = [0u8; 8];
                    // SAFETY: reading 8 bytes from an eventfd into a local
                    // buffer; the fd is open (held by the ring's setup).
                    let _ = unsafe { libc::read(f.fd, b.as_mut_ptr().cast(), 8) };
                }
            }
        }
        for w in &mut self.ports {
            for q in (1..w.queues.len()).step_by(2) {
                if let Some(ring) = w.queues[q].ring.as_mut() {
                    ring.suppress_kicks();
                }
            }
        }
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Update { ports, uplinks, .. } => f
                .debug_struct("Update")
                .field("ports", &ports.len())
                .field("uplinks", &uplinks.len())
                .finish_non_exhaustive(),
            Command::MacTable { switch, .. } => {
                f.debug_struct("MacTable").field("switch", switch).finish()
            }
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("ports", &self.ports.len())
            .field("uplinks", &self.uplinks.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WorkerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSetup")
            .field("poll_us", &self.poll_us)
            .finish_non_exhaustive()
    }
}

impl WPort {
    fn new(entry: PortEntry) -> Self {
        let nq = 2 * usize::from(entry.shared.pairs);
        WPort {
            entry,
            generation: u64::MAX,
            queues: (0..nq).map(|_| WQueue::default()).collect(),
            fmt: RxFormat {
                hdr_len: 12,
                mergeable: false,
            },
            rx_running: Vec::new(),
            ingress: None,
            egress: None,
            held_until_ns: None,
            learned: None,
            rx_stalled: false,
        }
    }
}
