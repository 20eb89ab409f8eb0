//! Inflight I/O tracking (vhost-user `INFLIGHT_SHMFD`, split virtqueues): a
//! shared area in which the backend notes every request it took from a
//! ring and has not yet completed, so that a backend started again after a
//! crash can finish them. The frontend keeps the area (a memfd the backend
//! created on GET_INFLIGHT_FD) across the backend's restarts and hands it
//! back with SET_INFLIGHT_FD.
//!
//! Each queue has a region: a 16-byte header (`features` u64, `version`
//! u16, `desc_num` u16, `last_batch_head` u16, `used_idx` u16) and one
//! 16-byte entry per descriptor head (`inflight` u8, 5 bytes of padding,
//! `next` u16, `counter` u64), as the vhost-user spec lays them out; the
//! regions follow each other, each rounded up to 64 bytes.
//!
//! The order of the stores is what makes a crash between any two of them
//! recoverable (vhost-user spec, "Inflight I/O tracking"):
//! - taking a request: pop it, then `counter` and `inflight = 1`. A crash
//!   before the mark leaves the request in the available ring, where the
//!   next backend finds it again (it resumes at `used_idx + inflight`);
//! - completing it: `last_batch_head = head`, publish the used element and
//!   the used index, then `inflight = 0`, then `used_idx`. A crash after
//!   publishing leaves `used_idx` behind the ring's: the next backend then
//!   knows `last_batch_head` completed and clears it.
//!
//! Everything read back from the area is the frontend's and is checked:
//! a region that does not add up stops the queue (see [`super::broken`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vhost::vhost_user::message::VhostUserInflight;
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, VolatileMemory, VolatileSlice};

/// Regions start on this boundary, as in QEMU's libvhost-user.
const REGION_ALIGN: usize = 64;
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 16;
/// The region layout this backend writes (the spec's version 1).
const VERSION: u16 = 1;

const VERSION_AT: usize = 8;
const DESC_NUM_AT: usize = 10;
const LAST_BATCH_HEAD_AT: usize = 12;
const USED_IDX_AT: usize = 14;
const INFLIGHT_AT: usize = 0;
const COUNTER_AT: usize = 8;

/// Errors setting up an inflight area; each fails the frontend's request.
#[derive(Debug, thiserror::Error)]
pub enum InflightError {
    #[error("The inflight area has {got} queues; the device has 1 to {max}")]
    Queues { got: u16, max: u16 },
    #[error("The inflight area's queue size {got} is not 1 to {max}")]
    QueueSize { got: u16, max: u16 },
    #[error("The inflight area is {got} bytes, not the {expected} its queues need")]
    Size { got: u64, expected: u64 },
    #[error("The inflight area's file is not sealed against shrinking")]
    NotSealed,
    #[error("Cannot create the inflight area's memfd")]
    Create(#[source] io::Error),
    #[error("The inflight area ends past the end of its file")]
    PastEnd,
    #[error("Cannot map the inflight area")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
}

/// Why a queue's inflight region cannot be recovered; the queue stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionFault {
    /// The header's version or descriptor count is not what was set up,
    /// or the ring is larger than the region.
    Header,
    /// An entry's `inflight` is neither 0 nor 1, or an in-flight head is
    /// outside the ring.
    Entry,
}

/// Bytes one queue's region takes.
pub fn region_len(queue_size: u16) -> usize {
    (HEADER_LEN + ENTRY_LEN * usize::from(queue_size)).next_multiple_of(REGION_ALIGN)
}

/// The inflight area of a connection: every queue's region, mapped shared.
pub struct InflightArea {
    map: MmapRegion<()>,
    queue_size: u16,
    num_queues: u16,
}

impl std::fmt::Debug for InflightArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InflightArea")
            .field("queue_size", &self.queue_size)
            .field("num_queues", &self.num_queues)
            .finish_non_exhaustive()
    }
}

