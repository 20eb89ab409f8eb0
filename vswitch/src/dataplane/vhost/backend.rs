//! The vhost-user-net backend of one port, as its control thread runs it:
//! feature negotiation, config space, memory table and ring setup. The
//! rings themselves run in the forwarding worker; this side only records
//! what the frontend set up in [`PortShared`] and tells the worker, which
//! picks changes up between bursts (no lock per frame). Requests that must
//! see the worker stop using a ring or a memory table first
//! (`GET_VRING_BASE`, a new memory table, disconnection) wait for the
//! worker to acknowledge.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use datapath::log_limit::LogLimit;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVirtioFeatures,
    VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Backend, Error as VhostError, GpuBackend, VhostUserBackendReqHandlerMut};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::eventfd::EventFd;

use super::mem::GuestMemory;
use super::ring::RingAddrs;
use crate::dataplane::frame::MacAddr;

type VResult<T> = Result<T, VhostError>;

/// Largest ring the switch accepts (DPDK's vhost library's limit).
const MAX_RING: u32 = 32768;
/// How long a control request waits for the worker.
const WORKER_WAIT: Duration = Duration::from_secs(5);

/// One ring's setup, as the frontend gave it.
#[derive(Debug, Default, Clone)]
pub struct QueueSetup {
    pub addrs: RingAddrs,
    /// Index set by `SET_VRING_BASE`, taken by the worker when it next
    /// builds the ring.
    pub base: Option<u16>,
    pub kick: Option<Arc<File>>,
    pub call: Option<Arc<File>>,
    /// A kick fd arrived since the ring was last stopped.
    pub started: bool,
    pub enabled: bool,
    /// Bumped by every change that makes the worker rebuild the ring.
    pub epoch: u64,
    /// The worker's next available index, written at each sync (what
    /// `GET_VRING_BASE` returns).
    pub last_avail: u16,
}

/// A port's device state shared between its control thread and the worker.
#[derive(Debug, Default)]
pub struct Setup {
    pub mem: Option<Arc<GuestMemory>>,
    /// Virtio features the driver acknowledged.
    pub features: u64,
    pub queues: Vec<QueueSetup>,
}

impl Setup {
    /// Whether `bit` was negotiated.
    pub fn has(&self, bit: u32) -> bool {
        self.features & (1 << bit) != 0
    }
}

/// What a port's control side and the worker share.
#[derive(Debug)]
pub struct PortShared {
    pub name: String,
    pub mac: Mutex<MacAddr>,
    pub mtu: Mutex<u16>,
    pub pairs: u16,
    setup: Mutex<Setup>,
    /// Bumped after each change of `setup`.
    generation: AtomicU64,
    /// The last generation the worker applied.
    synced: AtomicU64,
    /// A frontend is connected.
    pub connected: AtomicBool,
    /// The worker no longer runs this port: nothing to wait for.
    detached: AtomicBool,
    wake: Arc<EventFd>,
    /// What the frontend makes happen (connections, refused memory tables
    /// and rings) is logged through this: one line a second per port.
    pub log: LogLimit,
}

impl PortShared {
    /// A port with `pairs` queue pairs; `wake` rouses the worker.
    pub fn new(name: String, mac: MacAddr, mtu: u16, pairs: u16, wake: Arc<EventFd>) -> Self {
        PortShared {
            name,
            mac: Mutex::new(mac),
            mtu: Mutex::new(mtu),
            pairs,
            setup: Mutex::new(Setup {
                queues: vec![QueueSetup::default(); 2 * usize::from(pairs)],
                ..Setup::default()
            }),
            generation: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            wake,
            log: LogLimit::bursts(),
        }
    }

    /// The setup, for the worker's sync (and the control side's changes).
    pub fn lock(&self) -> MutexGuard<'_, Setup> {
        self.setup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The generation the worker should be at.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The worker applied `generation`.
    pub fn synced_to(&self, generation: u64) {
        self.synced.store(generation, Ordering::Release);
    }

    /// Tells the worker the setup changed; returns the new generation.
    fn bump(&self) -> u64 {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.wake.write(1);
        g
    }

