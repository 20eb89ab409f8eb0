//! PCI: configuration spaces, MSI-X, bus 0 behind conf1, and the set of
//! virtio devices a VM gets from its configuration.

pub mod config;
pub mod msix;
pub mod root;

use std::sync::{Arc, Mutex, PoisonError};

use crate::api::types::VirtioCounters;
use crate::boot::mptable::PciIrq;
use crate::bus::{Bus, BusError};
use crate::config::VmConfig;
use crate::layout;
use crate::memory::GuestRam;
use crate::virtio::VirtioDevice;
use crate::virtio::rng::Rng;
use crate::virtio::transport::{BAR_SIZE, VirtioPci};
use crate::vm::{IOAPIC_PINS, Vm, VmError};
use root::{CONF1_BASE, CONF1_LEN, PciRoot};

/// IOAPIC pins given to PCI INTx lines, in turn (16 and up: no ISA device
/// uses them).
const FIRST_PCI_PIN: u32 = 16;

/// Errors setting up PCI devices.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("Cannot map PCI")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("Cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("Cannot set up {device}")]
    Device {
        device: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Bus 0 and its devices.
#[derive(Debug)]
pub struct PciSetup {
    _root: Arc<Mutex<PciRoot>>,
    devices: Vec<Arc<Mutex<VirtioPci>>>,
    irqs: Vec<PciIrq>,
}

/// Where the device in `slot` (1..) goes: its BAR 0 and its IOAPIC pin.
pub fn slot_resources(slot: usize) -> (u64, u8) {
    let bar = layout::PCI_MMIO_START + (slot as u64 - 1) * BAR_SIZE;
    let pins = IOAPIC_PINS - FIRST_PCI_PIN;
    let pin = FIRST_PCI_PIN + (slot as u32 - 1) % pins;
    (bar, pin as u8)
}

impl PciSetup {
    /// Creates bus 0 with the devices `config` asks for: virtio-rng, then
    /// the disks, then the NICs, from slot 1 on.
    pub fn build(
        config: &VmConfig,
        vm: &Arc<Vm>,
        ram: &GuestRam,
        io: &Arc<Bus>,
        mmio: &Arc<Bus>,
    ) -> Result<PciSetup, PciError> {
        let root = Arc::new(Mutex::new(PciRoot::new(Arc::clone(mmio))));
        io.insert(root.clone(), CONF1_BASE, CONF1_LEN)?;
        let mut wanted: Vec<Box<dyn VirtioDevice>> = Vec::new();
        if config.rng {
            wanted.push(Box::new(Rng::new()));
        }
        wanted.extend(crate::virtio::vhost_user::devices(config, ram)?);
        let mut setup = PciSetup {
            _root: root.clone(),
            devices: Vec::new(),
            irqs: Vec::new(),
        };
        for (i, device) in wanted.into_iter().enumerate() {
            let slot = i + 1;
            let (bar, pin) = slot_resources(slot);
            let pci = VirtioPci::new(device, Arc::clone(vm), ram.clone(), bar, pin)?;
            mmio.insert(pci.clone(), bar, BAR_SIZE)?;
            root.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(slot, pci.clone());
            setup.devices.push(pci);
            setup.irqs.push(PciIrq {
                slot: slot as u8,
                irq: pin,
            });
        }
        Ok(setup)
    }

    /// The INTx lines for the MP table.
    pub fn irqs(&self) -> Vec<PciIrq> {
        self.irqs.clone()
    }

    /// Per-device counters.
    pub fn counters(&self) -> Vec<VirtioCounters> {
        self.devices
            .iter()
            .map(|d| d.lock().unwrap_or_else(PoisonError::into_inner).counters())
            .collect()
    }

    /// Stops device workers.
    pub fn stop(&mut self) {
        for d in &self.devices {
            d.lock().unwrap_or_else(PoisonError::into_inner).shutdown();
        }
    }
}
