//! The frame path against a guest whose second vCPU rewrites a frame
//! while the switch handles it: whatever the guest writes between the
//! switch's reads, the header a destination gets is the header the
//! switch checked (source, tag, destination), never the rewritten one
//! nor a mix. The racing vCPU is [`racing_guest`]: a writer that runs
//! after every read of the frame in guest memory.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use vmm_sys_util::eventfd::EventFd;

use crate::control_plane::config::Shaping;
use crate::dataplane::counters::{PortCounters, WorkerCounters};
use crate::dataplane::forward::{RX_RETRIES, refilling_guest};
use crate::dataplane::frame::{DropReason, MacAddr, VlanTag, tci_bytes};
use crate::dataplane::policy::{Security, VlanMode};
use crate::dataplane::teaming::Team;
use crate::dataplane::vhost::backend::PortShared;
use crate::dataplane::vhost::frames::{RxFormat, racing_guest};
use crate::dataplane::vhost::mem::GuestMemory;
use crate::dataplane::vhost::ring::Chain;
use crate::dataplane::vhost::ring::tests::{AVAIL, BUFS, Driver};
use crate::dataplane::worker::{PortEntry, PortPolicy, SwitchEntry, Worker, WorkerSetup};

const SENDER: [u8; 6] = [2, 0, 0, 0, 0x0a, 0x01];
const RECEIVER: [u8; 6] = [2, 0, 0, 0, 0x0b, 0x01];
const FORGED: [u8; 6] = [2, 0, 0, 0, 0x0f, 0x0f];
/// virtio-net header length (VERSION_1).
const HDR: usize = 12;
const DESC_F_WRITE: u16 = 2;
/// Receive buffers the receiver offers, 2 KiB each.
const RX_BUFS: u16 = 8;
const RX_BUF_LEN: u32 = 2048;
/// Where the sender's frame is (its receive buffers are elsewhere).
const TX_AT: u64 = BUFS;
const RX_AT: u64 = BUFS + 0x10000;

/// A frame from `src` to `dst` of the local experimental EtherType, with
/// an optional tag and 100 bytes of payload (longer than the part of the
/// header any check reads).
fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    if let Some(vid) = tag {
        f.extend_from_slice(&tci_bytes(VlanTag { vid, pcp: 0 }));
    }
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend((0..100u8).map(|i| i.wrapping_mul(7)));
    f
}

