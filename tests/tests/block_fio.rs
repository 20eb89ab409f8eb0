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

const DISK_BYTES: u64 = 256 << 20;
const FIO_BYTES: &str = "64M";

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

    // Random writes with a CRC32C header in every block, then a read-back
    // pass that checks each one.
    let fio = format!(
        "fio --name=verify --filename=/dev/vda --direct=1 --ioengine=libaio \
         --rw=randwrite --bs=4k --iodepth=8 --size={FIO_BYTES} --verify=crc32c \
         --do_verify=1 --verify_fatal=1 --randrepeat=0"
    );
    let out = guest.run_ok(&fio, Duration::from_secs(600))?;
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
    // fio's verify headers start with a magic; the first block of a random
    // 64 MiB pass over 4 KiB blocks is overwhelmingly likely to be written,
    // but checking the whole range for any non-zero byte cannot be flaky.
    let fio_range = &data[..64 << 20];
    ensure!(
        fio_range.iter().any(|&b| b != 0),
        "fio's writes did not reach the image"
    );
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
