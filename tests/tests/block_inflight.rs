//! Requests in flight survive a sfera-blockd crash (QEMU's inflight tracking, a guest's fio).
//!
//! Requests in flight across a sfera-blockd crash (vhost-user inflight I/O
//! tracking, `INFLIGHT_SHMFD`): a guest's fio writes 32 requests deep with
//! verification, and reads beside them, while a cgroup holds blockd's
//! writes back, so that many requests are in flight in blockd, completing
//! out of order, when it is killed. blockd starts again on the same socket, QEMU reconnects and hands
//! back the inflight area, blockd resubmits what was in flight, and fio
//! finishes without an I/O error, every block verified.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use anyhow::{Result, ensure};
use harness::blkio_client::BlkioClient;
use harness::daemons::blockd::Blockd;
use harness::guest::{Disk, Guest, GuestConfig, GuestImage};
use harness::io_throttle::{IoThrottle, LoopDevice};
use harness::peers::qsd::Export;
use harness::raw_frontend::{QUEUE_SIZE, RawFrontend};
use harness::testdir::TestDir;
use harness::wait::wait_until;
use vhost::vhost_user::message::VhostUserInflight;
use vhost::vhost_user::{Frontend, VhostUserFrontend};

const DISK_BYTES: u64 = 64 << 20;
/// Writes per second the kernel lets blockd make to the disk: far fewer
/// than the guest asks for, so its queue stays full of requests in flight.
const WRITE_IOPS: u32 = 100;
/// How many of the guest's writes must be outstanding before the crash.
const IN_FLIGHT: u32 = 16;
/// What blockd logs when it resubmits requests after a restart.
const RESUBMITTED: &str = "Resubmitting the requests a previous backend left in flight";
const SHORT: Duration = Duration::from_secs(60);
/// fio writes 1024 blocks at WRITE_IOPS, then reads them back, while the
/// reads run for 15 s: well under a minute; the rest is room for a loaded
/// machine. A guest that lost a
/// request waits for it forever and ends here.
const LONG: Duration = Duration::from_secs(300);

#[test]
fn writes_in_flight_survive_a_blockd_crash() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("blk-inflight")?;
    let disk = dir.join("disk.img");
    File::create(&disk)?.set_len(DISK_BYTES)?;
    let device = LoopDevice::attach(&disk)?;
    let throttle = IoThrottle::new("inflight", &device, WRITE_IOPS)?;
    let export = Export::new(device.path());
    let mut blockd = Blockd::start(&dir, "vda", &export)?;
    throttle.add(blockd.pid())?;

    let config = GuestConfig::new("inflight").disk(Disk::new(blockd.socket()).reconnecting());
    let mut guest = Guest::boot(&dir, &image, &config)?;
    // Random writes with verification, and random reads elsewhere on the
    // disk beside them: the reads are not throttled, so they overtake the
    // writes and requests complete out of order.
    guest.run_ok(
        "( fio --filename=/dev/vda --direct=1 --ioengine=libaio --randrepeat=0 --bs=4k \
           --name=writes --rw=randwrite --iodepth=32 --size=4M --verify=crc32c \
           --do_verify=1 --verify_fatal=1 \
           --name=reads --rw=randread --iodepth=16 --offset=32M --size=16M \
           --time_based --runtime=15 ; echo fio-exit=$? ) > /tmp/fio.log 2>&1 & true",
        SHORT,
    )?;
    wait_until("the guest's writes to pile up in blockd", SHORT, || {
        let inflight = guest.run_ok("cat /sys/block/vda/inflight", SHORT)?;
        let writes: u32 = inflight
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        Ok((writes >= IN_FLIGHT).then_some(()))
    })?;

    blockd.kill()?;
    let mut blockd = Blockd::start(&dir, "vda", &export)?;
    throttle.add(blockd.pid())?;

    let fio = guest.run_ok("wait; cat /tmp/fio.log", LONG)?;
    eprintln!("{fio}");
    ensure!(
        fio.contains("fio-exit=0") && fio.contains("err= 0"),
        "fio failed after the crash:\n{fio}"
    );
    let errors = guest.run_ok("dmesg | grep -c 'I/O error' || true", SHORT)?;
    ensure!(
        errors.trim() == "0",
        "the guest saw I/O errors:\n{}",
        guest.run_ok("dmesg | tail -20", SHORT)?
    );
    // The crash came with requests in flight, and the new blockd resubmitted
    // them: otherwise this test proved nothing about inflight tracking.
    let log = blockd.log();
    let resubmitted = log.lines().find(|l| l.contains(RESUBMITTED));
    ensure!(
        resubmitted.is_some(),
        "blockd did not resubmit anything after the crash:\n{log}"
    );
    eprintln!("{}", resubmitted.unwrap_or_default());
    guest.poweroff(SHORT)?;
    blockd.ensure_running()?;
    Ok(())
}

