//! The frame path: a burst from a guest's transmit ring or an uplink,
//! each frame parsed, admitted by the port group's policy (VLAN,
//! security, shaping), learned, looked up, and copied once into each
//! destination guest's receive ring (or written to the team's uplink).
//! Runs in the worker only: no lock, no allocation per frame.

use std::io::IoSlice;

use crate::dataplane::counters::{PortCounters, cycles};
use crate::dataplane::fdb::PortId;
use crate::dataplane::frame::{self, DropReason, ETH_HLEN, FrameInfo, TagEdit, VLAN_HLEN, VlanTag};
use crate::dataplane::teaming::{TeamKey, ip_pair_hash};
use crate::dataplane::vhost::frames::{Edited, Frame, MAX_SPANS, RxFormat, deliver};
use crate::dataplane::vhost::ring::{Chain, Seg, SplitRing};
use crate::dataplane::worker::{BURST, MAX_FRAME, MacPlace, Worker};

/// MAC table places at and above this are uplinks.
pub(crate) const UPLINK_BASE: PortId = 1 << 31;
/// A source address seen again within this is not learned again.
const RELEARN_NS: u64 = 1_000_000_000;
/// Attempts after the first to deliver a frame to a guest whose receive
/// ring is full, as OVS retries a vhost send (`tx-retries-max`, 8).
pub const RX_RETRIES: u32 = 8;
/// How many frames ahead of the one being switched a transmit burst asks
/// the CPU to fetch (`SplitRing::prefetch`): enough to cover a cross-core
/// cache miss with the work on the frames in between.
const PREFETCH_AHEAD: u16 = 4;
/// Cycle-counter ticks a retry waits at most for the guest to post
/// buffers (about 0.4 µs at 2.5 GHz: a polling guest's loop).
const RX_RETRY_WAIT: u64 = 1024;

/// Where a MAC table entry points, by name.
pub(crate) fn place_of(w: &Worker, id: PortId) -> Option<MacPlace> {
    if id < UPLINK_BASE {
        w.ports
            .get(id as usize)
            .map(|p| MacPlace::Port(p.entry.shared.name.clone()))
    } else {
        w.uplinks
            .get((id - UPLINK_BASE) as usize)
            .map(|u| MacPlace::Uplink(u.entry.name.clone()))
    }
}

impl Worker {
    /// Forwards up to a burst from transmit queue `q` of port `p`;
    /// returns the frames taken.
    pub(crate) fn tx_burst(&mut self, p: usize, q: usize, chain: &mut Chain) -> usize {
        let now = self.now_ns;
        let port = &mut self.ports[p];
        if let Some(until) = port.held_until_ns {
            if now < until {
                return 0;
            }
            port.held_until_ns = None;
        }
        let hdr_len = port.fmt.hdr_len;
        let Some(ring) = port.queues[q].ring.as_mut() else {
            return 0;
        };
        if ring.pending() == 0 && ring.refresh() == 0 {
            return 0;
        }
        for k in 0..PREFETCH_AHEAD {
            ring.prefetch(k);
        }
        let mut taken = 0;
        while taken < BURST {
            let port = &mut self.ports[p];
            let Some(ring) = port.queues[q].ring.as_mut() else {
                break;
            };
            // The frame PREFETCH_AHEAD after this one starts on its way.
            ring.prefetch(PREFETCH_AHEAD);
            match ring.pop(chain, false) {
                None => break,
                Some(Err(_)) => {
                    ring.push_used(chain.head, 0);
                    port.entry.counters.count_drop(DropReason::BadTxChain);
                    taken += 1;
                    continue;
                }
                Some(Ok(())) => {}
            }
            let head = chain.head;
            match Frame::from_segs(chain.segs(), hdr_len) {
                None => port.entry.counters.count_drop(DropReason::Runt),
                Some(frame) => {
                    if let Some(shaper) = port.ingress.as_mut()
                        && !shaper.admit(frame.len() as u64, now)
                    {
                        // Over the rate: the frame stays in the ring.
                        let wait = shaper.wait(frame.len() as u64, now);
                        port.held_until_ns = Some(now + wait.as_nanos() as u64);
                        ring.unpop(1);
                        break;
                    }
                    if let Err(wait) = self.on_port_frame(p, q, &frame) {
                        // The receiver's shaping has no room: the frame
                        // stays in the ring until it has.
                        let port = &mut self.ports[p];
                        port.held_until_ns = Some(now + wait);
                        if let Some(ring) = port.queues[q].ring.as_mut() {
                            ring.unpop(1);
                        }
                        break;
                    }
                }
            }
            if let Some(ring) = self.ports[p].queues[q].ring.as_mut() {
                ring.push_used(head, 0);
            }
            taken += 1;
        }
        if taken > 0 {
            self.mark_dirty(p, q);
        }
        taken
    }

