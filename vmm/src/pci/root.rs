//! PCI bus 0 behind configuration mechanism #1 (ports 0xCF8 address,
//! 0xCFC..0xCFF data): a host bridge in slot 0 and one function per slot
//! after it. A BAR the guest re-programs is moved on the MMIO bus.

use std::sync::{Arc, Mutex, PoisonError};

use super::config::{BarMove, ConfigSpace, PciIdentity};
use crate::bus::{Bus, BusDevice};

/// The conf1 ports.
pub const CONF1_BASE: u64 = 0xCF8;
pub const CONF1_LEN: u64 = 8;
/// Slots on bus 0.
pub const SLOTS: usize = 32;

/// A PCI function on bus 0.
pub trait PciFunction: Send {
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// Reads dword register `reg` (a function may compute some registers).
    fn read_config_reg(&mut self, reg: usize) -> u32 {
        self.config().read_reg(reg)
    }
    /// Called after a guest write at byte offset `off` (e.g. MSI-X enable).
    fn config_written(&mut self, _off: usize) {}
    /// Called after BAR `mv.index` moved on the MMIO bus.
    fn bar_moved(&mut self, _mv: &BarMove) {}
}

/// A shared PCI function.
pub type SharedFunction = Arc<Mutex<dyn PciFunction>>;

/// The host bridge in slot 0.
#[derive(Debug)]
struct HostBridge {
    config: ConfigSpace,
}

impl PciFunction for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
}

/// Bus 0 and its conf1 ports.
pub struct PciRoot {
    address: u32,
    slots: Vec<Option<SharedFunction>>,
    mmio: Arc<Bus>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<usize> = (0..SLOTS).filter(|s| self.slots[*s].is_some()).collect();
        f.debug_struct("PciRoot")
            .field("address", &self.address)
            .field("slots", &used)
            .finish()
    }
}

impl PciRoot {
    /// Bus 0 with the host bridge; BAR moves go to `mmio`.
    pub fn new(mmio: Arc<Bus>) -> PciRoot {
        let bridge = HostBridge {
            config: ConfigSpace::new(
                &PciIdentity {
                    vendor: 0x8086,
                    device: 0x0d57,
                    revision: 0,
                    class: [0x06, 0x00, 0x00], // bridge, host
                    subsystem_vendor: 0,
                    subsystem: 0,
                },
                0,
                0,
            ),
        };
        let mut slots: Vec<Option<SharedFunction>> = (0..SLOTS).map(|_| None).collect();
        slots[0] = Some(Arc::new(Mutex::new(bridge)));
        PciRoot {
            address: 0,
            slots,
            mmio,
        }
    }

    /// Puts `function` in `slot`.
    pub fn insert(&mut self, slot: usize, function: SharedFunction) {
        self.slots[slot] = Some(function);
    }

    /// The function the address register selects, and the byte offset.
    fn selected(&self) -> Option<(SharedFunction, usize)> {
        let a = self.address;
        let enabled = a & 0x8000_0000 != 0;
        let bus = (a >> 16) & 0xff;
        let device = ((a >> 11) & 0x1f) as usize;
        let function = (a >> 8) & 0x7;
        if !enabled || bus != 0 || function != 0 {
            return None;
        }
        let f = self.slots.get(device)?.as_ref()?;
        Some((Arc::clone(f), (a & 0xfc) as usize))
    }

    fn config_read(&self, offset: usize, data: &mut [u8]) {
        let Some((f, reg_off)) = self.selected() else {
            data.fill(0xff);
            return;
        };
        let value = f
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_config_reg(reg_off / 4);
        let bytes = value.to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = bytes.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    fn config_write(&self, offset: usize, data: &[u8]) {
        let Some((f, reg_off)) = self.selected() else {
            return;
        };
        let off = reg_off + offset;
        let mut function = f.lock().unwrap_or_else(PoisonError::into_inner);
        let moves = function.config_mut().write(off, data);
        for mv in moves {
            match self.mmio.relocate(mv.old, mv.new) {
                Ok(()) => {
                    function.config_mut().set_mapped(mv.index, mv.new);
                    function.bar_moved(&mv);
                }
                Err(e) => datapath::log_limited!(
                    warn,
                    "Guest moved BAR {} from {:#x} to {:#x}; not moved: {e}",
                    mv.index,
                    mv.old,
                    mv.new
                ),
            }
        }
        function.config_written(off);
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => self.config_read((offset - 4) as usize, data),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes(data.try_into().expect("4 bytes"));
            }
            4..=7 => self.config_write((offset - 4) as usize, data),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(root: &mut PciRoot, slot: u32, reg: u32) -> u32 {
        let addr = 0x8000_0000 | (slot << 11) | (reg << 2);
        root.write(CONF1_BASE, 0, &addr.to_le_bytes());
        let mut d = [0u8; 4];
        root.read(CONF1_BASE, 4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn conf1_finds_the_host_bridge_and_nothing_else() {
        let mut root = PciRoot::new(Arc::new(Bus::new()));
        assert_eq!(read32(&mut root, 0, 0), 0x0d57_8086);
        assert_eq!(read32(&mut root, 0, 2) >> 16, 0x0600);
        assert_eq!(read32(&mut root, 1, 0), 0xffff_ffff);
        // Byte reads at 0xCFE return the high half.
        root.write(CONF1_BASE, 0, &0x8000_0000u32.to_le_bytes());
        let mut d = [0u8; 2];
        root.read(CONF1_BASE, 6, &mut d);
        assert_eq!(u16::from_le_bytes(d), 0x0d57);
        // Disabled address: nothing.
        root.write(CONF1_BASE, 0, &0u32.to_le_bytes());
        let mut d = [0u8; 4];
        root.read(CONF1_BASE, 4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // The address register reads back.
        root.write(CONF1_BASE, 0, &0x8000_0810u32.to_le_bytes());
        root.read(CONF1_BASE, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0810);
    }
}
