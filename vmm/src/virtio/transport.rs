//! The virtio-pci modern transport: a PCI function whose 64-bit BAR 0 holds
//! the common configuration, the ISR byte, the device configuration, the
//! queue notify addresses (each an ioeventfd) and the MSI-X table and PBA.
//! Queue interrupts go out through irqfds bound to the queues' MSI-X
//! vectors, or through the INTx relay when the driver did not enable MSI-X.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::common_cfg::{COMMON_CFG_SIZE, CommonCfg, CommonEvent};
use super::intx::{Worker, start_relay};
use super::{Activation, NeedsReset, QueueSetup, VirtioDevice, status};
use crate::api::types::VirtioCounters;
use crate::bus::BusDevice;
use crate::memory::GuestRam;
use crate::pci::PciError;
use crate::pci::config::{Bar, BarMove, ConfigSpace, PciIdentity};
use crate::pci::msix::{ENTRY_SIZE, MsixChange, MsixTable};
use crate::pci::root::PciFunction;
use crate::vm::Vm;

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x4000;
/// Layout of BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x0800;
pub const DEVICE_OFFSET: u64 = 0x1000;
pub const DEVICE_SIZE: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x2000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x3000;
pub const MSIX_PBA_OFFSET: u64 = 0x3800;

/// Virtio PCI capability types.
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
const PCI_CAP_VENDOR: u8 = 0x09;
const PCI_CAP_MSIX: u8 = 0x11;

/// The PCI identity of a virtio 1.x device of `device_type`.
pub fn identity(device_type: u16) -> PciIdentity {
    let class = match device_type {
        super::device_type::BLOCK => [0x01, 0x00, 0x00], // mass storage, SCSI
        super::device_type::NET => [0x02, 0x00, 0x00],   // network, Ethernet
        _ => [0xff, 0x00, 0x00],                         // other
    };
    PciIdentity {
        vendor: 0x1af4,
        device: 0x1040 + device_type,
        revision: 1,
        class,
        subsystem_vendor: 0x1af4,
        subsystem: 0x40,
    }
}

/// A virtio vendor capability (`struct virtio_pci_cap`, with the notify
/// multiplier appended for the notify capability).
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, multiplier: Option<u32>) -> Vec<u8> {
    let len: u8 = if multiplier.is_some() { 20 } else { 16 };
    let mut cap = vec![PCI_CAP_VENDOR, 0, len, cfg_type, 0, 0, 0, 0];
    cap.extend((offset as u32).to_le_bytes());
    cap.extend((length as u32).to_le_bytes());
    if let Some(m) = multiplier {
        cap.extend(m.to_le_bytes());
    }
    cap
}

/// Offsets of the capabilities the transport acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapOffsets {
    pub msix: usize,
    /// `VIRTIO_PCI_CAP_PCI_CFG`: a window into BAR 0 through configuration
    /// space (bar, offset, length chosen by the driver; data at +16).
    pub pci_cfg: usize,
}

