//! The body of the `frame_path` fuzz target (vswitch/fuzz), also run by a
//! unit test on generated inputs so that `make test` exercises it.
//!
//! The input plays a frontend and two guests. Guest A transmits: its
//! memory (one memfd-backed region at an input-chosen guest and frontend
//! address, 64 KiB to 1 MiB) holds a split ring whose size, addresses and
//! contents come from the input. Guest B receives, on a ring built the
//! same way in its own memory. The body then runs the worker's frame path
//! as a script of operations: transmit bursts (each chain popped, cut
//! after the virtio-net header, parsed, edited with every [`TagEdit`] and
//! delivered to B), delivery of a frame taken from the input, kick
//! suppression, and the guests rewriting their memory in between (a new
//! available index, any 16-bit word), as a running guest may.
//!
//! Input layout (missing bytes read as zero; integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | flags: see the `F_*` constants |
//! | 2 × 29 | guest A (transmit) then guest B (receive): memory `gpa` u64, `uva` u64, size u16 (64 KiB + 15 × value, at most 1 MiB), ring size u16 (`1 << (v % 16)`, or `v` itself with [`F_RAW_SIZE`]), descriptor table, available ring and used ring offsets u16 (in 16-byte units from `uva`), misalignment u8 (bits 0-3 added to the table, bit 4 to the available ring, bits 5-6 to the used ring), first index u16 |
//! | 4 | input frame: offset u16 and length u16 in the image |
//! | 1 | script length (at most [`MAX_SCRIPT`] bytes; 0: a default script) |
//! | n | script: opcodes (`OP_*`, low 3 bits) with their arguments |
//! | rest | image, written at the start of both memories |
//!
//! Unless [`F_ABSOLUTE`] is set, the first descriptors of each ring have
//! their buffer address rebased on the memory's guest address, so that
//! the fuzzer need not guess it to reach buffers.
//!
//! Besides "no panic, no hang, no access outside the mappings", the body
//! checks that every translated buffer lies inside its guest's memory, that
//! every accepted ring is inside memory and aligned where the device
//! accesses it, and that each edit made of spans ([`Edited`])
//! reads back as the same edit made by copy ([`frame::copy_with_edit`]).

use std::sync::Arc;

use crate::dataplane::frame::{self, ETH_HLEN, TagEdit, VLAN_HLEN, VlanTag};
use crate::dataplane::vhost::frames::{Edited, Frame, MAX_RX_CHAINS, RxFormat, deliver};
use crate::dataplane::vhost::mem::GuestMemory;
use crate::dataplane::vhost::ring::{Chain, MAX_SEGS, RingAddrs, Seg, SplitRing};
use crate::dataplane::worker::{BURST, MAX_FRAME};

/// Flag: transmit ring with VIRTIO_RING_F_EVENT_IDX.
pub const F_TX_EVENT_IDX: u8 = 1 << 0;
/// Flag: receive ring with VIRTIO_RING_F_EVENT_IDX.
pub const F_RX_EVENT_IDX: u8 = 1 << 1;
/// Flags (2 bits): receive format; 0: 10-byte header, 1: 12-byte header,
/// 2 or 3: 12-byte header and mergeable buffers.
pub const F_RX_FORMAT_SHIFT: u8 = 2;
/// Flag: descriptor addresses are used as written (not rebased).
pub const F_ABSOLUTE: u8 = 1 << 4;
/// Flag: the transmit header is 12 bytes (else 10).
pub const F_TX_HDR_12: u8 = 1 << 5;
/// Flag: ring sizes are taken as written (may not be a power of two).
pub const F_RAW_SIZE: u8 = 1 << 6;
/// Flag: the transmitting port admits jumbo frames (MTU 9000, else 1500).
pub const F_JUMBO: u8 = 1 << 7;

