//! Submitting a parsed request to io_uring: its data buffers mapped to
//! iovecs in the request's slot, the operation built, the slot armed, the
//! entry pushed. Split into steps for reading; each is `#[inline]` so the
//! fast path compiles as the one function it was.

use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::{
    FD_BUFFERED, FD_DIRECT, Kind, MAX_IOVECS, Memory, QueueWorker, VIRTIO_BLK_S_IOERR,
    status_of_fault,
};
use crate::vhost_blk::request::{self, Fault, HEADER_LEN, Op, Segment};

impl QueueWorker {
    /// Builds the io_uring operation for `op` in the request's slot and
    /// queues it.
    pub(super) fn submit_op(
        &mut self,
        head: u16,
        first_writable: usize,
        op: Op,
        status_addr: u64,
        mem: &Arc<Memory>,
    ) {
        let index = usize::from(head);
        if !self.map_buffers(index, first_writable, op, mem) {
            self.fault(Fault::OutsideMemory, head);
            self.finish_now(
                mem,
                head,
                status_addr,
                status_of_fault(Fault::OutsideMemory),
                1,
            );
            return;
        }
        let entry = self.operation(index, op).user_data(u64::from(head));
        self.arm(index, op, status_addr, mem, entry.clone());
        // The slot holds the iovecs and, through `mem`, the mapping of the
        // guest buffers they point to; only `complete()` clears `busy` and
        // `mem`, and a busy slot is never reused.
        // SAFETY: so the buffers outlive the operation, as `push` requires.
        if let Err(e) = unsafe { self.ring.push(&entry) } {
            datapath::log_limited!(error, "io_uring push failed: {e}");
            let slot = &mut self.slots[index];
            slot.busy = false;
            slot.mem = None;
            self.metrics.io_errors.inc();
            self.metrics.completed.inc();
            self.finish_now(mem, head, status_addr, VIRTIO_BLK_S_IOERR, 1);
        }
    }

    /// Maps the request's data buffers to iovecs in slot `index`; false if
    /// one is outside guest memory (or there are too many).
    #[inline]
    fn map_buffers(&mut self, index: usize, first_writable: usize, op: Op, mem: &Memory) -> bool {
        let iovecs = &mut self.slots[index].iovecs.0;
        iovecs.clear();
        match op {
            Op::Read { .. } => {
                let data = request::layout(&self.segments, first_writable).map(|l| l.writable_data);
                data.is_ok_and(|d| fill_iovecs(mem, d.iter(), 0, iovecs))
            }
            Op::Write { .. } => fill_iovecs(
                mem,
                self.segments[..first_writable].iter().copied(),
                HEADER_LEN as u64,
                iovecs,
            ),
            _ => true,
        }
    }

    /// The io_uring operation of `op`, on the iovecs of slot `index`.
    #[inline]
    fn operation(&self, index: usize, op: Op) -> squeue::Entry {
        match op {
            Op::Read { offset, .. } | Op::Write { offset, .. } => {
                let iov = &self.slots[index].iovecs.0;
                let direct = self.backing.direct_ok(
                    offset,
                    iov.iter().map(|v| (v.iov_base as u64, v.iov_len as u64)),
                );
                let fd = if direct { FD_DIRECT } else { FD_BUFFERED };
                let count = u32::try_from(iov.len()).unwrap_or(u32::MAX);
                match (op, iov.len()) {
                    (Op::Read { .. }, 1) => {
                        opcode::Read::new(fd, iov[0].iov_base.cast(), iov[0].iov_len as u32)
                            .offset(offset)
                            .build()
                    }
                    (Op::Read { .. }, _) => opcode::Readv::new(fd, iov.as_ptr(), count)
                        .offset(offset)
                        .build(),
                    (_, 1) => opcode::Write::new(fd, iov[0].iov_base.cast(), iov[0].iov_len as u32)
                        .offset(offset)
                        .build(),
                    _ => opcode::Writev::new(fd, iov.as_ptr(), count)
                        .offset(offset)
                        .build(),
                }
            }
            #[cfg(not(feature = "fault-injection"))]
            Op::Flush => opcode::Fsync::new(FD_BUFFERED)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            // The mutant the power-loss test must catch (see Cargo.toml):
            // FLUSH answers OK without making anything durable.
            #[cfg(feature = "fault-injection")]
            Op::Flush => opcode::Nop::new().build(),
            Op::Discard { offset, len } | Op::WriteZeroes { offset, len, .. } => {
                opcode::Fallocate::new(FD_BUFFERED, len)
                    .offset(offset)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .build()
            }
            Op::GetId => unreachable!("GET_ID completes in prepare()"),
        }
    }

    /// Marks slot `index` busy with `op`'s request and counts it.
    #[inline]
    fn arm(
        &mut self,
        index: usize,
        op: Op,
        status_addr: u64,
        mem: &Arc<Memory>,
        entry: squeue::Entry,
    ) {
        let (kind, bytes, used_len) = match op {
            Op::Read { len, .. } => (Kind::Read, len, len as u32 + 1),
            Op::Write { len, .. } => (Kind::Write, len, 1),
            Op::Flush => (Kind::Flush, 0, 1),
            Op::Discard { len, .. } | Op::WriteZeroes { len, .. } => (Kind::Discard, len, 1),
            Op::GetId => unreachable!("GET_ID completes in prepare()"),
        };
        let slot = &mut self.slots[index];
        slot.busy = true;
        slot.kind = kind;
        slot.status_addr = status_addr;
        slot.used_len = used_len;
        slot.bytes = bytes;
        slot.started = Instant::now();
        slot.mem = Some(Arc::clone(mem));
        slot.no_space = false;
        slot.entry = Some(entry);
        match op {
            Op::Read { .. } => self.metrics.reads.inc(),
            Op::Write { .. } => self.metrics.writes.inc(),
            Op::Flush => self.metrics.flushes.inc(),
            Op::Discard { .. } => self.metrics.discards.inc(),
            Op::WriteZeroes { .. } => self.metrics.write_zeroes.inc(),
            Op::GetId => {}
        }
        self.metrics.submitted.inc();
    }
}

/// Appends iovecs for the buffers, after skipping `skip` bytes of their
/// stream; false if a buffer is outside guest memory or there are too many.
fn fill_iovecs(
    mem: &Memory,
    segments: impl Iterator<Item = Segment>,
    mut skip: u64,
    out: &mut Vec<libc::iovec>,
) -> bool {
    for seg in segments {
        let len = u64::from(seg.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let Some(addr) = seg.addr.checked_add(skip) else {
            return false;
        };
        let remaining = (len - skip) as usize;
        skip = 0;
        let mut mapped = 0usize;
        for slice in mem.get_slices(GuestAddress(addr), remaining) {
            let Ok(slice) = slice else {
                return false;
            };
            if out.len() == MAX_IOVECS {
                return false;
            }
            mapped += slice.len();
            out.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
        if mapped != remaining {
            return false;
        }
    }
    true
}