impl InflightArea {
    /// GET_INFLIGHT_FD: a new, empty area for `num_queues` queues of
    /// `queue_size` entries, in a memfd sealed against resizing (so the
    /// frontend cannot shrink it under a later backend's mapping), and the
    /// message that describes it.
    pub fn create(
        num_queues: u16,
        queue_size: u16,
        max: (u16, u16),
    ) -> Result<(File, VhostUserInflight), InflightError> {
        check_shape(num_queues, queue_size, max)?;
        let len = region_len(queue_size) * usize::from(num_queues);
        let file = sealed_memfd(len).map_err(InflightError::Create)?;
        let area = Self::map_file(&file, 0, len, num_queues, queue_size)?;
        for queue in 0..num_queues {
            let region = area.region(queue);
            // A fresh memfd reads as zeroes: only the header needs writing.
            let _ = region.store(VERSION, VERSION_AT, Ordering::Relaxed);
            let _ = region.store(queue_size, DESC_NUM_AT, Ordering::Relaxed);
        }
        let message = VhostUserInflight::new(len as u64, 0, num_queues, queue_size);
        Ok((file, message))
    }

    /// SET_INFLIGHT_FD: maps the area the frontend hands back, after
    /// checking that its shape fits the device (`max`: queues, queue size)
    /// and that its file cannot shrink under the mapping.
    pub fn open(
        message: &VhostUserInflight,
        file: &File,
        max: (u16, u16),
    ) -> Result<Arc<Self>, InflightError> {
        let (num_queues, queue_size) = (message.num_queues, message.queue_size);
        check_shape(num_queues, queue_size, max)?;
        let expected = (region_len(queue_size) * usize::from(num_queues)) as u64;
        if message.mmap_size != expected {
            return Err(InflightError::Size {
                got: message.mmap_size,
                expected,
            });
        }
        if !sealed_against_shrinking(file) {
            return Err(InflightError::NotSealed);
        }
        let len = usize::try_from(expected).expect("at most 16 queues of 1024 entries");
        Self::map_file(file, message.mmap_offset, len, num_queues, queue_size).map(Arc::new)
    }

    fn map_file(
        file: &File,
        offset: u64,
        len: usize,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<Self, InflightError> {
        // A mapping past the end of the file would fault when touched.
        let file_len = file.metadata().map_err(InflightError::Create)?.len();
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > file_len)
        {
            return Err(InflightError::PastEnd);
        }
        let file = file.try_clone().map_err(InflightError::Create)?;
        let map = MmapRegion::from_file(FileOffset::new(file, offset), len)
            .map_err(InflightError::Map)?;
        Ok(InflightArea {
            map,
            queue_size,
            num_queues,
        })
    }

    /// Queue `index`'s part of the area, for its worker; None past the
    /// queues the frontend asked for.
    pub fn queue(self: &Arc<Self>, index: u16) -> Option<QueueInflight> {
        (index < self.num_queues).then(|| QueueInflight {
            area: Arc::clone(self),
            index,
            counter: 0,
        })
    }

    fn region(&self, queue: u16) -> VolatileSlice<'_> {
        let len = region_len(self.queue_size);
        self.map
            .get_slice(usize::from(queue) * len, len)
            .expect("queue < num_queues, and the map holds num_queues regions")
    }
}

/// One queue's inflight region, kept by the queue's worker.
#[derive(Debug)]
pub struct QueueInflight {
    area: Arc<InflightArea>,
    index: u16,
    /// The `counter` the next request taken gets: the order of arrival.
    counter: u64,
}

