//! Parsing a guest's virtio-blk request from its descriptor chain.
//!
//! Everything here is untrusted input: the layout of the chain, the header,
//! the sector range and the discard segments all come from the guest. A bad
//! request becomes a [`Fault`], which the worker answers with an error status
//! and counts; nothing here panics or allocates.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};

/// virtio-blk addresses the disk in 512-byte sectors, whatever `blk_size`.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request header (type, reserved, sector).
pub const HEADER_LEN: usize = 16;
/// Size of one discard / write-zeroes segment.
pub const DISCARD_SEGMENT_LEN: usize = 16;
/// The most data segments a request may have (advertised as `seg_max`).
pub const SEG_MAX: usize = 126;
/// The largest single data segment (advertised as `size_max`).
pub const SIZE_MAX: u64 = 1 << 20;
/// The largest transfer one request can describe within the advertised
/// `seg_max` and `size_max`.
pub const MAX_TRANSFER: u64 = SEG_MAX as u64 * SIZE_MAX;
/// The most sectors one discard may cover (advertised as
/// `max_discard_sectors`).
pub const MAX_DISCARD_SECTORS: u32 = (MAX_TRANSFER / SECTOR_SIZE) as u32;
/// The most sectors one write-zeroes may cover (advertised as
/// `max_write_zeroes_sectors`).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = (MAX_TRANSFER / SECTOR_SIZE) as u32;
/// The most segments one discard or write-zeroes request may carry
/// (advertised as `max_discard_seg` and `max_write_zeroes_seg`).
pub const MAX_DISCARD_SEG: u32 = 1;
/// The flag of a write-zeroes segment that allows deallocating.
pub const WRITE_ZEROES_UNMAP: u32 = 1;

/// One guest buffer of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// What a request asks for, checked against the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read {
        offset: u64,
        len: u64,
    },
    Write {
        offset: u64,
        len: u64,
    },
    Flush,
    GetId,
    /// Deallocate a range (discard) or zero it (write zeroes); both punch a
    /// hole so a thin volume stays thin.
    Discard {
        offset: u64,
        len: u64,
    },
    WriteZeroes {
        offset: u64,
        len: u64,
        unmap: bool,
    },
}

/// Why a request is refused; each is a counter in the volume's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The chain's layout is wrong: readable after writable buffers, no
    /// status byte, a short header, too many segments.
    MalformedChain,
    /// A buffer is not inside guest memory.
    OutsideMemory,
    /// The request reaches past the end of the disk.
    OutOfRange,
    /// A length is not a multiple of the sector size.
    Unaligned,
    /// A write to a read-only export.
    ReadOnly,
    /// A transfer larger than advertised.
    TooLarge,
    /// A request type this device does not offer.
    Unsupported,
    /// A flush after an earlier flush of the volume failed: what that one
    /// lost cannot be made durable any more (see
    /// [`crate::backing::Backing::note_write_back_error`]).
    WriteBackError,
}

impl Fault {
    /// Every fault, in the order of [`Fault::index`].
    pub const ALL: [Fault; 8] = [
        Fault::MalformedChain,
        Fault::OutsideMemory,
        Fault::OutOfRange,
        Fault::Unaligned,
        Fault::ReadOnly,
        Fault::TooLarge,
        Fault::Unsupported,
        Fault::WriteBackError,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label used in metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Fault::MalformedChain => "malformed_chain",
            Fault::OutsideMemory => "outside_memory",
            Fault::OutOfRange => "out_of_range",
            Fault::Unaligned => "unaligned",
            Fault::ReadOnly => "read_only",
            Fault::TooLarge => "too_large",
            Fault::Unsupported => "unsupported",
            Fault::WriteBackError => "write_back_error",
        }
    }
}

/// The disk a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct DiskLimits {
    pub capacity_bytes: u64,
    pub read_only: bool,
    /// The logical block size the guest is told (512 or 4096); discard and
    /// write-zeroes ranges must be aligned to it (advertised as
    /// `discard_sector_alignment`).
    pub blk_size: u32,
}

/// A chain split into its parts: the header and any payload the device
/// reads, the data the device writes, and the status byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<'a> {
    /// Readable buffers (header first).
    pub readable: &'a [Segment],
    /// Writable buffers, the last one shortened by the status byte.
    pub writable_data: WritableData<'a>,
    /// Where the status byte goes.
    pub status_addr: u64,
}

