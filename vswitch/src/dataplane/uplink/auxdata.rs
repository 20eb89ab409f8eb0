//! The VLAN tag an AF_PACKET socket reports beside a frame instead of in
//! it, and putting that tag back where it was on the wire.
//!
//! On receive, Linux moves an 802.1Q (or 802.1ad) tag out of the frame into
//! the socket buffer's metadata, either in the NIC (VLAN offload) or in
//! `__netif_receive_skb_core` before packet taps see the frame. With
//! `PACKET_AUXDATA` on, `recvmsg` reports it in a `tpacket_auxdata` control
//! message. Everything here is plain byte parsing, with no unsafe code:
//! control messages come from the kernel, but a malformed one still only
//! yields "no tag".

use std::mem::{offset_of, size_of};

use crate::dataplane::frame::{TPID_8021Q, VLAN_HLEN};

/// Offset of the EtherType (or of a tag) in an Ethernet frame: after the
/// destination and source addresses.
const MACS_LEN: usize = 12;

/// A tag the kernel took out of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StrippedTag {
    /// Tag protocol identifier: 0x8100 (802.1Q) unless the kernel said
    /// otherwise (0x88a8 for an 802.1ad service tag).
    pub(crate) tpid: u16,
    /// Priority, drop eligibility and VLAN ID, as on the wire.
    pub(crate) tci: u16,
}

/// Room for one `tpacket_auxdata` control message, aligned as `cmsghdr`
/// requires. No other control message is enabled on the socket.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct ControlBuf(pub(crate) [u8; CONTROL_LEN]);

pub(crate) const CONTROL_LEN: usize = 64;

// The control buffer holds a header and the auxdata, each padded to the
// alignment the kernel uses (that of `size_t`).
const _: () = assert!(
    cmsg_align(size_of::<libc::cmsghdr>()) + cmsg_align(size_of::<libc::tpacket_auxdata>())
        <= CONTROL_LEN
);
const _: () = assert!(align_of::<ControlBuf>() >= align_of::<libc::cmsghdr>());

impl ControlBuf {
    pub(crate) const fn new() -> Self {
        ControlBuf([0; CONTROL_LEN])
    }
}

/// `CMSG_ALIGN`: control message lengths are padded to `size_t`.
const fn cmsg_align(len: usize) -> usize {
    let a = size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_usize(b: &[u8], at: usize) -> Option<usize> {
    const N: usize = size_of::<usize>();
    Some(usize::from_ne_bytes(b.get(at..at + N)?.try_into().ok()?))
}

/// Finds the `PACKET_AUXDATA` message in the control bytes `recvmsg`
/// returned (`msg_controllen` of them) and the tag it reports, if any.
pub(crate) fn stripped_tag(control: &[u8]) -> Option<StrippedTag> {
    let header = cmsg_align(size_of::<libc::cmsghdr>());
    let mut rest = control;
    while rest.len() >= header {
        // glibc's `cmsg_len` is a `size_t` at offset 0.
        let len = read_usize(rest, 0)?;
        let level = read_i32(rest, offset_of!(libc::cmsghdr, cmsg_level))?;
        let kind = read_i32(rest, offset_of!(libc::cmsghdr, cmsg_type))?;
        if len < header || len > rest.len() {
            return None;
        }
        if level == libc::SOL_PACKET && kind == libc::PACKET_AUXDATA {
            return tag_in_auxdata(&rest[header..len]);
        }
        rest = rest.get(cmsg_align(len)..)?;
    }
    None
}

/// The tag a `tpacket_auxdata` reports, if its status says one was taken
/// off.
fn tag_in_auxdata(aux: &[u8]) -> Option<StrippedTag> {
    let status = read_u32(aux, offset_of!(libc::tpacket_auxdata, tp_status))?;
    if status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tci = read_u16(aux, offset_of!(libc::tpacket_auxdata, tp_vlan_tci))?;
    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        read_u16(aux, offset_of!(libc::tpacket_auxdata, tp_vlan_tpid))?
    } else {
        TPID_8021Q
    };
    Some(StrippedTag { tpid, tci })
}

