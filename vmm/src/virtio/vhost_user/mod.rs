//! virtio-blk and virtio-net as vhost-user frontends: the VMM negotiates
//! with the driver and with the backend, hands the backend the guest's
//! memory and rings, and stays out of the data path (doorbells are
//! ioeventfds the backend waits on, interrupts are irqfds it writes). A
//! monitor thread notices a backend that went away and, when it is back,
//! sends the whole set-up again.

pub mod blk;
pub mod connection;
pub mod net;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use datapath::log_limit::LogLimit;
use std::time::Duration;

use super::{ActivateError, Activation, VirtioDevice};
use crate::api::types::{BackendCounters, VhostUserCounters};
use crate::config::{VmConfig, parse_mac};
use crate::memory::GuestRam;
use crate::pci::PciError;
use connection::{BACKEND_WAIT, Endpoint, Session, SessionError};

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;

/// What kind of device a frontend is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Blk { read_only: bool },
    Net { mac: [u8; 6], mtu: u16 },
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    reconnects: AtomicU64,
    setups: AtomicU64,
    setup_errors: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    session: Option<Session>,
    active: Option<Activation>,
}

/// A vhost-user frontend device.
#[derive(Debug)]
pub struct VhostUserDevice {
    name: String,
    kind: Kind,
    device_type: u16,
    features: u64,
    queue_sizes: Vec<u16>,
    config_space: Vec<u8>,
    endpoint: Arc<Endpoint>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    monitor: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VhostUserDevice {
    /// Reaches the backend, negotiates, and reads what the driver will see.
    pub fn new(name: String, kind: Kind, endpoint: Endpoint) -> Result<Self, SessionError> {
        let stream = endpoint.reach(BACKEND_WAIT, &|| false)?;
        let max_queues = match kind {
            Kind::Blk { .. } => blk::MAX_QUEUES,
            Kind::Net { .. } => 2,
        };
        let mut session = Session::open(stream, u64::from(max_queues))?;
        let (device_type, features, queues, config_space) = match &kind {
            Kind::Blk { read_only } => blk::describe(&mut session, *read_only)?,
            Kind::Net { mac, mtu } => net::describe(&session, *mac, *mtu),
        };
        tracing::info!(
            device = name,
            socket = %endpoint.path().display(),
            "Backend connected: features {:#x}, {} queue(s)",
            session.backend_features,
            queues
        );
        let counters = Arc::new(Counters::default());
        counters.connects.fetch_add(1, Ordering::Relaxed);
        let mut device = VhostUserDevice {
            name,
            kind,
            device_type,
            features,
            queue_sizes: vec![QUEUE_SIZE; usize::from(queues)],
            config_space,
            endpoint: Arc::new(endpoint),
            shared: Arc::new(Mutex::new(Shared {
                session: Some(session),
                active: None,
            })),
            stop: Arc::new(AtomicBool::new(false)),
            monitor: None,
            counters,
        };
        device.start_monitor();
        Ok(device)
    }

    fn start_monitor(&mut self) {
        let shared = Arc::clone(&self.shared);
        let endpoint = Arc::clone(&self.endpoint);
        let stop = Arc::clone(&self.stop);
        let counters = Arc::clone(&self.counters);
        let name = self.name.clone();
        let max_queues = self.queue_sizes.len() as u64;
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-vhost"))
            .spawn(move || monitor(&name, &shared, &endpoint, &stop, &counters, max_queues));
        match spawned {
            Ok(t) => self.monitor = Some(t),
            Err(e) => tracing::error!(device = self.name, "No reconnect monitor: {e}"),
        }
    }

    /// The kind of device.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }
}

/// Watches the session; when the backend hangs up, waits for it to come
/// back and replays the set-up, starting the rings at their used index.
fn monitor(
    name: &str,
    shared: &Mutex<Shared>,
    endpoint: &Endpoint,
    stop: &AtomicBool,
    counters: &Counters,
    max_queues: u64,
) {
    let stopping = || stop.load(Ordering::Relaxed);
    // A backend that accepts and fails in a loop gets a few lines, then
    // one now and then with a count.
    let log = LogLimit::bursts();
    while !stopping() {
        std::thread::sleep(Duration::from_millis(100));
        {
            let mut s = lock(shared);
            match &s.session {
                Some(session) if !session.hung_up() => continue,
                Some(_) => {
                    datapath::log_limited!(warn, limit: &log, device = name, "Backend hung up; waiting for it to return");
                    s.session = None;
                }
                None => {}
            }
        }
        let Ok(stream) = endpoint.reach(Duration::from_secs(1), &stopping) else {
            continue;
        };
        let mut session = match Session::open(stream, max_queues) {
            Ok(s) => s,
            Err(e) => {
                counters.setup_errors.fetch_add(1, Ordering::Relaxed);
                datapath::log_limited!(warn, limit: &log, device = name, "Backend handshake failed: {e}");
                continue;
            }
        };
        let mut s = lock(shared);
        if let Some(activation) = &s.active {
            if let Err(e) = session.start(activation, activation.features, true) {
                counters.setup_errors.fetch_add(1, Ordering::Relaxed);
                datapath::log_limited!(warn, limit: &log, device = name, "Replaying the set-up failed: {e}");
                continue;
            }
            counters.setups.fetch_add(1, Ordering::Relaxed);
        }
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
        datapath::log_limited!(info, limit: &log, device = name, "Backend reconnected");
        s.session = Some(session);
    }
}

impl VirtioDevice for VhostUserDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn device_type(&self) -> u16 {
        self.device_type
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        self.queue_sizes.clone()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_bytes(&self.config_space, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let mut s = lock(&self.shared);
        let result = match s.session.as_mut() {
            Some(session) => session.start(&activation, activation.features, false),
            // The monitor starts the rings when the backend is back.
            None => Ok(()),
        };
        s.active = Some(activation);
        match result {
            Ok(()) => {
                self.counters.setups.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.setup_errors.fetch_add(1, Ordering::Relaxed);
                Err(ActivateError {
                    device: self.name.clone(),
                    message: control::error_chain(&e),
                })
            }
        }
    }