/// The device-writable data buffers: all writable segments, with the last
/// one `trim` bytes shorter (the status byte lives at its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritableData<'a> {
    pub segments: &'a [Segment],
    pub last_len: u32,
}

impl WritableData<'_> {
    /// The buffers, with the last one trimmed; empty ones are skipped.
    pub fn iter(&self) -> impl Iterator<Item = Segment> + '_ {
        let n = self.segments.len();
        self.segments.iter().enumerate().filter_map(move |(i, s)| {
            let len = if i + 1 == n { self.last_len } else { s.len };
            (len > 0).then_some(Segment { addr: s.addr, len })
        })
    }

    /// Their total length.
    pub fn len(&self) -> u64 {
        self.iter().map(|s| u64::from(s.len)).sum()
    }

    /// True when there is no data buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits `segments` (readable then writable, as the chain listed them) at
/// `first_writable`. The chain must end with a writable status byte.
pub fn layout(segments: &[Segment], first_writable: usize) -> Result<Layout<'_>, Fault> {
    if segments.len() > SEG_MAX + 2 || first_writable > segments.len() {
        return Err(Fault::MalformedChain);
    }
    let (readable, writable) = segments.split_at(first_writable);
    let last = writable.last().ok_or(Fault::MalformedChain)?;
    if last.len == 0 {
        return Err(Fault::MalformedChain);
    }
    let status_addr = last
        .addr
        .checked_add(u64::from(last.len) - 1)
        .ok_or(Fault::OutsideMemory)?;
    Ok(Layout {
        readable,
        writable_data: WritableData {
            segments: writable,
            last_len: last.len - 1,
        },
        status_addr,
    })
}

/// The request header, as read from the first 16 readable bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub sector: u64,
}

impl Header {
    /// Decodes the little-endian header.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&bytes[0..4]);
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&bytes[8..16]);
        Header {
            kind: u32::from_le_bytes(kind),
            sector: u64::from_le_bytes(sector),
        }
    }
}

/// One discard / write-zeroes segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscardSegment {
    pub sector: u64,
    pub num_sectors: u32,
    pub flags: u32,
}

impl DiscardSegment {
    /// Decodes the little-endian segment.
    pub fn decode(bytes: &[u8; DISCARD_SEGMENT_LEN]) -> Self {
        let field = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&bytes[0..8]);
        DiscardSegment {
            sector: u64::from_le_bytes(sector),
            num_sectors: field(8),
            flags: field(12),
        }
    }
}

/// Checks `sector .. sector + len` against the disk and returns the byte
/// offset.
fn range(sector: u64, len: u64, disk: &DiskLimits) -> Result<u64, Fault> {
    let offset = sector.checked_mul(SECTOR_SIZE).ok_or(Fault::OutOfRange)?;
    let end = offset.checked_add(len).ok_or(Fault::OutOfRange)?;
    if end > disk.capacity_bytes {
        return Err(Fault::OutOfRange);
    }
    Ok(offset)
}

/// Decides what a request asks for.
///
/// `readable_payload` is the length of the readable bytes after the header,
/// `discard` the first discard segment (when the type needs one and the
/// payload holds it); `writable_len` the length of the writable data.
pub fn decide(
    header: Header,
    readable_payload: u64,
    writable_len: u64,
    discard: Option<DiscardSegment>,
    disk: &DiskLimits,
) -> Result<Op, Fault> {
    match header.kind {
        VIRTIO_BLK_T_IN => {
            let len = writable_len;
            check_transfer(len)?;
            let offset = range(header.sector, len, disk)?;
            Ok(Op::Read { offset, len })
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only {
                return Err(Fault::ReadOnly);
            }
            let len = readable_payload;
            check_transfer(len)?;
            let offset = range(header.sector, len, disk)?;
            Ok(Op::Write { offset, len })
        }
        VIRTIO_BLK_T_FLUSH => Ok(Op::Flush),
        VIRTIO_BLK_T_GET_ID => Ok(Op::GetId),
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            if disk.read_only {
                return Err(Fault::ReadOnly);
            }
            let seg = discard_segment(readable_payload, discard)?;
            let discarding = header.kind == VIRTIO_BLK_T_DISCARD;
            let known_flags = if discarding { 0 } else { WRITE_ZEROES_UNMAP };
            if seg.flags & !known_flags != 0 {
                return Err(Fault::Unsupported);
            }
            let len = check_discard(&seg, discarding, disk)?;
            let offset = range(seg.sector, len, disk)?;
            if discarding {
                Ok(Op::Discard { offset, len })
            } else {
                Ok(Op::WriteZeroes {
                    offset,
                    len,
                    unmap: seg.flags & WRITE_ZEROES_UNMAP != 0,
                })
            }
        }
        _ => Err(Fault::Unsupported),
    }
}