/// Run a transmit burst of guest A, delivering to B.
pub const OP_TX_BURST: u8 = 0;
/// Deliver the input frame to B.
pub const OP_DELIVER: u8 = 1;
/// Transmit ring kicks: suppress (with bit 3 of the opcode byte) or enable.
pub const OP_TX_KICKS: u8 = 2;
/// Receive ring kicks: suppress (with bit 3 of the opcode byte) or enable.
pub const OP_RX_KICKS: u8 = 3;
/// Guest A adds the next u16 of the script to its available index.
pub const OP_TX_AVAIL: u8 = 4;
/// Guest B adds the next u16 of the script to its available index.
pub const OP_RX_AVAIL: u8 = 5;
/// A guest (A, or B with bit 3 of the opcode byte) writes a u16 (the
/// script's next) at byte 2 × (the u16 after it) of its memory.
pub const OP_POKE: u8 = 6;
// Opcode 7 is another transmit burst.

/// Most script bytes.
pub const MAX_SCRIPT: usize = 64;
/// Smallest guest memory.
pub const MIN_MEM: u64 = 64 * 1024;
/// Largest guest memory.
pub const MAX_MEM: u64 = 1024 * 1024;
/// Descriptors rebased per ring.
const MAX_REBASE: u16 = 256;
/// Most transmit chains and deliveries per input. A chain may be as long
/// as its ring (up to 32768 descriptors, mostly empty ones looping): a
/// bound on chains keeps the slowest input to milliseconds.
const MAX_CHAINS: usize = 4 * BURST;
/// Most calls of `deliver` per input, for the same reason.
const MAX_DELIVERIES: usize = 4 * BURST;
/// The script run when the input has none.
const DEFAULT_SCRIPT: [u8; 5] = [
    OP_TX_BURST,
    OP_DELIVER,
    OP_TX_KICKS,
    OP_RX_KICKS,
    OP_TX_BURST,
];

/// What one run did, for tests that check a well-formed input goes all
/// the way through.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Both memories were mapped and guest A's ring accepted.
    pub tx_ring: bool,
    /// Both memories were mapped and guest B's ring accepted.
    pub rx_ring: bool,
    /// Transmit chains taken, well-formed or not.
    pub chains: usize,
    /// Transmitted frames `frame::parse` accepted.
    pub frames: usize,
    /// Frames delivered into guest B's ring.
    pub delivered: usize,
}

