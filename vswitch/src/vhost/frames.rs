//! Frames in guest memory: a frame is a list of spans ([`Pieces`]) taken
//! from a transmit chain (or an uplink's buffer), edited for its
//! destination without moving bytes (a tag push is a 4-byte span between
//! two others), and copied once, straight into the destination guest's
//! receive chains.

use super::ring::{Chain, ChainError, SplitRing};
use crate::frame::{DropReason, TagEdit, VLAN_HLEN, tci_bytes};

/// Most spans a frame is made of (a chain's buffers plus an edit's).
pub const MAX_PIECES: usize = super::ring::MAX_SEGS + 3;
/// Offset of `num_buffers` in the virtio-net header.
const NUM_BUFFERS: usize = 10;
/// Most receive chains one frame may span (mergeable buffers).
pub const MAX_RX_CHAINS: usize = 32;

/// A frame as spans of memory. The spans point into guest memory (or a
/// worker buffer) that stays mapped while the frame is handled: the
/// worker holds the source ring, and with it the memory, for the burst.
#[derive(Debug, Clone, Copy)]
pub struct Pieces {
    p: [(*const u8, usize); MAX_PIECES],
    n: usize,
    len: usize,
}

impl Default for Pieces {
    fn default() -> Self {
        Pieces {
            p: [(std::ptr::null(), 0); MAX_PIECES],
            n: 0,
            len: 0,
        }
    }
}

