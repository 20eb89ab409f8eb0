//! The switch: its ports, its forwarding database, and the forwarding
//! decision for each frame a guest sends.
//!
//! This first forwarding path runs in each port's own thread and takes the
//! FDB lock and the destination's receive-queue lock per frame; the
//! poll-mode worker that owns all ports (no lock per frame) replaces it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use vhost_user_backend::VringRwLock;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::fdb::{Fdb, PortId};
use crate::frame::{self, DropReason, MacAddr};
use crate::policy::{Security, VlanMode};
use crate::port::rx;

pub(crate) type Memory = GuestMemoryMmap<()>;

/// A port's settings.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub name: String,
    pub mac: MacAddr,
    pub vlan: VlanMode,
    pub security: Security,
    pub mtu: u16,
}

/// A port's receive queue, once its guest has set it up.
#[derive(Clone)]
pub(crate) struct RxQueue {
    pub(crate) vring: VringRwLock<GuestMemoryAtomic<Memory>>,
    pub(crate) mem: GuestMemoryAtomic<Memory>,
    pub(crate) mergeable: Arc<AtomicBool>,
}

/// Counters of one port. Receive counters are bumped by the threads of
/// the ports that deliver to it, so they are atomic adds.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames dropped, by [`DropReason::index`].
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

impl PortCounters {
    pub(crate) fn drop(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Dropped frames for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }
}

/// A port as the switch holds it.
pub struct Port {
    pub config: PortConfig,
    pub counters: PortCounters,
    pub(crate) rx: Mutex<Option<RxQueue>>,
    /// Frames were delivered since the guest was last notified.
    pending_notify: AtomicBool,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A switch with its ports.
#[derive(Debug)]
pub struct Switch {
    ports: RwLock<Vec<Arc<Port>>>,
    fdb: Mutex<Fdb>,
    origin: Instant,
}

/// Ageing of learned addresses (vSphere and OVS use 300 s).
pub const DEFAULT_AGEING_NS: u64 = 300 * 1_000_000_000;

impl Switch {
    /// An empty switch.
    pub fn new() -> Self {
        Switch {
            ports: RwLock::new(Vec::new()),
            fdb: Mutex::new(Fdb::new(DEFAULT_AGEING_NS, 64 * 1024)),
            origin: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Adds a port and returns its id.
    pub fn add_port(&self, config: PortConfig) -> (PortId, Arc<Port>) {
        let port = Arc::new(Port {
            config,
            counters: PortCounters::default(),
            rx: Mutex::new(None),
            pending_notify: AtomicBool::new(false),
        });
        let mut ports = self
            .ports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ports.push(Arc::clone(&port));
        (
            PortId::try_from(ports.len() - 1).unwrap_or(PortId::MAX),
            port,
        )
    }

    /// The ports.
    pub fn ports(&self) -> Vec<Arc<Port>> {
        self.ports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forwards a burst of frames sent by the guest on port `from`, then
    /// notifies each destination guest once.
    pub fn forward_burst<'a>(&self, from: PortId, frames: impl IntoIterator<Item = &'a [u8]>) {
        let ports = self
            .ports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for frame_bytes in frames {
            self.forward_one(&ports, from, frame_bytes);
        }
        for port in ports.iter() {
            if port.pending_notify.swap(false, Ordering::AcqRel)
                && let Some(rx) = port
                    .rx
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
            {
                rx::notify(rx);
            }
        }
    }

    fn forward_one(&self, ports: &[Arc<Port>], from: PortId, frame_bytes: &[u8]) {
        let Some(src_port) = ports.get(from as usize) else {
            return;
        };
        let max_len = usize::from(src_port.config.mtu) + frame::ETH_HLEN;
        let info = match frame::parse(frame_bytes, frame_bytes.len(), max_len) {
            Ok(i) => i,
            Err(reason) => return src_port.counters.drop(reason),
        };
        let vid = match src_port.config.vlan.ingress(info.tag) {
            Ok(v) => v,
            Err(reason) => return src_port.counters.drop(reason),
        };
        if let Err(reason) = src_port
            .config
            .security
            .admit_transmit(&info, src_port.config.mac)
        {
            return src_port.counters.drop(reason);
        }
        src_port.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
        src_port
            .counters
            .tx_bytes
            .fetch_add(frame_bytes.len() as u64, Ordering::Relaxed);
        let now = self.now_ns();
        let known = {
            let mut fdb = self
                .fdb
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fdb.learn(vid, info.src, from, now);
            if info.dst.is_multicast() {
                None
            } else {
                fdb.lookup(vid, info.dst, now)
            }
        };
        match known {
            Some(to) if to != from => {
                if let Some(port) = ports.get(to as usize) {
                    self.deliver(port, vid, &info, frame_bytes);
                }
                // Promiscuous ports of the VLAN see it too.
                for (i, port) in ports.iter().enumerate() {
                    if i as PortId != from && i as PortId != to && port.config.security.promiscuous
                    {
                        self.deliver(port, vid, &info, frame_bytes);
                    }
                }
            }
            Some(_) => {} // back out of the port it came from: not forwarded
            None => {
                // Broadcast, multicast and unknown unicast: flood the VLAN.
                for (i, port) in ports.iter().enumerate() {
                    if i as PortId != from {
                        self.deliver(port, vid, &info, frame_bytes);
                    }
                }
            }
        }
    }

    fn deliver(&self, port: &Port, vid: u16, info: &frame::FrameInfo, frame_bytes: &[u8]) {
        let Some(edit) = port.config.vlan.egress(vid, info.tag) else {
            return;
        };
        if !info.dst.is_multicast()
            && !port
                .config
                .security
                .admit_receive(info.dst, port.config.mac)
        {
            return;
        }
        let rx = port
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(rx) = rx.as_ref() else {
            return port.counters.drop(DropReason::NoRxBuffer);
        };
        match rx::deliver(rx, frame_bytes, edit) {
            Ok(len) => {
                // The guest is notified once, at the end of the burst.
                port.pending_notify.store(true, Ordering::Release);
                port.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                port.counters
                    .rx_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(reason) => port.counters.drop(reason),
        }
    }
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}
