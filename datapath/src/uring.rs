//! One io_uring per worker thread.
//!
//! Requests are queued with [`Ring::push`] and go to the kernel in one
//! `io_uring_enter` per batch ([`Ring::submit`]); completions raise the
//! ring's eventfd, which the worker's event loop watches, and are reaped in
//! bulk with [`Ring::reap`].

use std::os::fd::{AsRawFd, RawFd};

use io_uring::{IoUring, squeue};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Errors of the io_uring wrapper.
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("Cannot create an io_uring of {entries} entries")]
    Create {
        entries: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot create or register the completion eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("io_uring submission failed")]
    Submit(#[source] std::io::Error),
    #[error("Cannot register files with io_uring")]
    RegisterFiles(#[source] std::io::Error),
}

/// A completed operation: the `user_data` it was pushed with and its result
/// (bytes transferred, or a negative errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// An io_uring with a completion eventfd.
pub struct Ring {
    ring: IoUring,
    eventfd: EventFd,
    queued: usize,
    in_flight: usize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("queued", &self.queued)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Creates a ring with `entries` submission slots (the completion queue
    /// is twice that, as the kernel sizes it) and registers its eventfd.
    pub fn new(entries: u32) -> Result<Self, UringError> {
        // Not SINGLE_ISSUER: a worker's ring is also drained from the control
        // thread when its queue stops.
        let ring =
            IoUring::new(entries).map_err(|source| UringError::Create { entries, source })?;
        let eventfd = EventFd::new(EFD_NONBLOCK).map_err(UringError::EventFd)?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(UringError::EventFd)?;
        Ok(Ring {
            ring,
            eventfd,
            queued: 0,
            in_flight: 0,
        })
    }

    /// Registers `fds` as fixed files (`types::Fixed(i)` refers to `fds[i]`).
    pub fn register_files(&mut self, fds: &[RawFd]) -> Result<(), UringError> {
        self.ring
            .submitter()
            .register_files(fds)
            .map_err(UringError::RegisterFiles)
    }

    /// The eventfd raised when completions arrive.
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Clears the eventfd's counter (call before reaping, so a completion
    /// that arrives after the reap raises it again).
    pub fn clear_event(&self) {
        // EAGAIN means nothing was pending: fine.
        let _ = self.eventfd.read();
    }

    /// Operations pushed and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight + self.queued
    }

    /// Queues `entry`, submitting what is queued first if the submission
    /// queue is full.
    ///
    /// # Safety
    /// Every buffer and iovec array `entry` points to must stay valid and
    /// unaliased by Rust references until its completion is reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), UringError> {
        loop {
            // SAFETY: the caller guarantees the entry's buffers outlive the
            // operation (this function's contract).
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.queued += 1;
                return Ok(());
            }
            self.submit()?;
        }
    }

    /// Sends every queued entry to the kernel in one system call.
    pub fn submit(&mut self) -> Result<usize, UringError> {
        if self.queued == 0 {
            return Ok(0);
        }
        loop {
            match self.ring.submit() {
                Ok(n) => {
                    self.in_flight += n;
                    self.queued -= n.min(self.queued);
                    return Ok(n);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: the completion queue is full; the caller reaps and
                // submits again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(0),
                Err(e) => return Err(UringError::Submit(e)),
            }
        }
    }

    /// Submits what is queued and blocks until at least `want` operations
    /// have completed (used to drain before a queue stops).
    pub fn submit_and_wait(&mut self, want: usize) -> Result<(), UringError> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(n) => {
                    self.in_flight += n;
                    self.queued -= n.min(self.queued);
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(UringError::Submit(e)),
            }
        }
    }

    /// Whether completions are waiting to be reaped.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Calls `on_complete` for every completion available now.
    pub fn reap(&mut self, mut on_complete: impl FnMut(Completion)) -> usize {
        let mut n = 0;
        for cqe in self.ring.completion() {
            n += 1;
            on_complete(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
            });
        }
        self.in_flight -= n.min(self.in_flight);
        n
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use io_uring::{opcode, types};

    use super::*;

    #[test]
    fn batched_writes_and_reads_complete_through_the_eventfd() {
        let mut file = tempfile::tempfile().unwrap();
        let mut ring = Ring::new(8).unwrap();
        let bufs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 512]).collect();
        for (i, buf) in bufs.iter().enumerate() {
            let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), 512)
                .offset(i as u64 * 512)
                .build()
                .user_data(i as u64);
            // SAFETY: `bufs` outlives the completions reaped below.
            unsafe { ring.push(&entry).unwrap() };
        }
        assert_eq!(ring.submit().unwrap(), 4);
        let mut done = Vec::new();
        while done.len() < 4 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(|c| done.push(c));
        }
        done.sort_by_key(|c| c.user_data);
        assert!(done.iter().all(|c| c.result == 512), "{done:?}");
        assert_eq!(ring.in_flight(), 0);
        // The eventfd was raised by the completions.
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from an eventfd into an 8-byte buffer.
        let n = unsafe { libc::read(ring.eventfd(), counter.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 8);

        let mut content = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut content).unwrap();
        assert_eq!(&content[512..1024], &bufs[1][..]);
        file.write_all(b"x").unwrap();
    }

    #[test]
    fn push_submits_when_the_queue_is_full() {
        let file = tempfile::tempfile().unwrap();
        let mut ring = Ring::new(2).unwrap();
        let buf = [7u8; 64];
        for i in 0..5u64 {
            let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), 64)
                .offset(i * 64)
                .build()
                .user_data(i);
            // SAFETY: `buf` outlives the completions reaped below.
            unsafe { ring.push(&entry).unwrap() };
        }
        ring.submit().unwrap();
        let mut n = 0;
        while n < 5 {
            ring.submit_and_wait(1).unwrap();
            n += ring.reap(|c| assert_eq!(c.result, 64));
        }
        assert_eq!(file.metadata().unwrap().len(), 320);
    }
}
