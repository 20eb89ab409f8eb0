//! A virtio-net NIC played by a [`RawFrontend`]: queue 0 receives into
//! buffers it keeps offering, queue 1 transmits one frame at a time, both
//! with the 12-byte virtio-net header (VERSION_1 and mergeable receive
//! buffers negotiated). Tests that need byte-exact frames on a switch port
//! use it; the frontend stays reachable for descriptors no driver writes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::frames::Mac;
use crate::raw_frontend::{BUFFERS, Desc, F_WRITE, RawFrontend};
use crate::{Error, Result};

/// The receive queue.
pub const RX: usize = 0;
/// The transmit queue.
pub const TX: usize = 1;
/// The virtio-net header length with VERSION_1.
pub const HDR: usize = 12;
/// Receive buffers a NIC keeps offered by default.
pub const RX_BUFS: u16 = 8;
/// Size of each receive buffer.
pub const BUF_LEN: u32 = 2048;
/// Where the frame being sent is written (after the receive buffers).
pub const TX_AT: u64 = BUFFERS + 0x8000;
/// Most bytes a sent frame (with its header) may have.
pub const TX_MAX: usize = 0x20000;
/// VERSION_1 and MRG_RXBUF.
pub const FEATURES: u64 = (1 << 32) | (1 << 15);
/// How long a send waits for the switch to take the frame.
const SEND_WAIT: Duration = Duration::from_secs(10);

fn failed(what: String) -> Error {
    Error::Parse {
        what,
        text: String::new(),
    }
}

/// A connected NIC.
#[derive(Debug)]
pub struct RawNic {
    f: RawFrontend,
    pub mac: Mac,
    rx_seen: u16,
    tx_sent: u16,
    /// Frames received but not yet handed out.
    pending: Vec<Vec<u8>>,
}

impl RawNic {
    /// Connects to a switch port on `socket` and offers [`RX_BUFS`]
    /// receive buffers.
    pub fn connect(socket: &Path, mac: Mac) -> Result<Self> {
        Self::connect_with_buffers(socket, mac, RX_BUFS)
    }

    /// Connects and offers `rx_bufs` receive buffers (at most 8).
    pub fn connect_with_buffers(socket: &Path, mac: Mac, rx_bufs: u16) -> Result<Self> {
        assert!(rx_bufs <= RX_BUFS, "at most {RX_BUFS} receive buffers");
        let mut f = RawFrontend::connect_queues(socket, 2, FEATURES)?;
        for i in 0..rx_bufs {
            f.set_desc_q(
                RX,
                i,
                Desc {
                    addr: BUFFERS + u64::from(i) * u64::from(BUF_LEN),
                    len: BUF_LEN,
                    flags: F_WRITE,
                    next: 0,
                },
            );
            f.offer_q(RX, i)?;
        }
        Ok(RawNic {
            f,
            mac,
            rx_seen: 0,
            tx_sent: 0,
            pending: Vec::new(),
        })
    }

    /// The frontend, to write descriptors of one's own.
    pub fn frontend(&mut self) -> &mut RawFrontend {
        &mut self.f
    }

    /// Sends `frame` (a zeroed virtio-net header is put in front) and waits
    /// until the switch has taken it.
    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        let mut bytes = vec![0u8; HDR];
        bytes.extend_from_slice(frame);
        assert!(bytes.len() <= TX_MAX, "frame too long for the test memory");
        self.f.write(TX_AT, &bytes);
        self.f.set_desc_q(
            TX,
            0,
            Desc {
                addr: TX_AT,
                len: bytes.len() as u32,
                flags: 0,
                next: 0,
            },
        );
        self.offer_tx(0)
    }

    /// Offers the transmit chain at `head` (written by the caller through
    /// [`RawNic::frontend`]) and waits until the switch returns it.
    pub fn offer_tx(&mut self, head: u16) -> Result<()> {
        self.f.offer_q(TX, head)?;
        self.tx_sent = self.tx_sent.wrapping_add(1);
        self.f.wait_used_q(TX, self.tx_sent, SEND_WAIT)
    }

    /// Frames received and not yet taken, each without its header; their
    /// buffers are offered again.
    pub fn take_received(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut out = std::mem::take(&mut self.pending);
        while self.rx_seen != self.f.used_idx_q(RX) {
            let (id, len) = self.f.used_elem_q(RX, self.rx_seen);
            let id = u16::try_from(id)
                .ok()
                .filter(|&i| i < RX_BUFS)
                .ok_or_else(|| failed(format!("a used receive id {id} that was never offered")))?;
            let addr = BUFFERS + u64::from(id) * u64::from(BUF_LEN);
            if len as usize > BUF_LEN as usize || (len as usize) < HDR {
                return Err(failed(format!("a used receive length of {len}")));
            }
            let data = self.f.read(addr, len as usize);
            let buffers = u16::from_le_bytes([data[10], data[11]]);
            if buffers != 1 {
                return Err(failed(format!("a frame in {buffers} buffers")));
            }
            out.push(data[HDR..].to_vec());
            self.f.offer_q(RX, id)?;
            self.rx_seen = self.rx_seen.wrapping_add(1);
        }
        Ok(out)
    }

    /// Waits up to `timeout` for frames; returns those that arrived (at
    /// least one) or a timeout error.
    pub fn receive_some(&mut self, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let frames = self.take_received()?;
            if !frames.is_empty() {
                return Ok(frames);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("a frame for {}", crate::frames::mac_text(self.mac)),
                    timeout,
                    context: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for frames until one satisfies `want` and returns it; frames
    /// before it are returned too, in order, as the first element; frames
    /// after it stay for the next call.
    pub fn receive_until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut frames = self.receive_some(left)?.into_iter();
            while let Some(frame) = frames.next() {
                if want(&frame) {
                    self.pending = frames.collect();
                    return Ok((before, frame));
                }
                before.push(frame);
            }
        }
    }
}