    fn mark_dirty(&mut self, p: usize, q: usize) {
        let wq = &mut self.ports[p].queues[q];
        if !wq.dirty {
            wq.dirty = true;
            self.dirty.push((p, q));
        }
    }

    /// One frame a guest sent on port `p`, queue `q`.
    ///
    /// A unicast frame to a guest whose egress shaping has no room now is
    /// not taken: the answer is how long the sender's ring should wait
    /// (shaping holds frames rather than dropping them where one sender
    /// and one receiver are known).
    fn on_port_frame(&mut self, p: usize, q: usize, frame: &Frame<'_>) -> Result<(), u64> {
        let now = self.now_ns;
        let port = &mut self.ports[p];
        let policy = &port.entry.policy;
        let counters = &port.entry.counters;
        let max_len = usize::from(policy.mtu) + ETH_HLEN;
        // The header copied once when the frame was taken: what is checked
        // here is what every destination gets (see `Frame`).
        let info = match frame::parse(frame.head(), frame.len(), max_len) {
            Ok(i) => i,
            Err(r) => {
                counters.count_drop(r);
                return Ok(());
            }
        };
        let vid = match policy.vlan.ingress(info.tag) {
            Ok(v) => v,
            Err(r) => {
                counters.count_drop(r);
                return Ok(());
            }
        };
        if let Err(r) = policy.security.admit_transmit(&info, policy.mac) {
            counters.count_drop(r);
            return Ok(());
        }
        let sw = policy.switch;
        let fresh = matches!(port.learned, Some((v, m, t)) if v == vid && m == info.src && now - t < RELEARN_NS);
        if !fresh {
            self.fdbs[sw].learn(vid, info.src, p as PortId, now);
            self.ports[p].learned = Some((vid, info.src, now));
        }
        let dst = if info.dst.is_multicast() {
            None
        } else {
            self.fdbs[sw].lookup(vid, info.dst, now)
        };
        if let Some(d) = dst
            && d < UPLINK_BASE
            && d as usize != p
            && let Some(wait) = self.egress_wait(d as usize, sw, vid, &info, frame.len())
        {
            return Err(wait);
        }
        let counters = &self.ports[p].entry.counters;
        counters.tx_packets.inc();
        counters.tx_bytes.add(frame.len() as u64);
        let pair = q / 2;
        match dst {
            Some(d) if d as usize == p => {} // back where it came from
            Some(d) if d < UPLINK_BASE => {
                self.deliver_port(d as usize, sw, pair, vid, &info, frame);
                self.deliver_promiscuous(sw, p, d as usize, pair, vid, &info, frame);
            }
            Some(_) => {
                self.send_team(p, vid, &info, frame);
                self.deliver_promiscuous(sw, p, usize::MAX, pair, vid, &info, frame);
            }
            None => {
                for d in 0..self.ports.len() {
                    if d != p {
                        self.deliver_port(d, sw, pair, vid, &info, frame);
                    }
                }
                self.send_team(p, vid, &info, frame);
            }
        }
        Ok(())
    }

    /// How long a frame of VLAN `vid` for port `d` must wait for the
    /// port's egress shaping; None when it may go now (or is not for the
    /// port at all).
    fn egress_wait(
        &mut self,
        d: usize,
        sw: usize,
        vid: u16,
        info: &FrameInfo,
        len: usize,
    ) -> Option<u64> {
        let now = self.now_ns;
        let port = &mut self.ports[d];
        let policy = &port.entry.policy;
        if policy.switch != sw || port.rx_running.is_empty() {
            return None;
        }
        let edit = policy.vlan.egress(vid, info.tag)?;
        let shaper = port.egress.as_mut()?;
        let wait = shaper.wait(edit.output_len(len) as u64, now);
        (!wait.is_zero()).then_some(wait.as_nanos() as u64)
    }

    /// Promiscuous ports of the switch also get unicast frames (but not
    /// the sender's or the destination's own copy again).
    #[allow(clippy::too_many_arguments)]
    fn deliver_promiscuous(
        &mut self,
        sw: usize,
        from: usize,
        to: usize,
        pair: usize,
        vid: u16,
        info: &FrameInfo,
        frame: &Frame<'_>,
    ) {
        for d in 0..self.ports.len() {
            if d != from && d != to && self.ports[d].entry.policy.security.promiscuous {
                self.deliver_port(d, sw, pair, vid, info, frame);
            }
        }
    }

