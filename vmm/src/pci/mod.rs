//! PCI: configuration spaces, bus 0 behind conf1, and the set of devices a
//! VM gets from its configuration.

pub mod config;
pub mod root;

use std::sync::{Arc, Mutex};

use crate::boot::mptable::PciIrq;
use crate::bus::{Bus, BusError};
use crate::config::VmConfig;
use crate::memory::GuestRam;
use crate::vm::{Vm, VmError};
use root::{CONF1_BASE, CONF1_LEN, PciRoot};

/// Errors setting up PCI devices.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("Cannot map PCI")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// Bus 0 and its devices.
#[derive(Debug)]
pub struct PciSetup {
    _root: Arc<Mutex<PciRoot>>,
    irqs: Vec<PciIrq>,
}

impl PciSetup {
    /// Creates bus 0 with the devices `config` asks for.
    pub fn build(
        _config: &VmConfig,
        _vm: &Arc<Vm>,
        _ram: &GuestRam,
        io: &Arc<Bus>,
        mmio: &Arc<Bus>,
    ) -> Result<PciSetup, PciError> {
        let root = Arc::new(Mutex::new(PciRoot::new(Arc::clone(mmio))));
        io.insert(root.clone(), CONF1_BASE, CONF1_LEN)?;
        Ok(PciSetup {
            _root: root,
            irqs: Vec::new(),
        })
    }

    /// The INTx lines for the MP table.
    pub fn irqs(&self) -> Vec<PciIrq> {
        self.irqs.clone()
    }

    /// Per-device counters.
    pub fn counters(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// Stops device workers.
    pub fn stop(&mut self) {}
}