/// Runs the frame path on `data`; must never panic, hang or touch memory
/// outside the guests' mappings.
pub fn frame_path(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let flags = input.u8();
    let a = GuestSpec::read(&mut input, flags);
    let b = GuestSpec::read(&mut input, flags);
    let frame_at = usize::from(input.u16());
    let frame_len = usize::from(input.u16());
    let script_len = usize::from(input.u8()).min(MAX_SCRIPT);
    let script = input.take(script_len);
    let image = input.0;
    let frame_bytes = image
        .get(frame_at..)
        .map_or(&[][..], |f| &f[..f.len().min(frame_len).min(MAX_FRAME)]);

    let mut out = Outcome::default();
    let (Some(tx), Some(rx)) = (a.guest(image, flags), b.guest(image, flags)) else {
        return out;
    };
    let tx_ring = tx.ring(flags & F_TX_EVENT_IDX != 0);
    let rx_ring = rx.ring(flags & F_RX_EVENT_IDX != 0);
    out.tx_ring = tx_ring.is_some();
    out.rx_ring = rx_ring.is_some();
    let mut sw = Switch {
        tx,
        rx,
        tx_ring,
        rx_ring,
        chain: Chain::default(),
        rx_chains: (0..MAX_RX_CHAINS).map(|_| Chain::default()).collect(),
        skip: if flags & F_TX_HDR_12 != 0 { 12 } else { 10 },
        max_len: ETH_HLEN + if flags & F_JUMBO != 0 { 9000 } else { 1500 },
        fmt: match (flags >> F_RX_FORMAT_SHIFT) & 3 {
            0 => RxFormat {
                hdr_len: 10,
                mergeable: false,
            },
            1 => RxFormat {
                hdr_len: 12,
                mergeable: false,
            },
            _ => RxFormat {
                hdr_len: 12,
                mergeable: true,
            },
        },
        deliveries: 0,
        out,
    };
    let mut script = Reader(if script.is_empty() {
        &DEFAULT_SCRIPT
    } else {
        script
    });
    while !script.0.is_empty() {
        let op = script.u8();
        let arg = op >> 3;
        match op & 7 {
            OP_TX_BURST => sw.tx_burst(),
            OP_DELIVER => {
                let seg = [Seg {
                    ptr: frame_bytes.as_ptr().cast_mut(),
                    len: frame_bytes.len() as u32,
                }];
                if let Some(frame) = Frame::from_segs(&seg, 0) {
                    sw.deliver(&Edited::new(&frame, TagEdit::Keep));
                }
                sw.flush_rx();
            }
            OP_TX_KICKS => {
                if let Some(ring) = sw.tx_ring.as_mut() {
                    kicks(ring, arg & 1 != 0);
                }
            }
            OP_RX_KICKS => {
                if let Some(ring) = sw.rx_ring.as_mut() {
                    kicks(ring, arg & 1 != 0);
                }
            }
            OP_TX_AVAIL => sw.tx.add_avail(script.u16()),
            OP_RX_AVAIL => sw.rx.add_avail(script.u16()),
            OP_POKE => {
                let guest = if arg & 1 == 0 { &sw.tx } else { &sw.rx };
                let value = script.u16();
                let at = u64::from(script.u16()) * 2;
                guest.poke(Addr::Gpa(guest.gpa.wrapping_add(at)), &value.to_le_bytes());
            }
            _ => sw.tx_burst(),
        }
    }
    sw.out
}

/// Suppresses kicks, or enables them and (as the worker does when entries
/// arrived meanwhile) suppresses them again.
fn kicks(ring: &mut SplitRing, suppress: bool) {
    if suppress || ring.enable_kicks() {
        ring.suppress_kicks();
    }
}

/// The input, read front to back; missing bytes are zero.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let got = self.take(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }
}

/// One guest's memory and ring, as the input describes them.
struct GuestSpec {
    gpa: u64,
    uva: u64,
    size: u64,
    addrs: RingAddrs,
    base: u16,
}

impl GuestSpec {
    fn read(input: &mut Reader<'_>, flags: u8) -> Self {
        let gpa = input.u64();
        let uva = input.u64();
        let size = (MIN_MEM + u64::from(input.u16()) * 15).min(MAX_MEM);
        let ring_size = input.u16();
        let ring_size = if flags & F_RAW_SIZE != 0 {
            ring_size
        } else {
            1 << (ring_size % 16)
        };
        let desc = u64::from(input.u16()) * 16;
        let avail = u64::from(input.u16()) * 16;
        let used = u64::from(input.u16()) * 16;
        let mis = input.u8();
        let base = input.u16();
        let addrs = RingAddrs {
            desc: uva.wrapping_add(desc + u64::from(mis & 15)),
            avail: uva.wrapping_add(avail + u64::from((mis >> 4) & 1)),
            used: uva.wrapping_add(used + u64::from((mis >> 5) & 3)),
            size: ring_size,
        };
        GuestSpec {
            gpa,
            uva,
            size,
            addrs,
            base,
        }
    }

    /// Maps the guest's memory and writes the image at its start.
    fn guest(&self, image: &[u8], flags: u8) -> Option<Guest> {
        let mem = GuestMemory::anonymous(self.gpa, self.uva, self.size).ok()?;
        let whole = mem.translate(self.gpa, self.size)? as usize;
        let guest = Guest {
            mem: Arc::new(mem),
            gpa: self.gpa,
            lo: whole,
            hi: whole + self.size as usize,
            addrs: self.addrs,
            base: self.base,
            rebase: flags & F_ABSOLUTE == 0,
        };
        let n = image.len().min(self.size as usize);
        guest.poke(Addr::Gpa(self.gpa), &image[..n]);
        Some(guest)
    }
}

