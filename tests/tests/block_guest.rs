//! A filesystem, fio and discard work on sfera-blockd (a Linux guest's virtio-blk driver).
//!
//! A real Linux guest on sfera-blockd: a filesystem that survives a power
//! cycle, fio --verify over the whole disk on two queues, and discard that
//! keeps a thin volume thin.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::backend::{BlockBackend, BlockBackendKind};
use harness::guest::{Disk, Guest, GuestConfig, GuestImage};
use harness::peers::qsd::Export;
use harness::testdir::TestDir;

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_secs(60);

fn thin_image(dir: &TestDir, size: u64) -> Result<PathBuf> {
    let path = dir.join("disk.img");
    File::create(&path)?.set_len(size)?;
    Ok(path)
}

/// What the first three tests boot on: the guest image, the test's
/// directory, a thin disk image and sfera-blockd exporting it as `vda`.
/// Fields drop in order: the daemon before the directory; tests that
/// take it apart bind the daemon last, for the same order.
struct Rig {
    image: GuestImage,
    disk: PathBuf,
    blockd: BlockBackend,
    dir: TestDir,
}

impl Rig {
    /// A thin disk of `size` bytes, exported on `queues` queues, in
    /// directory `name`.
    fn start(name: &str, size: u64, queues: u16) -> Result<Self> {
        let image = GuestImage::locate()?;
        let dir = TestDir::new(name)?;
        let disk = thin_image(&dir, size)?;
        let mut export = Export::new(&disk);
        export.num_queues = queues;
        let blockd = BlockBackend::start(BlockBackendKind::SferaBlockd, &dir, "vda", &export)?;
        Ok(Rig {
            image,
            disk,
            blockd,
            dir,
        })
    }
}

