//! MSI-X: the capability's control bits, the vector table and the pending
//! bit array. Each vector has a GSI; the table decides what KVM routes it
//! to (nothing while it is masked or MSI-X is off).

use crate::vm::MsiMessage;

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// "No vector" in virtio's vector registers.
pub const NO_VECTOR: u16 = 0xffff;
/// Message control: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const CONTROL_MASK: u16 = 1 << 14;
/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        // Vectors come out of reset masked.
        Entry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            control: VECTOR_MASKED,
        }
    }
}

/// What a write changed, for the caller to re-route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MsixChange {
    /// Vectors whose route must be re-programmed.
    pub reroute: Vec<u16>,
    /// Vectors that just became deliverable (kick them in case an
    /// interrupt was raised while they were masked).
    pub unmasked: Vec<u16>,
}

/// An MSI-X table.
#[derive(Debug, Clone)]
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    control: u16,
}

impl MsixTable {
    /// A table of `vectors` entries, all masked, MSI-X off.
    pub fn new(vectors: u16) -> MsixTable {
        MsixTable {
            entries: vec![Entry::default(); usize::from(vectors)],
            pending: vec![0; usize::from(vectors).div_ceil(64)],
            control: 0,
        }
    }

    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn enabled(&self) -> bool {
        self.control & CONTROL_ENABLE != 0
    }

    fn function_masked(&self) -> bool {
        self.control & CONTROL_MASK != 0
    }

    /// Whether vector `v` delivers now.
    fn deliverable(&self, v: usize) -> bool {
        self.enabled() && !self.function_masked() && self.entries[v].control & VECTOR_MASKED == 0
    }

    /// The message control word the capability shows.
    pub fn message_control(&self) -> u16 {
        (self.control & (CONTROL_ENABLE | CONTROL_MASK)) | (self.len().saturating_sub(1) & 0x7ff)
    }

    /// The guest wrote the message control word.
    pub fn set_message_control(&mut self, value: u16) -> MsixChange {
        let before: Vec<bool> = (0..self.entries.len())
            .map(|v| self.deliverable(v))
            .collect();
        self.control = value & (CONTROL_ENABLE | CONTROL_MASK);
        self.diff(&before)
    }

    fn diff(&self, before: &[bool]) -> MsixChange {
        let mut change = MsixChange::default();
        for (v, was) in before.iter().enumerate() {
            let now = self.deliverable(v);
            if now != *was {
                change.reroute.push(v as u16);
                if now {
                    change.unmasked.push(v as u16);
                }
            }
        }
        change
    }

    /// The route for vector `v`: its message while deliverable.
    pub fn route(&self, v: u16) -> Option<MsiMessage> {
        let i = usize::from(v);
        (i < self.entries.len() && self.deliverable(i)).then(|| {
            let e = self.entries[i];
            MsiMessage {
                addr_lo: e.addr_lo,
                addr_hi: e.addr_hi,
                data: e.data,
            }
        })
    }

    /// Reads the table at byte `offset` (4 or 8 bytes at a time).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let mut value = [0u8; 8];
        let v = (offset / ENTRY_SIZE) as usize;
        if let Some(e) = self.entries.get(v) {
            let words = [e.addr_lo, e.addr_hi, e.data, e.control];
            let word = ((offset % ENTRY_SIZE) / 4) as usize;
            value[..4].copy_from_slice(&words[word].to_le_bytes());
            if word + 1 < 4 {
                value[4..].copy_from_slice(&words[word + 1].to_le_bytes());
            }
        }
        let n = data.len().min(8);
        data[..n].copy_from_slice(&value[..n]);
    }

    /// Writes the table at byte `offset` (4 or 8 bytes at a time).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> MsixChange {
        let before: Vec<bool> = (0..self.entries.len())
            .map(|v| self.deliverable(v))
            .collect();
        let v = (offset / ENTRY_SIZE) as usize;
        let Some(e) = self.entries.get_mut(v) else {
            return MsixChange::default();
        };
        let old = *e;
        let first = ((offset % ENTRY_SIZE) / 4) as usize;
        for (word, chunk) in (first..4).zip(data.chunks(4)) {
            let Ok(bytes) = <[u8; 4]>::try_from(chunk) else {
                break;
            };
            let value = u32::from_le_bytes(bytes);
            match word {
                0 => e.addr_lo = value,
                1 => e.addr_hi = value,
                2 => e.data = value,
                _ => e.control = value & VECTOR_MASKED,
            }
        }
        let changed_message =
            old.addr_lo != e.addr_lo || old.addr_hi != e.addr_hi || old.data != e.data;
        let mut change = self.diff(&before);
        if changed_message && self.deliverable(v) && !change.reroute.contains(&(v as u16)) {
            change.reroute.push(v as u16);
        }
        change
    }

    /// Reads the pending bit array at byte `offset`.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let q = (offset / 8) as usize;
        let value = self.pending.get(q).copied().unwrap_or(0).to_le_bytes();
        let start = (offset % 8) as usize;
        for (i, d) in data.iter_mut().enumerate() {
            *d = value.get(start + i).copied().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write32(t: &mut MsixTable, off: u64, v: u32) -> MsixChange {
        t.write_table(off, &v.to_le_bytes())
    }

    #[test]
    fn vectors_route_only_when_enabled_and_unmasked() {
        let mut t = MsixTable::new(3);
        assert_eq!(t.message_control(), 2);
        write32(&mut t, 16, 0xfee0_0000);
        write32(&mut t, 20, 0);
        write32(&mut t, 24, 0x41);
        assert_eq!(t.route(1), None, "masked and disabled");
        let c = t.set_message_control(CONTROL_ENABLE);
        assert!(c.reroute.is_empty(), "still masked");
        let c = write32(&mut t, 28, 0);
        assert_eq!(c.reroute, vec![1]);
        assert_eq!(c.unmasked, vec![1]);
        assert_eq!(
            t.route(1),
            Some(MsiMessage {
                addr_lo: 0xfee0_0000,
                addr_hi: 0,
                data: 0x41
            })
        );
        // New data while deliverable: re-route, no unmask.
        let c = write32(&mut t, 24, 0x42);
        assert_eq!((c.reroute, c.unmasked), (vec![1], vec![]));
        // The function mask hides every vector.
        let c = t.set_message_control(CONTROL_ENABLE | CONTROL_MASK);
        assert_eq!(c.reroute, vec![1]);
        assert_eq!(t.route(1), None);
        assert_eq!(t.message_control(), CONTROL_ENABLE | CONTROL_MASK | 2);
    }

    #[test]
    fn table_reads_back_and_pba_is_zero() {
        let mut t = MsixTable::new(2);
        t.write_table(0, &0x1122_3344_fee0_0000u64.to_le_bytes());
        let mut d = [0u8; 8];
        t.read_table(0, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0x1122_3344_fee0_0000);
        let mut c = [0u8; 4];
        t.read_table(12, &mut c);
        assert_eq!(u32::from_le_bytes(c), VECTOR_MASKED);
        t.read_table(64, &mut c);
        assert_eq!(c, [0; 4], "past the table");
        t.read_pba(0, &mut d);
        assert_eq!(d, [0; 8]);
    }
}
