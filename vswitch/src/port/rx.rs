//! Delivering a frame into a guest's receive queue: a virtio-net header,
//! then the frame with its tag edit, across as many receive buffers as it
//! needs (mergeable buffers) or in one.

use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use crate::frame::{self, DropReason, TagEdit};
use crate::switch::RxQueue;

/// Size of the virtio-net header with VERSION_1 / MRG_RXBUF.
pub(crate) const NET_HDR_LEN: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;
/// Largest frame handled (64 KiB covers any MTU this switch allows).
const MAX_FRAME: usize = 65536;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; NET_HDR_LEN + MAX_FRAME + frame::VLAN_HLEN]);
}

/// Writes `frame` (edited by `edit`) into the guest's receive buffers and
/// returns the frame length delivered.
pub(crate) fn deliver(
    rx: &RxQueue,
    frame_bytes: &[u8],
    edit: TagEdit,
) -> Result<usize, DropReason> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Some(len) = frame::copy_with_edit(frame_bytes, edit, &mut scratch[NET_HDR_LEN..])
        else {
            return Err(DropReason::Oversize);
        };
        scratch[..NET_HDR_LEN].fill(0);
        let total = NET_HDR_LEN + len;
        write_to_guest(rx, &mut scratch[..total])?;
        Ok(len)
    })
}

fn write_to_guest(rx: &RxQueue, packet: &mut [u8]) -> Result<(), DropReason> {
    let mem = rx.mem.memory();
    let mut state = rx.vring.get_mut();
    let queue = state.get_queue_mut();
    if !queue.ready() {
        return Err(DropReason::NoRxBuffer);
    }
    let start = queue.next_avail();
    // Chains taken: (head, bytes written); a 64 KiB frame in 4 KiB buffers
    // needs at most 17.
    let mut used = [(0u16, 0u32); 32];
    let mut count = 0usize;
    let mut written = 0usize;
    let mut first_header_addr = None;
    while written < packet.len() {
        let Some(chain) = queue.pop_descriptor_chain(&*mem) else {
            queue.set_next_avail(start);
            return Err(DropReason::NoRxBuffer);
        };
        let head = chain.head_index();
        let mut in_chain = 0usize;
        for desc in chain {
            if !desc.is_write_only() {
                queue.set_next_avail(start);
                return Err(DropReason::BadRxBuffer);
            }
            if written == packet.len() {
                break;
            }
            let n = (desc.len() as usize).min(packet.len() - written);
            if first_header_addr.is_none() {
                if n < NET_HDR_LEN {
                    queue.set_next_avail(start);
                    return Err(DropReason::BadRxBuffer);
                }
                first_header_addr = Some(desc.addr());
            }
            if mem
                .write_slice(&packet[written..written + n], desc.addr())
                .is_err()
            {
                queue.set_next_avail(start);
                return Err(DropReason::BadRxBuffer);
            }
            written += n;
            in_chain += n;
        }
        if count == used.len() {
            queue.set_next_avail(start);
            return Err(DropReason::BadRxBuffer);
        }
        used[count] = (head, u32::try_from(in_chain).unwrap_or(u32::MAX));
        count += 1;
        if !rx.mergeable.load(std::sync::atomic::Ordering::Relaxed) && written < packet.len() {
            queue.set_next_avail(start);
            return Err(DropReason::BadRxBuffer);
        }
    }
    // The header says how many buffers the frame spans.
    if let Some(addr) = first_header_addr {
        let buffers = u16::try_from(count).unwrap_or(u16::MAX);
        let at = GuestAddress(addr.0 + NUM_BUFFERS as u64);
        if mem.write_obj(buffers.to_le(), at).is_err() {
            queue.set_next_avail(start);
            return Err(DropReason::BadRxBuffer);
        }
    }
    for &(head, len) in &used[..count] {
        if state.add_used(head, len).is_err() {
            return Err(DropReason::BadRxBuffer);
        }
    }
    // The guest is notified once per burst, by the caller (`notify`).
    Ok(())
}

/// Signals the guest if its notification rules ask for it.
pub(crate) fn notify(rx: &RxQueue) {
    let mut state = rx.vring.get_mut();
    let needed = state.needs_notification().unwrap_or(true);
    if needed {
        let _ = state.signal_used_queue();
    }
}
