//! libblkio (the `blkio` crate) as an independent block client: its
//! `virtio-blk-vhost-user` driver speaks vhost-user-blk to a socket, its
//! `io_uring` driver goes straight to a file. Synchronous helpers for tests;
//! benchmarks drive the queues themselves.

use std::mem::MaybeUninit;
use std::path::Path;

use blkio::{Blkio, Blkioq, Completion, MemoryRegion, ReqFlags};

use crate::{Error, Result};

fn err(what: &str, e: &blkio::Error) -> Error {
    Error::CommandFailed {
        command: format!("libblkio {what}"),
        status: format!("errno {}", e.errno()),
        stderr: e.message().to_owned(),
    }
}

/// A connected libblkio instance with a DMA buffer and its queues.
pub struct BlkioClient {
    // Field order matters: queues before the instance that owns their
    // driver, and the instance before the buffer it has mapped.
    queues: Vec<Blkioq>,
    blkio: Blkio,
    buffer: MemoryRegion,
}

impl std::fmt::Debug for BlkioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkioClient")
            .field("queues", &self.queues.len())
            .field("buffer_len", &self.buffer.len)
            .finish_non_exhaustive()
    }
}

impl BlkioClient {
    /// Connects to a vhost-user-blk server on `socket` with `queues` queues
    /// and a `buffer_len`-byte buffer shared with it.
    pub fn vhost_user(socket: &Path, queues: i32, buffer_len: usize) -> Result<Self> {
        Self::open(
            "virtio-blk-vhost-user",
            socket,
            queues,
            buffer_len,
            false,
            false,
        )
    }

    /// Like [`BlkioClient::vhost_user`], for a read-only device (libblkio
    /// refuses to start on a read-only device unless told).
    pub fn vhost_user_read_only(socket: &Path, queues: i32, buffer_len: usize) -> Result<Self> {
        Self::open(
            "virtio-blk-vhost-user",
            socket,
            queues,
            buffer_len,
            false,
            true,
        )
    }

    /// Opens `file` with libblkio's own io_uring driver (O_DIRECT when
    /// `direct`), the ceiling a vhost-user server is compared with.
    pub fn io_uring(file: &Path, queues: i32, buffer_len: usize, direct: bool) -> Result<Self> {
        Self::open("io_uring", file, queues, buffer_len, direct, false)
    }

    fn open(
        driver: &str,
        path: &Path,
        queues: i32,
        buffer_len: usize,
        direct: bool,
        read_only: bool,
    ) -> Result<Self> {
        let mut blkio = Blkio::new(driver).map_err(|e| err("new", &e))?;
        blkio
            .set_str("path", &path.to_string_lossy())
            .map_err(|e| err("set path", &e))?;
        if driver == "io_uring" {
            blkio
                .set_bool("direct", direct)
                .map_err(|e| err("set direct", &e))?;
        }
        blkio
            .set_bool("read-only", read_only)
            .map_err(|e| err("set read-only", &e))?;
        blkio.connect().map_err(|e| err("connect", &e))?;
        blkio
            .set_i32("num-queues", queues)
            .map_err(|e| err("set num-queues", &e))?;
        let started = blkio.start().map_err(|e| err("start", &e))?;
        let align = blkio
            .get_u64("mem-region-alignment")
            .map_err(|e| err("mem-region-alignment", &e))? as usize;
        let len = buffer_len.div_ceil(align) * align;
        let buffer = blkio
            .alloc_mem_region(len)
            .map_err(|e| err("alloc_mem_region", &e))?;
        blkio
            .map_mem_region(&buffer)
            .map_err(|e| err("map_mem_region", &e))?;
        Ok(BlkioClient {
            queues: started.queues,
            blkio,
            buffer,
        })
    }

    /// The device's size in bytes.
    pub fn capacity(&self) -> Result<u64> {
        self.blkio
            .get_u64("capacity")
            .map_err(|e| err("capacity", &e))
    }

    /// The shared buffer.
    pub fn buffer(&mut self) -> &mut [u8] {
        // No request is in flight outside `wait()`, and this borrow of `self`
        // prevents starting one.
        // SAFETY: the region is mapped read-write for `len` bytes as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.buffer.addr as *mut u8, self.buffer.len) }
    }

    /// The queues, for callers that drive I/O themselves.
    pub fn queues(&mut self) -> &mut [Blkioq] {
        &mut self.queues
    }

    /// The buffer's address, for callers that drive I/O themselves.
    pub fn buffer_addr(&self) -> usize {
        self.buffer.addr
    }

    /// Writes `data` at `offset` through queue `queue` and waits.
    pub fn write(&mut self, queue: usize, offset: u64, data: &[u8]) -> Result<()> {
        self.buffer()[..data.len()].copy_from_slice(data);
        let addr = self.buffer.addr as *const u8;
        let q = self.queue(queue)?;
        q.write(offset, addr, data.len(), 0, ReqFlags::empty());
        wait_one(q, "write")
    }

    /// Reads `len` bytes at `offset` through queue `queue` and waits.
    pub fn read(&mut self, queue: usize, offset: u64, len: usize) -> Result<Vec<u8>> {
        let addr = self.buffer.addr as *mut u8;
        let q = self.queue(queue)?;
        q.read(offset, addr, len, 0, ReqFlags::empty());
        wait_one(q, "read")?;
        Ok(self.buffer()[..len].to_vec())
    }

    /// Flushes through queue `queue` and waits.
    pub fn flush(&mut self, queue: usize) -> Result<()> {
        let q = self.queue(queue)?;
        q.flush(0, ReqFlags::empty());
        wait_one(q, "flush")
    }

    /// Discards a range through queue `queue` and waits.
    pub fn discard(&mut self, queue: usize, offset: u64, len: u64) -> Result<()> {
        let q = self.queue(queue)?;
        q.discard(offset, len, 0, ReqFlags::empty());
        wait_one(q, "discard")
    }

    fn queue(&mut self, index: usize) -> Result<&mut Blkioq> {
        let count = self.queues.len();
        self.queues.get_mut(index).ok_or_else(|| Error::Parse {
            what: format!("queue index (the client has {count})"),
            text: index.to_string(),
        })
    }
}

/// How long a request may take before the client gives up on the server.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the one request in flight on `q`; a negative result is an
/// error carrying the errno, and a server that does not answer within
/// [`REQUEST_TIMEOUT`] (it died) is an error too.
fn wait_one(q: &mut Blkioq, what: &str) -> Result<()> {
    let mut completions = [MaybeUninit::<Completion>::uninit()];
    let mut timeout = REQUEST_TIMEOUT;
    let n = q
        .do_io(&mut completions, 1, Some(&mut timeout), None)
        .map_err(|e| err(what, &e))?;
    if n != 1 {
        return Err(Error::Parse {
            what: format!("libblkio {what} completions"),
            text: n.to_string(),
        });
    }
    // SAFETY: do_io initialised the first `n` (= 1) completions.
    let completion = unsafe { completions[0].assume_init_read() };
    if completion.ret < 0 {
        return Err(Error::CommandFailed {
            command: format!("libblkio {what}"),
            status: format!("errno {}", -completion.ret),
            stderr: String::new(),
        });
    }
    Ok(())
}
