//! The vhost-user-net device of one port: feature negotiation, config
//! space (MAC, link status, MTU), and the events of its two queues.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use super::{qemu_compat, tx};
use crate::fdb::PortId;
use crate::switch::{Memory, Port, RxQueue, Switch};

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZE: usize = 1024;

/// Errors serving a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("vhost-user on {}: {message}", socket.display())]
    VhostUser { socket: PathBuf, message: String },
}

/// Which side of the socket the switch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketMode {
    /// The switch listens; the VMM connects.
    Server,
    /// The VMM listens; the switch connects and reconnects (OVS's
    /// `dpdkvhostuserclient`).
    Client,
}

struct Inner {
    switch: Arc<Switch>,
    id: PortId,
    port: Arc<Port>,
    mem: RwLock<GuestMemoryAtomic<Memory>>,
    event_idx: AtomicBool,
    /// Shared with the receive queue: the features may be (re)negotiated
    /// after the queue is attached.
    mergeable: Arc<AtomicBool>,
    /// Transmit buffers, reused from burst to burst (only the port's own
    /// thread takes this lock).
    batch: Mutex<tx::Batch>,
}

/// A port's vhost-user-net device.
#[derive(Clone)]
pub struct NetPort {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPort")
            .field("id", &self.inner.id)
            .field("port", &self.inner.port)
            .finish_non_exhaustive()
    }
}

impl NetPort {
    /// The device of port `id` of `switch`.
    pub fn new(switch: Arc<Switch>, id: PortId, port: Arc<Port>) -> Self {
        NetPort {
            inner: Arc::new(Inner {
                switch,
                id,
                port,
                mem: RwLock::new(GuestMemoryAtomic::new(GuestMemoryMmap::new())),
                event_idx: AtomicBool::new(false),
                mergeable: Arc::new(AtomicBool::new(false)),
                batch: Mutex::new(tx::Batch::default()),
            }),
        }
    }

    fn mem(&self) -> GuestMemoryAtomic<Memory> {
        self.inner
            .mem
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes the port's receive queue known to the switch, once per
    /// connection.
    fn attach_rx(&self, vring: &VringRwLock<GuestMemoryAtomic<Memory>>) {
        let mut rx = self
            .inner
            .port
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if rx.is_none() {
            *rx = Some(RxQueue {
                vring: vring.clone(),
                mem: self.mem(),
                mergeable: Arc::clone(&self.inner.mergeable),
            });
        }
    }

    fn set_rx(&self, rx: Option<RxQueue>) {
        *self
            .inner
            .port
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rx;
    }

    /// Serves the port on `socket` until `stop` is set: as a server,
    /// frontends one after another; as a client, connecting and
    /// reconnecting every second. Each connection goes through the
    /// [`qemu_compat`] relay to the request handler, which listens on a
    /// private socket beside `socket`.
    pub fn serve(
        &self,
        socket: &Path,
        mode: SocketMode,
        stop: &AtomicBool,
    ) -> Result<(), PortError> {
        let err = |e: &dyn std::fmt::Display| PortError::VhostUser {
            socket: socket.to_owned(),
            message: e.to_string(),
        };
        let handler_path = PathBuf::from(format!("{}.handler", socket.display()));
        let mut handler_listener = Listener::new(&handler_path, true).map_err(|e| err(&e))?;
        let public = match mode {
            SocketMode::Server => {
                let _ = std::fs::remove_file(socket);
                Some(UnixListener::bind(socket).map_err(|e| err(&e))?)
            }
            SocketMode::Client => None,
        };
        while !stop.load(Ordering::Acquire) {
            let vmm = match public.as_ref() {
                Some(l) => match l.accept() {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(port = %self.inner.port.config.name, "accept: {e}");
                        continue;
                    }
                },
                None => match UnixStream::connect(socket) {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let to_handler = UnixStream::connect(&handler_path).map_err(|e| err(&e))?;
            let relay = std::thread::Builder::new()
                .name(format!("relay-{}", self.inner.port.config.name))
                .spawn(move || qemu_compat::relay(vmm, to_handler))
                .map_err(|e| err(&e))?;
            let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            *self
                .inner
                .mem
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = mem.clone();
            let mut daemon =
                VhostUserDaemon::new(self.inner.port.config.name.clone(), self.clone(), mem)
                    .map_err(|e| err(&e))?;
            let result = daemon
                .start(&mut handler_listener)
                .and_then(|()| daemon.wait());
            drop(daemon);
            self.set_rx(None);
            let _ = relay.join();
            match result {
                Ok(()) => {
                    tracing::info!(port = %self.inner.port.config.name, "Frontend disconnected");
                }
                Err(e) => {
                    tracing::info!(port = %self.inner.port.config.name, "Connection ended: {e}");
                }
            }
        }
        let _ = std::fs::remove_file(&handler_path);
        Ok(())
    }
}

impl VhostUserBackend for NetPort {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMemoryAtomic<Memory>>;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_NET_F_MTU)
            | (1 << VIRTIO_NET_F_STATUS)
            | (1 << VIRTIO_NET_F_MRG_RXBUF)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.inner.mergeable.store(
            features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            Ordering::Relaxed,
        );
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, enabled: bool) {
        self.inner.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // mac[6], status, max_virtqueue_pairs, mtu (virtio 1.2, 5.1.4).
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.inner.port.config.mac.0);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&self.inner.port.config.mtu.to_le_bytes());
        let start = (offset as usize).min(c.len());
        let end = start.saturating_add(size as usize).min(c.len());
        let mut out = c[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<Memory>) -> std::io::Result<()> {
        *self
            .inner
            .mem
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mem;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        match usize::from(device_event) {
            RX_QUEUE => {
                // The guest gave receive buffers: the port can receive.
                if let Some(vring) = vrings.get(RX_QUEUE) {
                    self.attach_rx(vring);
                }
            }
            TX_QUEUE => {
                let Some(vring) = vrings.get(TX_QUEUE) else {
                    return Ok(());
                };
                // A guest may send before its first receive kick reached us.
                if let Some(rx) = vrings.get(RX_QUEUE) {
                    self.attach_rx(rx);
                }
                let mem = self.mem();
                let mut batch = self
                    .inner
                    .batch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let event_idx = self.inner.event_idx.load(Ordering::Relaxed);
                loop {
                    // With EVENT_IDX the guest kicks only past the index the
                    // device publishes: keep it current, and look again
                    // after re-enabling, so no frame waits for a kick that
                    // will not come.
                    if event_idx {
                        let _ = vring.disable_notification();
                    }
                    loop {
                        let more =
                            tx::take_burst(vring, &mem, &self.inner.port.counters, &mut batch);
                        self.inner
                            .switch
                            .forward_burst(self.inner.id, batch.frames());
                        if !more {
                            break;
                        }
                    }
                    if !event_idx || !vring.enable_notification().unwrap_or(false) {
                        break;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