    /// Delivers a frame of VLAN `vid` to port `d` if the port is in that
    /// VLAN on switch `sw` and admits it.
    fn deliver_port(
        &mut self,
        d: usize,
        sw: usize,
        pair: usize,
        vid: u16,
        info: &FrameInfo,
        frame: &Frame<'_>,
    ) {
        let now = self.now_ns;
        let port = &mut self.ports[d];
        let policy = &port.entry.policy;
        if policy.switch != sw {
            return;
        }
        let Some(edit) = policy.vlan.egress(vid, info.tag) else {
            return;
        };
        if !policy.security.admit_receive(info.dst, policy.mac) {
            return;
        }
        let out_len = edit.output_len(frame.len());
        let counters = &port.entry.counters;
        if let Some(shaper) = port.egress.as_mut()
            && !shaper.admit(out_len as u64, now)
        {
            return counters.count_drop(DropReason::Shaped);
        }
        if port.rx_running.is_empty() {
            return counters.count_drop(DropReason::NoRxBuffer);
        }
        let qi = port.rx_running[pair % port.rx_running.len()];
        let fmt = port.fmt;
        let Some(ring) = port.queues[qi].ring.as_mut() else {
            return counters.count_drop(DropReason::NoRxBuffer);
        };
        let edited = Edited::new(frame, edit);
        let mut result = deliver(ring, &edited, fmt, &mut self.rx_chains);
        if result == Err(DropReason::NoRxBuffer) && !port.rx_stalled {
            result = retry_full_ring(ring, &edited, fmt, &mut self.rx_chains, counters);
            port.rx_stalled = result == Err(DropReason::NoRxBuffer);
        }
        match result {
            Ok(()) => {
                port.rx_stalled = false;
                counters.rx_packets.inc();
                counters.rx_bytes.add(out_len as u64);
            }
            Err(r) => counters.count_drop(r),
        }
        self.mark_dirty(d, qi);
    }

    /// Sends a frame from port `p` out of the uplink its team picks.
    fn send_team(&mut self, p: usize, vid: u16, info: &FrameInfo, frame: &Frame<'_>) {
        let port = &self.ports[p];
        let team = &port.entry.policy.team;
        if team.active.is_empty() && team.standby.is_empty() {
            return;
        }
        let ip = if team.wants_ip() {
            let l3 = ETH_HLEN + if info.tag.is_some() { VLAN_HLEN } else { 0 };
            ip_pair_hash(frame.head(), info.ethertype, l3)
        } else {
            None
        };
        let key = TeamKey {
            port: p as u32,
            src: info.src,
            ip,
        };
        match team.choose(&self.links, &key) {
            Some(u) => self.send_uplink(u, vid, info, frame),
            None => port.entry.counters.count_drop(DropReason::NoUplink),
        }
    }

    /// Writes a frame of VLAN `vid` to uplink `u`: tagged with `vid`
    /// unless it is the untagged VLAN 0 (the uplink is a trunk of all
    /// VLANs, as vSphere's virtual switch tagging has it).
    fn send_uplink(&mut self, u: usize, vid: u16, info: &FrameInfo, frame: &Frame<'_>) {
        let Some(up) = self.uplinks.get_mut(u) else {
            return;
        };
        let edit = match (vid, info.tag) {
            (0, None) => TagEdit::Keep,
            (0, Some(_)) => TagEdit::Pop,
            (v, Some(t)) if t.vid == v => TagEdit::Keep,
            (v, Some(t)) => TagEdit::Rewrite(VlanTag { vid: v, pcp: t.pcp }),
            (v, None) => TagEdit::Push(VlanTag { vid: v, pcp: 0 }),
        };
        let edited = Edited::new(frame, edit);
        let mut iov = [IoSlice::new(&[]); MAX_SPANS];
        let mut n = 0;
        edited.for_each_span(|ptr, len| {
            if let Some(slot) = iov.get_mut(n) {
                // Spans are guest memory held by the source ring, the
                // worker's buffer, the frame's copied head or the edit's tag.
                // SAFETY: each span is live for this call; the kernel reads it.
                *slot = IoSlice::new(unsafe { std::slice::from_raw_parts(ptr, len) });
                n += 1;
            }
        });
        let counters = &up.entry.counters;
        match up.dev.send(&iov[..n]) {
            Ok(()) => {
                counters.tx_packets.inc();
                counters.tx_bytes.add(edited.len() as u64);
            }
            Err(_) => counters.count_drop(DropReason::UplinkError),
        }
    }

