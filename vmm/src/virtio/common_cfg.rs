//! The virtio-pci common configuration structure (virtio 1.x, 4.1.4.3):
//! feature windows, device status, and the per-queue registers behind
//! `queue_select`. Pure register logic; the transport acts on the events a
//! write returns.

use super::status;
use crate::pci::msix::NO_VECTOR;

/// Size of the structure.
pub const COMMON_CFG_SIZE: u64 = 0x38;

/// Registers of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    pub max_size: u16,
    pub size: u16,
    pub vector: u16,
    pub enabled: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> QueueRegs {
        QueueRegs {
            max_size,
            size: max_size,
            vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// What a write asks the transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonEvent {
    None,
    /// Status written as 0: reset the device.
    Reset,
    /// DRIVER_OK set: start the device.
    DriverOk,
}

/// The register file.
#[derive(Debug, Clone)]
pub struct CommonCfg {
    device_features: u64,
    pub driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    pub msix_config: u16,
    pub status: u8,
    queue_select: u16,
    pub queues: Vec<QueueRegs>,
    /// Vectors a write may use (the MSI-X table size).
    vectors: u16,
}

fn set_half(value: &mut u64, high: bool, half: u32) {
    if high {
        *value = (*value & 0xffff_ffff) | (u64::from(half) << 32);
    } else {
        *value = (*value & !0xffff_ffff) | u64::from(half);
    }
}

impl CommonCfg {
    pub fn new(device_features: u64, queue_max_sizes: &[u16], vectors: u16) -> CommonCfg {
        CommonCfg {
            device_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            msix_config: NO_VECTOR,
            status: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|m| QueueRegs::new(*m)).collect(),
            vectors,
        }
    }

    /// Back to the state after power-on (the device features stay).
    pub fn reset(&mut self) {
        *self = CommonCfg::new(
            self.device_features,
            &self.queues.iter().map(|q| q.max_size).collect::<Vec<_>>(),
            self.vectors,
        );
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The structure's bytes as the driver reads them now.
    fn render(&self) -> [u8; COMMON_CFG_SIZE as usize] {
        let mut b = [0u8; COMMON_CFG_SIZE as usize];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(0x00, &self.device_feature_select.to_le_bytes());
        let feature_window = match self.device_feature_select {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        };
        put(0x04, &feature_window.to_le_bytes());
        put(0x08, &self.driver_feature_select.to_le_bytes());
        let driver_window = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(0x0c, &driver_window.to_le_bytes());
        put(0x10, &self.msix_config.to_le_bytes());
        put(0x12, &(self.queues.len() as u16).to_le_bytes());
        put(0x14, &[self.status, 0]);
        put(0x16, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected() {
            let size = if q.max_size == 0 { 0 } else { q.size };
            put(0x18, &size.to_le_bytes());
            put(0x1a, &q.vector.to_le_bytes());
            put(0x1c, &u16::from(q.enabled).to_le_bytes());
            put(0x1e, &self.queue_select.to_le_bytes()); // queue_notify_off
            put(0x20, &q.desc.to_le_bytes());
            put(0x28, &q.avail.to_le_bytes());
            put(0x30, &q.used.to_le_bytes());
        }
        b
    }

    /// A driver read.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        super::read_bytes(&self.render(), offset, data);
    }

    /// A driver write; returns what the transport must do.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonEvent {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let v64 = u64::from_le_bytes(raw);
        let v32 = v64 as u32;
        let v16 = v64 as u16;
        let features_open = self.status & status::FEATURES_OK == 0;
        let queue_open = self.status & status::DRIVER_OK == 0;
        let vectors = self.vectors;
        let qs = usize::from(self.queue_select);
        match offset {
            0x00 => self.device_feature_select = v32,
            0x08 => self.driver_feature_select = v32,
            0x0c if features_open => match self.driver_feature_select {
                0 => set_half(&mut self.driver_features, false, v32),
                1 => set_half(&mut self.driver_features, true, v32),
                _ => {}
            },
            0x10 => self.msix_config = if v16 < vectors { v16 } else { NO_VECTOR },
            0x14 => return self.write_status(data.first().copied().unwrap_or(0)),
            0x16 => self.queue_select = v16,
            _ => {
                let Some(q) = self.queues.get_mut(qs) else {
                    return CommonEvent::None;
                };
                match offset {
                    0x18 if queue_open => q.size = v16.min(q.max_size),
                    0x1a => q.vector = if v16 < vectors { v16 } else { NO_VECTOR },
                    0x1c if queue_open && v16 == 1 => q.enabled = true,
                    0x20 | 0x24 if queue_open => set_half(&mut q.desc, offset == 0x24, v32),
                    0x28 | 0x2c if queue_open => set_half(&mut q.avail, offset == 0x2c, v32),
                    0x30 | 0x34 if queue_open => set_half(&mut q.used, offset == 0x34, v32),
                    _ => {}
                }
                // 64-bit writes to an address register set both halves.
                if data.len() == 8 && queue_open {
                    match offset {
                        0x20 => q.desc = v64,
                        0x28 => q.avail = v64,
                        0x30 => q.used = v64,
                        _ => {}
                    }
                }
            }
        }
        CommonEvent::None
    }

    fn write_status(&mut self, value: u8) -> CommonEvent {
        if value == 0 {
            self.reset();
            return CommonEvent::Reset;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & status::FEATURES_OK != 0 {
            // Only features the device offered, and a modern driver.
            let ok = self.driver_features & !self.device_features == 0
                && self.driver_features & super::F_VERSION_1 != 0;
            if !ok {
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value;
        if newly & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0 {
            CommonEvent::DriverOk
        } else {
            CommonEvent::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::F_VERSION_1;

    fn r32(c: &CommonCfg, off: u64) -> u32 {
        let mut d = [0u8; 4];
        c.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn w32(c: &mut CommonCfg, off: u64, v: u32) -> CommonEvent {
        c.write(off, &v.to_le_bytes())
    }

    fn w16(c: &mut CommonCfg, off: u64, v: u16) -> CommonEvent {
        c.write(off, &v.to_le_bytes())
    }

    #[test]
    fn feature_negotiation_follows_the_spec() {
        let features = F_VERSION_1 | 1;
        let mut c = CommonCfg::new(features, &[256, 128], 3);
        w32(&mut c, 0x00, 1);
        assert_eq!(r32(&c, 0x04), 1, "VERSION_1 is bit 0 of the high window");
        w32(&mut c, 0x00, 0);
        assert_eq!(r32(&c, 0x04), 1);
        // A feature the device does not offer: FEATURES_OK does not stick.
        w32(&mut c, 0x08, 0);
        w32(&mut c, 0x0c, 0b11);
        w32(&mut c, 0x08, 1);
        w32(&mut c, 0x0c, 1);
        c.write(
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        assert_eq!(c.status & status::FEATURES_OK, 0);
        w32(&mut c, 0x08, 0);
        w32(&mut c, 0x0c, 0b01);
        c.write(
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        assert_ne!(c.status & status::FEATURES_OK, 0);
        assert_eq!(c.driver_features, features);
        // Features are frozen after FEATURES_OK.
        w32(&mut c, 0x0c, 0);
        assert_eq!(c.driver_features, features);
        assert_eq!(
            c.write(0x14, &[0x0f]),
            CommonEvent::DriverOk,
            "DRIVER_OK starts the device"
        );
        assert_eq!(c.write(0x14, &[0]), CommonEvent::Reset);
        assert_eq!((c.status, c.driver_features), (0, 0));
    }

    #[test]
    fn queue_registers_are_per_queue() {
        let mut c = CommonCfg::new(F_VERSION_1, &[256, 64], 2);
        let mut d = [0u8; 2];
        c.read(0x12, &mut d);
        assert_eq!(u16::from_le_bytes(d), 2);
        w16(&mut c, 0x16, 1);
        w16(&mut c, 0x18, 1024);
        c.read(0x18, &mut d);
        assert_eq!(u16::from_le_bytes(d), 64, "clamped to the maximum");
        w16(&mut c, 0x1a, 1);
        w16(&mut c, 0x1e, 7);
        c.read(0x1e, &mut d);
        assert_eq!(u16::from_le_bytes(d), 1, "notify_off is the queue index");
        w32(&mut c, 0x20, 0x1000);
        w32(&mut c, 0x24, 0x1);
        c.write(0x28, &0x2_0000_2000u64.to_le_bytes());
        w32(&mut c, 0x30, 0x3000);
        w16(&mut c, 0x1c, 1);
        let q = c.queues[1];
        assert_eq!(
            (q.desc, q.avail, q.used, q.vector, q.enabled),
            (0x1_0000_1000, 0x2_0000_2000, 0x3000, 1, true)
        );
        assert!(!c.queues[0].enabled);
        // A vector past the table reads back as NO_VECTOR.
        w16(&mut c, 0x1a, 5);
        c.read(0x1a, &mut d);
        assert_eq!(u16::from_le_bytes(d), NO_VECTOR);
        // A queue past the end reads as size 0.
        w16(&mut c, 0x16, 9);
        c.read(0x18, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
