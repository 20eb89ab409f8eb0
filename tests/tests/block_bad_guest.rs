//! Bad virtio-blk requests fail alone and are counted (a raw vhost-user frontend, libblkio).
//!
//! A misbehaving guest (a raw vhost-user frontend writing whatever
//! descriptors it likes) against one export of sfera-blockd, while libblkio
//! uses another export of the same daemon: every bad request completes with
//! an error status (or is returned untouched when it has no place for one),
//! is counted per reason, and neither the daemon nor the other volume
//! notices. A frontend that breaks a queue's available ring gets that
//! queue stopped, not spun on: the VM stays stoppable and the export takes
//! the next frontend.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::blkio_client::BlkioClient;
use harness::daemons::blockd::BlockdDaemon;
use harness::http::call;
use harness::process::cpu_time;
use harness::raw_frontend::{BUFFERS, Desc, F_NEXT, F_WRITE, QUEUE_SIZE, RawFrontend};
use harness::scenario::case;
use harness::testdir::TestDir;
use harness::wait::wait_until;

const MIB: u64 = 1 << 20;
const VOLUME: u64 = 4 * MIB;
const HEADER: u64 = 0x4000;
const DATA: u64 = 0x5000;
const STATUS: u64 = 0x8000;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;

fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

/// Submits header + data + status as descriptors 0, 1, 2 and returns the
/// status byte and used length.
fn request(f: &mut RawFrontend, kind: u32, sector: u64, data: Desc) -> Result<(u8, u32)> {
    f.write(HEADER, &header(kind, sector));
    f.write(STATUS, &[0xff]);
    f.set_desc(
        0,
        Desc {
            addr: HEADER,
            len: 16,
            flags: F_NEXT,
            next: 1,
        },
    );
    f.set_desc(
        1,
        Desc {
            flags: data.flags | F_NEXT,
            next: 2,
            ..data
        },
    );
    f.set_desc(
        2,
        Desc {
            addr: STATUS,
            len: 1,
            flags: F_WRITE,
            next: 0,
        },
    );
    let target = f.used_idx().wrapping_add(1);
    f.offer(0)?;
    f.wait_used(target, Duration::from_secs(10))?;
    let (id, len) = f.used_elem(target.wrapping_sub(1));
    ensure!(id == 0, "used id {id}");
    Ok((f.read(STATUS, 1)[0], len))
}

/// A data buffer the device writes: 4 KiB at `DATA`.
const DATA_IN: Desc = Desc {
    addr: DATA,
    len: 4096,
    flags: F_WRITE,
    next: 0,
};

/// The scenario's set-up: one daemon exporting volumes "bad" and "good",
/// libblkio on "good" (with a pattern written at sector 0) and a raw
/// frontend on "bad". Fields drop in order: the clients, the daemon, the
/// directory.
struct Site {
    f: RawFrontend,
    good: BlkioClient,
    pattern: Vec<u8>,
    d: BlockdDaemon,
    _dir: TestDir,
}

impl Site {
    fn start() -> Result<Self> {
        let dir = TestDir::new("blk-bad-guest")?;
        let d = BlockdDaemon::start(&dir)?;
        exports(&d, &dir, &["bad", "good"], 1)?;
        let mut good = BlkioClient::vhost_user(&d.export_socket("good"), 1, MIB as usize)?;
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
        good.write(0, 0, &pattern)?;
        let f = RawFrontend::connect(&d.export_socket("bad"))?;
        Ok(Site {
            f,
            good,
            pattern,
            d,
            _dir: dir,
        })
    }
}

#[test]
fn bad_requests_fail_alone_and_are_counted() -> Result<()> {
    let mut site = Site::start()?;
    case("a_valid_read_completes", || {
        ensure!(
            request(&mut site.f, T_IN, 0, DATA_IN)? == (S_OK, 4097),
            "valid read"
        );
        Ok(())
    })?;
    case("bad_requests_get_an_error_status", || {
        bad_requests_get_an_error_status(&mut site.f)
    })?;
    case("a_malformed_chain_comes_back_untouched", || {
        a_malformed_chain_comes_back_untouched(&mut site)
    })?;
    case("a_descriptor_loop_ends_where_the_ring_does", || {
        a_descriptor_loop_ends_where_the_ring_does(&mut site)
    })?;
    case("the_queue_still_serves_valid_requests", || {
        the_queue_still_serves_valid_requests(&mut site)
    })?;
    case(
        "the_other_export_never_noticed_and_refusals_are_counted",
        || the_other_export_never_noticed_and_refusals_are_counted(&mut site),
    )?;
    site.d.ensure_running()?;
    Ok(())
}