    /// Forwards up to a burst of frames from uplink `u`; returns how many.
    pub(crate) fn uplink_burst(&mut self, u: usize) -> usize {
        let mut taken = 0;
        while taken < BURST {
            let up = &mut self.uplinks[u];
            let len = match up.dev.recv(&mut self.frame_buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) if crate::dataplane::uplink::is_oversize(&e) => {
                    up.entry.counters.count_drop(DropReason::Oversize);
                    taken += 1;
                    continue;
                }
                Err(_) => break,
            };
            taken += 1;
            let seg = [Seg {
                ptr: self.frame_buf.as_mut_ptr(),
                len: len.min(MAX_FRAME) as u32,
            }];
            let Some(frame) = Frame::from_segs(&seg, 0) else {
                continue;
            };
            self.on_uplink_frame(u, &frame);
        }
        taken
    }

    fn on_uplink_frame(&mut self, u: usize, frame: &Frame<'_>) {
        let now = self.now_ns;
        let up = &self.uplinks[u];
        let counters = &up.entry.counters;
        let info = match frame::parse(frame.head(), frame.len(), MAX_FRAME - VLAN_HLEN) {
            Ok(i) => i,
            Err(r) => return counters.count_drop(r),
        };
        counters.rx_packets.inc();
        counters.rx_bytes.add(frame.len() as u64);
        let sw = up.entry.switch;
        let vid = info.tag.map_or(0, |t| t.vid);
        let fdb = &mut self.fdbs[sw];
        if let Some(owner) = fdb.lookup(vid, info.src, now)
            && owner < UPLINK_BASE
        {
            return counters.count_drop(DropReason::Reflected);
        }
        fdb.learn(vid, info.src, UPLINK_BASE + u as PortId, now);
        let dst = if info.dst.is_multicast() {
            None
        } else {
            fdb.lookup(vid, info.dst, now)
        };
        match dst {
            Some(d) if d < UPLINK_BASE => {
                self.deliver_port(d as usize, sw, 0, vid, &info, frame);
                self.deliver_promiscuous(sw, usize::MAX, d as usize, 0, vid, &info, frame);
            }
            Some(_) => {} // between hosts outside: not the switch's business
            None => {
                for d in 0..self.ports.len() {
                    self.deliver_port(d, sw, 0, vid, &info, frame);
                }
            }
        }
    }
}

/// Delivers `frame` to a receive ring that had no room a moment ago.
/// What this round delivered to the ring is published first (the guest
/// can post those buffers again only once it sees them used), then each of
/// up to [`RX_RETRIES`] retries waits up to [`RX_RETRY_WAIT`] for the guest
/// to post buffers and tries again. Every retry is counted.
fn retry_full_ring(
    ring: &mut SplitRing,
    frame: &Edited<'_, '_>,
    fmt: RxFormat,
    chains: &mut [Chain],
    counters: &PortCounters,
) -> Result<(), DropReason> {
    ring.flush_used();
    ring.notify();
    let mut result = Err(DropReason::NoRxBuffer);
    for _ in 0..RX_RETRIES {
        counters.rx_retries.inc();
        #[cfg(test)]
        refilling_guest::before_retry();
        let start = cycles();
        while ring.refresh() == 0 && cycles().wrapping_sub(start) < RX_RETRY_WAIT {
            std::hint::spin_loop();
        }
        result = deliver(ring, frame, fmt, chains);
        if result != Err(DropReason::NoRxBuffer) {
            break;
        }
    }
    result
}

/// The guest's driver, for tests: runs before each retry of a delivery to
/// a full ring on this thread, as a guest on another CPU posting receive
/// buffers while the switch waits (made deterministic).
#[cfg(test)]
pub(crate) mod refilling_guest {
    use std::cell::RefCell;

    type Driver = Box<dyn FnMut()>;

    thread_local! {
        static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
    }

    /// Runs `driver` before each retry on this thread until [`stop`].
    pub(crate) fn start(driver: impl FnMut() + 'static) {
        DRIVER.with(|d| *d.borrow_mut() = Some(Box::new(driver)));
    }

    /// The guest does nothing more.
    pub(crate) fn stop() {
        DRIVER.with(|d| *d.borrow_mut() = None);
    }

    pub(super) fn before_retry() {
        DRIVER.with(|d| {
            if let Some(drive) = d.borrow_mut().as_mut() {
                drive();
            }
        });
    }
}

#[cfg(test)]
mod tests;
