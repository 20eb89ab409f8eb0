//! Port-I/O and MMIO dispatch: address ranges mapped to devices. A vCPU
//! exit looks up the range under a read lock and calls the device under
//! its own lock, so devices on different ranges run in parallel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// A device on a bus. `offset` is relative to the range's base.
pub trait BusDevice: Send {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// A device shared between the bus and its owner.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors changing a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("Range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap { base: u64, len: u64 },
    #[error("Range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
    #[error("No device at {0:#x}")]
    NotFound(u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// One address space (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_list()
            .entries(ranges.iter().map(|(b, e)| (*b, e.len)))
            .finish()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Maps `device` at `base..base+len`.
    pub fn insert(&self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::BadRange { base, len });
        }
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        let overlaps_before = ranges
            .range(..=base)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        let overlaps_after = ranges.range(base..base + len).next().is_some();
        if overlaps_before || overlaps_after {
            return Err(BusError::Overlap { base, len });
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Moves the range at `old_base` to `new_base` (a re-programmed BAR).
    pub fn relocate(&self, old_base: u64, new_base: u64) -> Result<(), BusError> {
        let entry = {
            let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
            ranges
                .remove(&old_base)
                .ok_or(BusError::NotFound(old_base))?
        };
        let len = entry.len;
        if let Err(e) = self.insert(Arc::clone(&entry.device), new_base, len) {
            // Put it back where it was; the guest asked for an overlap.
            let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
            ranges.insert(old_base, entry);
            return Err(e);
        }
        Ok(())
    }

    /// Removes the range at `base`.
    pub fn remove(&self, base: u64) -> Result<(), BusError> {
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        ranges
            .remove(&base)
            .map(|_| ())
            .ok_or(BusError::NotFound(base))
    }

    fn lookup(&self, addr: u64) -> Option<(u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        let (base, entry) = ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then(|| (*base, Arc::clone(&entry.device)))
    }

    /// Dispatches a read; returns false (and leaves `data` as is) when no
    /// device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(addr) {
            Some((base, dev)) => {
                dev.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .read(base, addr - base, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.lookup(addr) {
            Some((base, dev)) => {
                dev.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(base, addr - base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last: Option<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last = Some((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_overlap_and_relocation() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        assert_eq!(
            bus.insert(dev.clone(), 0x10f, 1),
            Err(BusError::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert!(bus.insert(dev.clone(), 0xf8, 9).is_err());
        bus.insert(dev.clone(), 0x110, 1).unwrap();
        let mut data = [0u8; 2];
        assert!(bus.read(0x105, &mut data));
        assert_eq!(data, [5, 5]);
        assert!(!bus.read(0x111, &mut data));
        assert!(bus.write(0x10a, &[1, 2]));
        assert_eq!(dev.lock().unwrap().last, Some((0x100, 0xa, vec![1, 2])));
        bus.relocate(0x100, 0x200).unwrap();
        assert!(!bus.write(0x100, &[1]));
        assert!(bus.write(0x20f, &[1]));
        // A move onto another range is refused and the range stays.
        assert!(bus.relocate(0x200, 0x10a).is_err());
        assert!(bus.write(0x200, &[1]));
    }
}