/// The one segment of a discard or write-zeroes request, whose payload is
/// `readable_payload` bytes: more segments than advertised are too large a
/// request, a payload that is not whole segments is malformed.
fn discard_segment(
    readable_payload: u64,
    first: Option<DiscardSegment>,
) -> Result<DiscardSegment, Fault> {
    let len = DISCARD_SEGMENT_LEN as u64;
    if readable_payload == 0 || !readable_payload.is_multiple_of(len) {
        return Err(Fault::MalformedChain);
    }
    if readable_payload / len > u64::from(MAX_DISCARD_SEG) {
        return Err(Fault::TooLarge);
    }
    first.ok_or(Fault::MalformedChain)
}

/// Checks a discard (or write-zeroes) segment against the advertised
/// limits, as QEMU does: no more sectors than `max_discard_sectors` (or
/// `max_write_zeroes_sectors`), start and length aligned to the block size.
/// Returns its length in bytes.
fn check_discard(seg: &DiscardSegment, discarding: bool, disk: &DiskLimits) -> Result<u64, Fault> {
    let max = if discarding {
        MAX_DISCARD_SECTORS
    } else {
        MAX_WRITE_ZEROES_SECTORS
    };
    if seg.num_sectors > max {
        return Err(Fault::TooLarge);
    }
    let align = u64::from(disk.blk_size / SECTOR_SIZE as u32).max(1);
    if !seg.sector.is_multiple_of(align) || !u64::from(seg.num_sectors).is_multiple_of(align) {
        return Err(Fault::Unaligned);
    }
    Ok(u64::from(seg.num_sectors) * SECTOR_SIZE)
}

/// Collects a chain's buffers into `segments` (cleared first); returns the
/// index of the first device-writable buffer and whether the chain is
/// malformed (a readable buffer after a writable one, or too many). The
/// chain comes from the available ring or, for a request resubmitted after
/// a restart, from its head (`head_chain`).
pub fn collect(
    chain: impl IntoIterator<Item = Descriptor>,
    segments: &mut Vec<Segment>,
) -> (usize, bool) {
    segments.clear();
    let mut first_writable = None;
    let mut malformed = false;
    for desc in chain {
        if segments.len() > SEG_MAX + 2 {
            malformed = true;
            break;
        }
        if desc.is_write_only() {
            first_writable.get_or_insert(segments.len());
        } else if first_writable.is_some() {
            malformed = true;
        }
        segments.push(Segment {
            addr: desc.addr().0,
            len: desc.len(),
        });
    }
    (first_writable.unwrap_or(segments.len()), malformed)
}

/// The outcome of parsing a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No status byte can be written: the buffers go back untouched.
    Dropped(Fault),
    /// Refused; the status byte is at `status_addr`.
    Failed { fault: Fault, status_addr: u64 },
    /// A valid request.
    Request {
        op: Op,
        status_addr: u64,
        writable: WritableData<'a>,
    },
}

/// Parses a request from its chain's buffers, reading its header and any
/// discard segment from guest memory.
pub fn parse<'a, M: GuestMemoryBackend>(
    mem: &M,
    segments: &'a [Segment],
    first_writable: usize,
    malformed: bool,
    limits: &DiskLimits,
) -> Parsed<'a> {
    let layout = match layout(segments, first_writable) {
        Ok(l) => l,
        Err(fault) => return Parsed::Dropped(fault),
    };
    let status_addr = layout.status_addr;
    if !mem.check_range(GuestAddress(status_addr), 1) {
        return Parsed::Dropped(Fault::OutsideMemory);
    }
    if malformed {
        // Buffers out of order: the last one may be device-readable, so no
        // status may be written anywhere.
        return Parsed::Dropped(Fault::MalformedChain);
    }
    let failed = |fault| Parsed::Failed { fault, status_addr };
    let readable_len = stream_len(layout.readable);
    if readable_len < HEADER_LEN as u64 {
        return failed(Fault::MalformedChain);
    }
    let mut header = [0u8; HEADER_LEN];
    if !read_stream(mem, layout.readable, 0, &mut header) {
        return failed(Fault::OutsideMemory);
    }
    let header = Header::decode(&header);
    let payload_len = readable_len - HEADER_LEN as u64;
    let mut discard = None;
    if payload_len == DISCARD_SEGMENT_LEN as u64 {
        let mut seg = [0u8; DISCARD_SEGMENT_LEN];
        if !read_stream(mem, layout.readable, HEADER_LEN as u64, &mut seg) {
            return failed(Fault::OutsideMemory);
        }
        discard = Some(DiscardSegment::decode(&seg));
    }
    let writable = layout.writable_data;
    match decide(header, payload_len, writable.len(), discard, limits) {
        Ok(op) => Parsed::Request {
            op,
            status_addr,
            writable,
        },
        Err(fault) => failed(fault),
    }
}

