//! A type-0 PCI configuration space: the header, BARs with sizing and
//! re-programming, and a capability list. Writes go through a mask of
//! writable bits, so read-only fields stay what the device says.

/// Bytes of configuration space (conventional PCI).
pub const CONFIG_SIZE: usize = 256;
/// Where the first capability goes.
const FIRST_CAPABILITY: usize = 0x40;
/// Number of BARs of a type-0 header.
pub const NUM_BARS: usize = 6;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const CAPABILITIES_POINTER: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
/// Status: the capability list is valid.
const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Command register bits.
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// A memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub size: u64,
    pub is64: bool,
}

/// A BAR that the guest moved: the bus mapping must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMove {
    pub index: usize,
    pub old: u64,
    pub new: u64,
    pub size: u64,
}

/// Identity of a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIdentity {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Class, subclass, programming interface.
    pub class: [u8; 3],
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// One function's configuration space.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    data: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    bars: [Option<Bar>; NUM_BARS],
    /// Where each BAR is mapped on the MMIO bus now.
    mapped: [Option<u64>; NUM_BARS],
    next_capability: usize,
    last_capability: Option<usize>,
}

impl ConfigSpace {
    /// A header for `id`; `pin` is the INTx pin (1 = INTA#, 0 = none) and
    /// `line` the IOAPIC pin it is wired to.
    pub fn new(id: &PciIdentity, pin: u8, line: u8) -> ConfigSpace {
        let mut c = ConfigSpace {
            data: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            bars: [None; NUM_BARS],
            mapped: [None; NUM_BARS],
            next_capability: FIRST_CAPABILITY,
            last_capability: None,
        };
        c.set_u16(0x00, id.vendor);
        c.set_u16(0x02, id.device);
        c.data[0x08] = id.revision;
        c.data[0x09] = id.class[2];
        c.data[0x0a] = id.class[1];
        c.data[0x0b] = id.class[0];
        c.set_u16(0x2c, id.subsystem_vendor);
        c.set_u16(0x2e, id.subsystem);
        c.data[INTERRUPT_LINE] = line;
        c.data[INTERRUPT_PIN] = pin;
        // Command: I/O, memory, bus master, INTx disable.
        c.set_wmask_u16(COMMAND, 0x0407);
        c.wmask[INTERRUPT_LINE] = 0xff;
        c
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.data[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_wmask_u16(&mut self, off: usize, v: u16) {
        self.wmask[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets a value the guest cannot change.
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads a little-endian u16 at `off`.
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.data[off], self.data[off + 1]])
    }

    /// Reads the dword register `reg` (offset / 4).
    pub fn read_reg(&self, reg: usize) -> u32 {
        let off = reg * 4;
        if off + 4 > CONFIG_SIZE {
            return 0xffff_ffff;
        }
        u32::from_le_bytes(self.data[off..off + 4].try_into().expect("4 bytes"))
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// Adds memory BAR `index` of `size` (a power of two) at `addr`.
    pub fn add_bar(&mut self, index: usize, addr: u64, bar: Bar) {
        debug_assert!(bar.size.is_power_of_two() && bar.size >= 16);
        let off = BAR0 + index * 4;
        let mask = !(bar.size - 1);
        let flags: u32 = if bar.is64 { 0x4 } else { 0 };
        self.set_u32(off, (addr as u32 & 0xffff_fff0) | flags);
        self.wmask[off..off + 4].copy_from_slice(&(mask as u32 & 0xffff_fff0).to_le_bytes());
        if bar.is64 {
            self.set_u32(off + 4, (addr >> 32) as u32);
            self.wmask[off + 4..off + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(bar);
        self.mapped[index] = Some(addr);
    }

    /// Records that BAR `index` is now mapped at `addr`.
    pub fn set_mapped(&mut self, index: usize, addr: u64) {
        self.mapped[index] = Some(addr);
    }

    /// The address BAR `index` decodes now.
    pub fn bar_addr(&self, index: usize) -> Option<u64> {
        let bar = self.bars.get(index).copied().flatten()?;
        let lo = u64::from(self.read_reg(4 + index) & 0xffff_fff0);
        let hi = if bar.is64 {
            u64::from(self.read_reg(5 + index))
        } else {
            0
        };
        Some((hi << 32) | lo)
    }

    /// Appends a capability (`body` starts with its id; the next pointer
    /// is filled in) with `wmask` over its bytes; returns its offset.
    pub fn add_capability(&mut self, body: &[u8], wmask: &[u8]) -> usize {
        let off = self.next_capability;
        assert!(off + body.len() <= CONFIG_SIZE, "capabilities overflow");
        self.data[off..off + body.len()].copy_from_slice(body);
        self.data[off + 1] = 0;
        for (i, m) in wmask.iter().enumerate() {
            self.wmask[off + i] = *m;
        }
        match self.last_capability {
            Some(last) => self.data[last + 1] = off as u8,
            None => {
                self.data[CAPABILITIES_POINTER] = off as u8;
                let status = self.u16_at(STATUS) | STATUS_CAPABILITIES;
                self.set_u16(STATUS, status);
            }
        }
        self.last_capability = Some(off);
        self.next_capability = (off + body.len() + 3) & !3;
        off
    }

    /// Bytes at `off`.
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        &self.data[off..off + len]
    }

    /// A guest write of `data` at byte offset `off`. Returns the BARs
    /// whose decoded address no longer matches their mapping while memory
    /// decoding is on (the caller moves them and calls
    /// [`ConfigSpace::set_mapped`]). Sizing writes (all ones) move nothing.
    pub fn write(&mut self, off: usize, data: &[u8]) -> Vec<BarMove> {
        if off + data.len() > CONFIG_SIZE {
            return Vec::new();
        }
        for (i, b) in data.iter().enumerate() {
            let m = self.wmask[off + i];
            self.data[off + i] = (self.data[off + i] & !m) | (b & m);
        }
        let sizing = data.iter().all(|b| *b == 0xff);
        if sizing || self.command() & COMMAND_MEMORY == 0 {
            return Vec::new();
        }
        (0..NUM_BARS)
            .filter_map(|index| {
                let bar = self.bars[index]?;
                let old = self.mapped[index]?;
                let new = self.bar_addr(index)?;
                (old != new).then_some(BarMove {
                    index,
                    old,
                    new,
                    size: bar.size,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let id = PciIdentity {
            vendor: 0x1af4,
            device: 0x1044,
            revision: 1,
            class: [0xff, 0, 0],
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        };
        let mut c = ConfigSpace::new(&id, 1, 10);
        c.add_bar(
            0,
            0xc000_0000,
            Bar {
                size: 0x4000,
                is64: true,
            },
        );
        c
    }

    #[test]
    fn header_fields_and_read_only_bits() {
        let mut c = space();
        assert_eq!(c.read_reg(0), 0x1044_1af4);
        assert_eq!(c.read_reg(2), 0xff00_0001);
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.read_reg(0), 0x1044_1af4);
        c.write(0x3c, &[11]);
        assert_eq!(c.read_reg(0xf) & 0xffff, 0x010b);
        c.write(COMMAND, &[0xff, 0xff]);
        assert_eq!(c.command(), 0x0407);
    }

    #[test]
    fn bar_sizing_and_reprogramming() {
        let mut c = space();
        assert_eq!(c.read_reg(4), 0xc000_0004);
        // Sizing: all ones reads back the size mask and moves nothing.
        assert!(c.write(0x10, &[0xff; 4]).is_empty());
        assert_eq!(c.read_reg(4), 0xffff_c004);
        assert!(c.write(0x14, &[0xff; 4]).is_empty());
        assert_eq!(c.read_reg(5), 0xffff_ffff);
        // With decoding off, a new address moves nothing yet...
        assert!(c.write(0x10, &0xd000_0000u32.to_le_bytes()).is_empty());
        assert!(c.write(0x14, &0u32.to_le_bytes()).is_empty());
        // ...turning decoding on does.
        let moves = c.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(
            moves,
            vec![BarMove {
                index: 0,
                old: 0xc000_0000,
                new: 0xd000_0000,
                size: 0x4000
            }]
        );
        c.set_mapped(0, 0xd000_0000);
        assert!(c.write(COMMAND, &COMMAND_MEMORY.to_le_bytes()).is_empty());
        // With decoding on, a BAR write moves at once.
        let moves = c.write(0x10, &0xd001_0000u32.to_le_bytes());
        assert_eq!(moves.len(), 1);
        assert_eq!(c.bar_addr(0), Some(0xd001_0000));
        // Unused BARs read as zero and ignore writes.
        assert!(c.write(0x18, &[0xff; 4]).is_empty());
        assert_eq!(c.read_reg(6), 0);
    }

    #[test]
    fn capability_list_is_chained() {
        let mut c = space();
        let a = c.add_capability(&[0x11, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8], &[]);
        let b = c.add_capability(&[0x09, 0, 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x4c);
        assert_eq!(c.read_reg(0x34 / 4) & 0xff, 0x40);
        assert_ne!(c.u16_at(STATUS) & STATUS_CAPABILITIES, 0);
        assert_eq!(c.bytes(a + 1, 1), &[0x4c]);
        assert_eq!(c.bytes(b + 1, 1), &[0]);
    }
}