impl QueueInflight {
    fn region(&self) -> VolatileSlice<'_> {
        self.area.region(self.index)
    }

    fn entry_at(&self, head: u16) -> Option<usize> {
        (head < self.area.queue_size).then(|| HEADER_LEN + ENTRY_LEN * usize::from(head))
    }

    /// A request with descriptor head `head` was taken from the ring.
    pub fn mark(&mut self, head: u16) {
        let Some(at) = self.entry_at(head) else {
            return;
        };
        let region = self.region();
        let _ = region.store(self.counter, at + COUNTER_AT, Ordering::Relaxed);
        let _ = region.store(1u8, at + INFLIGHT_AT, Ordering::Release);
        self.counter += 1;
    }

    /// `head`'s used element is about to be published.
    pub fn before_used(&self, head: u16) {
        let _ = self
            .region()
            .store(head, LAST_BATCH_HEAD_AT, Ordering::Release);
    }

    /// `head`'s used element is published, and the ring's used index is
    /// now `used_idx`.
    pub fn after_used(&self, head: u16, used_idx: u16) {
        let region = self.region();
        if let Some(at) = self.entry_at(head) {
            let _ = region.store(0u8, at + INFLIGHT_AT, Ordering::Release);
        }
        let _ = region.store(used_idx, USED_IDX_AT, Ordering::Release);
    }

    /// Writes `head`'s inflight flag as a frontend could.
    #[cfg(test)]
    pub(crate) fn set_flag(&self, head: u16, value: u8) {
        let at = self.entry_at(head).expect("head in the region");
        let _ = self
            .region()
            .store(value, at + INFLIGHT_AT, Ordering::Relaxed);
    }

    /// A backend starting on this region with a ring of `ring_size`
    /// entries whose used index the guest sees as `used_idx`: settles a
    /// completion a crash interrupted, fills `resubmit` with the heads
    /// still in flight in the order they were taken, and returns where
    /// to resume taking from the available ring.
    pub fn recover(
        &mut self,
        ring_size: u16,
        used_idx: u16,
        resubmit: &mut Vec<u16>,
    ) -> Result<u16, RegionFault> {
        resubmit.clear();
        let region = self.region();
        let header = |at| region.load::<u16>(at, Ordering::Acquire).unwrap_or(0);
        let desc_num = header(DESC_NUM_AT);
        if header(VERSION_AT) != VERSION || desc_num != self.area.queue_size || ring_size > desc_num
        {
            return Err(RegionFault::Header);
        }
        if header(USED_IDX_AT) != used_idx {
            // The crash came after the guest saw `last_batch_head`
            // complete, before the region said so.
            let last = header(LAST_BATCH_HEAD_AT);
            let Some(at) = self.entry_at(last) else {
                return Err(RegionFault::Header);
            };
            let _ = region.store(0u8, at + INFLIGHT_AT, Ordering::Release);
            let _ = region.store(used_idx, USED_IDX_AT, Ordering::Release);
        }
        let mut pending: Vec<(u64, u16)> = Vec::new();
        for head in 0..desc_num {
            let at = HEADER_LEN + ENTRY_LEN * usize::from(head);
            match region.load::<u8>(at + INFLIGHT_AT, Ordering::Acquire) {
                Ok(0) => {}
                Ok(1) if head < ring_size => {
                    let counter = region
                        .load::<u64>(at + COUNTER_AT, Ordering::Relaxed)
                        .unwrap_or(0);
                    pending.push((counter, head));
                }
                _ => return Err(RegionFault::Entry),
            }
        }
        pending.sort_unstable();
        resubmit.extend(pending.iter().map(|&(_, head)| head));
        self.counter = pending.last().map_or(0, |&(c, _)| c.wrapping_add(1));
        // Every request taken is either used or still in flight.
        let in_flight = u16::try_from(pending.len()).expect("at most ring_size heads");
        Ok(used_idx.wrapping_add(in_flight))
    }
}

fn check_shape(num_queues: u16, queue_size: u16, max: (u16, u16)) -> Result<(), InflightError> {
    let (max_queues, max_size) = max;
    if num_queues == 0 || num_queues > max_queues {
        return Err(InflightError::Queues {
            got: num_queues,
            max: max_queues,
        });
    }
    if queue_size == 0 || queue_size > max_size {
        return Err(InflightError::QueueSize {
            got: queue_size,
            max: max_size,
        });
    }
    Ok(())
}

/// A memfd of `len` bytes that can neither shrink nor grow.
fn sealed_memfd(len: usize) -> io::Result<File> {
    let name = c"sfera-blk-inflight";
    // SAFETY: `name` is a NUL-terminated string that outlives the call;
    // the flags are valid memfd_create flags.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len as u64)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor we own; no memory is involved.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Whether `file` is a memfd sealed against shrinking: a mapping of it
/// then cannot fault (SIGBUS) because the frontend truncated it.
fn sealed_against_shrinking(file: &File) -> bool {
    // SAFETY: F_GET_SEALS on a descriptor `file` owns; no memory involved.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

#[cfg(test)]
mod tests;
