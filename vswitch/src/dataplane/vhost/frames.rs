//! Frames in guest memory: a frame ([`Frame`]) is the buffers of a
//! transmit chain (or an uplink's buffer) whose first bytes, the headers
//! the switch checks, are copied out once; edited for its destination
//! without moving bytes ([`Edited`]: a tag push is a 4-byte span between
//! two ranges), and copied once, straight into the destination guest's
//! receive chains ([`deliver`]), the header from that copy.

use super::ring::{Chain, Seg, SplitRing};
use crate::dataplane::frame::{DropReason, TagEdit, VLAN_HLEN, tci_bytes};

/// Most spans an edited frame is made of: the copied head split around
/// the tag (two), the tag, and a chain's buffers after the head.
pub const MAX_SPANS: usize = super::ring::MAX_SEGS + 3;
/// Offset of `num_buffers` in the virtio-net header.
const NUM_BUFFERS: usize = 10;
/// Most receive chains one frame may span (mergeable buffers).
pub const MAX_RX_CHAINS: usize = 32;

/// Bytes at the start of a frame copied out of guest memory once, when
/// the frame is taken: every header the switch reads (Ethernet, 802.1Q,
/// the IP addresses teaming hashes) lies in them, so every check, every
/// forwarding decision and every copy to a destination sees the same
/// bytes, whatever a second vCPU of the guest writes meanwhile. One cache
/// line: the copy costs about what the first read of it did.
pub const HEAD_COPY: usize = 64;

/// A frame in memory: buffers (of a transmit chain, or a worker buffer
/// for uplinks) after `skip` bytes, with its first bytes copied once
/// ([`HEAD_COPY`]). The buffers stay valid while the frame is handled:
/// the worker holds the source ring, and with it the memory, for the
/// whole burst.
///
/// The guest may rewrite its buffers at any time. Bytes of the copy are
/// never read from guest memory again: [`Frame::head`] and
/// [`Frame::for_each_span`] give them from the copy; only the bytes after
/// it come from guest memory, once per destination.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    segs: &'a [Seg],
    skip: usize,
    len: usize,
    head: [u8; HEAD_COPY],
    head_len: usize,
}

impl<'a> Frame<'a> {
    /// The frame in `segs` after the first `skip` bytes (the virtio-net
    /// header), its first bytes copied; None when they hold fewer.
    #[inline]
    pub fn from_segs(segs: &'a [Seg], skip: usize) -> Option<Self> {
        let total: usize = segs.iter().map(|s| s.len as usize).sum();
        let len = total.checked_sub(skip)?;
        let mut frame = Frame {
            segs,
            skip,
            len,
            head: [0; HEAD_COPY],
            head_len: 0,
        };
        let mut head = [0u8; HEAD_COPY];
        let mut done = 0;
        frame.guest_spans(0, HEAD_COPY, |ptr, n| {
            // Raw copy: the guest may be writing the bytes, untrusted.
            // SAFETY: `ptr..ptr+n` is a live span; `head` has room (spans cover at most HEAD_COPY).
            unsafe { std::ptr::copy_nonoverlapping(ptr, head.as_mut_ptr().add(done), n) };
            done += n;
        });
        frame.head = head;
        frame.head_len = done;
        Some(frame)
    }

    /// Total length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first bytes (all of them, up to [`HEAD_COPY`]), as copied once:
    /// what the switch parses and checks.
    #[inline]
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// Calls `f` with each span of bytes `start..end` of the frame: the
    /// copied head from the copy, the rest from guest memory.
    #[inline]
    pub fn for_each_span(&self, start: usize, end: usize, mut f: impl FnMut(*const u8, usize)) {
        let end = end.min(self.len);
        if start < self.head_len.min(end) {
            let copied = &self.head[start..self.head_len.min(end)];
            f(copied.as_ptr(), copied.len());
        }
        self.guest_spans(start.max(self.head_len), end, f);
    }

    /// Calls `f` with each span of bytes `start..end` of the frame as they
    /// are in guest memory.
    #[inline]
    fn guest_spans(&self, start: usize, end: usize, mut f: impl FnMut(*const u8, usize)) {
        let (start, end) = (start + self.skip, end.min(self.len) + self.skip);
        let mut at = 0;
        for seg in self.segs {
            if at >= end {
                break;
            }
            let len = seg.len as usize;
            let (s, e) = (start.max(at), end.min(at + len));
            if s < e {
                // SAFETY: `s - at < len`: inside this translated buffer.
                f(unsafe { seg.ptr.add(s - at) }, e - s);
                #[cfg(test)]
                racing_guest::after_read();
            }
            at += len;
        }
    }