/// Builds the configuration space: header, BAR 0, MSI-X and the five
/// virtio capabilities.
pub fn build_config(
    device_type: u16,
    queues: u16,
    vectors: u16,
    bar: u64,
    irq: u8,
) -> (ConfigSpace, CapOffsets) {
    let mut config = ConfigSpace::new(&identity(device_type), 1, irq);
    config.add_bar(
        0,
        bar,
        Bar {
            size: BAR_SIZE,
            is64: true,
        },
    );
    let mut msix = vec![PCI_CAP_MSIX, 0];
    msix.extend((vectors - 1).to_le_bytes());
    msix.extend((MSIX_TABLE_OFFSET as u32).to_le_bytes()); // BIR 0
    msix.extend((MSIX_PBA_OFFSET as u32).to_le_bytes());
    // Enable and function mask are the writable bits of message control.
    let msix_cap = config.add_capability(&msix, &[0, 0, 0, 0xc0]);
    config.add_capability(
        &virtio_cap(CAP_COMMON, COMMON_OFFSET, COMMON_CFG_SIZE, None),
        &[],
    );
    config.add_capability(
        &virtio_cap(
            CAP_NOTIFY,
            NOTIFY_OFFSET,
            u64::from(queues.max(1)) * u64::from(NOTIFY_MULTIPLIER),
            Some(NOTIFY_MULTIPLIER),
        ),
        &[],
    );
    config.add_capability(&virtio_cap(CAP_ISR, ISR_OFFSET, 1, None), &[]);
    config.add_capability(
        &virtio_cap(CAP_DEVICE, DEVICE_OFFSET, DEVICE_SIZE, None),
        &[],
    );
    // struct virtio_pci_cfg_cap: the cap with bar, offset and length
    // writable, then pci_cfg_data (4 bytes, handled by the transport).
    let mut pci_cfg = virtio_cap(CAP_PCI_CFG, 0, 0, None);
    pci_cfg[2] = 20;
    pci_cfg.extend([0u8; 4]);
    let mut wmask = vec![0u8; 20];
    wmask[4] = 0xff; // bar
    wmask[8..20].fill(0xff); // offset, length, data
    let pci_cfg = config.add_capability(&pci_cfg, &wmask);
    (
        config,
        CapOffsets {
            msix: msix_cap,
            pci_cfg,
        },
    )
}

#[derive(Debug, Default)]
struct Counters {
    activations: AtomicU64,
    resets: AtomicU64,
    notifications_trapped: AtomicU64,
    intx_relayed: Arc<AtomicU64>,
}

/// One virtio device on PCI.
pub struct VirtioPci {
    device: Box<dyn VirtioDevice>,
    config: ConfigSpace,
    caps: CapOffsets,
    common: CommonCfg,
    msix: MsixTable,
    vm: Arc<Vm>,
    ram: GuestRam,
    bar: u64,
    gsis: Vec<u32>,
    kicks: Vec<Arc<EventFd>>,
    calls: Vec<Arc<EventFd>>,
    bound: Vec<(usize, u32)>,
    /// Raised by the device when it broke down (DEVICE_NEEDS_RESET).
    needs_reset: NeedsReset,
    /// The GSI the configuration change eventfd is bound to (MSI-X).
    config_bound: Option<u32>,
    intx_line: Arc<EventFd>,
    isr: Arc<AtomicU8>,
    relay: Option<Worker>,
    counters: Counters,
}

impl std::fmt::Debug for VirtioPci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPci")
            .field("device", &self.device.name())
            .field("bar", &self.bar)
            .field("status", &self.common.status)
            .finish()
    }
}

