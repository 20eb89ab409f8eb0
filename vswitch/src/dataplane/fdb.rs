//! The forwarding database: MAC addresses learned per VLAN, with ageing.
//!
//! Owned by the forwarding thread (no lock); time comes from the caller so
//! tests advance it by hand. Keys are `(vid, mac)` packed in a u64 and
//! hashed with a multiply-shift mix: the keys are fixed-size integers, so a
//! DoS-resistant SipHash buys nothing but cycles here (a guest choosing
//! source MACs to collide still only fills its own VLAN's share, bounded by
//! `capacity`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::dataplane::frame::MacAddr;

/// A switch port's index.
pub type PortId = u32;

/// Multiply-shift hasher for u64 keys.
#[derive(Debug, Default, Clone, Copy)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, key: u64) {
        let x = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

fn key(vid: u16, mac: MacAddr) -> u64 {
    (u64::from(vid) << 48) | mac.to_u64()
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    seen_ns: u64,
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// The address moved from another port.
    Moved {
        from: PortId,
    },
    /// The table is full; the address was not learned.
    Full,
}

/// One learned address, for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub vid: u16,
    pub mac: MacAddr,
    pub port: PortId,
    pub age_ns: u64,
}

/// The MAC table of one switch.
#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<u64, Entry, BuildHasherDefault<U64Hasher>>,
    ageing_ns: u64,
    capacity: usize,
}

impl Fdb {
    /// A table that forgets addresses unseen for `ageing_ns` and holds at
    /// most `capacity` of them.
    pub fn new(ageing_ns: u64, capacity: usize) -> Self {
        Fdb {
            entries: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            ageing_ns,
            capacity,
        }
    }

    /// Records that `mac` in VLAN `vid` was seen on `port` at `now_ns`.
    pub fn learn(&mut self, vid: u16, mac: MacAddr, port: PortId, now_ns: u64) -> Learned {
        let k = key(vid, mac);
        if let Some(e) = self.entries.get_mut(&k) {
            let from = e.port;
            e.port = port;
            e.seen_ns = now_ns;
            return if from == port {
                Learned::Refreshed
            } else {
                Learned::Moved { from }
            };
        }
        if self.entries.len() >= self.capacity {
            self.expire(now_ns);
            if self.entries.len() >= self.capacity {
                return Learned::Full;
            }
        }
        self.entries.insert(
            k,
            Entry {
                port,
                seen_ns: now_ns,
            },
        );
        Learned::New
    }

    /// The port `mac` in VLAN `vid` was last seen on, unless it aged out.
    pub fn lookup(&self, vid: u16, mac: MacAddr, now_ns: u64) -> Option<PortId> {
        let e = self.entries.get(&key(vid, mac))?;
        (now_ns.saturating_sub(e.seen_ns) < self.ageing_ns).then_some(e.port)
    }

    /// Drops aged entries; returns how many.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let before = self.entries.len();
        let ageing = self.ageing_ns;
        self.entries
            .retain(|_, e| now_ns.saturating_sub(e.seen_ns) < ageing);
        before - self.entries.len()
    }

    /// Forgets everything learned on `port` (it went away or changed VLAN).
    pub fn flush_port(&mut self, port: PortId) {
        self.entries.retain(|_, e| e.port != port);
    }

    /// Live entries, sorted by VLAN and address.
    pub fn entries(&self, now_ns: u64) -> Vec<FdbEntry> {
        let mut out: Vec<FdbEntry> = self
            .entries
            .iter()
            .filter(|(_, e)| now_ns.saturating_sub(e.seen_ns) < self.ageing_ns)
            .map(|(&k, e)| {
                let b = k.to_be_bytes();
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&b[2..]);
                FdbEntry {
                    vid: u16::from_be_bytes([b[0], b[1]]),
                    mac: MacAddr(mac),
                    port: e.port,
                    age_ns: now_ns.saturating_sub(e.seen_ns),
                }
            })
            .collect();
        out.sort_by_key(|e| (e.vid, e.mac));
        out
    }

    /// Number of entries held (including not yet expired aged ones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learns_per_vlan_moves_and_ages() {
        let mut fdb = Fdb::new(300 * S, 1024);
        assert_eq!(fdb.learn(10, mac(1), 1, 0), Learned::New);
        assert_eq!(fdb.learn(10, mac(1), 1, S), Learned::Refreshed);
        assert_eq!(fdb.lookup(10, mac(1), 2 * S), Some(1));
        // The same address in another VLAN is another entry.
        assert_eq!(fdb.lookup(20, mac(1), 2 * S), None);
        assert_eq!(fdb.learn(20, mac(1), 2, 2 * S), Learned::New);
        assert_eq!(fdb.learn(10, mac(1), 3, 3 * S), Learned::Moved { from: 1 });
        assert_eq!(fdb.lookup(10, mac(1), 3 * S), Some(3));
        // Ageing: unseen for 300 s.
        assert_eq!(fdb.lookup(10, mac(1), 303 * S), None);
        assert_eq!(fdb.expire(303 * S), 2);
        assert!(fdb.is_empty());
    }

    #[test]
    fn capacity_is_a_bound_and_aged_entries_make_room() {
        let mut fdb = Fdb::new(10 * S, 2);
        fdb.learn(1, mac(1), 1, 0);
        fdb.learn(1, mac(2), 1, 0);
        assert_eq!(fdb.learn(1, mac(3), 1, S), Learned::Full);
        assert_eq!(fdb.learn(1, mac(3), 1, 20 * S), Learned::New);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn flush_port_and_listing() {
        let mut fdb = Fdb::new(10 * S, 16);
        fdb.learn(5, mac(2), 7, 0);
        fdb.learn(1, mac(9), 8, 0);
        let e = fdb.entries(S);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].vid, e[0].mac, e[0].port, e[0].age_ns),
            (1, mac(9), 8, S)
        );
        fdb.flush_port(7);
        assert_eq!(fdb.entries(S).len(), 1);
    }
}
