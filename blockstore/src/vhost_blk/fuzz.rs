//! The body of the `blk_request` fuzz target (blockstore/fuzz), also run by
//! a unit test on generated inputs so that CI exercises it: guest memory
//! and a split virtqueue built from the input, every available chain
//! collected and parsed exactly as a worker does.

pub use super::worker::fuzz as worker;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::request::{self, DiskLimits, Segment};

/// Guest memory size; the queue's rings sit at its start.
const MEM_LEN: usize = 0x1_0000;
const QUEUE_SIZE: u16 = 16;
const DESC_TABLE: u32 = 0x0;
const AVAIL_RING: u32 = 0x100;
const USED_RING: u32 = 0x200;

/// Parses every chain the input describes and returns how many were valid
/// requests; must never panic.
pub fn parse_requests(data: &[u8]) -> usize {
    let Some((&flags, image)) = data.split_first() else {
        return 0;
    };
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_LEN)]) else {
        return 0;
    };
    let n = image.len().min(MEM_LEN);
    if mem.write_slice(&image[..n], GuestAddress(0)).is_err() {
        return 0;
    }
    let Ok(mut queue) = Queue::new(QUEUE_SIZE) else {
        return 0;
    };
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(DESC_TABLE), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING), Some(0));
    queue.set_used_ring_address(Some(USED_RING), Some(0));
    queue.set_event_idx(flags & 1 != 0);
    queue.set_ready(true);
    let limits = DiskLimits {
        capacity_bytes: u64::from(flags >> 2) * 512 * 1024 + 512,
        read_only: flags & 2 != 0,
        blk_size: 512,
    };
    let mut segments: Vec<Segment> = Vec::new();
    let mut valid = 0;
    for _ in 0..usize::from(QUEUE_SIZE) * 2 {
        let Some(chain) = queue.pop_descriptor_chain(&mem) else {
            break;
        };
        let (first_writable, malformed) = request::collect(chain, &mut segments);
        let parsed = request::parse(&mem, &segments, first_writable, malformed, &limits);
        if let request::Parsed::Request { op, writable, .. } = parsed {
            // What a worker would hand to io_uring must be in range.
            let end = match op {
                request::Op::Read { offset, len }
                | request::Op::Write { offset, len }
                | request::Op::Discard { offset, len }
                | request::Op::WriteZeroes { offset, len, .. } => offset + len,
                request::Op::Flush | request::Op::GetId => 0,
            };
            assert!(
                end <= limits.capacity_bytes,
                "request past the disk: {op:?}"
            );
            // A read's writable data is its transfer. Other requests may
            // come with any writable buffer: GET_ID fills 20 bytes of it,
            // the rest use none.
            if let request::Op::Read { len, .. } = op {
                assert_eq!(writable.len(), len, "a read fills its buffers");
                assert!(len <= request::MAX_TRANSFER);
            }
            valid += 1;
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed read request, then random mutations of it: the
    /// parser must answer every one without panicking.
    #[test]
    fn parses_generated_chains_without_panicking() {
        let mut image = vec![0u8; 0x1000];
        // desc 0: header (16 B at 0x800), next 1; desc 1: 512 B data at
        // 0x900, write, next 2; desc 2: status at 0xb00, write.
        let desc = |image: &mut Vec<u8>, i: usize, addr: u64, len: u32, flags: u16, next: u16| {
            let at = i * 16;
            image[at..at + 8].copy_from_slice(&addr.to_le_bytes());
            image[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
            image[at + 12..at + 14].copy_from_slice(&flags.to_le_bytes());
            image[at + 14..at + 16].copy_from_slice(&next.to_le_bytes());
        };
        desc(&mut image, 0, 0x800, 16, 1, 1);
        desc(&mut image, 1, 0x900, 512, 3, 2);
        desc(&mut image, 2, 0xb00, 1, 2, 0);
        // avail ring: flags 0, idx 1, ring[0] = 0.
        image[0x102..0x104].copy_from_slice(&1u16.to_le_bytes());
        // header: IN, sector 1.
        image[0x808..0x810].copy_from_slice(&1u64.to_le_bytes());
        let mut input = vec![0xfc];
        input.extend_from_slice(&image);
        assert_eq!(parse_requests(&input), 1, "the well-formed read parses");

        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut mutated = input.clone();
            for _ in 0..(next() % 8 + 1) {
                // Mutate mostly the descriptors, rings and header.
                let at = (next() % 0xc00) as usize + 1;
                mutated[at] = next() as u8;
            }
            let _ = parse_requests(&mutated);
        }
        assert_eq!(parse_requests(&[]), 0);
        assert_eq!(parse_requests(&[0xff; 3]), 0);
    }

    /// The first finding of the fuzzer: a GET_ID whose writable buffer
    /// is 704 MiB (past guest memory) is valid; the harness had held
    /// every request's writable data to a read's limit.
    #[test]
    fn get_id_with_a_huge_buffer_is_a_request() {
        let input = include_bytes!("../../fuzz/artifacts/blk_request/crash-get-id-huge-buffer");
        assert_eq!(parse_requests(input), 3);
    }
}