impl VirtioPci {
    /// Wires `device` at `bar` with INTx on IOAPIC pin `irq`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        vm: Arc<Vm>,
        ram: GuestRam,
        bar: u64,
        irq: u8,
    ) -> Result<Arc<Mutex<VirtioPci>>, PciError> {
        let sizes = device.queue_max_sizes();
        let queues = sizes.len() as u16;
        let vectors = queues + 1;
        let (config, caps) = build_config(device.device_type(), queues, vectors, bar, irq);
        let common = CommonCfg::new(device.features(), &sizes, vectors);
        let eventfd = || EventFd::new(libc::EFD_NONBLOCK).map_err(PciError::EventFd);
        let gsis = (0..vectors)
            .map(|_| vm.allocate_msi_gsi())
            .collect::<Result<Vec<_>, _>>()?;
        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        for q in 0..u64::from(queues) {
            let kick = Arc::new(eventfd()?);
            vm.register_ioevent(
                &kick,
                bar + NOTIFY_OFFSET + q * u64::from(NOTIFY_MULTIPLIER),
            )?;
            kicks.push(kick);
            calls.push(Arc::new(eventfd()?));
        }
        let needs_reset = NeedsReset::new(Arc::new(eventfd()?));
        let intx_line = Arc::new(eventfd()?);
        vm.register_irqfd(&intx_line, u32::from(irq))?;
        Ok(Arc::new(Mutex::new(VirtioPci {
            device,
            config,
            caps,
            common,
            msix: MsixTable::new(vectors),
            vm,
            ram,
            bar,
            gsis,
            kicks,
            calls,
            bound: Vec::new(),
            needs_reset,
            config_bound: None,
            intx_line,
            isr: Arc::new(AtomicU8::new(0)),
            relay: None,
            counters: Counters::default(),
        })))
    }

    fn apply_msix(&mut self, change: MsixChange) {
        for v in change.reroute {
            let gsi = self.gsis[usize::from(v)];
            if let Err(e) = self.vm.set_msi_route(gsi, self.msix.route(v)) {
                datapath::log_limited!(
                    warn,
                    device = self.device.name(),
                    "Cannot route MSI-X vector {v}: {e}"
                );
            }
        }
        // An interrupt raised while masked was lost with the route: raise
        // the vector's queues again (a spurious interrupt is harmless).
        for v in change.unmasked {
            for &(q, _) in &self.bound {
                if self.common.queues[q].vector == v {
                    let _ = self.calls[q].write(1);
                }
            }
            if self.config_bound.is_some()
                && self.common.msix_config == v
                && self.needs_reset.is_raised()
            {
                let _ = self.needs_reset.config_call().write(1);
            }
        }
    }

    fn activate(&mut self) {
        let name = self.device.name().to_owned();
        let mut queues = Vec::new();
        for (index, q) in self.common.queues.iter().enumerate() {
            if !q.enabled {
                continue;
            }
            queues.push(QueueSetup {
                index,
                size: q.size,
                desc: q.desc,
                avail: q.avail,
                used: q.used,
                kick: Arc::clone(&self.kicks[index]),
                call: Arc::clone(&self.calls[index]),
            });
        }
        if self.msix.enabled() {
            for q in &queues {
                let v = self.common.queues[q.index].vector;
                let Some(&gsi) = self.gsis.get(usize::from(v)) else {
                    continue;
                };
                match self.vm.register_irqfd(&q.call, gsi) {
                    Ok(()) => self.bound.push((q.index, gsi)),
                    Err(e) => tracing::error!(device = name, "Cannot bind queue {}: {e}", q.index),
                }
            }
            let config = self.needs_reset.config_call();
            if let Some(&gsi) = self.gsis.get(usize::from(self.common.msix_config)) {
                match self.vm.register_irqfd(config, gsi) {
                    Ok(()) => self.config_bound = Some(gsi),
                    Err(e) => tracing::error!(device = name, "Cannot bind the config vector: {e}"),
                }
            }
        } else {
            let calls = queues.iter().map(|q| Arc::clone(&q.call)).collect();
            match start_relay(
                &name,
                calls,
                Arc::clone(self.needs_reset.config_call()),
                Arc::clone(&self.isr),
                Arc::clone(&self.intx_line),
                Arc::clone(&self.counters.intx_relayed),
            ) {
                Ok(w) => self.relay = Some(w),
                Err(e) => tracing::error!(device = name, "Cannot start the INTx relay: {e}"),
            }
        }
        let activation = Activation {
            ram: self.ram.clone(),
            features: self.common.driver_features,
            queues,
            needs_reset: self.needs_reset.clone(),
        };
        self.counters.activations.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.device.activate(activation) {
            tracing::error!("Device failed to start: {e}");
            self.common.status |= status::NEEDS_RESET;
        } else {
            tracing::info!(device = name, "Driver started the device");
        }
    }

    fn reset_device(&mut self) {
        self.device.reset();
        for (q, gsi) in self.bound.drain(..) {
            let _ = self.vm.unregister_irqfd(&self.calls[q], gsi);
        }
        if let Some(gsi) = self.config_bound.take() {
            let _ = self
                .vm
                .unregister_irqfd(self.needs_reset.config_call(), gsi);
        }
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
        for evt in self.kicks.iter().chain(&self.calls) {
            let _ = evt.read();
        }
        let _ = self.needs_reset.config_call().read();
        self.needs_reset.clear();
        self.isr.store(0, Ordering::SeqCst);
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the device off the VM for good: its workers stopped, its
    /// doorbells unbound, so that another device can take
    /// its place on the same VM (fuzzing makes one per input). The INTx
    /// irqfd goes when its eventfd is closed.
    #[cfg(any(test, fuzzing))]
    pub fn unplug(&mut self) {
        self.shutdown();
        for (q, kick) in self.kicks.iter().enumerate() {
            let off = NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_MULTIPLIER);
            let _ = self.vm.unregister_ioevent(kick, self.bar + off);
        }
    }

    /// Where the device's BAR is now (the guest may move it).
    pub fn bar(&self) -> u64 {
        self.bar
    }

    /// Stops the device's workers (the VM is ending).
    pub fn shutdown(&mut self) {
        if self.common.status != 0 {
            self.common.reset();
            self.reset_device();
        }
        self.device.disconnect();
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// Counters of the transport and the device.
    pub fn counters(&self) -> VirtioCounters {
        let c = &self.counters;
        VirtioCounters {
            device: self.device.name().to_owned(),
            status: self.common.status,
            msix: self.msix.enabled(),
            activations: c.activations.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            notifications_trapped: c.notifications_trapped.load(Ordering::Relaxed),
            intx_interrupts: c.intx_relayed.load(Ordering::Relaxed),
            backend: self.device.counters(),
        }
    }
}

