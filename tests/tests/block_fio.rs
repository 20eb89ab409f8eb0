//! A guest's fio --verify passes on a vhost-user-blk backend (a Linux guest's virtio-blk driver).
//!
//! A real Linux guest's virtio-blk driver against a vhost-user-blk backend:
//! `fio --verify` inside the guest, then the data checked from the host side.

use std::fs::File;
use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::backend::{BlockBackend, BlockBackendKind};
use harness::guest::{Disk, Guest, GuestConfig, GuestImage};
use harness::peers::qsd::Export;
use harness::testdir::TestDir;

const DISK_BYTES: u64 = 128 << 20;

fn fio_verify(kind: BlockBackendKind) -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("block-fio")?;
    let disk_path = dir.join("disk.img");
    File::create(&disk_path)?.set_len(DISK_BYTES)?;

    let mut backend = BlockBackend::start(kind, &dir, "vda", &Export::new(&disk_path))?;
    let config = GuestConfig::new("fio-guest").disk(Disk::new(backend.socket()));
    let mut guest = Guest::boot(&dir, &image, &config)?;

    let size = guest.run_ok("cat /sys/block/vda/size", Duration::from_secs(30))?;
    ensure!(
        size.trim() == (DISK_BYTES / 512).to_string(),
        "guest sees {} sectors, expected {}",
        size.trim(),
        DISK_BYTES / 512
    );

    // Random writes across the whole disk with a CRC32C header in every
    // block, then a read-back pass that checks each one.
    let fio = "fio --name=verify --filename=/dev/vda --direct=1 --ioengine=libaio \
               --rw=randwrite --bs=4k --iodepth=8 --size=100% --verify=crc32c \
               --do_verify=1 --verify_fatal=1 --randrepeat=0";
    let out = guest.run_ok(fio, Duration::from_secs(600))?;
    eprintln!("{out}");
    ensure!(out.contains("err= 0"), "fio reported errors:\n{out}");

    // A known pattern written from the guest must land in the image file.
    guest.run_ok(
        "printf 'sfera-block-check' | dd of=/dev/vda bs=512 seek=1000 conv=fsync 2>/dev/null",
        Duration::from_secs(60),
    )?;
    guest.poweroff(Duration::from_secs(60))?;
    backend.ensure_running()?;

    let mut file = File::open(&disk_path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let at = 1000 * 512;
    ensure!(
        &data[at..at + 17] == b"sfera-block-check",
        "pattern written by the guest is not in the image"
    );
    // fio wrote every block: none of the image's 4 KiB blocks is all zero.
    let empty = data
        .chunks(4096)
        .filter(|b| b.iter().all(|&x| x == 0))
        .count();
    ensure!(empty == 0, "{empty} blocks of the image were never written");
    Ok(())
}

#[test]
fn guest_fio_verify_on_qemu_storage_daemon() {
    fio_verify(BlockBackendKind::QemuStorageDaemon)
        .context("fio --verify in a guest with its disk on qemu-storage-daemon")
        .unwrap();
}

#[test]
fn guest_fio_verify_on_sfera_blockd() {
    fio_verify(BlockBackendKind::SferaBlockd)
        .context("fio --verify in a guest with its disk on sfera-blockd")
        .unwrap();
}