    /// Tells the worker and waits until it applied the change. False when
    /// the worker did not answer (it is gone: the daemon is stopping).
    pub fn bump_and_wait(&self) -> bool {
        let g = self.bump();
        if self.detached.load(Ordering::Acquire) {
            return true;
        }
        let deadline = Instant::now() + WORKER_WAIT;
        while self.synced.load(Ordering::Acquire) < g {
            if self.detached.load(Ordering::Acquire) {
                return true;
            }
            if Instant::now() > deadline {
                tracing::warn!(port = %self.name, "Forwarding worker did not answer");
                return false;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        true
    }

    /// The worker dropped the port (it was removed from the switch).
    pub fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    /// Queue pairs whose both rings the guest enabled and started.
    pub fn pairs_running(&self) -> u16 {
        let s = self.lock();
        s.queues
            .chunks(2)
            .filter(|p| p.iter().all(|q| q.enabled && q.started))
            .count() as u16
    }

    /// Forgets the frontend: rings stop, memory is unmapped.
    pub fn reset(&self) {
        {
            let mut s = self.lock();
            let epochs: Vec<u64> = s.queues.iter().map(|q| q.epoch + 1).collect();
            s.mem = None;
            s.features = 0;
            for (q, epoch) in s.queues.iter_mut().zip(epochs) {
                *q = QueueSetup {
                    epoch,
                    ..QueueSetup::default()
                };
            }
        }
        self.connected.store(false, Ordering::Release);
        self.bump_and_wait();
    }
}

/// The request handler of one connection.
#[derive(Debug)]
pub struct NetBackend {
    port: Arc<PortShared>,
    protocol_features: u64,
}

impl NetBackend {
    /// A handler for a new connection of `port`.
    pub fn new(port: Arc<PortShared>) -> Self {
        port.connected.store(true, Ordering::Release);
        NetBackend {
            port,
            protocol_features: 0,
        }
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_NET_F_MTU)
            | (1 << VIRTIO_NET_F_STATUS)
            | (1 << VIRTIO_NET_F_MRG_RXBUF)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if self.port.pairs > 1 {
            f |= (1 << VIRTIO_NET_F_MQ) | (1 << VIRTIO_NET_F_CTRL_VQ);
        }
        f
    }

    fn queue<'a>(&self, s: &'a mut Setup, index: u32) -> VResult<&'a mut QueueSetup> {
        s.queues
            .get_mut(index as usize)
            .ok_or(VhostError::InvalidParam)
    }

    /// Changes one queue's setup; `rebuild` makes the worker rebuild it.
    fn change_queue(
        &self,
        index: u32,
        rebuild: bool,
        f: impl FnOnce(&mut QueueSetup),
    ) -> VResult<()> {
        {
            let mut s = self.port.lock();
            let q = self.queue(&mut s, index)?;
            f(q);
            if rebuild {
                q.epoch += 1;
            }
        }
        self.port.bump();
        Ok(())
    }

    fn unsupported<T>(&self, what: &'static str) -> VResult<T> {
        tracing::debug!(port = %self.port.name, "Unsupported vhost-user request: {what}");
        Err(VhostError::InvalidOperation(what))
    }
}

impl VhostUserBackendReqHandlerMut for NetBackend {
    fn set_owner(&mut self) -> VResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VResult<()> {
        self.port.reset();
        self.port.connected.store(true, Ordering::Release);
        Ok(())
    }

    fn reset_device(&mut self) -> VResult<()> {
        self.reset_owner()
    }

    fn get_features(&mut self) -> VResult<u64> {
        Ok(self.features())
    }