const F_VERSION_1: u64 = 1 << 32;

/// A frontend error as the harness reports it.
fn frontend_error(what: &str, e: impl std::fmt::Display) -> harness::Error {
    harness::Error::CommandFailed {
        command: format!("vhost-user frontend: {what}"),
        status: "failed".to_owned(),
        stderr: e.to_string(),
    }
}

/// blockd exporting a small image, for frontends that misbehave.
fn small_export(dir: &TestDir) -> Result<Blockd> {
    let disk = dir.join("disk.img");
    File::create(&disk)?.set_len(1 << 20)?;
    Ok(Blockd::start(dir, "vda", &Export::new(&disk))?)
}

/// After a bad frontend: blockd runs, and the next frontend reads and
/// writes.
fn next_frontend_is_served(blockd: &mut Blockd) -> Result<()> {
    let mut good = BlkioClient::vhost_user(blockd.socket(), 1, 1 << 20)?;
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    good.write(0, 0, &pattern)?;
    ensure!(
        good.read(0, 0, 4096)? == pattern,
        "I/O of the next frontend"
    );
    blockd.ensure_running()?;
    Ok(())
}

/// GET_INFLIGHT_FD for one queue: the area blockd made, and its file.
fn new_area(f: &mut Frontend) -> harness::Result<(VhostUserInflight, File)> {
    let asked = VhostUserInflight::new(0, 0, 1, QUEUE_SIZE);
    f.get_inflight_fd(&asked)
        .map_err(|e| frontend_error("GET_INFLIGHT_FD", e))
}

/// Waits for blockd to log `text`.
fn logged(blockd: &Blockd, text: &str) -> Result<()> {
    wait_until(&format!("blockd to log `{text}`"), SHORT, || {
        Ok(blockd.log().contains(text).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_garbled_inflight_area_stops_the_queue_not_blockd() -> Result<()> {
    // The frontend writes 7 in an inflight flag (0 or 1 are valid) of the
    // area blockd gave it, and hands it back.
    let dir = TestDir::new("blk-inflight-garbled")?;
    let mut blockd = small_export(&dir)?;
    let garble = |f: &mut Frontend| -> harness::Result<()> {
        let (area, file) = new_area(f)?;
        // Head 3's entry: after the 16-byte header, 16 bytes per head.
        file.write_at(&[7], 16 + 16 * 3)
            .map_err(|e| frontend_error("write the area", e))?;
        f.set_inflight_fd(&area, file.as_raw_fd())
            .map_err(|e| frontend_error("SET_INFLIGHT_FD", e))
    };
    let mut f = RawFrontend::connect_inflight(blockd.socket(), F_VERSION_1, &garble)?;
    f.offer(0)?;
    logged(&blockd, "The inflight region does not match the ring")?;
    ensure!(f.used_idx() == 0, "nothing was taken from the stopped ring");
    // The VM can still be stopped: the queue answers GET_VRING_BASE.
    f.get_vring_base_within(0, SHORT)?;
    drop(f);
    next_frontend_is_served(&mut blockd)
}

#[test]
fn an_inflight_area_that_could_shrink_is_refused() -> Result<()> {
    // A plain file, not a memfd sealed against shrinking: the frontend
    // could truncate it under blockd's mapping, which would then fault
    // (SIGBUS) when touched.
    let dir = TestDir::new("blk-inflight-unsealed")?;
    let mut blockd = small_export(&dir)?;
    let unsealed = |f: &mut Frontend| -> harness::Result<()> {
        let (area, _sealed) = new_area(f)?;
        let file = tempfile_of(area.mmap_size)?;
        match f.set_inflight_fd(&area, file.as_raw_fd()) {
            Err(_) => Ok(()),
            Ok(()) => Err(frontend_error(
                "SET_INFLIGHT_FD",
                "an unsealed area was accepted",
            )),
        }
    };
    // blockd refuses the area and ends the connection, as it does for a
    // request it cannot carry out.
    let refused = RawFrontend::connect_inflight(blockd.socket(), F_VERSION_1, &unsealed);
    ensure!(refused.is_err(), "the connection went on after the refusal");
    logged(&blockd, "not sealed against shrinking")?;
    next_frontend_is_served(&mut blockd)
}

/// An unlinked temporary file of `len` bytes.
fn tempfile_of(len: u64) -> harness::Result<File> {
    let file = tempfile::tempfile().map_err(|e| frontend_error("temporary file", e))?;
    file.set_len(len)
        .map_err(|e| frontend_error("temporary file", e))?;
    Ok(file)
}