/// A guest address, physical (buffers) or as the frontend maps it (rings).
#[derive(Clone, Copy)]
enum Addr {
    Gpa(u64),
    Uva(u64),
}

/// A guest's mapped memory, where its ring is, and the host span it
/// occupies (for the bounds checks).
struct Guest {
    mem: Arc<GuestMemory>,
    gpa: u64,
    lo: usize,
    hi: usize,
    addrs: RingAddrs,
    base: u16,
    rebase: bool,
}

impl Guest {
    fn span(&self, at: Addr, len: usize) -> Option<*mut u8> {
        match at {
            Addr::Gpa(a) => self.mem.translate(a, len as u64),
            Addr::Uva(a) => self.mem.translate_uva(a, len as u64),
        }
    }

    /// The guest writes `bytes` at `at`, if that lies in its memory.
    fn poke(&self, at: Addr, bytes: &[u8]) {
        if let Some(p) = self.span(at, bytes.len()) {
            // `bytes` is the harness's, not the mapping; no alignment needed.
            // SAFETY: `span` checked that the bytes at `p` lie in one live mapping.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) }
        }
    }

    /// The guest reads `out.len()` bytes at `at`; zeros outside memory.
    fn peek(&self, at: Addr, out: &mut [u8]) {
        match self.span(at, out.len()) {
            // SAFETY: as in `poke`, in the other direction.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) },
            None => out.fill(0),
        }
    }

    /// The ring the input describes, if `SplitRing::new` accepts it (its
    /// first descriptors rebased first, unless told otherwise).
    fn ring(&self, event_idx: bool) -> Option<SplitRing> {
        let a = self.addrs;
        let ring = SplitRing::new(Arc::clone(&self.mem), a, self.base, event_idx, None).ok()?;
        // An accepted ring is a power of two, in memory, and aligned both
        // as the guest gave it and where the device accesses it.
        let n = u64::from(a.size);
        assert!(a.size.is_power_of_two() && a.size <= 32768);
        for (uva, len, align) in [
            (a.desc, 16 * n, 16),
            (a.avail, 6 + 2 * n, 2),
            (a.used, 6 + 8 * n, 4),
        ] {
            assert!(uva.is_multiple_of(align), "ring part {uva:#x} misaligned");
            let p = self
                .span(Addr::Uva(uva), len as usize)
                .expect("an accepted ring part lies in memory");
            assert!(
                (p as usize).is_multiple_of(align as usize),
                "ring part {uva:#x} is at a misaligned host address {p:?}"
            );
        }
        if self.rebase {
            for i in 0..a.size.min(MAX_REBASE) {
                let at = Addr::Uva(a.desc + 16 * u64::from(i));
                let mut addr = [0u8; 8];
                self.peek(at, &mut addr);
                let addr = self.gpa.wrapping_add(u64::from_le_bytes(addr));
                self.poke(at, &addr.to_le_bytes());
            }
        }
        Some(ring)
    }

    /// The guest publishes `n` more (or, wrapping, fewer) entries.
    fn add_avail(&self, n: u16) {
        let at = Addr::Uva(self.addrs.avail.wrapping_add(2));
        let mut idx = [0u8; 2];
        self.peek(at, &mut idx);
        let idx = u16::from_le_bytes(idx).wrapping_add(n);
        self.poke(at, &idx.to_le_bytes());
    }

    /// Checks that a translated chain lies in this guest's memory.
    fn check_chain(&self, chain: &Chain) {
        assert!(chain.n <= MAX_SEGS);
        let mut total = 0u64;
        for s in chain.segs() {
            let p = s.ptr as usize;
            assert!(s.len > 0, "empty buffers are skipped");
            assert!(
                p >= self.lo && p <= self.hi && s.len as usize <= self.hi - p,
                "buffer {p:#x}+{} outside memory {:#x}..{:#x}",
                s.len,
                self.lo,
                self.hi
            );
            total += u64::from(s.len);
        }
        assert_eq!(total, chain.len);
    }
}

