//! NIC teaming: which uplink carries a frame a port group sends out.
//! Failover: the active uplinks that have link, in order; when none has,
//! the standby ones. Load balancing then picks among them by the
//! originating port, the source MAC, or the IP pair (vSphere's policies),
//! or always the first ("use explicit failover order").

use crate::control_plane::config::LoadBalancing;
use crate::dataplane::frame::MacAddr;

/// A port group's team, with uplinks as indices into the switch's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Team {
    pub policy: LoadBalancing,
    pub active: Vec<usize>,
    pub standby: Vec<usize>,
}

/// What a frame offers to the hash.
#[derive(Debug, Clone, Copy)]
pub struct TeamKey {
    pub port: u32,
    pub src: MacAddr,
    /// A hash of the source and destination IP addresses, for IP frames.
    pub ip: Option<u64>,
}

/// A multiplicative hash whose low bits depend on every bit of `x`: the
/// product's low bits depend only on the low bits of `x`, so the high half
/// is folded onto them before `% n` picks an uplink. (Folding at bit 31
/// instead left consecutive MAC addresses with one parity: 16 in a row all
/// picked the same one of two uplinks.)
fn mix(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 32)
}

impl Team {
    /// Whether the team needs the IP hash of frames.
    pub fn wants_ip(&self) -> bool {
        self.policy == LoadBalancing::IpHash
    }

    /// The uplink for a frame, given each uplink's link state; None when
    /// no uplink of the team has link.
    pub fn choose(&self, link_up: &[bool], key: &TeamKey) -> Option<usize> {
        let up = |u: &&usize| link_up.get(**u).copied().unwrap_or(false);
        let live = if self.active.iter().any(|u| up(&u)) {
            &self.active
        } else {
            &self.standby
        };
        let n = live.iter().filter(up).count();
        if n == 0 {
            return None;
        }
        let pick = match self.policy {
            LoadBalancing::FailoverOrder => 0,
            LoadBalancing::OriginatingPort => key.port as usize % n,
            LoadBalancing::SourceMac => (mix(key.src.to_u64()) % n as u64) as usize,
            LoadBalancing::IpHash => {
                (mix(key.ip.unwrap_or_else(|| key.src.to_u64())) % n as u64) as usize
            }
        };
        live.iter().filter(up).nth(pick).copied()
    }
}

/// A hash of an IP frame's source and destination addresses (`frame`
/// from its Ethernet header; `l3` the offset of the IP header); None for
/// other frames or when the header is cut short.
pub fn ip_pair_hash(frame: &[u8], ethertype: u16, l3: usize) -> Option<u64> {
    let (from, len) = match ethertype {
        0x0800 => (l3 + 12, 8),
        0x86dd => (l3 + 8, 32),
        _ => return None,
    };
    let bytes = frame.get(from..from + len)?;
    let fold = |addr: &[u8]| {
        addr.chunks(8).fold(0u64, |h, c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            mix(h ^ u64::from_le_bytes(b))
        })
    };
    let (src, dst) = bytes.split_at(len / 2);
    // XOR keeps the pair symmetric: both directions pick one uplink.
    Some(fold(src) ^ fold(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u32, last: u8) -> TeamKey {
        TeamKey {
            port,
            src: MacAddr([2, 0, 0, 0, 0, last]),
            ip: None,
        }
    }

    #[test]
    fn failover_prefers_active_then_standby() {
        let team = Team {
            policy: LoadBalancing::FailoverOrder,
            active: vec![1, 0],
            standby: vec![2],
        };
        assert_eq!(team.choose(&[true, true, true], &key(0, 1)), Some(1));
        assert_eq!(team.choose(&[true, false, true], &key(0, 1)), Some(0));
        assert_eq!(team.choose(&[false, false, true], &key(0, 1)), Some(2));
        assert_eq!(team.choose(&[false, false, false], &key(0, 1)), None);
    }

    #[test]
    fn ports_spread_over_live_uplinks() {
        let team = Team {
            policy: LoadBalancing::OriginatingPort,
            active: vec![0, 1],
            standby: vec![],
        };
        let both = [true, true];
        let picks: Vec<_> = (0..4).map(|p| team.choose(&both, &key(p, 1))).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(0), Some(1)]);
        // One uplink down: everything moves to the other.
        assert!((0..4).all(|p| team.choose(&[false, true], &key(p, 1)) == Some(1)));
    }

    #[test]
    fn hashes_are_stable_and_spread() {
        let team = Team {
            policy: LoadBalancing::SourceMac,
            active: vec![0, 1],
            standby: vec![],
        };
        let both = [true, true];
        let a = team.choose(&both, &key(0, 7));
        assert_eq!(a, team.choose(&both, &key(5, 7)));
        let used: std::collections::BTreeSet<_> = (0..32)
            .filter_map(|m| team.choose(&both, &key(0, m)))
            .collect();
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn consecutive_addresses_spread_evenly() {
        // VMs get consecutive MAC addresses: they must not all pick the
        // same uplink.
        for prefix in [
            [0x52, 0x54, 0x00, 0x5f, 0xe4],
            [0x00, 0x50, 0x56, 0x9a, 0x10],
        ] {
            for n in 2..=4usize {
                let team = Team {
                    policy: LoadBalancing::SourceMac,
                    active: (0..n).collect(),
                    standby: vec![],
                };
                let mut per_uplink = vec![0; n];
                for last in 0..16u8 {
                    let mut mac = [0u8; 6];
                    mac[..5].copy_from_slice(&prefix);
                    mac[5] = last;
                    let key = TeamKey {
                        port: 0,
                        src: MacAddr(mac),
                        ip: None,
                    };
                    let up = team.choose(&vec![true; n], &key).expect("an uplink");
                    per_uplink[up] += 1;
                }
                // 16 addresses over n uplinks: every uplink gets some, and
                // none more than twice its share.
                assert!(
                    per_uplink.iter().all(|&c| c > 0 && c * n <= 32),
                    "{prefix:02x?} over {n}: {per_uplink:?}"
                );
            }
        }
    }

    #[test]
    fn ip_hash_is_symmetric() {
        let mut f = vec![0u8; 34];
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let ab = ip_pair_hash(&f, 0x0800, 14);
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(ab, ip_pair_hash(&f, 0x0800, 14));
        assert_eq!(ip_pair_hash(&f[..30], 0x0800, 14), None);
        assert_eq!(ip_pair_hash(&f, 0x0806, 14), None);
    }
}