impl VirtioPci {
    /// The BAR 0 window the PCI_CFG capability selects: offset and 1, 2 or
    /// 4 bytes.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let cap = self.caps.pci_cfg;
        let bar = self.config.bytes(cap + 4, 1)[0];
        let offset = u64::from(self.config.read_reg((cap + 8) / 4));
        let len = self.config.read_reg((cap + 12) / 4) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4) && offset + len as u64 <= BAR_SIZE)
            .then_some((offset, len))
    }
}

impl PciFunction for VirtioPci {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn read_config_reg(&mut self, reg: usize) -> u32 {
        if reg * 4 == self.caps.pci_cfg + 16 {
            let mut data = [0u8; 4];
            if let Some((offset, len)) = self.pci_cfg_window() {
                self.read(self.bar, offset, &mut data[..len]);
            }
            return u32::from_le_bytes(data);
        }
        self.config.read_reg(reg)
    }

    fn config_written(&mut self, off: usize) {
        let data_reg = self.caps.pci_cfg + 16;
        if (data_reg..data_reg + 4).contains(&off) {
            // The data the driver wrote sits in the (unmasked) register copy.
            if let Some((offset, len)) = self.pci_cfg_window() {
                let value = self.config.read_reg(data_reg / 4).to_le_bytes();
                self.write(self.bar, offset, &value[..len]);
            }
            return;
        }
        let control = self.caps.msix + 2;
        if (off..off + 4).contains(&control) || (off..off + 4).contains(&(control + 1)) {
            let value = self.config.u16_at(control);
            let change = self.msix.set_message_control(value);
            self.apply_msix(change);
        }
    }

    fn bar_moved(&mut self, mv: &BarMove) {
        for (q, kick) in self.kicks.iter().enumerate() {
            let off = NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_MULTIPLIER);
            let _ = self.vm.unregister_ioevent(kick, mv.old + off);
            if let Err(e) = self.vm.register_ioevent(kick, mv.new + off) {
                datapath::log_limited!(
                    warn,
                    device = self.device.name(),
                    "Cannot move queue {q}'s doorbell: {e}"
                );
            }
        }
        self.bar = mv.new;
    }
}