    fn reset(&mut self) {
        let mut s = lock(&self.shared);
        let active = s.active.take();
        if let (Some(session), Some(active)) = (s.session.as_mut(), active) {
            session.stop(&active);
        }
    }

    fn disconnect(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.monitor.take() {
            let _ = t.join();
        }
        // Dropping the frontend closes the socket: the backend sees the
        // hang-up at once, whoever still holds this device.
        lock(&self.shared).session = None;
    }

    fn counters(&self) -> BackendCounters {
        let c = &self.counters;
        let connected = lock(&self.shared).session.is_some();
        BackendCounters::VhostUser(VhostUserCounters {
            socket: self.endpoint.path().to_owned(),
            connected,
            connects: c.connects.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            setups: c.setups.load(Ordering::Relaxed),
            setup_errors: c.setup_errors.load(Ordering::Relaxed),
        })
    }
}

impl Drop for VhostUserDevice {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// The vhost-user devices of `config`, connected to their backends: disks
/// first, then NICs.
pub fn devices(config: &VmConfig, _ram: &GuestRam) -> Result<Vec<Box<dyn VirtioDevice>>, PciError> {
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let failed = |device: String| {
        move |e: SessionError| PciError::Device {
            device,
            source: Box::new(e),
        }
    };
    for (i, d) in config.disks.iter().enumerate() {
        let name = format!("disk{i}");
        let endpoint = Endpoint::new(&d.socket, d.mode).map_err(failed(name.clone()))?;
        let kind = Kind::Blk {
            read_only: d.read_only,
        };
        let dev = VhostUserDevice::new(name.clone(), kind, endpoint).map_err(failed(name))?;
        out.push(Box::new(dev));
    }
    for (i, n) in config.nets.iter().enumerate() {
        let name = format!("net{i}");
        let mac = parse_mac(&n.mac).ok_or_else(|| PciError::Device {
            device: name.clone(),
            source: format!("bad MAC {:?}", n.mac).into(),
        })?;
        let endpoint = Endpoint::new(&n.socket, n.mode).map_err(failed(name.clone()))?;
        let kind = Kind::Net { mac, mtu: n.mtu };
        let dev = VhostUserDevice::new(name.clone(), kind, endpoint).map_err(failed(name))?;
        out.push(Box::new(dev));
    }
    Ok(out)
}
