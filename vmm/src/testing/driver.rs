//! A virtio-pci driver that runs in the test, not in a guest: it reaches
//! devices through the VMM's port-I/O and MMIO buses exactly where a
//! guest's `in`/`out` and loads/stores would land, and builds split rings
//! in guest memory. It proves the transport and the backends without a
//! guest kernel (which this machine's KVM cannot run at CPL0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use crate::bus::Bus;
use crate::machine::Machine;
use crate::memory::GuestMemory;
use crate::virtio::{F_VERSION_1, status};

/// Where the driver puts rings: queue `q` at `RINGS + q * 0x4000` (clear
/// of the tiny guests at [`super::LOAD_ADDR`] and their stack).
pub const RINGS: u64 = 0x40_0000;
/// Descriptor flags.
pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;

/// A driver failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, DriverError> {
    Err(DriverError(msg.into()))
}

/// The guest's view of the buses.
#[derive(Debug, Clone)]
pub struct PciDriver {
    io: Arc<Bus>,
    mmio: Arc<Bus>,
    mem: GuestMemory,
}

/// One queue's split ring as the driver keeps it.
#[derive(Debug, Clone)]
pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
}

/// An initialised device.
#[derive(Debug)]
pub struct Device {
    pub slot: u32,
    pub bar: u64,
    pub common: u64,
    pub notify: u64,
    pub device_cfg: u64,
    pub features: u64,
    pub rings: Vec<Ring>,
}

impl PciDriver {
    pub fn new(machine: &Machine) -> PciDriver {
        PciDriver {
            io: Arc::clone(machine.io_bus()),
            mmio: Arc::clone(machine.mmio_bus()),
            mem: machine.ram().memory.clone(),
        }
    }