    /// Copies the first bytes into `out`; returns how many.
    #[inline]
    pub fn read_head(&self, out: &mut [u8]) -> usize {
        let mut done = 0;
        self.for_each_span(0, out.len(), |ptr, n| {
            // Raw copy: the guest may be writing the bytes, untrusted.
            // SAFETY: `ptr..ptr+n` is a live span; `out` has room (spans cover at most out.len()).
            unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr().add(done), n) };
            done += n;
        });
        done
    }
}

/// A second vCPU of the guest, for tests: a writer that runs after each
/// read of a frame's bytes in guest memory on this thread, so that every
/// read sees what the previous one did not (the worst interleaving a real
/// racing vCPU can produce, made deterministic).
#[cfg(test)]
pub(crate) mod racing_guest {
    use std::cell::RefCell;

    type Writer = Box<dyn FnMut()>;

    thread_local! {
        static WRITER: RefCell<Option<Writer>> = const { RefCell::new(None) };
    }

    /// Runs `writer` after each read of guest frame bytes on this thread
    /// until [`stop`].
    pub(crate) fn start(writer: impl FnMut() + 'static) {
        WRITER.with(|w| *w.borrow_mut() = Some(Box::new(writer)));
    }

    /// No more writes.
    pub(crate) fn stop() {
        WRITER.with(|w| *w.borrow_mut() = None);
    }

    pub(super) fn after_read() {
        WRITER.with(|w| {
            if let Some(write) = w.borrow_mut().as_mut() {
                write();
            }
        });
    }
}

/// A frame as one destination gets it: the frame with its tag edit,
/// described without moving bytes (a pushed tag is a 4-byte span between
/// two ranges of the frame).
#[derive(Debug, Clone, Copy)]
pub struct Edited<'f, 'a> {
    frame: &'f Frame<'a>,
    edit: TagEdit,
    tag: [u8; 4],
}

impl<'f, 'a> Edited<'f, 'a> {
    /// `frame` with `edit`. The frame must be one `frame::parse` accepted
    /// (a tag for `Pop`/`Rewrite`).
    pub fn new(frame: &'f Frame<'a>, edit: TagEdit) -> Self {
        let tag = match edit {
            TagEdit::Push(t) | TagEdit::Rewrite(t) => tci_bytes(t),
            TagEdit::Keep | TagEdit::Pop => [0; 4],
        };
        Edited { frame, edit, tag }
    }