/// Puts `tag` back after the MAC addresses of the frame the kernel wrote
/// at the start of `buf`, `len` bytes long (more than `buf.len()` when the
/// kernel truncated it). Returns the frame's length on the wire; when that
/// exceeds `buf.len()` the frame did not fit and `buf` is left as it was.
pub(crate) fn restore_tag(buf: &mut [u8], len: usize, tag: StrippedTag) -> usize {
    if len < MACS_LEN {
        // The kernel only strips tags from frames with an Ethernet header.
        return len;
    }
    let wire_len = len + VLAN_HLEN;
    if wire_len > buf.len() {
        return wire_len;
    }
    buf.copy_within(MACS_LEN..len, MACS_LEN + VLAN_HLEN);
    buf[MACS_LEN..MACS_LEN + 2].copy_from_slice(&tag.tpid.to_be_bytes());
    buf[MACS_LEN + 2..MACS_LEN + VLAN_HLEN].copy_from_slice(&tag.tci.to_be_bytes());
    wire_len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control message as the kernel lays it out.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let header = cmsg_align(size_of::<libc::cmsghdr>());
        let len = header + data.len();
        let mut b = vec![0u8; cmsg_align(len)];
        b[..size_of::<usize>()].copy_from_slice(&len.to_ne_bytes());
        let at = offset_of!(libc::cmsghdr, cmsg_level);
        b[at..at + 4].copy_from_slice(&level.to_ne_bytes());
        let at = offset_of!(libc::cmsghdr, cmsg_type);
        b[at..at + 4].copy_from_slice(&kind.to_ne_bytes());
        b[header..len].copy_from_slice(data);
        b
    }

    fn auxdata(status: u32, tci: u16, tpid: u16) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<libc::tpacket_auxdata>()];
        let at = offset_of!(libc::tpacket_auxdata, tp_status);
        b[at..at + 4].copy_from_slice(&status.to_ne_bytes());
        let at = offset_of!(libc::tpacket_auxdata, tp_len);
        b[at..at + 4].copy_from_slice(&60u32.to_ne_bytes());
        let at = offset_of!(libc::tpacket_auxdata, tp_vlan_tci);
        b[at..at + 2].copy_from_slice(&tci.to_ne_bytes());
        let at = offset_of!(libc::tpacket_auxdata, tp_vlan_tpid);
        b[at..at + 2].copy_from_slice(&tpid.to_ne_bytes());
        b
    }

    fn packet_aux(status: u32, tci: u16, tpid: u16) -> Vec<u8> {
        cmsg(
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &auxdata(status, tci, tpid),
        )
    }

    #[test]
    fn auxdata_reports_the_stripped_tag() {
        let valid = libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_USER;
        // No TPID reported: 802.1Q.
        assert_eq!(
            stripped_tag(&packet_aux(valid, 0x6064, 0)),
            Some(StrippedTag {
                tpid: 0x8100,
                tci: 0x6064
            })
        );
        // A service tag, with its TPID.
        let both = valid | libc::TP_STATUS_VLAN_TPID_VALID;
        assert_eq!(
            stripped_tag(&packet_aux(both, 200, 0x88a8)),
            Some(StrippedTag {
                tpid: 0x88a8,
                tci: 200
            })
        );
        // A priority tag (VLAN 0) is still a tag.
        assert_eq!(
            stripped_tag(&packet_aux(valid, 0xa000, 0)),
            Some(StrippedTag {
                tpid: 0x8100,
                tci: 0xa000
            })
        );
        // No tag taken off: the TCI field is meaningless.
        assert_eq!(
            stripped_tag(&packet_aux(libc::TP_STATUS_USER, 77, 0x8100)),
            None
        );
    }

    #[test]
    fn auxdata_is_found_after_other_messages_and_garbage_is_no_tag() {
        let valid = libc::TP_STATUS_VLAN_VALID;
        let mut two = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMP, &[1, 2, 3, 4, 5]);
        two.extend(packet_aux(valid, 10, 0));
        assert_eq!(stripped_tag(&two).map(|t| t.tci), Some(10));

        assert_eq!(stripped_tag(&[]), None);
        let good = packet_aux(valid, 10, 0);
        // Cut short, in the header or in the data.
        assert_eq!(stripped_tag(&good[..8]), None);
        assert_eq!(stripped_tag(&good[..good.len() - 8]), None);
        // A length that is too small or runs past the buffer.
        for bad_len in [0usize, 3, 4096] {
            let mut bad = good.clone();
            bad[..size_of::<usize>()].copy_from_slice(&bad_len.to_ne_bytes());
            assert_eq!(stripped_tag(&bad), None, "cmsg_len {bad_len}");
        }
        // Auxdata shorter than the TCI field.
        let short = cmsg(
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &auxdata(valid, 1, 0)[..12],
        );
        assert_eq!(stripped_tag(&short), None);
    }

    fn untagged() -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend([2, 0, 0, 0, 0, 1]);
        f.extend([0x08, 0x00]);
        f.extend(0..50u8);
        f
    }

    #[test]
    fn tag_goes_back_after_the_addresses() {
        let frame = untagged();
        let mut buf = vec![0u8; 128];
        buf[..frame.len()].copy_from_slice(&frame);
        let tag = StrippedTag {
            tpid: 0x8100,
            tci: 0x6064,
        };
        let n = restore_tag(&mut buf, frame.len(), tag);
        assert_eq!(n, frame.len() + 4);
        let mut want = frame[..12].to_vec();
        want.extend([0x81, 0x00, 0x60, 0x64]);
        want.extend(&frame[12..]);
        assert_eq!(&buf[..n], &want[..]);

        // An 802.1ad tag keeps its TPID.
        let mut buf = frame.clone();
        buf.resize(frame.len() + 4, 0);
        let n = restore_tag(
            &mut buf,
            frame.len(),
            StrippedTag {
                tpid: 0x88a8,
                tci: 200,
            },
        );
        assert_eq!(n, buf.len());
        assert_eq!(&buf[12..18], &[0x88, 0xa8, 0x00, 200, 0x08, 0x00]);
    }

    #[test]
    fn a_frame_that_does_not_fit_with_its_tag_is_left_alone() {
        let frame = untagged();
        let tag = StrippedTag {
            tpid: 0x8100,
            tci: 5,
        };
        // The frame filled the buffer: with its tag it was 4 bytes longer.
        let mut buf = frame.clone();
        assert_eq!(restore_tag(&mut buf, frame.len(), tag), frame.len() + 4);
        assert_eq!(buf, frame);
        // The kernel truncated it (reported length beyond the buffer).
        let mut buf = frame[..20].to_vec();
        assert_eq!(restore_tag(&mut buf, frame.len(), tag), frame.len() + 4);
        assert_eq!(&buf[..], &frame[..20]);
        // Shorter than two addresses: nothing to do.
        let mut buf = [1u8; 32];
        assert_eq!(restore_tag(&mut buf, 10, tag), 10);
        assert_eq!(buf, [1u8; 32]);
    }
}