    pub fn conf_read(&self, slot: u32, off: u32) -> u32 {
        let addr = 0x8000_0000 | (slot << 11) | (off & 0xfc);
        self.io.write(0xcf8, &addr.to_le_bytes());
        let mut d = [0u8; 4];
        self.io.read(0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    pub fn conf_write(&self, slot: u32, off: u32, v: u32) {
        let addr = 0x8000_0000 | (slot << 11) | (off & 0xfc);
        self.io.write(0xcf8, &addr.to_le_bytes());
        self.io.write(0xcfc, &v.to_le_bytes());
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), DriverError> {
        if self.mmio.read(addr, data) {
            Ok(())
        } else {
            fail(format!("nothing at {addr:#x}"))
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), DriverError> {
        if self.mmio.write(addr, data) {
            Ok(())
        } else {
            fail(format!("nothing at {addr:#x}"))
        }
    }

    pub fn r32(&self, addr: u64) -> Result<u32, DriverError> {
        let mut d = [0u8; 4];
        self.read(addr, &mut d)?;
        Ok(u32::from_le_bytes(d))
    }

    pub fn w32(&self, addr: u64, v: u32) -> Result<(), DriverError> {
        self.write(addr, &v.to_le_bytes())
    }

    pub fn w16(&self, addr: u64, v: u16) -> Result<(), DriverError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    /// The slot holding virtio device `device_type` (the `index`th one).
    pub fn find(&self, device_type: u16, index: usize) -> Option<u32> {
        let id = 0x1af4 | ((0x1040 + u32::from(device_type)) << 16);
        (1..32).filter(|s| self.conf_read(*s, 0) == id).nth(index)
    }

    /// Capability offsets by type (virtio cfg types; 0x111 for MSI-X).
    fn caps(&self, slot: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut off = self.conf_read(slot, 0x34) & 0xff;
        while off != 0 && out.len() < 16 {
            let head = self.conf_read(slot, off);
            let (id, next) = (head & 0xff, (head >> 8) & 0xff);
            out.push((
                if id == 0x09 {
                    (head >> 24) & 0xff
                } else {
                    0x100 | id
                },
                off,
            ));
            off = next;
        }
        out
    }

    /// Brings the device in `slot` up: memory decoding, MSI-X with vector
    /// `q` for queue `q` (when `msix`), feature negotiation (`wanted` &
    /// offered, with VERSION_1), every queue at `queue_size`, DRIVER_OK.
    pub fn init(
        &self,
        slot: u32,
        wanted: u64,
        queue_size: u16,
        msix: bool,
    ) -> Result<Device, DriverError> {
        let bar = u64::from(self.conf_read(slot, 0x10) & !0xf)
            | (u64::from(self.conf_read(slot, 0x14)) << 32);
        self.conf_write(slot, 0x04, 0x6);
        let caps = self.caps(slot);
        let cap = |kind: u32| {
            caps.iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, off)| *off)
                .ok_or_else(|| DriverError(format!("no capability {kind:#x}")))
        };
        let region = |kind: u32| -> Result<u64, DriverError> {
            Ok(bar + u64::from(self.conf_read(slot, cap(kind)? + 8)))
        };
        let (common, notify, device_cfg) = (region(1)?, region(2)?, region(4)?);
        let msix_cap = cap(0x111)?;
        let table = bar + u64::from(self.conf_read(slot, msix_cap + 4) & !7);

        self.write(common + 0x14, &[0])?;
        self.write(common + 0x14, &[status::ACKNOWLEDGE | status::DRIVER])?;
        self.w32(common, 0)?;
        let lo = self.r32(common + 4)?;
        self.w32(common, 1)?;
        let hi = self.r32(common + 4)?;
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        let features = offered & (wanted | F_VERSION_1);
        for (sel, half) in [(0, features as u32), (1, (features >> 32) as u32)] {
            self.w32(common + 8, sel)?;
            self.w32(common + 0xc, half)?;
        }
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(common + 0x14, &[s])?;
        let mut got = [0u8];
        self.read(common + 0x14, &mut got)?;
        if got[0] & status::FEATURES_OK == 0 {
            return fail("the device refused the features");
        }

        if msix {
            let control = self.conf_read(slot, msix_cap) | (1 << 31);
            self.conf_write(slot, msix_cap, control);
        }
        let mut nq = [0u8; 2];
        self.read(common + 0x12, &mut nq)?;
        let mut rings = Vec::new();
        for q in 0..u16::from_le_bytes(nq) {
            let base = RINGS + u64::from(q) * 0x4000;
            let ring = Ring {
                size: queue_size,
                desc: base,
                avail: base + 0x1000,
                used: base + 0x2000,
                next_desc: 0,
                avail_idx: 0,
            };
            for (addr, len) in [
                (ring.desc, 0x1000),
                (ring.avail, 0x1000),
                (ring.used, 0x2000),
            ] {
                self.mem
                    .write_slice(&vec![0u8; len], GuestAddress(addr))
                    .map_err(|e| DriverError(e.to_string()))?;
            }
            self.w16(common + 0x16, q)?;
            self.w16(common + 0x18, queue_size)?;
            if msix {
                let entry = table + u64::from(q) * 16;
                self.w32(entry, 0xfee0_0000)?;
                self.w32(entry + 4, 0)?;
                self.w32(entry + 8, 0x30 + u32::from(q))?;
                self.w32(entry + 12, 0)?;
                self.w16(common + 0x1a, q)?;
            }
            for (off, addr) in [(0x20, ring.desc), (0x28, ring.avail), (0x30, ring.used)] {
                self.w32(common + off, addr as u32)?;
                self.w32(common + off + 4, (addr >> 32) as u32)?;
            }
            self.w16(common + 0x1c, 1)?;
            rings.push(ring);
        }
        self.write(common + 0x14, &[s | status::DRIVER_OK])?;
        self.read(common + 0x14, &mut got)?;
        if got[0] & status::NEEDS_RESET != 0 {
            return fail("the device failed to start (NEEDS_RESET)");
        }
        Ok(Device {
            slot,
            bar,
            common,
            notify,
            device_cfg,
            features,
            rings,
        })
    }

    /// Puts a chain of `(addr, len, device_writes)` buffers on queue `q`
    /// and rings its doorbell; returns the head descriptor.
    pub fn submit(
        &self,
        dev: &mut Device,
        q: usize,
        buffers: &[(u64, u32, bool)],
    ) -> Result<u16, DriverError> {
        let err = |e: vm_memory::GuestMemoryError| DriverError(e.to_string());
        let ring = &mut dev.rings[q];
        let head = ring.next_desc;
        for (i, (addr, len, writes)) in buffers.iter().enumerate() {
            let idx = (head + i as u16) % ring.size;
            let d = ring.desc + u64::from(idx) * 16;
            let mut flags = if *writes { DESC_WRITE } else { 0 };
            if i + 1 < buffers.len() {
                flags |= DESC_NEXT;
            }
            let next = (idx + 1) % ring.size;
            self.mem.write_obj(*addr, GuestAddress(d)).map_err(err)?;
            self.mem.write_obj(*len, GuestAddress(d + 8)).map_err(err)?;
            self.mem
                .write_obj(flags, GuestAddress(d + 12))
                .map_err(err)?;
            self.mem
                .write_obj(next, GuestAddress(d + 14))
                .map_err(err)?;
        }
        ring.next_desc = (head + buffers.len() as u16) % ring.size;
        let slot = ring.avail + 4 + u64::from(ring.avail_idx % ring.size) * 2;
        self.mem.write_obj(head, GuestAddress(slot)).map_err(err)?;
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .map_err(err)?;
        self.w16(dev.notify + q as u64 * 4, q as u16)?;
        Ok(head)
    }

    /// Waits until queue `q`'s used index reaches the available index;
    /// returns the last used element's length.
    pub fn wait_used(&self, dev: &Device, q: usize, timeout: Duration) -> Result<u32, DriverError> {
        let ring = &dev.rings[q];
        let deadline = Instant::now() + timeout;
        loop {
            let used: u16 = self
                .mem
                .read_obj(GuestAddress(ring.used + 2))
                .map_err(|e| DriverError(e.to_string()))?;
            if used == ring.avail_idx {
                let last = u64::from(used.wrapping_sub(1) % ring.size);
                return self
                    .mem
                    .read_obj(GuestAddress(ring.used + 4 + last * 8 + 4))
                    .map_err(|e| DriverError(e.to_string()));
            }
            if Instant::now() >= deadline {
                return fail(format!(
                    "queue {q}: used index {used}, wanted {} within {timeout:?}",
                    ring.avail_idx
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Resets the device (status 0).
    pub fn reset(&self, dev: &Device) -> Result<(), DriverError> {
        self.write(dev.common + 0x14, &[0])
    }
}
