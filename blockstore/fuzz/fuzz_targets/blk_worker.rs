//! Fuzzes a virtio-blk queue worker: kicks, busy-poll rounds and the
//! frontend's ring set-up on a guest that rewrites its ring in between;
//! real io_uring I/O on a small file. A worker that spins is a timeout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = blockstore::vhost_blk::fuzz::worker::queue_worker(data);
});
