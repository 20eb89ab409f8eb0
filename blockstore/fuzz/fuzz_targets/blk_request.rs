//! Fuzzes virtio-blk request parsing: a guest memory image holding a split
//! virtqueue, every chain collected and parsed as a worker does.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = blockstore::vhost_blk::fuzz::parse_requests(data);
});
