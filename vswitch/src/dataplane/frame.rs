//! Ethernet frames as the switch sees them: addresses, an optional 802.1Q
//! tag, and the edits (tag push/pop) applied while a frame is copied to its
//! destination. Every frame comes from a guest and is untrusted: parsing
//! never panics and a bad frame is a [`DropReason`].

use std::fmt;
use std::str::FromStr;

/// Length of an Ethernet header without a VLAN tag.
pub const ETH_HLEN: usize = 14;
/// Length of an 802.1Q tag.
pub const VLAN_HLEN: usize = 4;
/// The 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// Largest VLAN ID usable for traffic (4095 is reserved).
pub const MAX_VID: u16 = 4094;

/// Why a frame was dropped; each is a counter per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header (or a tagged one).
    Runt,
    /// Longer than the port's MTU allows.
    Oversize,
    /// The port's VLAN policy does not admit the frame's tag (or lack of it).
    VlanNotAllowed,
    /// The source address is not the port's and forged transmits are off.
    ForgedSource,
    /// A source address that is multicast.
    BadSource,
    /// The destination port had no receive buffer (the guest stopped
    /// consuming its queue).
    NoRxBuffer,
    /// The destination's receive buffers were too small or malformed.
    BadRxBuffer,
    /// A malformed transmit descriptor chain.
    BadTxChain,
    /// Traffic shaping: the port was over its rate.
    Shaped,
    /// No uplink of the port group's team has link.
    NoUplink,
    /// The host refused the frame on an uplink.
    UplinkError,
    /// A frame from an uplink whose source is a local port (a reflection
    /// of our own traffic by the physical network).
    Reflected,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 12] = [
        DropReason::Runt,
        DropReason::Oversize,
        DropReason::VlanNotAllowed,
        DropReason::ForgedSource,
        DropReason::BadSource,
        DropReason::NoRxBuffer,
        DropReason::BadRxBuffer,
        DropReason::BadTxChain,
        DropReason::Shaped,
        DropReason::NoUplink,
        DropReason::UplinkError,
        DropReason::Reflected,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Oversize => "oversize",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::ForgedSource => "forged_source",
            DropReason::BadSource => "bad_source",
            DropReason::NoRxBuffer => "no_rx_buffer",
            DropReason::BadRxBuffer => "bad_rx_buffer",
            DropReason::BadTxChain => "bad_tx_chain",
            DropReason::Shaped => "shaped",
            DropReason::NoUplink => "no_uplink",
            DropReason::UplinkError => "uplink_error",
            DropReason::Reflected => "reflected",
        }
    }
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The address as a u64 (for hashing and compact tables).
    pub fn to_u64(self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0);
        u64::from_be_bytes(b)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid MAC address {0:?}: expected six hex bytes separated by ':'")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| BadMac(s.to_owned()))?;
            if part.len() != 2 {
                return Err(BadMac(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| BadMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub vid: u16,
    pub pcp: u8,
}

/// What the switch needs to know about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The tag, if the frame carries one.
    pub tag: Option<VlanTag>,
    /// The EtherType after any tag.
    pub ethertype: u16,
    pub len: usize,
}

/// Parses the headers of a frame of `len` bytes whose first bytes are
/// `head` (at least `ETH_HLEN + VLAN_HLEN` of them when the frame is that
/// long). `max_len` is the largest frame the port admits, tag excluded.
pub fn parse(head: &[u8], len: usize, max_len: usize) -> Result<FrameInfo, DropReason> {
    if len < ETH_HLEN || head.len() < ETH_HLEN.min(len) {
        return Err(DropReason::Runt);
    }
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&head[0..6]);
    src.copy_from_slice(&head[6..12]);
    let src = MacAddr(src);
    if src.is_multicast() {
        return Err(DropReason::BadSource);
    }
    let outer = u16::from_be_bytes([head[12], head[13]]);
    let (tag, ethertype, tag_len) = if outer == TPID_8021Q {
        if len < ETH_HLEN + VLAN_HLEN || head.len() < ETH_HLEN + VLAN_HLEN {
            return Err(DropReason::Runt);
        }
        let tci = u16::from_be_bytes([head[14], head[15]]);
        let ethertype = u16::from_be_bytes([head[16], head[17]]);
        let tag = VlanTag {
            vid: tci & 0x0fff,
            pcp: (tci >> 13) as u8,
        };
        (Some(tag), ethertype, VLAN_HLEN)
    } else {
        (None, outer, 0)
    };
    if len - tag_len > max_len {
        return Err(DropReason::Oversize);
    }
    Ok(FrameInfo {
        dst: MacAddr(dst),
        src,
        tag,
        ethertype,
        len,
    })
}

/// How a frame changes on its way to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagEdit {
    /// Delivered as it came.
    Keep,
    /// An 802.1Q tag is inserted after the addresses.
    Push(VlanTag),
    /// The frame's tag is removed.
    Pop,
    /// The frame's tag is rewritten (same length).
    Rewrite(VlanTag),
}