/// Total length of a list of buffers.
pub fn stream_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

/// Reads `out.len()` bytes at `offset` of the byte stream the buffers form.
pub fn read_stream<M: GuestMemoryBackend>(
    mem: &M,
    segments: &[Segment],
    offset: u64,
    out: &mut [u8],
) -> bool {
    let mut skip = offset;
    let mut done = 0usize;
    for seg in segments {
        if done == out.len() {
            break;
        }
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = usize::try_from(len - skip)
            .unwrap_or(usize::MAX)
            .min(out.len() - done);
        let Some(addr) = seg.addr.checked_add(skip) else {
            return false;
        };
        if mem
            .read_slice(&mut out[done..done + n], GuestAddress(addr))
            .is_err()
        {
            return false;
        }
        done += n;
        skip = 0;
    }
    done == out.len()
}

fn check_transfer(len: u64) -> Result<(), Fault> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        Err(Fault::Unaligned)
    } else if len > MAX_TRANSFER {
        Err(Fault::TooLarge)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK: DiskLimits = DiskLimits {
        capacity_bytes: 1 << 20,
        read_only: false,
        blk_size: 512,
    };

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr, len }
    }

    fn header(kind: u32, sector: u64) -> Header {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[8..16].copy_from_slice(&sector.to_le_bytes());
        Header::decode(&b)
    }

    #[test]
    fn layout_finds_status_at_the_end_of_the_last_writable_buffer() {
        let segs = [seg(0x1000, 16), seg(0x2000, 4096), seg(0x3000, 1)];
        let l = layout(&segs, 2).unwrap();
        assert_eq!(l.readable.len(), 2);
        assert_eq!(l.status_addr, 0x3000);
        assert!(l.writable_data.is_empty());

        // Status sharing a buffer with read data.
        let segs = [seg(0x1000, 16), seg(0x2000, 513)];
        let l = layout(&segs, 1).unwrap();
        assert_eq!(l.status_addr, 0x2000 + 512);
        assert_eq!(l.writable_data.len(), 512);
        assert_eq!(
            l.writable_data.iter().collect::<Vec<_>>(),
            vec![seg(0x2000, 512)]
        );
    }

    #[test]
    fn layout_rejects_chains_without_status_or_too_long() {
        assert_eq!(layout(&[seg(0, 16)], 1), Err(Fault::MalformedChain));
        assert_eq!(
            layout(&[seg(0, 16), seg(0, 0)], 1),
            Err(Fault::MalformedChain)
        );
        let many = vec![seg(0, 512); SEG_MAX + 3];
        assert_eq!(layout(&many, 1), Err(Fault::MalformedChain));
        assert_eq!(layout(&[seg(u64::MAX, 2)], 0), Err(Fault::OutsideMemory));
    }

    #[test]
    fn reads_and_writes_are_range_checked() {
        let h = header(VIRTIO_BLK_T_IN, 8);
        assert_eq!(
            decide(h, 0, 4096, None, &DISK),
            Ok(Op::Read {
                offset: 4096,
                len: 4096
            })
        );
        let last = (1 << 20) / 512 - 1;
        assert_eq!(
            decide(header(VIRTIO_BLK_T_IN, last), 0, 512, None, &DISK).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            decide(header(VIRTIO_BLK_T_IN, last), 0, 1024, None, &DISK),
            Err(Fault::OutOfRange)
        );
        assert_eq!(
            decide(header(VIRTIO_BLK_T_OUT, u64::MAX), 512, 0, None, &DISK),
            Err(Fault::OutOfRange)
        );
        assert_eq!(
            decide(header(VIRTIO_BLK_T_OUT, 0), 100, 0, None, &DISK),
            Err(Fault::Unaligned)
        );
        assert_eq!(
            decide(
                header(VIRTIO_BLK_T_OUT, 0),
                MAX_TRANSFER + 512,
                0,
                None,
                &DISK
            ),
            Err(Fault::TooLarge)
        );
        let ro = DiskLimits {
            read_only: true,
            ..DISK
        };
        assert_eq!(
            decide(header(VIRTIO_BLK_T_OUT, 0), 512, 0, None, &ro),
            Err(Fault::ReadOnly)
        );
        assert!(decide(header(VIRTIO_BLK_T_IN, 0), 0, 512, None, &ro).is_ok());
    }

    #[test]
    fn discard_and_write_zeroes() {
        let seg = DiscardSegment {
            sector: 16,
            num_sectors: 8,
            flags: 0,
        };
        let h = header(VIRTIO_BLK_T_DISCARD, 0);
        assert_eq!(
            decide(h, 16, 0, Some(seg), &DISK),
            Ok(Op::Discard {
                offset: 8192,
                len: 4096
            })
        );
        assert_eq!(
            decide(h, 32, 0, Some(seg), &DISK),
            Err(Fault::TooLarge),
            "two segments, max_discard_seg is one"
        );
        let unmap = DiscardSegment {
            flags: WRITE_ZEROES_UNMAP,
            ..seg
        };
        let h = header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        assert_eq!(
            decide(h, 16, 0, Some(unmap), &DISK),
            Ok(Op::WriteZeroes {
                offset: 8192,
                len: 4096,
                unmap: true
            })
        );
        let bad = DiscardSegment { flags: 6, ..seg };
        assert_eq!(decide(h, 16, 0, Some(bad), &DISK), Err(Fault::Unsupported));
        let far = DiscardSegment {
            sector: u64::MAX / 512,
            ..seg
        };
        assert_eq!(decide(h, 16, 0, Some(far), &DISK), Err(Fault::OutOfRange));
    }

    #[test]
    fn discard_and_write_zeroes_honour_the_advertised_limits() {
        // A disk large enough that only the advertised limits can refuse.
        let big = DiskLimits {
            capacity_bytes: 1 << 40,
            ..DISK
        };
        let seg = |sector, num_sectors| DiscardSegment {
            sector,
            num_sectors,
            flags: 0,
        };
        for (kind, max) in [
            (VIRTIO_BLK_T_DISCARD, MAX_DISCARD_SECTORS),
            (VIRTIO_BLK_T_WRITE_ZEROES, MAX_WRITE_ZEROES_SECTORS),
        ] {
            let h = header(kind, 0);
            assert!(decide(h, 16, 0, Some(seg(0, max)), &big).is_ok());
            assert_eq!(
                decide(h, 16, 0, Some(seg(0, max + 1)), &big),
                Err(Fault::TooLarge),
                "more than max_*_sectors"
            );
            assert_eq!(
                decide(h, 16, 0, Some(seg(0, u32::MAX)), &big),
                Err(Fault::TooLarge)
            );
            assert_eq!(
                decide(h, 32, 0, Some(seg(0, 8)), &big),
                Err(Fault::TooLarge),
                "more segments than max_*_seg"
            );
            assert_eq!(
                decide(h, 24, 0, None, &big),
                Err(Fault::MalformedChain),
                "not whole segments"
            );
            // discard_sector_alignment: 8 sectors on a 4 KiB-block disk.
            let blk4k = DiskLimits {
                blk_size: 4096,
                ..big
            };
            assert!(decide(h, 16, 0, Some(seg(8, 16)), &blk4k).is_ok());
            assert_eq!(
                decide(h, 16, 0, Some(seg(1, 8)), &blk4k),
                Err(Fault::Unaligned)
            );
            assert_eq!(
                decide(h, 16, 0, Some(seg(8, 9)), &blk4k),
                Err(Fault::Unaligned)
            );
        }
    }

    #[test]
    fn unknown_types_are_unsupported() {
        assert_eq!(
            decide(header(2, 0), 0, 0, None, &DISK),
            Err(Fault::Unsupported)
        );
        assert_eq!(
            decide(header(VIRTIO_BLK_T_FLUSH, 0), 0, 0, None, &DISK),
            Ok(Op::Flush)
        );
        assert_eq!(
            decide(header(VIRTIO_BLK_T_GET_ID, 0), 0, 20, None, &DISK),
            Ok(Op::GetId)
        );
    }

    #[test]
    fn fault_indices_are_dense() {
        for (i, f) in Fault::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
    }
}