impl BusDevice for VirtioPci {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < COMMON_CFG_SIZE => {
                if self.needs_reset.is_raised() {
                    self.common.status |= status::NEEDS_RESET;
                }
                self.common.read(o - COMMON_OFFSET, data);
            }
            ISR_OFFSET => {
                let v = self.isr.swap(0, Ordering::SeqCst);
                data.fill(0);
                data[0] = v;
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_SIZE).contains(&o) => {
                self.device.read_config(o - DEVICE_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.read_table(o - MSIX_TABLE_OFFSET, data);
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                self.msix.read_pba(o - MSIX_PBA_OFFSET, data);
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_CFG_SIZE => match self.common.write(o - COMMON_OFFSET, data) {
                CommonEvent::None => {}
                CommonEvent::Reset => self.reset_device(),
                CommonEvent::DriverOk => self.activate(),
            },
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_SIZE).contains(&o) => {
                self.device.write_config(o - DEVICE_OFFSET, data);
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                // KVM handles doorbells through the ioeventfds; a write that
                // still exits (odd size) is passed on by hand.
                let q = ((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(kick) = self.kicks.get(q) {
                    self.counters
                        .notifications_trapped
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = kick.write(1);
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                let rel = o - MSIX_TABLE_OFFSET;
                if rel / ENTRY_SIZE < u64::from(self.msix.len()) {
                    let change = self.msix.write_table(rel, data);
                    self.apply_msix(change);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the capability list from the capabilities pointer.
    fn caps(c: &ConfigSpace) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = (c.read_reg(0x34 / 4) & 0xff) as usize;
        while off != 0 {
            let len = if c.bytes(off, 1)[0] == PCI_CAP_MSIX {
                12
            } else {
                usize::from(c.bytes(off + 2, 1)[0])
            };
            out.push((off, c.bytes(off, len).to_vec()));
            off = usize::from(c.bytes(off + 1, 1)[0]);
        }
        out
    }

    #[test]
    fn capabilities_describe_bar0() {
        let (c, offsets) = build_config(super::super::device_type::BLOCK, 2, 3, 0xc000_0000, 16);
        let msix_cap = offsets.msix;
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        assert_eq!(c.read_reg(0xb) >> 16, 0x0040, "modern subsystem id");
        assert_eq!(c.read_reg(4), 0xc000_0004, "64-bit memory BAR");
        assert_eq!(c.read_reg(0xf) & 0xffff, 0x0110, "INTA# on pin 16");
        let caps = caps(&c);
        assert_eq!(caps.len(), 6);
        assert_eq!(caps[5].0, offsets.pci_cfg);
        assert_eq!((caps[5].1[3], caps[5].1[2]), (CAP_PCI_CFG, 20));
        let (off, msix) = &caps[0];
        assert_eq!(*off, msix_cap);
        assert_eq!(msix[0], PCI_CAP_MSIX);
        assert_eq!(u16::from_le_bytes([msix[2], msix[3]]), 2, "3 vectors");
        assert_eq!(u32::from_le_bytes(msix[4..8].try_into().unwrap()), 0x3000);
        assert_eq!(u32::from_le_bytes(msix[8..12].try_into().unwrap()), 0x3800);
        let virtio: Vec<(u8, u32, u32)> = caps[1..5]
            .iter()
            .map(|(_, b)| {
                assert_eq!((b[0], b[4]), (PCI_CAP_VENDOR, 0), "vendor cap in BAR 0");
                (
                    b[3],
                    u32::from_le_bytes(b[8..12].try_into().unwrap()),
                    u32::from_le_bytes(b[12..16].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(
            virtio,
            vec![
                (CAP_COMMON, 0, 0x38),
                (CAP_NOTIFY, 0x2000, 8),
                (CAP_ISR, 0x800, 1),
                (CAP_DEVICE, 0x1000, 0x1000)
            ]
        );
        let notify = &caps[2].1;
        assert_eq!(notify[2], 20);
        assert_eq!(u32::from_le_bytes(notify[16..20].try_into().unwrap()), 4);
        // Every region fits in the BAR and they do not overlap.
        let mut regions = [
            (0, 0x38),
            (0x800, 1),
            (0x1000, 0x1000),
            (0x2000, 8),
            (MSIX_TABLE_OFFSET, 3 * ENTRY_SIZE),
            (MSIX_PBA_OFFSET, 8),
        ];
        regions.sort_unstable();
        for w in regions.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0);
        }
        assert!(regions[5].0 + regions[5].1 <= BAR_SIZE);
    }

    #[test]
    fn msix_enable_is_the_only_writable_control_bit() {
        let (mut c, offsets) = build_config(4, 1, 2, 0xc000_0000, 16);
        let msix_cap = offsets.msix;
        c.write(msix_cap + 2, &[0xff, 0xff]);
        assert_eq!(c.u16_at(msix_cap + 2), 0xc001);
    }
}