/// A racing vCPU that writes `bytes` at `gpa` after every read the
/// switch makes: its first read of a frame sees what the guest queued,
/// every later one the rewrite.
fn rewriting(mem: Arc<GuestMemory>, gpa: u64, bytes: Vec<u8>) -> impl FnMut() {
    move || {
        let p = mem.translate(gpa, bytes.len() as u64).expect("in memory");
        // `mem` keeps the test guest's memory mapped.
        // SAFETY: `p..p+len` was translated in that memory.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    }
}

/// Port 0 (the sender) and port 1 (the receiver) on one switch, each
/// with its own guest memory: the sender's transmit ring and the
/// receiver's receive ring run in a worker that is driven by hand.
struct TwoPorts {
    worker: Worker,
    tx: Driver,
    rx: Driver,
    rx_seen: u16,
}

impl TwoPorts {
    fn new(sender: VlanMode, receiver: VlanMode) -> Self {
        Self::with_rx_buffers(sender, receiver, RX_BUFS)
    }

    /// [`TwoPorts::new`] with a receiver that has offered `buffers` of its
    /// [`RX_BUFS`] receive buffers (all are described).
    fn with_rx_buffers(sender: VlanMode, receiver: VlanMode, buffers: u16) -> Self {
        let wake = Arc::new(EventFd::new(0).expect("eventfd"));
        let (_commands, receiver_end) = mpsc::channel();
        let mut worker = Worker::new(WorkerSetup {
            commands: receiver_end,
            wake: Arc::clone(&wake),
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(WorkerCounters::default()),
            poll_us: 0,
        });
        let port = |name: &str, mac: [u8; 6], vlan: VlanMode| PortEntry {
            shared: Arc::new(PortShared::new(
                name.to_owned(),
                MacAddr(mac),
                1500,
                1,
                Arc::clone(&wake),
            )),
            counters: Arc::new(PortCounters::default()),
            policy: PortPolicy {
                switch: 0,
                vlan,
                security: Security::default(),
                mac: MacAddr(mac),
                mtu: 1500,
                shaping: Shaping::default(),
                team: Team::default(),
            },
        };
        let switch = SwitchEntry {
            name: "sw".to_owned(),
            ageing_ns: 300_000_000_000,
        };
        worker.update(
            vec![switch],
            vec![
                port("sender", SENDER, sender),
                port("receiver", RECEIVER, receiver),
            ],
            Vec::new(),
            Vec::new(),
        );
        let tx = Driver::new(16);
        let mut rx = Driver::new(16);
        for i in 0..RX_BUFS {
            rx.desc(
                i,
                RX_AT + 0x1000 * u64::from(i),
                RX_BUF_LEN,
                DESC_F_WRITE,
                0,
            );
            if i < buffers {
                rx.offer(i);
            }
        }
        worker.ports[0].queues[1].ring = Some(tx.ring(false));
        let fmt = RxFormat {
            hdr_len: HDR,
            mergeable: true,
        };
        for p in &mut worker.ports {
            p.fmt = fmt;
        }
        worker.ports[1].queues[0].ring = Some(rx.ring(false));
        worker.ports[1].rx_running = vec![0];
        worker.now_ns = 1;
        TwoPorts {
            worker,
            tx,
            rx,
            rx_seen: 0,
        }
    }

    /// Puts `frame` behind a zeroed virtio-net header at [`TX_AT`] in the
    /// sender's memory and offers it `times` times (each chain is the same
    /// buffer, as a guest resending it); the worker takes one burst.
    fn send(&mut self, frame: &[u8], times: u16) {
        let mut bytes = vec![0u8; HDR];
        bytes.extend_from_slice(frame);
        self.tx.write(TX_AT, &bytes);
        for i in 0..times {
            self.tx.desc(i, TX_AT, bytes.len() as u32, 0, 0);
            self.tx.offer(i);
        }
        let taken = self.worker.tx_burst(0, 1, &mut Chain::default());
        assert_eq!(taken, usize::from(times));
    }

    /// Frames the receiver got since the last call, without their header.
    fn received(&mut self) -> Vec<Vec<u8>> {
        let ring = self.worker.ports[1].queues[0].ring.as_mut();
        ring.expect("receive ring").flush_used();
        let mut out = Vec::new();
        while self.rx_seen != self.rx.used_idx() {
            let (id, len) = self.rx.used(self.rx_seen);
            let data = self.rx.read(RX_AT + 0x1000 * u64::from(id), len as usize);
            out.push(data[HDR..].to_vec());
            self.rx_seen = self.rx_seen.wrapping_add(1);
        }
        out
    }

    fn sender_drops(&self, reason: DropReason) -> u64 {
        self.worker.ports[0].entry.counters.dropped(reason)
    }

    /// Sends `frame` four times while the racing vCPU rewrites it with
    /// `other` at `offset` right after each read; each frame the receiver
    /// gets must be `delivered`, exactly.
    fn race(&mut self, frame: &[u8], offset: usize, other: &[u8], delivered: &[u8]) {
        let gpa = TX_AT + (HDR + offset) as u64;
        racing_guest::start(rewriting(Arc::clone(&self.tx.mem), gpa, other.to_vec()));
        for _ in 0..4 {
            self.send(frame, 1);
        }
        racing_guest::stop();
        let got = self.received();
        assert_eq!(
            got.len(),
            4,
            "frames the switch admitted were not all delivered"
        );
        for f in &got {
            assert_eq!(
                f, delivered,
                "the receiver got a header the switch never checked"
            );
        }
    }
}

#[test]
fn a_source_rewritten_after_the_check_is_not_delivered() {
    let mut ports = TwoPorts::new(VlanMode::None, VlanMode::None);
    let f = frame(MacAddr::BROADCAST.0, SENDER, None);
    ports.race(&f, 6, &FORGED, &f);
}

#[test]
fn a_tag_written_after_the_check_does_not_reach_another_vlan() {
    // An untagged frame in the sender's VLAN 10, which the trunk gets
    // with tag 10 pushed; the racing vCPU writes a tag for VLAN 20 where
    // the EtherType was (a double-tagged frame, hopping to VLAN 20).
    let trunk = VlanMode::Trunk {
        allowed: [10, 20].into(),
        native: None,
    };
    let mut ports = TwoPorts::new(VlanMode::Access { id: 10 }, trunk);
    let f = frame(MacAddr::BROADCAST.0, SENDER, None);
    let tag20 = tci_bytes(VlanTag { vid: 20, pcp: 0 });
    ports.race(
        &f,
        12,
        &tag20,
        &frame(MacAddr::BROADCAST.0, SENDER, Some(10)),
    );
}

#[test]
fn an_untagged_port_delivers_no_tag_written_after_the_check() {
    let mut ports = TwoPorts::new(VlanMode::None, VlanMode::None);
    let f = frame(MacAddr::BROADCAST.0, SENDER, None);
    let tag20 = tci_bytes(VlanTag { vid: 20, pcp: 0 });
    ports.race(&f, 12, &tag20, &f);
}

#[test]
fn the_destination_delivered_is_the_one_forwarding_chose() {
    // Flooded as a broadcast, then rewritten to another guest's address
    // (one the receiver's security policy would refuse).
    let mut ports = TwoPorts::new(VlanMode::None, VlanMode::None);
    let f = frame(MacAddr::BROADCAST.0, SENDER, None);
    ports.race(&f, 0, &[2, 0, 0, 0, 0x0c, 0x01], &f);
}

#[test]
fn frames_without_a_racing_writer_go_through_unchanged() {
    let mut ports = TwoPorts::new(VlanMode::None, VlanMode::None);
    let f = frame(RECEIVER, SENDER, None);
    ports.send(&f, 2);
    assert_eq!(ports.received(), vec![f.clone(), f]);
    let forged = frame(RECEIVER, FORGED, None);
    ports.send(&forged, 1);
    assert!(ports.received().is_empty());
    assert_eq!(ports.sender_drops(DropReason::ForgedSource), 1);
}

/// A guest that posts receive buffer `head` (already described) the first
/// time it runs, as the first entry of its available ring.
fn posting_once(mem: Arc<GuestMemory>, head: u16) -> impl FnMut() {
    let mut posted = false;
    move || {
        if posted {
            return;
        }
        posted = true;
        let write = |gpa: u64, bytes: [u8; 2]| {
            let p = mem.translate(gpa, 2).expect("in memory");
            // SAFETY: `p..p+2` was translated in the test guest's memory,
            // which `mem` keeps mapped.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, 2) };
        };
        write(AVAIL + 4, head.to_le_bytes());
        write(AVAIL + 2, 1u16.to_le_bytes());
    }
}

impl TwoPorts {
    fn receiver_counters(&self) -> &PortCounters {
        &self.worker.ports[1].entry.counters
    }
}

#[test]
fn a_briefly_full_receive_ring_loses_no_frame() {
    // The receiver has no buffer when the frame comes, and posts one while
    // the switch retries.
    let mut ports = TwoPorts::with_rx_buffers(VlanMode::None, VlanMode::None, 0);
    refilling_guest::start(posting_once(Arc::clone(&ports.rx.mem), 0));
    let f = frame(RECEIVER, SENDER, None);
    ports.send(&f, 1);
    refilling_guest::stop();
    assert_eq!(ports.received(), vec![f]);
    let counters = ports.receiver_counters();
    assert_eq!(counters.dropped(DropReason::NoRxBuffer), 0);
    assert_eq!(counters.rx_retries.get(), 1);
    assert_eq!(counters.rx_packets.get(), 1);
}

#[test]
fn a_permanently_full_receive_ring_drops_after_the_retries() {
    let mut ports = TwoPorts::with_rx_buffers(VlanMode::None, VlanMode::None, 0);
    let f = frame(RECEIVER, SENDER, None);
    ports.send(&f, 1);
    assert!(ports.received().is_empty());
    let counters = ports.receiver_counters();
    assert_eq!(counters.dropped(DropReason::NoRxBuffer), 1);
    assert_eq!(counters.rx_retries.get(), u64::from(RX_RETRIES));
    // The guest drains nothing: the next frame for it is dropped without
    // waiting again, and still counted.
    ports.send(&f, 1);
    let counters = ports.receiver_counters();
    assert_eq!(counters.dropped(DropReason::NoRxBuffer), 2);
    assert_eq!(counters.rx_retries.get(), u64::from(RX_RETRIES));
    // Once it posts buffers again, frames reach it, and a full ring is
    // retried again.
    ports.rx.offer(0);
    ports.send(&f, 1);
    assert_eq!(ports.received(), vec![f]);
    assert!(!ports.worker.ports[1].rx_stalled);
}
