//! Virtio devices on PCI: the virtio-pci modern transport ([`transport`]),
//! its common configuration registers ([`common_cfg`]), the INTx fallback
//! ([`intx`]), virtio-rng in the VMM ([`rng`]) and virtio-blk / virtio-net
//! as vhost-user frontends ([`vhost_user`]).

pub mod common_cfg;
pub mod intx;
pub mod rng;
pub mod transport;
pub mod vhost_user;

use crate::api::types::BackendCounters;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestRam;

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// VIRTIO_F_VERSION_1: a modern device.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_RING_F_EVENT_IDX.
pub const F_EVENT_IDX: u64 = 1 << 29;
/// VIRTIO_RING_F_INDIRECT_DESC.
pub const F_INDIRECT_DESC: u64 = 1 << 28;

/// Device types.
pub mod device_type {
    pub const NET: u16 = 1;
    pub const BLOCK: u16 = 2;
    pub const RNG: u16 = 4;
}

/// One queue as the driver set it up.
#[derive(Debug, Clone)]
pub struct QueueSetup {
    pub index: usize,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Signalled (by KVM, through an ioeventfd) when the driver notifies.
    pub kick: Arc<EventFd>,
    /// Written to interrupt the driver (an irqfd or the INTx relay).
    pub call: Arc<EventFd>,
}

/// How a device tells the driver that it broke down and must be reset
/// (virtio 1.x 2.1.2): DEVICE_NEEDS_RESET in the device status, then a
/// configuration change notification. The device's workers raise it; the
/// transport shows it and clears it when the driver resets the device.
#[derive(Debug, Clone)]
pub struct NeedsReset {
    raised: Arc<AtomicBool>,
    /// Written to send the configuration change interrupt.
    config_call: Arc<EventFd>,
}

impl NeedsReset {
    /// Interrupts through `config_call` when raised.
    pub fn new(config_call: Arc<EventFd>) -> NeedsReset {
        NeedsReset {
            raised: Arc::new(AtomicBool::new(false)),
            config_call,
        }
    }

    /// Sets DEVICE_NEEDS_RESET and notifies the driver, once until the
    /// device is reset.
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::SeqCst)
            && let Err(e) = self.config_call.write(1)
        {
            datapath::log_limited!(warn, "Cannot send the configuration change interrupt: {e}");
        }
    }

    /// Whether the device needs a reset.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// The driver reset the device.
    pub fn clear(&self) {
        self.raised.store(false, Ordering::SeqCst);
    }

    /// The eventfd of the configuration change interrupt.
    pub fn config_call(&self) -> &Arc<EventFd> {
        &self.config_call
    }
}

/// What a device gets when the driver sets DRIVER_OK.
#[derive(Debug, Clone)]
pub struct Activation {
    pub ram: GuestRam,
    /// The features the driver accepted.
    pub features: u64,
    pub queues: Vec<QueueSetup>,
    /// Raised by the device when the driver must reset it.
    pub needs_reset: NeedsReset,
}

/// Errors starting a device.
#[derive(Debug, thiserror::Error)]
#[error("{device}: {message}")]
pub struct ActivateError {
    pub device: String,
    pub message: String,
}

/// A virtio device behind the transport.
pub trait VirtioDevice: Send {
    /// A name for logs and counters ("rng", "disk0", "net1").
    fn name(&self) -> &str;
    /// The virtio device type.
    fn device_type(&self) -> u16;
    /// The features offered (the transport adds none).
    fn features(&self) -> u64;
    /// The largest size of each queue.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Reads the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device's work on the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops the device's work (driver reset).
    fn reset(&mut self);
    /// Lets go of anything outside the VMM (the VM is ending).
    fn disconnect(&mut self) {}
    /// The device's counters.
    fn counters(&self) -> BackendCounters;
}

/// Copies `data.len()` bytes at `offset` of `space` into `data` (zeros past
/// the end).
pub fn read_bytes(space: &[u8], offset: u64, data: &mut [u8]) {
    for (i, d) in data.iter_mut().enumerate() {
        *d = usize::try_from(offset)
            .ok()
            .and_then(|o| space.get(o + i))
            .copied()
            .unwrap_or(0);
    }
}