/// Past the end of the disk, an unknown type, a buffer outside guest
/// memory, a transfer larger than the device advertised, a length that is
/// not whole sectors.
fn bad_requests_get_an_error_status(f: &mut RawFrontend) -> Result<()> {
    let outside = Desc {
        addr: 64 << 30,
        ..DATA_IN
    };
    let huge = Desc {
        addr: DATA,
        len: !511,
        flags: 0,
        next: 0,
    };
    let odd = Desc {
        len: 1000,
        ..DATA_IN
    };
    for (what, kind, sector, data, status) in [
        ("out of range", T_IN, VOLUME / 512, DATA_IN, S_IOERR),
        ("sector overflow", T_IN, u64::MAX / 256, DATA_IN, S_IOERR),
        ("unknown type", 99, 0, DATA_IN, S_UNSUPP),
        ("buffer outside memory", T_IN, 0, outside, S_IOERR),
        ("oversize write", T_OUT, 0, huge, S_IOERR),
        ("unaligned length", T_IN, 0, odd, S_IOERR),
    ] {
        ensure!(request(f, kind, sector, data)?.0 == status, "{what}");
    }
    Ok(())
}

/// Readable data after the writable status: no status may be written,
/// the chain comes back with nothing written.
fn a_malformed_chain_comes_back_untouched(s: &mut Site) -> Result<()> {
    s.f.write(STATUS, &[0xff]);
    s.f.set_desc(
        0,
        Desc {
            addr: HEADER,
            len: 16,
            flags: F_NEXT,
            next: 1,
        },
    );
    s.f.set_desc(
        1,
        Desc {
            addr: STATUS,
            len: 1,
            flags: F_WRITE | F_NEXT,
            next: 2,
        },
    );
    s.f.set_desc(
        2,
        Desc {
            addr: DATA,
            len: 512,
            flags: 0,
            next: 0,
        },
    );
    let target = s.f.used_idx().wrapping_add(1);
    s.f.offer(0)?;
    s.f.wait_used(target, Duration::from_secs(10))?;
    ensure!(
        s.f.used_elem(target.wrapping_sub(1)) == (0, 0),
        "malformed chain returned with a length"
    );
    ensure!(
        s.f.read(STATUS, 1)[0] == 0xff,
        "status written into a malformed chain"
    );

    Ok(())
}

/// A descriptor loop: the chain ends where the ring's size runs out.
fn a_descriptor_loop_ends_where_the_ring_does(s: &mut Site) -> Result<()> {
    s.f.set_desc(
        5,
        Desc {
            addr: HEADER,
            len: 16,
            flags: F_NEXT,
            next: 5,
        },
    );
    let target = s.f.used_idx().wrapping_add(1);
    s.f.offer(5)?;
    s.f.wait_used(target, Duration::from_secs(10))?;

    Ok(())
}

/// After all that, the queue still serves valid requests, and reads what
/// a valid write stored.
fn the_queue_still_serves_valid_requests(s: &mut Site) -> Result<()> {
    s.f.write(DATA, &s.pattern);
    let data_out = Desc {
        addr: DATA,
        len: 4096,
        flags: 0,
        next: 0,
    };
    ensure!(
        request(&mut s.f, T_OUT, 8, data_out)?.0 == S_OK,
        "valid write after bad ones"
    );
    s.f.write(DATA, &[0u8; 4096]);
    ensure!(
        request(&mut s.f, T_IN, 8, DATA_IN)?.0 == S_OK,
        "valid read after bad ones"
    );
    ensure!(s.f.read(DATA, 4096) == s.pattern, "data read back");

    Ok(())
}

