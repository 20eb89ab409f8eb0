//! Taking the frames a guest sends off its transmit queue.

use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic};

use super::rx::NET_HDR_LEN;
use crate::frame::DropReason;
use crate::switch::{Memory, PortCounters};

/// Largest frame taken from a guest (header excluded).
const MAX_TX: usize = 65536;
/// Frames taken per burst.
pub(crate) const BURST: usize = 32;

/// Frames of one burst, in buffers reused from burst to burst.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    bufs: Vec<Vec<u8>>,
    len: usize,
}

impl Batch {
    /// The frames taken.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.len].iter().map(Vec::as_slice)
    }

    fn next_buf(&mut self) -> &mut Vec<u8> {
        if self.len == self.bufs.len() {
            self.bufs.push(Vec::with_capacity(2048));
        }
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf
    }
}

/// Takes up to [`BURST`] frames off the transmit queue into `batch` (each
/// without its virtio-net header), returns their buffers to the guest and
/// notifies it once. Returns whether more may be waiting.
pub(crate) fn take_burst(
    vring: &VringRwLock<GuestMemoryAtomic<Memory>>,
    mem: &GuestMemoryAtomic<Memory>,
    counters: &PortCounters,
    batch: &mut Batch,
) -> bool {
    batch.len = 0;
    let mem = mem.memory();
    let mut state = vring.get_mut();
    let mut taken = 0;
    while taken < BURST {
        let Some(chain) = state.get_queue_mut().pop_descriptor_chain(&*mem) else {
            break;
        };
        let head = chain.head_index();
        taken += 1;
        let frame = batch.next_buf();
        let mut skip = NET_HDR_LEN;
        let mut bad = false;
        for desc in chain {
            if desc.is_write_only() {
                bad = true;
                break;
            }
            let len = desc.len() as usize;
            let from = skip.min(len);
            skip -= from;
            let body = len - from;
            if frame.len() + body > MAX_TX {
                bad = true;
                break;
            }
            let at = frame.len();
            frame.resize(at + body, 0);
            let addr = vm_memory::GuestAddress(desc.addr().0 + from as u64);
            if mem.read_slice(&mut frame[at..], addr).is_err() {
                bad = true;
                break;
            }
        }
        if bad || skip > 0 {
            counters.drop(DropReason::BadTxChain);
        } else {
            batch.len += 1;
        }
        if state.add_used(head, 0).is_err() {
            counters.drop(DropReason::BadTxChain);
        }
    }
    if taken > 0 && state.needs_notification().unwrap_or(true) {
        let _ = state.signal_used_queue();
    }
    taken == BURST
}