/// The worker's state for one transmitting and one receiving port.
struct Switch {
    tx: Guest,
    rx: Guest,
    tx_ring: Option<SplitRing>,
    rx_ring: Option<SplitRing>,
    chain: Chain,
    rx_chains: Vec<Chain>,
    /// The transmit header length.
    skip: usize,
    /// Largest untagged frame the transmitting port admits.
    max_len: usize,
    fmt: RxFormat,
    /// Calls of `deliver` so far.
    deliveries: usize,
    out: Outcome,
}

impl Switch {
    /// Takes a burst from guest A's ring, as `Worker::tx_burst` does.
    fn tx_burst(&mut self) {
        let Some(mut ring) = self.tx_ring.take() else {
            return;
        };
        if ring.pending() > 0 || ring.refresh() > 0 {
            for _ in 0..BURST.min(MAX_CHAINS - self.out.chains) {
                match ring.pop(&mut self.chain, false) {
                    None => break,
                    Some(Err(_)) => {}
                    Some(Ok(())) => {
                        self.tx.check_chain(&self.chain);
                        let segs = self.chain.segs().to_vec();
                        match Frame::from_segs(&segs, self.skip) {
                            Some(frame) => {
                                assert_eq!(frame.len() as u64 + self.skip as u64, self.chain.len);
                                self.on_frame(&frame);
                            }
                            None => assert!(self.chain.len < self.skip as u64),
                        }
                    }
                }
                self.out.chains += 1;
                ring.push_used(self.chain.head, 0);
            }
            ring.flush_used();
            ring.notify();
            self.flush_rx();
        }
        self.tx_ring = Some(ring);
    }

    fn flush_rx(&mut self) {
        if let Some(rx) = self.rx_ring.as_mut() {
            rx.flush_used();
            rx.notify();
        }
    }

    /// One frame from guest A: parsed, then each edit checked against
    /// the copying one and delivered to guest B.
    fn on_frame(&mut self, frame: &Frame<'_>) {
        let mut head = [0u8; ETH_HLEN + VLAN_HLEN];
        let n = frame.read_head(&mut head);
        assert_eq!(n, frame.len().min(head.len()));
        let tag = VlanTag {
            vid: u16::from_be_bytes([head[0], head[1]]) & 0x0fff,
            pcp: head[2] & 7,
        };
        let edits = [
            TagEdit::Keep,
            TagEdit::Push(tag),
            TagEdit::Pop,
            TagEdit::Rewrite(tag),
        ];
        let Ok(info) = frame::parse(&head[..n], frame.len(), self.max_len) else {
            // Edits of a frame `parse` refused are outside their contract
            // and never made; they must still stay inside the frame.
            for edit in edits {
                assert!(Edited::new(frame, edit).len() <= frame.len() + VLAN_HLEN);
            }
            return;
        };
        self.out.frames += 1;
        assert!(frame.len() <= self.max_len + VLAN_HLEN);
        let mut flat = vec![0u8; frame.len()];
        assert_eq!(frame.read_head(&mut flat), frame.len());
        for edit in edits {
            let edited = Edited::new(frame, edit);
            if info.tag.is_none() && matches!(edit, TagEdit::Pop | TagEdit::Rewrite(_)) {
                continue;
            }
            let mut want = vec![0u8; frame.len() + VLAN_HLEN];
            let len = frame::copy_with_edit(&flat, edit, &mut want)
                .expect("room for any edit of a parsed frame");
            assert_eq!(len, edit.output_len(frame.len()));
            let mut got = Vec::with_capacity(edited.len());
            edited.for_each_span(|p, n| {
                // SAFETY: spans of a frame in live fuzz memory (or the
                // edit's own tag), valid for this call.
                got.extend_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
            });
            assert_eq!(got.len(), edited.len());
            assert!(got == want[..len], "{edit:?} by spans differs from by copy");
            self.deliver(&edited);
        }
    }