fn allocated_bytes(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[test]
fn ext4_files_survive_a_power_cycle() -> Result<()> {
    let Rig {
        image,
        dir,
        mut blockd,
        ..
    } = Rig::start("blk-ext4", 256 * MIB, 1)?;
    let config = GuestConfig::new("ext4").disk(Disk::new(blockd.socket()));

    let mut guest = Guest::boot(&dir, &image, &config)?;
    guest.run_ok(
        "mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt",
        LONG,
    )?;
    guest.run_ok(
        "dd if=/dev/urandom of=/mnt/data bs=1M count=16 2>/dev/null && \
         mkdir /mnt/dir && echo hello > /mnt/dir/note && \
         md5sum /mnt/data /mnt/dir/note > /mnt/sums && sync",
        LONG,
    )?;
    let sums = guest.run_ok("cat /mnt/sums", SHORT)?;
    guest.run_ok("umount /mnt", SHORT)?;
    guest.poweroff(SHORT)?;

    // A new VM process on the same export, as after a host reboot.
    let mut guest = Guest::boot(&dir, &image, &config).context("second boot")?;
    guest.run_ok("mkdir -p /mnt && mount /dev/vda /mnt", SHORT)?;
    let check = guest.run_ok("md5sum -c /mnt/sums && cat /mnt/dir/note", SHORT)?;
    ensure!(check.contains("hello"), "{check}");
    ensure!(sums.lines().count() == 2, "{sums}");
    guest.run_ok("umount /mnt", SHORT)?;
    guest.poweroff(SHORT)?;
    blockd.ensure_running()?;
    Ok(())
}

#[test]
fn fio_verify_whole_disk_on_two_queues() -> Result<()> {
    let Rig {
        image,
        dir,
        mut blockd,
        ..
    } = Rig::start("blk-2q", 128 * MIB, 2)?;
    let config = GuestConfig::new("fio2q")
        .vcpus(2)
        .disk(Disk::new(blockd.socket()).queues(2));
    let mut guest = Guest::boot(&dir, &image, &config)?;
    let queues = guest.run_ok("ls /sys/block/vda/mq | wc -l", SHORT)?;
    ensure!(queues.trim() == "2", "guest uses {} queues", queues.trim());
    // The guest's driver reads the serial number with GET_ID.
    let serial = guest.run_ok("cat /sys/block/vda/serial", SHORT)?;
    ensure!(serial.trim() == "vda", "serial {serial:?}");
    // Two jobs, one per CPU and so one per queue, each over its half of the
    // whole disk.
    let out = guest.run_ok(
        "fio --name=whole --filename=/dev/vda --direct=1 --ioengine=libaio --rw=randwrite \
         --bs=4k --iodepth=16 --numjobs=2 --size=50% --offset_increment=50% \
         --verify=crc32c --do_verify=1 --verify_fatal=1 --cpus_allowed_policy=split \
         --cpus_allowed=0-1 --group_reporting",
        LONG,
    )?;
    ensure!(out.contains("err= 0"), "{out}");
    guest.poweroff(SHORT)?;
    blockd.ensure_running()?;
    Ok(())
}

#[test]
fn discard_keeps_a_thin_volume_thin() -> Result<()> {
    let Rig {
        image,
        dir,
        disk,
        mut blockd,
    } = Rig::start("blk-discard", 128 * MIB, 1)?;
    let config = GuestConfig::new("discard").disk(Disk::new(blockd.socket()));
    let mut guest = Guest::boot(&dir, &image, &config)?;
    ensure!(allocated_bytes(&disk)? < MIB, "a new volume is thin");

    guest.run_ok(
        "dd if=/dev/urandom of=/dev/vda bs=1M count=64 oflag=direct 2>/dev/null",
        LONG,
    )?;
    let written = allocated_bytes(&disk)?;
    ensure!(
        written >= 64 * MIB,
        "64 MiB written, {written} bytes allocated"
    );

    guest.run_ok("blkdiscard /dev/vda", LONG)?;
    let after = allocated_bytes(&disk)?;
    ensure!(
        after < MIB,
        "after blkdiscard {after} bytes are still allocated"
    );
    // Discarded blocks read back as zeroes.
    let zeroes = guest.run_ok(
        "dd if=/dev/vda bs=1M count=64 iflag=direct 2>/dev/null | tr -d '\\000' | wc -c",
        SHORT,
    )?;
    ensure!(
        zeroes.trim() == "0",
        "{} non-zero bytes after discard",
        zeroes.trim()
    );
    guest.poweroff(SHORT)?;
    blockd.ensure_running()?;
    Ok(())
}

#[test]
fn a_running_guest_keeps_its_disk_across_a_blockd_crash() -> Result<()> {
    use harness::daemons::blockd::BlockdDaemon;
    use harness::http::call;
    use harness::wait::wait_until;

    let image = GuestImage::locate()?;
    let dir = TestDir::new("blk-reconnect")?;
    let store = dir.subdir("store")?;
    let mut d = BlockdDaemon::start(&dir)?;
    let body = format!(r#"{{"name":"local","path":"{}"}}"#, store.display());
    ensure!(call(d.api(), "POST", "/v1/datastores", Some(&body))?.status == 201);
    let body = format!(r#"{{"name":"vm/disk0","size":{}}}"#, 64 * MIB);
    ensure!(call(d.api(), "POST", "/v1/datastores/local/volumes", Some(&body))?.status == 201);
    let body = r#"{"id":"vm-disk0","datastore":"local","volume":"vm/disk0"}"#;
    ensure!(call(d.api(), "POST", "/v1/exports", Some(body))?.status == 201);
    let socket = d.export_socket("vm-disk0");

    let config = GuestConfig::new("reconnect").disk(Disk::new(&socket).reconnecting());
    let mut guest = Guest::boot(&dir, &image, &config)?;
    guest.run_ok(
        "dd if=/dev/urandom of=/tmp/a bs=1M count=4 2>/dev/null && \
         dd if=/tmp/a of=/dev/vda bs=1M oflag=direct 2>/dev/null && md5sum /tmp/a > /tmp/a.sum",
        SHORT,
    )?;

    d.kill();
    d.restart()?;
    wait_until("the export's socket", Duration::from_secs(10), || {
        Ok(socket.exists().then_some(()))
    })?;
    // The guest's next I/O waits in its virtqueue until QEMU has reconnected.
    let out = guest.run_ok(
        "dd if=/dev/vda of=/tmp/b bs=1M count=4 iflag=direct 2>/dev/null && \
         sed 's|/tmp/a|/tmp/b|' /tmp/a.sum | md5sum -c && \
         dd if=/dev/urandom of=/dev/vda bs=1M seek=8 count=2 oflag=direct 2>/dev/null && echo wrote",
        LONG,
    )?;
    ensure!(out.contains("OK") && out.contains("wrote"), "{out}");
    guest.poweroff(SHORT)?;
    d.ensure_running()?;
    Ok(())
}