    /// Length after the edit.
    pub fn len(&self) -> usize {
        self.edit.output_len(self.frame.len())
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each span of the edited frame, in order.
    #[inline]
    pub fn for_each_span(&self, mut f: impl FnMut(*const u8, usize)) {
        let n = self.frame.len();
        match self.edit {
            TagEdit::Keep => self.frame.for_each_span(0, n, f),
            TagEdit::Push(_) => {
                self.frame.for_each_span(0, 12, &mut f);
                f(self.tag.as_ptr(), VLAN_HLEN);
                self.frame.for_each_span(12, n, f);
            }
            TagEdit::Pop => {
                self.frame.for_each_span(0, 12, &mut f);
                self.frame.for_each_span(12 + VLAN_HLEN, n, f);
            }
            TagEdit::Rewrite(_) => {
                self.frame.for_each_span(0, 12, &mut f);
                f(self.tag.as_ptr(), VLAN_HLEN);
                self.frame.for_each_span(12 + VLAN_HLEN, n, f);
            }
        }
    }
}

/// The receive side of a guest's port, as delivery needs it.
#[derive(Debug, Clone, Copy)]
pub struct RxFormat {
    /// virtio-net header length: 12 with VERSION_1 or MRG_RXBUF, else 10.
    pub hdr_len: usize,
    pub mergeable: bool,
}

/// Copies `frame` into the guest's receive chains after a zeroed
/// virtio-net header (with `num_buffers`), taking as many chains as it
/// needs when buffers are mergeable, or one. When the ring has too few
/// buffers nothing is written and no chain is used; malformed or
/// too-small chains go back to the guest empty.
pub fn deliver(
    rx: &mut SplitRing,
    frame: &Edited<'_, '_>,
    fmt: RxFormat,
    chains: &mut [Chain],
) -> Result<(), DropReason> {
    let need = (fmt.hdr_len + frame.len()) as u64;
    if rx.pending() == 0 && rx.refresh() == 0 {
        return Err(DropReason::NoRxBuffer);
    }
    let mut taken = 0usize;
    let mut room = 0u64;
    let max = if fmt.mergeable { chains.len() } else { 1 };
    while room < need {
        if taken == max {
            // Buffers too small for any frame of the port's MTU: a guest
            // bug; they go back empty so the ring does not stall on them.
            for c in &chains[..taken] {
                rx.push_used(c.head, 0);
            }
            return Err(DropReason::BadRxBuffer);
        }
        let chain = &mut chains[taken];
        match rx.pop(chain, true) {
            None => {
                if rx.refresh() > 0 {
                    continue;
                }
                rx.unpop(taken as u16);
                return Err(DropReason::NoRxBuffer);
            }
            Some(Err(_)) => {
                // The malformed chain and those before it go back empty.
                for c in &chains[..=taken] {
                    rx.push_used(c.head, 0);
                }
                return Err(DropReason::BadRxBuffer);
            }
            Some(Ok(())) => {
                room += chain.len;
                taken += 1;
            }
        }
    }
    let first = chains[0].segs();
    if first.is_empty() || (first[0].len as usize) < fmt.hdr_len {
        for c in &chains[..taken] {
            rx.push_used(c.head, 0);
        }
        return Err(DropReason::BadRxBuffer);
    }
    let mut hdr = [0u8; 12];
    hdr[NUM_BUFFERS..].copy_from_slice(&(taken as u16).to_le_bytes());
    let mut out = Scatter::new(&chains[..taken]);
    out.write(hdr.as_ptr(), fmt.hdr_len);
    frame.for_each_span(|ptr, n| out.write(ptr, n));
    for (c, written) in chains[..taken].iter().zip(out.written) {
        rx.push_used(c.head, written);
    }
    Ok(())
}

/// A write cursor over receive chains.
struct Scatter<'c> {
    chains: &'c [Chain],
    chain: usize,
    seg: usize,
    off: usize,
    written: [u32; MAX_RX_CHAINS],
}

impl<'c> Scatter<'c> {
    fn new(chains: &'c [Chain]) -> Self {
        Scatter {
            chains,
            chain: 0,
            seg: 0,
            off: 0,
            written: [0; MAX_RX_CHAINS],
        }
    }

