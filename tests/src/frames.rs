//! Ethernet frames built and read byte by byte, for tests that play a
//! host or a guest on the wire: addresses, 802.1Q tags, ARP and ICMP
//! echo, the IPv4 checksum.

/// An Ethernet address.
pub type Mac = [u8; 6];

/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// The 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// IEEE "local experimental" EtherType, which no stack answers.
pub const ETH_EXPERIMENTAL: u16 = 0x88b5;
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: Mac) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A frame: `dst`, `src`, an optional 802.1Q tag with `vlan` (priority
/// 0), `ethertype` and `payload`.
pub fn ethernet(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = vlan {
        f.extend_from_slice(&TPID_8021Q.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame of the local experimental EtherType whose payload is `len`
/// bytes of a pattern that starts at `seed`.
pub fn patterned(dst: Mac, src: Mac, vlan: Option<u16>, len: usize, seed: u8) -> Vec<u8> {
    let payload: Vec<u8> = (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect();
    ethernet(dst, src, vlan, ETH_EXPERIMENTAL, &payload)
}

/// The parts of a frame a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub dst: Mac,
    pub src: Mac,
    /// The VLAN ID of an 802.1Q tag, if the frame has one.
    pub vlan: Option<u16>,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

/// Reads a frame's header; None when it is shorter than one.
pub fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    if frame.len() < 14 {
        return None;
    }
    let dst: Mac = frame[0..6].try_into().ok()?;
    let src: Mac = frame[6..12].try_into().ok()?;
    let first = u16::from_be_bytes([frame[12], frame[13]]);
    let (vlan, ethertype, at) = if first == TPID_8021Q {
        if frame.len() < 18 {
            return None;
        }
        let tci = u16::from_be_bytes([frame[14], frame[15]]);
        let ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        (Some(tci & 0x0fff), ethertype, 18)
    } else {
        (None, first, 14)
    };
    Some(Parsed {
        dst,
        src,
        vlan,
        ethertype,
        payload: &frame[at..],
    })
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request or reply in IPv4 over Ethernet (the ARP payload only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: [u8; 4],
    pub target_mac: Mac,
    pub target_ip: [u8; 4],
}

impl Arp {
    /// Reads an ARP payload for IPv4 over Ethernet.
    pub fn parse(payload: &[u8]) -> Option<Arp> {
        if payload.len() < 28 || payload[0..6] != [0, 1, 0x08, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([payload[6], payload[7]]),
            sender_mac: payload[8..14].try_into().ok()?,
            sender_ip: payload[14..18].try_into().ok()?,
            target_mac: payload[18..24].try_into().ok()?,
            target_ip: payload[24..28].try_into().ok()?,
        })
    }

    /// The payload bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut p = vec![0, 1, 0x08, 0, 6, 4];
        p.extend_from_slice(&self.op.to_be_bytes());
        p.extend_from_slice(&self.sender_mac);
        p.extend_from_slice(&self.sender_ip);
        p.extend_from_slice(&self.target_mac);
        p.extend_from_slice(&self.target_ip);
        p
    }
}

/// The answer to an IPv4 packet that is an ICMP echo request to `ip`:
/// the echo reply packet (IPv4 header and ICMP), or None.
pub fn icmp_echo_reply(packet: &[u8], ip: [u8; 4]) -> Option<Vec<u8>> {
    if packet.len() < 28 || packet[0] >> 4 != 4 || packet[9] != 1 || packet[16..20] != ip {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < 20 || total > packet.len() || total < ihl + 8 || packet[ihl] != 8 {
        return None;
    }
    let mut reply = packet[..total].to_vec();
    // Addresses swapped, a fresh TTL, both checksums recomputed.
    reply.copy_within(12..16, 16);
    reply[12..16].copy_from_slice(&ip);
    reply[8] = 64;
    reply[10..12].fill(0);
    let sum = checksum(&reply[..ihl]);
    reply[10..12].copy_from_slice(&sum.to_be_bytes());
    reply[ihl] = 0; // echo reply
    reply[ihl + 2..ihl + 4].fill(0);
    let sum = checksum(&reply[ihl..]);
    reply[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_addresses_round_trip() {
        let f = ethernet(BROADCAST, [2, 0, 0, 0, 0, 1], Some(10), ETH_ARP, &[1, 2]);
        assert_eq!(f[12..16], [0x81, 0, 0, 10]);
        let p = parse(&f).unwrap();
        assert_eq!(
            (p.vlan, p.ethertype, p.payload),
            (Some(10), ETH_ARP, &[1u8, 2][..])
        );
        assert_eq!(parse(&f[..13]), None);
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(mac_text([2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
        assert_eq!(parse_mac("02:00"), None);
    }

    #[test]
    fn echo_replies_carry_valid_checksums() {
        let mut ip = vec![0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 1, 0, 0];
        ip.extend([10, 0, 0, 2, 10, 0, 0, 1]);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend([
            8, 0, 0, 0, 0x12, 0x34, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
        ]);
        let sum = checksum(&ip[20..]);
        ip[22..24].copy_from_slice(&sum.to_be_bytes());
        let reply = icmp_echo_reply(&ip, [10, 0, 0, 1]).unwrap();
        assert_eq!(reply[12..20], [10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(reply[20], 0);
        assert_eq!(checksum(&reply[..20]), 0);
        assert_eq!(checksum(&reply[20..]), 0);
        assert_eq!(reply[24..], ip[24..]);
        assert!(icmp_echo_reply(&ip, [10, 0, 0, 9]).is_none());
    }
}