impl TagEdit {
    /// The length of a `len`-byte frame after the edit.
    pub fn output_len(self, len: usize) -> usize {
        match self {
            TagEdit::Keep | TagEdit::Rewrite(_) => len,
            TagEdit::Push(_) => len + VLAN_HLEN,
            TagEdit::Pop => len.saturating_sub(VLAN_HLEN),
        }
    }
}

pub(crate) fn tci_bytes(tag: VlanTag) -> [u8; 4] {
    let tci = (u16::from(tag.pcp & 7) << 13) | (tag.vid & 0x0fff);
    let [a, b] = TPID_8021Q.to_be_bytes();
    let [c, d] = tci.to_be_bytes();
    [a, b, c, d]
}

/// Copies `src` into `dst` applying `edit`; returns the bytes written, or
/// `None` when `dst` is too small. `src` must be a frame `parse` accepted
/// (so it holds a full header, and a tag for `Pop`/`Rewrite`).
pub fn copy_with_edit(src: &[u8], edit: TagEdit, dst: &mut [u8]) -> Option<usize> {
    let out_len = edit.output_len(src.len());
    if dst.len() < out_len {
        return None;
    }
    match edit {
        TagEdit::Keep => dst[..src.len()].copy_from_slice(src),
        TagEdit::Push(tag) => {
            dst[..12].copy_from_slice(&src[..12]);
            dst[12..16].copy_from_slice(&tci_bytes(tag));
            dst[16..out_len].copy_from_slice(&src[12..]);
        }
        TagEdit::Pop => {
            if src.len() < ETH_HLEN + VLAN_HLEN {
                return None;
            }
            dst[..12].copy_from_slice(&src[..12]);
            dst[12..out_len].copy_from_slice(&src[16..]);
        }
        TagEdit::Rewrite(tag) => {
            if src.len() < ETH_HLEN + VLAN_HLEN {
                return None;
            }
            dst[..src.len()].copy_from_slice(src);
            dst[12..16].copy_from_slice(&tci_bytes(tag));
        }
    }
    Some(out_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        if let Some(vid) = tag {
            f.extend_from_slice(&tci_bytes(VlanTag { vid, pcp: 5 }));
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn parses_untagged_and_tagged_frames() {
        let f = frame(B, A, None, 46);
        let info = parse(&f, f.len(), 1514).unwrap();
        assert_eq!(
            (info.dst, info.src, info.tag, info.ethertype),
            (MacAddr(B), MacAddr(A), None, 0x0800)
        );
        let f = frame(B, A, Some(100), 46);
        let info = parse(&f, f.len(), 1514).unwrap();
        assert_eq!(info.tag, Some(VlanTag { vid: 100, pcp: 5 }));
        assert_eq!(info.ethertype, 0x0800);
    }

    #[test]
    fn bad_frames_have_reasons() {
        assert_eq!(parse(&[0; 10], 10, 1514), Err(DropReason::Runt));
        let tagged_runt = &frame(B, A, Some(1), 0)[..15];
        assert_eq!(parse(tagged_runt, 15, 1514), Err(DropReason::Runt));
        let big = frame(B, A, None, 1501);
        assert_eq!(parse(&big, big.len(), 1514), Err(DropReason::Oversize));
        // A tag does not count against the MTU.
        let tagged = frame(B, A, Some(7), 1500);
        assert!(parse(&tagged, tagged.len(), 1514).is_ok());
        let mut multicast_src = frame(B, A, None, 46);
        multicast_src[6] |= 1;
        assert_eq!(parse(&multicast_src, 60, 1514), Err(DropReason::BadSource));
    }

    #[test]
    fn tag_edits_round_trip() {
        let plain = frame(B, A, None, 50);
        let mut tagged = vec![0u8; 200];
        let n = copy_with_edit(
            &plain,
            TagEdit::Push(VlanTag { vid: 42, pcp: 5 }),
            &mut tagged,
        )
        .unwrap();
        assert_eq!(n, plain.len() + 4);
        assert_eq!(&tagged[..n], &frame(B, A, Some(42), 50)[..]);
        let mut back = vec![0u8; 200];
        let m = copy_with_edit(&tagged[..n], TagEdit::Pop, &mut back).unwrap();
        assert_eq!(&back[..m], &plain[..]);
        let mut rewritten = vec![0u8; 200];
        let r = copy_with_edit(
            &tagged[..n],
            TagEdit::Rewrite(VlanTag { vid: 7, pcp: 5 }),
            &mut rewritten,
        )
        .unwrap();
        assert_eq!(&rewritten[..r], &frame(B, A, Some(7), 50)[..]);
        assert_eq!(copy_with_edit(&plain, TagEdit::Keep, &mut [0u8; 10]), None);
    }

    #[test]
    fn mac_text() {
        let m: MacAddr = "52:54:00:ab:cd:ef".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:ef");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:ef:01".parse::<MacAddr>().is_err());
        assert!("zz:54:00:ab:cd:ef".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
    }
}
