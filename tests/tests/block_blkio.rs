//! What libblkio writes through sfera-blockd reads back from the socket and the file (libblkio).
//!
//! libblkio's virtio-blk-vhost-user driver, a client no one here wrote,
//! against sfera-blockd: what it writes reads back identically through the
//! socket and from the backing file; bad requests fail cleanly.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Result, ensure};
use harness::backend::{BlockBackend, BlockBackendKind};
use harness::blkio_client::BlkioClient;
use harness::peers::qsd::Export;
use harness::testdir::TestDir;

const MIB: u64 = 1 << 20;
const DISK: u64 = 64 * MIB;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    // xorshift: cheap, deterministic, no zero runs.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_bytes(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn start(dir: &TestDir, queues: u16, writable: bool) -> Result<(BlockBackend, std::path::PathBuf)> {
    let disk = dir.join("disk.img");
    File::create(&disk)?.set_len(DISK)?;
    let mut export = Export::new(&disk);
    export.num_queues = queues;
    export.writable = writable;
    Ok((
        BlockBackend::start(BlockBackendKind::SferaBlockd, dir, "vol", &export)?,
        disk,
    ))
}

#[test]
fn writes_read_back_through_the_socket_and_from_the_file() -> Result<()> {
    let dir = TestDir::new("blkio-rw")?;
    let (mut blockd, disk) = start(&dir, 2, true)?;
    let mut client = BlkioClient::vhost_user(blockd.socket(), 2, 4 * MIB as usize)?;
    ensure!(
        client.capacity()? == DISK,
        "capacity {}",
        client.capacity()?
    );

    // Small, page-sized, large, unaligned-in-memory-size and last-sector
    // writes, on both queues.
    let cases: [(u64, usize); 5] = [
        (0, 512),
        (4096, 4096),
        (3 * MIB, 4 * MIB as usize),
        (10 * MIB + 512, 3 * 512),
        (DISK - 512, 512),
    ];
    for (i, &(offset, len)) in cases.iter().enumerate() {
        let data = pattern(i as u64 + 1, len);
        client.write(i % 2, offset, &data)?;
        let back = client.read((i + 1) % 2, offset, len)?;
        ensure!(
            back == data,
            "case {i}: read back differs through the socket"
        );
    }
    client.flush(0)?;
    for (i, &(offset, len)) in cases.iter().enumerate() {
        let on_disk = file_bytes(&disk, offset, len)?;
        ensure!(
            on_disk == pattern(i as u64 + 1, len),
            "case {i}: backing file differs"
        );
    }

    // Discard reads back as zeroes.
    client.discard(0, 3 * MIB, MIB)?;
    ensure!(
        client.read(1, 3 * MIB, 4096)?.iter().all(|&b| b == 0),
        "discarded range not zero"
    );

    // Past the end: an error for that request, and the export keeps serving.
    ensure!(
        client.read(0, DISK, 512).is_err(),
        "read past the end succeeded"
    );
    ensure!(
        client.write(0, DISK - 512, &[0u8; 1024]).is_err(),
        "write across the end succeeded"
    );
    let again = client.read(0, 0, 512)?;
    ensure!(
        again == pattern(1, 512),
        "export broken after refused requests"
    );
    blockd.ensure_running()?;
    Ok(())
}

#[test]
fn read_only_exports_refuse_writes() -> Result<()> {
    let dir = TestDir::new("blkio-ro")?;
    let (mut blockd, disk) = start(&dir, 1, false)?;
    std::fs::write(&disk, pattern(9, 4096))?;
    // The file is now 4 KiB; restart the export on the new size.
    drop(blockd);
    let mut export = Export::new(&disk);
    export.writable = false;
    blockd = BlockBackend::start(BlockBackendKind::SferaBlockd, &dir, "ro", &export)?;
    // The device says it is read-only: libblkio will not start it as a
    // writable one.
    let refused = BlkioClient::vhost_user(blockd.socket(), 1, MIB as usize);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("read-only")),
        "a read-only export started as writable: {refused:?}"
    );
    let mut client = BlkioClient::vhost_user_read_only(blockd.socket(), 1, MIB as usize)?;
    ensure!(
        client.read(0, 0, 4096)? == pattern(9, 4096),
        "read from a read-only export"
    );
    ensure!(
        client.write(0, 0, &[1u8; 512]).is_err(),
        "write to a read-only export succeeded"
    );
    ensure!(
        file_bytes(&disk, 0, 4096)? == pattern(9, 4096),
        "read-only file changed"
    );
    blockd.ensure_running()?;
    Ok(())
}