    /// Appends `len` bytes from `src`; bytes beyond the chains' room are
    /// not written (callers check the room first).
    #[inline]
    fn write(&mut self, mut src: *const u8, mut len: usize) {
        while len > 0 && self.chain < self.chains.len() {
            let segs = self.chains[self.chain].segs();
            if self.seg == segs.len() {
                self.chain += 1;
                self.seg = 0;
                self.off = 0;
                continue;
            }
            let seg = segs[self.seg];
            let n = (seg.len as usize - self.off).min(len);
            // The source span is live for the call (see `Frame`). A guest
            // with two NICs on this switch can offer a receive buffer that
            // overlaps its own transmit buffer (one guest memory), so the
            // copy must allow overlap: memmove, not memcpy.
            // SAFETY: `off..off+n` lies in a device-writable buffer the ring translated.
            unsafe { std::ptr::copy(src, seg.ptr.add(self.off), n) };
            // SAFETY: `n <= len`: still inside the source span.
            src = unsafe { src.add(n) };
            len -= n;
            self.off += n;
            self.written[self.chain] += n as u32;
            if self.off == seg.len as usize {
                self.seg += 1;
                self.off = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::frame::VlanTag;
    use crate::dataplane::vhost::ring::MAX_SEGS;
    use crate::dataplane::vhost::ring::tests::{BUFS, Driver};

    const WRITE: u16 = 2;
    const NEXT: u16 = 1;

    fn frame(tagged: bool) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if tagged {
            f.extend_from_slice(&[0x81, 0, 0, 10]);
        }
        f.extend_from_slice(&[0x08, 0]);
        f.extend((0..50u8).map(|i| i + 100));
        f
    }

    /// `bytes` as an unedited frame (test memory leaked for simplicity).
    fn keep(bytes: &[u8]) -> Edited<'static, 'static> {
        let segs: &'static [Seg] = Box::leak(Box::new([seg(Box::leak(
            bytes.to_vec().into_boxed_slice(),
        ))]));
        let f: &'static Frame<'static> =
            Box::leak(Box::new(Frame::from_segs(segs, 0).expect("frame")));
        Edited::new(f, TagEdit::Keep)
    }

    fn seg(bytes: &[u8]) -> Seg {
        Seg {
            ptr: bytes.as_ptr().cast_mut(),
            len: bytes.len() as u32,
        }
    }

    fn collect(e: &Edited<'_, '_>) -> Vec<u8> {
        let mut out = Vec::new();
        e.for_each_span(|p, n| {
            // SAFETY: test spans point into live vectors.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
        });
        assert_eq!(out.len(), e.len());
        out
    }

    #[test]
    fn edits_splice_spans() {
        let plain = frame(false);
        let tagged = frame(true);
        // A frame split at an awkward place, behind a 12-byte header.
        let hdr = [0u8; 12];
        let segs = [
            seg(&hdr[..5]),
            seg(&hdr[5..]),
            seg(&plain[..7]),
            seg(&plain[7..]),
        ];
        let f = Frame::from_segs(&segs, 12).expect("long enough");
        assert_eq!(f.len(), plain.len());
        let mut head = [0u8; 18];
        assert_eq!(f.read_head(&mut head), 18);
        assert_eq!(&head[..], &plain[..18]);
        let pushed = Edited::new(&f, TagEdit::Push(VlanTag { vid: 10, pcp: 0 }));
        assert_eq!(collect(&pushed), tagged);
        let tsegs = [seg(&tagged)];
        let t = Frame::from_segs(&tsegs, 0).expect("frame");
        assert_eq!(collect(&Edited::new(&t, TagEdit::Pop)), plain);
        let rewritten = Edited::new(&t, TagEdit::Rewrite(VlanTag { vid: 20, pcp: 5 }));
        let mut want = tagged.clone();
        want[14..16].copy_from_slice(&[0xa0, 20]);
        assert_eq!(collect(&rewritten), want);
        assert_eq!(collect(&Edited::new(&t, TagEdit::Keep)), tagged);
        assert!(Frame::from_segs(&segs[..2], 13).is_none());
    }

    #[test]
    fn the_head_is_read_from_guest_memory_once() {
        // A long tagged frame over many small buffers, the copied head
        // ending inside one of them.
        let mut bytes = vec![0u8; 12];
        bytes.extend(frame(true));
        bytes.extend((0..150u8).map(|i| i ^ 0x5a));
        let want = bytes[12..].to_vec();
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(7).collect();
        cuts.push(bytes.len());
        let base = bytes.as_mut_ptr();
        let segs: Vec<Seg> = cuts
            .windows(2)
            .map(|w| Seg {
                // SAFETY: `w[0] < bytes.len()`: inside the vector.
                ptr: unsafe { base.add(w[0]) },
                len: (w[1] - w[0]) as u32,
            })
            .collect();
        let f = Frame::from_segs(&segs, 12).expect("long enough");
        assert_eq!(f.head(), &want[..HEAD_COPY]);
        // The guest rewrites the whole frame after the copy.
        for s in &segs {
            // `bytes` lives on and is only reached through these pointers meanwhile.
            // SAFETY: each segment is a range of `bytes`.
            unsafe { std::ptr::write_bytes(s.ptr, 0xee, s.len as usize) };
        }
        let mut later = want.clone();
        later[HEAD_COPY..].fill(0xee);
        assert_eq!(f.head(), &want[..HEAD_COPY]);
        let tag = VlanTag { vid: 20, pcp: 5 };
        for edit in [
            TagEdit::Keep,
            TagEdit::Push(tag),
            TagEdit::Pop,
            TagEdit::Rewrite(tag),
        ] {
            let mut expected = vec![0u8; later.len() + VLAN_HLEN];
            let n =
                crate::dataplane::frame::copy_with_edit(&later, edit, &mut expected).expect("room");
            let edited = Edited::new(&f, edit);
            assert_eq!(collect(&edited), expected[..n], "{edit:?}");
        }
    }

    #[test]
    fn edited_frames_stay_within_max_spans() {
        // The worst case: the first buffer holds the virtio-net header and
        // the whole copied head, every other buffer one byte after it.
        let mut bytes = vec![0u8; 12];
        bytes.extend(frame(true));
        let first = 12 + HEAD_COPY + 1;
        bytes.resize(first + MAX_SEGS - 1, 7);
        let segs: Vec<Seg> = std::iter::once(seg(&bytes[..first]))
            .chain((first..bytes.len()).map(|i| seg(&bytes[i..=i])))
            .collect();
        assert_eq!(segs.len(), MAX_SEGS);
        let f = Frame::from_segs(&segs, 12).expect("long enough");
        let tag = VlanTag { vid: 20, pcp: 5 };
        for edit in [TagEdit::Push(tag), TagEdit::Rewrite(tag)] {
            let mut spans = 0;
            Edited::new(&f, edit).for_each_span(|_, _| spans += 1);
            assert_eq!(spans, MAX_SPANS, "{edit:?}");
        }
    }

    #[test]
    fn frames_are_delivered_across_mergeable_buffers() {
        let mut d = Driver::new(8);
        // Three 32-byte receive buffers.
        for i in 0..3u16 {
            d.desc(i, BUFS + 0x100 * u64::from(i), 32, WRITE, 0);
            d.offer(i);
        }
        let mut rx = d.ring(false);
        let mut chains: Vec<Chain> = (0..MAX_RX_CHAINS).map(|_| Chain::default()).collect();
        let f = frame(false); // 64 bytes + 12 header = 76: three buffers
        let fmt = RxFormat {
            hdr_len: 12,
            mergeable: true,
        };
        assert_eq!(deliver(&mut rx, &keep(&f), fmt, &mut chains), Ok(()));
        rx.flush_used();
        assert_eq!(d.used_idx(), 3);
        assert_eq!(d.used(0), (0, 32));
        assert_eq!(d.used(2), (2, 12));
        let hdr = d.read(BUFS, 12);
        assert_eq!(&hdr[10..], &3u16.to_le_bytes());
        let mut got = d.read(BUFS + 12, 20);
        got.extend(d.read(BUFS + 0x100, 32));
        got.extend(d.read(BUFS + 0x200, 12));
        assert_eq!(got, f);
        // No buffers left: dropped, nothing used.
        assert_eq!(
            deliver(&mut rx, &keep(&f), fmt, &mut chains),
            Err(DropReason::NoRxBuffer)
        );
    }

    #[test]
    fn without_mergeable_buffers_a_frame_needs_one_chain() {
        let mut d = Driver::new(8);
        d.desc(0, BUFS, 40, WRITE, 0);
        d.offer(0);
        d.desc(1, BUFS + 0x100, 12, WRITE | NEXT, 2);
        d.desc(2, BUFS + 0x200, 100, WRITE, 0);
        d.offer(1);
        let mut rx = d.ring(false);
        let mut chains: Vec<Chain> = (0..MAX_RX_CHAINS).map(|_| Chain::default()).collect();
        let fmt = RxFormat {
            hdr_len: 12,
            mergeable: false,
        };
        let f = frame(false);
        assert_eq!(
            deliver(&mut rx, &keep(&f), fmt, &mut chains),
            Err(DropReason::BadRxBuffer)
        );
        // The too-small chain went back empty; the next one takes the frame.
        assert_eq!(deliver(&mut rx, &keep(&f), fmt, &mut chains), Ok(()));
        rx.flush_used();
        assert_eq!(d.used_idx(), 2);
        assert_eq!(d.used(0), (0, 0));
        assert_eq!(d.used(1), (1, 76));
        assert_eq!(d.read(BUFS + 0x200, 64), f);
    }

    #[test]
    fn malformed_receive_chains_are_returned_empty() {
        let mut d = Driver::new(8);
        d.desc(0, BUFS, 100, 0, 0); // device-readable: wrong direction
        d.offer(0);
        let mut rx = d.ring(false);
        let mut chains: Vec<Chain> = (0..MAX_RX_CHAINS).map(|_| Chain::default()).collect();
        let fmt = RxFormat {
            hdr_len: 12,
            mergeable: true,
        };
        assert_eq!(
            deliver(&mut rx, &keep(&frame(false)), fmt, &mut chains),
            Err(DropReason::BadRxBuffer)
        );
        rx.flush_used();
        assert_eq!(d.used(0), (0, 0));
    }
}