/// The other export never noticed; the daemon is up.
fn the_other_export_never_noticed_and_refusals_are_counted(s: &mut Site) -> Result<()> {
    ensure!(s.good.read(0, 0, 4096)? == s.pattern, "the other volume");
    let stats = call(s.d.api(), "GET", "/v1/exports/bad", None)?.json()?;
    let refused = &stats["stats"]["refused"];
    for (reason, at_least) in [
        ("out_of_range", 2),
        ("unsupported", 1),
        ("outside_memory", 1),
        ("too_large", 1),
        ("unaligned", 1),
        ("malformed_chain", 2),
    ] {
        ensure!(
            refused[reason].as_u64() >= Some(at_least),
            "{reason}: {refused}"
        );
    }
    let good_stats = call(s.d.api(), "GET", "/v1/exports/good", None)?.json()?;
    let total: u64 = good_stats["stats"]["refused"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(u64::MAX);
    ensure!(total == 0, "the good export counted refusals: {good_stats}");
    Ok(())
}

/// VIRTIO_F_VERSION_1 and VIRTIO_RING_F_EVENT_IDX.
const F_VERSION_1: u64 = 1 << 32;
const F_EVENT_IDX: u64 = 1 << 29;

/// A 4 KiB read of sector 0 on queue `q`, with its buffers in a region of
/// their own; returns the status byte.
fn read_q(f: &mut RawFrontend, q: usize) -> Result<u8> {
    let base = BUFFERS + q as u64 * 0x4000;
    let (header_at, data, status) = (base, base + 0x1000, base + 0x3000);
    f.write(header_at, &header(T_IN, 0));
    f.write(status, &[0xff]);
    let descs = [
        (header_at, 16, F_NEXT),
        (data, 4096, F_WRITE | F_NEXT),
        (status, 1, F_WRITE),
    ];
    for (i, (addr, len, flags)) in descs.into_iter().enumerate() {
        let next = if flags & F_NEXT != 0 { i as u16 + 1 } else { 0 };
        f.set_desc_q(
            q,
            i as u16,
            Desc {
                addr,
                len,
                flags,
                next,
            },
        );
    }
    let target = f.used_idx_q(q).wrapping_add(1);
    f.offer_q(q, 0)?;
    f.wait_used_q(q, target, Duration::from_secs(10))?;
    Ok(f.read(status, 1)[0])
}

/// A datastore `local` in `<dir>/store` and, for each of `ids`, a volume
/// of that name on it exported under that id with `queues` queues.
fn exports(d: &BlockdDaemon, dir: &TestDir, ids: &[&str], queues: u32) -> Result<()> {
    let store = dir.subdir("store")?;
    let post = |path: &str, body: &str| -> Result<()> {
        let a = call(d.api(), "POST", path, Some(body))?;
        ensure!(a.status == 201, "POST {path}: {} {}", a.status, a.body);
        Ok(())
    };
    post(
        "/v1/datastores",
        &format!(r#"{{"name":"local","path":"{}"}}"#, store.display()),
    )?;
    for v in ids {
        post(
            "/v1/datastores/local/volumes",
            &format!(r#"{{"name":"{v}","size":{VOLUME}}}"#),
        )?;
        post(
            "/v1/exports",
            &format!(r#"{{"id":"{v}","datastore":"local","volume":"{v}","queues":{queues}}}"#),
        )?;
    }
    Ok(())
}

/// A frontend (a VM process gone bad) that connects and hangs up in a
/// loop gets a burst of log lines, not one per connection, and the next
/// line that goes out says how many were held back.
#[test]
fn a_frontend_reconnecting_in_a_loop_is_logged_in_bursts() -> Result<()> {
    const CONNECTIONS: usize = 300;
    let dir = TestDir::new("blk-log-flood")?;
    let mut d = BlockdDaemon::start(&dir)?;
    exports(&d, &dir, &["v"], 1)?;
    let socket = d.export_socket("v");
    let lines = |d: &BlockdDaemon| {
        d.log()
            .lines()
            .filter(|l| l.contains("Frontend disconnected") || l.contains("Connection ended"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let started = Instant::now();
    for _ in 0..CONNECTIONS {
        drop(std::os::unix::net::UnixStream::connect(&socket)?);
    }
    wait_until(
        "blockd to serve every connection",
        Duration::from_secs(30),
        || {
            Ok(
                (std::os::unix::net::UnixStream::connect(&socket).is_ok() && lines(&d).len() >= 10)
                    .then_some(()),
            )
        },
    )?;
    d.ensure_running()?;
    // One more connection after the 10 s window: its line counts the rest.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(started.elapsed()));
    drop(std::os::unix::net::UnixStream::connect(&socket)?);
    let summary = wait_until(
        "the line that counts the held-back ones",
        Duration::from_secs(30),
        || {
            Ok(lines(&d).into_iter().find_map(|l| {
                let n: u64 = l
                    .split("held_back=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?;
                (n > 0).then_some(n)
            }))
        },
    )?;
    let logged = lines(&d).len();
    ensure!(
        logged <= 30,
        "{logged} log lines for {CONNECTIONS} connections"
    );
    ensure!(
        summary as usize + logged >= CONNECTIONS,
        "{summary} held back and {logged} logged of at least {CONNECTIONS} connections"
    );
    Ok(())
}

/// The export's count of queues stopped for an available index too far
/// ahead (None when the export does not report it).
fn broken_avail_index(d: &BlockdDaemon, export: &str) -> harness::Result<Option<u64>> {
    let stats = call(d.api(), "GET", &format!("/v1/exports/{export}"), None)?.json()?;
    Ok(stats["stats"]["broken_queues"]["avail_index"].as_u64())
}

/// A frontend sets queue 0's available index more than a ring ahead and
/// kicks: queue 0 stops (counted, no spinning), queue 1 goes on,
/// GET_VRING_BASE answers, and the next frontend gets the export.
fn avail_index_far_ahead(features: u64) -> Result<()> {
    let dir = TestDir::new("blk-bad-avail")?;
    let mut d = BlockdDaemon::start(&dir)?;
    exports(&d, &dir, &["v"], 2)?;
    let pid = d.pid().context("blockd's pid")?;
    let mut f = RawFrontend::connect_queues(&d.export_socket("v"), 2, features)?;
    for q in 0..2 {
        ensure!(read_q(&mut f, q)? == S_OK, "queue {q} before");
    }

    let ahead = f.used_idx_q(0).wrapping_add(QUEUE_SIZE + 1);
    f.set_avail_idx_q(0, ahead)?;
    wait_until(
        "the broken queue to be counted",
        Duration::from_secs(10),
        || Ok(broken_avail_index(&d, "v")?.filter(|&n| n >= 1)),
    )?;
    ensure!(read_q(&mut f, 1)? == S_OK, "queue 1 next to the broken one");

    // No thread spins on the stopped queue: over a second, the daemon uses
    // a small part of a CPU (a spinning queue thread takes most of one).
    let (cpu, wall) = (cpu_time(pid)?, Instant::now());
    f.set_avail_idx_q(0, ahead)?;
    std::thread::sleep(Duration::from_secs(1));
    let (used, elapsed) = (cpu_time(pid)? - cpu, wall.elapsed());
    ensure!(
        used < elapsed / 3,
        "blockd used {used:?} of CPU in {elapsed:?} with a queue stopped"
    );

    // The VM can still be stopped: each queue answers GET_VRING_BASE.
    let base = f.get_vring_base_within(0, Duration::from_secs(10))?;
    ensure!(
        base == 1,
        "queue 0 stopped at {base}, after the one request"
    );
    f.get_vring_base_within(1, Duration::from_secs(10))?;
    drop(f);

    // The bad frontend went away; a well-behaved one gets the export.
    let mut good = BlkioClient::vhost_user(&d.export_socket("v"), 1, MIB as usize)?;
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    good.write(0, 0, &pattern)?;
    ensure!(
        good.read(0, 0, 4096)? == pattern,
        "I/O of the next frontend"
    );
    ensure!(broken_avail_index(&d, "v")? >= Some(1), "the count stays");
    d.ensure_running()?;
    Ok(())
}

#[test]
fn avail_index_far_ahead_with_event_idx_stops_the_queue() -> Result<()> {
    avail_index_far_ahead(F_VERSION_1 | F_EVENT_IDX)
}

#[test]
fn avail_index_far_ahead_without_event_idx_stops_the_queue() -> Result<()> {
    avail_index_far_ahead(F_VERSION_1)
}