impl Pieces {
    /// One span.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut p = Pieces::default();
        p.push(bytes.as_ptr(), bytes.len());
        p
    }

    /// The frame of a transmit chain: its buffers after the first `skip`
    /// bytes (the virtio-net header). None when the chain is shorter.
    pub fn from_chain(chain: &Chain, skip: usize) -> Option<Self> {
        let mut p = Pieces::default();
        let mut skip = skip;
        for s in chain.segs() {
            let len = s.len as usize;
            if skip >= len {
                skip -= len;
                continue;
            }
            // SAFETY: `skip < len`: inside the translated buffer.
            p.push(unsafe { s.ptr.add(skip) }, len - skip);
            skip = 0;
        }
        (skip == 0).then_some(p)
    }

    fn push(&mut self, ptr: *const u8, len: usize) {
        if len > 0 && self.n < MAX_PIECES {
            self.p[self.n] = (ptr, len);
            self.n += 1;
            self.len += len;
        }
    }

    /// Total length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The spans.
    pub fn spans(&self) -> &[(*const u8, usize)] {
        &self.p[..self.n]
    }

    /// Copies the first bytes into `out`; returns how many.
    pub fn read_head(&self, out: &mut [u8]) -> usize {
        let mut done = 0;
        for &(ptr, len) in self.spans() {
            if done == out.len() {
                break;
            }
            let n = len.min(out.len() - done);
            // SAFETY: `ptr..ptr+len` is a live span (see the type's
            // invariant); `out` has room for `n` more bytes. Raw copy:
            // the guest may be writing the bytes, which are untrusted.
            unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr().add(done), n) };
            done += n;
        }
        done
    }

    /// Appends bytes `start..end` of `self` to `out`.
    fn range_into(&self, start: usize, end: usize, out: &mut Pieces) {
        let mut at = 0;
        for &(ptr, len) in self.spans() {
            let (s, e) = (start.max(at), end.min(at + len));
            if s < e {
                // SAFETY: `s - at < len`: inside this span.
                out.push(unsafe { ptr.add(s - at) }, e - s);
            }
            at += len;
            if at >= end {
                break;
            }
        }
    }

    /// The frame as `edit` changes it; a pushed or rewritten tag is read
    /// from `tag`, which the caller keeps alive with the result. The frame
    /// must be one `frame::parse` accepted (a tag for `Pop`/`Rewrite`).
    pub fn edited(&self, edit: TagEdit, tag: &mut [u8; 4]) -> Pieces {
        let mut out = Pieces::default();
        match edit {
            TagEdit::Keep => return *self,
            TagEdit::Push(t) => {
                *tag = tci_bytes(t);
                self.range_into(0, 12, &mut out);
                out.push(tag.as_ptr(), VLAN_HLEN);
                self.range_into(12, self.len, &mut out);
            }
            TagEdit::Pop => {
                self.range_into(0, 12, &mut out);
                self.range_into(12 + VLAN_HLEN, self.len, &mut out);
            }
            TagEdit::Rewrite(t) => {
                *tag = tci_bytes(t);
                self.range_into(0, 12, &mut out);
                out.push(tag.as_ptr(), VLAN_HLEN);
                self.range_into(12 + VLAN_HLEN, self.len, &mut out);
            }
        }
        out
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
/// needs when buffers are mergeable, or one. On failure nothing is
/// written and no chain is used, except chains that were malformed,
/// which go back to the guest empty.
pub fn deliver(
    rx: &mut SplitRing,
    frame: &Pieces,
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
            Some(Err(e)) => {
                // The malformed chain and those before it go back empty.
                let _: ChainError = e;
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
    let mut src = Pieces::default();
    src.push(hdr.as_ptr(), fmt.hdr_len);
    frame.range_into(0, frame.len(), &mut src);
    scatter(&src, &chains[..taken], rx);
    Ok(())
}

/// Copies `src` across `chains` in order and returns each chain as used
/// with the bytes it got.
fn scatter(src: &Pieces, chains: &[Chain], rx: &mut SplitRing) {
    let spans = src.spans();
    let (mut si, mut soff) = (0usize, 0usize);
    for c in chains {
        let mut written = 0u32;
        for seg in c.segs() {
            let mut doff = 0usize;
            let dlen = seg.len as usize;
            while doff < dlen && si < spans.len() {
                let (sptr, slen) = spans[si];
                let n = (slen - soff).min(dlen - doff);
                // SAFETY: source span `soff..soff+n` is inside a live span;
                // destination `doff..doff+n` is inside a buffer translated
                // by the ring (device-writable, in guest memory).
                unsafe { std::ptr::copy_nonoverlapping(sptr.add(soff), seg.ptr.add(doff), n) };
                soff += n;
                doff += n;
                written += n as u32;
                if soff == slen {
                    si += 1;
                    soff = 0;
                }
            }
        }
        rx.push_used(c.head, written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::VlanTag;
    use crate::vhost::ring::tests::{BUFS, Driver};

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

    fn collect(p: &Pieces) -> Vec<u8> {
        let mut out = vec![0u8; p.len()];
        assert_eq!(p.read_head(&mut out), p.len());
        out
    }

    #[test]
    fn edits_splice_spans() {
        let plain = frame(false);
        let tagged = frame(true);
        // A frame split at an awkward place.
        let mut p = Pieces::default();
        p.push(plain.as_ptr(), 7);
        p.push(plain[7..].as_ptr(), plain.len() - 7);
        let mut tag = [0u8; 4];
        let pushed = p.edited(TagEdit::Push(VlanTag { vid: 10, pcp: 0 }), &mut tag);
        assert_eq!(collect(&pushed), tagged);
        let t = Pieces::from_slice(&tagged);
        assert_eq!(collect(&t.edited(TagEdit::Pop, &mut tag)), plain);
        let rewritten = t.edited(TagEdit::Rewrite(VlanTag { vid: 20, pcp: 5 }), &mut tag);
        let mut want = tagged.clone();
        want[14..16].copy_from_slice(&[0xa0, 20]);
        assert_eq!(collect(&rewritten), want);
        assert_eq!(collect(&t.edited(TagEdit::Keep, &mut tag)), tagged);
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
        assert_eq!(
            deliver(&mut rx, &Pieces::from_slice(&f), fmt, &mut chains),
            Ok(())
        );
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
            deliver(&mut rx, &Pieces::from_slice(&f), fmt, &mut chains),
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
            deliver(&mut rx, &Pieces::from_slice(&f), fmt, &mut chains),
            Err(DropReason::BadRxBuffer)
        );
        // The too-small chain went back empty; the next one takes the frame.
        assert_eq!(
            deliver(&mut rx, &Pieces::from_slice(&f), fmt, &mut chains),
            Ok(())
        );
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
            deliver(
                &mut rx,
                &Pieces::from_slice(&frame(false)),
                fmt,
                &mut chains
            ),
            Err(DropReason::BadRxBuffer)
        );
        rx.flush_used();
        assert_eq!(d.used(0), (0, 0));
    }
}