    fn set_features(&mut self, features: u64) -> VResult<()> {
        if features & !self.features() != 0 {
            return Err(VhostError::InvalidParam);
        }
        let mut s = self.port.lock();
        s.features = features;
        // Without protocol features, a ring runs as soon as it is kicked.
        let legacy = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0;
        for q in &mut s.queues {
            if legacy {
                q.enabled = true;
            }
            // Header length and event index are part of the ring's state.
            q.epoch += 1;
        }
        drop(s);
        self.port.bump();
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VResult<Option<Vec<u64>>> {
        let mem = GuestMemory::map(ctx, &files).map_err(|e| {
            datapath::log_limited!(warn, limit: &self.port.log, port = %self.port.name, "Memory table refused: {e}");
            VhostError::InvalidParam
        })?;
        {
            let mut s = self.port.lock();
            s.mem = Some(Arc::new(mem));
            for q in &mut s.queues {
                q.epoch += 1;
            }
        }
        // The old table is unmapped once the worker let go of it.
        self.port.bump_and_wait();
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VResult<()> {
        if num == 0 || num > MAX_RING || !num.is_power_of_two() {
            return Err(VhostError::InvalidParam);
        }
        self.change_queue(index, true, |q| q.addrs.size = num as u16)
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VResult<()> {
        self.change_queue(index, true, |q| {
            q.addrs.desc = descriptor;
            q.addrs.used = used;
            q.addrs.avail = available;
        })
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VResult<()> {
        let base = u16::try_from(base).map_err(|_| VhostError::InvalidParam)?;
        self.change_queue(index, true, |q| {
            q.base = Some(base);
            q.last_avail = base;
        })
    }

    fn get_vring_base(&mut self, index: u32) -> VResult<VhostUserVringState> {
        // The ring stops: the worker lets go of it and reports its index.
        self.change_queue(index, true, |q| q.started = false)?;
        self.port.bump_and_wait();
        let mut s = self.port.lock();
        let q = self.queue(&mut s, index)?;
        q.kick = None;
        Ok(VhostUserVringState::new(index, u32::from(q.last_avail)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VResult<()> {
        self.change_queue(u32::from(index), true, |q| {
            q.kick = fd.map(Arc::new);
            q.started = true;
        })
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VResult<()> {
        self.change_queue(u32::from(index), true, |q| q.call = fd.map(Arc::new))
    }

    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> VResult<()> {
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG)
    }

    fn set_protocol_features(&mut self, features: u64) -> VResult<()> {
        self.protocol_features = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VResult<u64> {
        Ok(2 * u64::from(self.port.pairs))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VResult<()> {
        self.change_queue(index, false, |q| q.enabled = enable)
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VResult<Vec<u8>> {
        // mac[6], status, max_virtqueue_pairs, mtu (virtio 1.2, 5.1.4).
        let mut c = [0u8; 12];
        let mac = *self
            .port
            .mac
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mtu = *self
            .port
            .mtu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c[..6].copy_from_slice(&mac.0);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&self.port.pairs.to_le_bytes());
        c[10..12].copy_from_slice(&mtu.to_le_bytes());
        let start = (offset as usize).min(c.len());
        let end = start.saturating_add(size as usize).min(c.len());
        let mut out = c[start..end].to_vec();
        out.resize(size as usize, 0);
        Ok(out)
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VResult<()> {
        self.unsupported("the net config space is read-only")
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {}

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VResult<()> {
        self.unsupported("GPU socket")
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VResult<File> {
        self.unsupported("shared objects")
    }

    fn get_inflight_fd(&mut self, _i: &VhostUserInflight) -> VResult<(VhostUserInflight, File)> {
        self.unsupported("inflight tracking")
    }

    fn set_inflight_fd(&mut self, _i: &VhostUserInflight, _file: File) -> VResult<()> {
        self.unsupported("inflight tracking")
    }

    fn get_max_mem_slots(&mut self) -> VResult<u64> {
        self.unsupported("memory slots")
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy: Option<bool>,
    ) -> VResult<Option<u64>> {
        self.unsupported("memory slots")
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VResult<()> {
        self.unsupported("memory slots")
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VResult<Option<File>> {
        self.unsupported("device state transfer")
    }

    fn check_device_state(&mut self) -> VResult<()> {
        self.unsupported("device state transfer")
    }

    fn get_shmem_config(&mut self) -> VResult<VhostUserShMemConfig> {
        self.unsupported("shared memory regions")
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VResult<()> {
        self.unsupported("dirty logging")
    }
}