    /// Delivers `frame` into guest B's ring.
    fn deliver(&mut self, frame: &Edited<'_, '_>) {
        let Some(ring) = self.rx_ring.as_mut() else {
            return;
        };
        if self.deliveries == MAX_DELIVERIES {
            return;
        }
        self.deliveries += 1;
        if deliver(ring, frame, self.fmt, &mut self.rx_chains).is_ok() {
            self.out.delivered += 1;
        }
        for c in &self.rx_chains {
            self.rx.check_chain(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    /// Where the script length is in an input.
    const SCRIPT_LEN_AT: usize = 1 + 2 * 29 + 4;

    /// One guest's part of the input header.
    #[derive(Clone, Copy)]
    struct Spec {
        gpa: u64,
        uva: u64,
        mem: u16,
        ring: u16,
        desc: u16,
        avail: u16,
        used: u16,
        mis: u8,
        base: u16,
    }

    const TX: Spec = Spec {
        gpa: 0x1_0000_0000,
        uva: 0x7f00_0000_0000,
        mem: 0,
        ring: 3,
        desc: 0x00,
        avail: 0x10,
        used: 0x18,
        mis: 0,
        base: 0,
    };
    const RX: Spec = Spec {
        gpa: 0x8000_0000,
        uva: 0x7e00_0000_0000,
        mem: 0,
        ring: 3,
        desc: 0x20,
        avail: 0x30,
        used: 0x38,
        mis: 0,
        base: 0,
    };
    const FRAME_AT: u16 = 0x800;
    const FLAGS: u8 = F_TX_HDR_12 | (1 << F_RX_FORMAT_SHIFT);

    fn input(flags: u8, a: Spec, b: Spec, script: &[u8], image: &[u8]) -> Vec<u8> {
        let mut v = vec![flags];
        for s in [a, b] {
            v.extend_from_slice(&s.gpa.to_le_bytes());
            v.extend_from_slice(&s.uva.to_le_bytes());
            for x in [s.mem, s.ring, s.desc, s.avail, s.used] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.push(s.mis);
            v.extend_from_slice(&s.base.to_le_bytes());
        }
        v.extend_from_slice(&FRAME_AT.to_le_bytes());
        v.extend_from_slice(&64u16.to_le_bytes());
        assert_eq!(v.len(), SCRIPT_LEN_AT);
        v.push(script.len() as u8);
        v.extend_from_slice(script);
        v.extend_from_slice(image);
        v
    }

    fn put(image: &mut [u8], at: usize, bytes: &[u8]) {
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn desc(image: &mut [u8], table: usize, i: usize, addr: u64, len: u32, flags: u16, next: u16) {
        let at = table + 16 * i;
        put(image, at, &addr.to_le_bytes());
        put(image, at + 8, &len.to_le_bytes());
        put(image, at + 12, &flags.to_le_bytes());
        put(image, at + 14, &next.to_le_bytes());
    }

    fn offer(image: &mut [u8], avail: usize, heads: &[u16]) {
        put(image, avail + 2, &(heads.len() as u16).to_le_bytes());
        for (i, h) in heads.iter().enumerate() {
            put(image, avail + 4 + 2 * i, &h.to_le_bytes());
        }
    }

    fn eth(tag: Option<u16>, len: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if let Some(vid) = tag {
            f.extend_from_slice(&[0x81, 0, (vid >> 8) as u8, vid as u8]);
        }
        f.extend_from_slice(&[0x08, 0]);
        f.extend((0..).map(|i: u32| i as u8).take(len - f.len()));
        f
    }

    /// Guest A offers two frames (an untagged one in two buffers, a
    /// tagged one in one); guest B offers eight 96-byte buffers with
    /// `rx_len` bytes each.
    fn image(rx_len: u32) -> Vec<u8> {
        let mut image = vec![0u8; usize::from(FRAME_AT) + 64];
        let (txd, rxd) = (16 * usize::from(TX.desc), 16 * usize::from(RX.desc));
        desc(&mut image, txd, 0, 0x400, 12, NEXT, 1);
        desc(&mut image, txd, 1, 0x40c, 64, 0, 0);
        put(&mut image, 0x40c, &eth(None, 64));
        desc(&mut image, txd, 2, 0x480, 12 + 68, 0, 0);
        put(&mut image, 0x48c, &eth(Some(10), 68));
        offer(&mut image, 16 * usize::from(TX.avail), &[0, 2]);
        for i in 0..8 {
            desc(
                &mut image,
                rxd,
                i,
                0x500 + 0x60 * i as u64,
                rx_len,
                WRITE,
                0,
            );
        }
        offer(
            &mut image,
            16 * usize::from(RX.avail),
            &[0, 1, 2, 3, 4, 5, 6, 7],
        );
        put(&mut image, usize::from(FRAME_AT), &eth(None, 64));
        image
    }

    fn well_formed() -> Vec<u8> {
        input(FLAGS, TX, RX, &[], &image(0x60))
    }

    /// The same ring with mergeable receive buffers of 32 bytes.
    fn mergeable() -> Vec<u8> {
        let flags = F_TX_HDR_12 | (2 << F_RX_FORMAT_SHIFT) | F_RX_EVENT_IDX;
        input(flags, TX, RX, &[], &image(0x20))
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn well_formed_frames_go_all_the_way() {
        // Two frames, each delivered as it came and pushed a tag (the
        // tagged one also popped and rewritten), then the input frame.
        let all = Outcome {
            tx_ring: true,
            rx_ring: true,
            chains: 2,
            frames: 2,
            delivered: 7,
        };
        assert_eq!(frame_path(&well_formed()), all);
        // 76 to 88 bytes across 32-byte buffers: three each; eight
        // buffers take two frames, the third finds one buffer left over.
        let merged = frame_path(&mergeable());
        assert_eq!(
            merged,
            Outcome {
                delivered: 2,
                ..all
            }
        );
        // Absolute addresses: rebasing is what made the buffers reachable.
        let absolute = frame_path(&input(FLAGS | F_ABSOLUTE, TX, RX, &[], &image(0x60)));
        assert_eq!((absolute.frames, absolute.delivered), (0, 0));
    }

    #[test]
    fn bad_layouts_are_refused() {
        // All zeros: memory at 0, rings of one entry at 0, nothing offered.
        let empty = frame_path(&[]);
        assert_eq!((empty.chains, empty.delivered), (0, 0));
        for n in [1, 64, 100, 4096] {
            let _ = frame_path(&vec![0xff; n]);
        }
        // Memory that would wrap the address space is not mapped.
        let high = Spec {
            gpa: u64::MAX - 0x1000,
            ..TX
        };
        assert_eq!(
            frame_path(&input(FLAGS, high, RX, &[], &image(0x60))),
            Outcome::default()
        );
        // A ring size that is not a power of two, and the largest one.
        let odd = Spec { ring: 6, ..TX };
        let eight = Spec { ring: 8, ..RX };
        let out = frame_path(&input(FLAGS | F_RAW_SIZE, odd, eight, &[], &image(0x60)));
        assert!(!out.tx_ring && out.rx_ring);
        let big = Spec {
            mem: u16::MAX,
            ring: 15,
            desc: 0,
            avail: 0x8000,
            used: 0x9000,
            ..TX
        };
        assert!(frame_path(&input(FLAGS, big, RX, &[], &image(0x60))).tx_ring);
        // Parts outside memory, or misaligned as the guest gave them.
        let outside = Spec { used: 0x1000, ..TX };
        assert!(!frame_path(&input(FLAGS, outside, RX, &[], &image(0x60))).tx_ring);
        let misaligned = Spec { mis: 0x08, ..TX };
        assert!(!frame_path(&input(FLAGS, misaligned, RX, &[], &image(0x60))).tx_ring);
    }

    #[test]
    fn rings_misaligned_in_the_mapping_are_refused() {
        // The frontend's address is odd, the guest's offsets make every
        // part aligned as a frontend address, but not in the mapping.
        let odd = Spec {
            uva: TX.uva + 15,
            mis: 0x31,
            ..TX
        };
        let out = frame_path(&input(FLAGS, odd, RX, &[], &image(0x60)));
        assert!(!out.tx_ring && out.rx_ring);
    }

    #[test]
    fn a_ring_once_broken_stays_stopped() {
        // Guest B claims 100 more entries than its ring holds, then goes
        // back to a plausible index: delivery must give up, not spin.
        let back = 0u16.wrapping_sub(100).to_le_bytes();
        let script = [
            OP_RX_AVAIL,
            100,
            0,
            OP_DELIVER,
            OP_RX_AVAIL,
            back[0],
            back[1],
            OP_DELIVER,
            OP_RX_KICKS,
        ];
        let out = frame_path(&input(FLAGS, TX, RX, &script, &image(0x60)));
        assert_eq!(out.delivered, 0);
        // The same for guest A's ring and the poller's kick check.
        let script = [
            OP_TX_AVAIL,
            100,
            0,
            OP_TX_BURST,
            OP_TX_AVAIL,
            back[0],
            back[1],
            OP_TX_KICKS,
            OP_TX_BURST,
        ];
        let out = frame_path(&input(FLAGS, TX, RX, &script, &image(0x60)));
        assert_eq!(out.chains, 0);
    }

    /// Random mutations of the well-formed inputs, random scripts on
    /// them, and random bytes: none may panic, hang or stray outside
    /// guest memory.
    #[test]
    fn generated_inputs_do_not_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds = [well_formed(), mergeable()];
        let mut deep = 0;
        for i in 0..4000 {
            let mut v = seeds[i % 2].clone();
            for _ in 0..=rng.below(8) {
                // Mostly the header, descriptors and rings.
                let at = if rng.below(3) == 0 {
                    rng.below(SCRIPT_LEN_AT)
                } else {
                    SCRIPT_LEN_AT + 1 + rng.below(0x800)
                };
                v[at] = rng.next() as u8;
            }
            if frame_path(&v).delivered > 0 {
                deep += 1;
            }
        }
        // Most mutations still reach delivery: the test exercises the
        // whole path, not just the header checks.
        assert!(deep > 2000, "{deep} of 4000 mutations delivered a frame");
        for i in 0..2000 {
            let script: Vec<u8> = (0..=rng.below(24)).map(|_| rng.next() as u8).collect();
            let flags = rng.next() as u8 & !(F_RAW_SIZE | F_ABSOLUTE);
            let rx_len = [0x60, 0x20, 0x8, 0x0][i % 4];
            let _ = frame_path(&input(flags, TX, RX, &script, &image(rx_len)));
        }
        for _ in 0..2000 {
            let v: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
            let _ = frame_path(&v);
        }
    }

    /// The fuzzer's seeds are the well-formed inputs of these tests, and
    /// every seed still runs clean. `make fuzz-seeds` rewrites them when
    /// the input layout changes; otherwise the committed ones must match.
    #[test]
    fn seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_path");
        let script = [
            OP_TX_BURST,
            OP_POKE,
            1,
            0,
            0x10,
            0,
            OP_DELIVER,
            OP_RX_AVAIL,
            1,
            0,
            OP_TX_KICKS | 8,
            OP_RX_KICKS,
        ];
        let scripted = input(FLAGS, TX, RX, &script, &image(0x60));
        let seeds = [
            ("well_formed", well_formed()),
            ("mergeable", mergeable()),
            ("scripted", scripted),
        ];
        datapath::seed_corpus::check(&dir, seeds.clone());
        for (_, seed) in seeds {
            frame_path(&seed);
        }
    }
}
