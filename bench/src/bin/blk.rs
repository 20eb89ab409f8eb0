//! `sfera-bench-blk`: sfera-blockd against qemu-storage-daemon, with
//! libblkio's own io_uring driver on the file as the ceiling.
//!
//! The same backing file on /dev/shm, the same client (libblkio's
//! virtio-blk-vhost-user driver driven by `bench::blk_load`), in one run:
//! 4 KiB random reads and writes at queue depth 1 and 32 on 1 and 2 queues.
//! Both servers use O_DIRECT with io_uring; qemu-storage-daemon runs its
//! export in an iothread, sfera-blockd runs one thread per queue.
//!
//! One iothread per queue for qemu-storage-daemon would be the fair
//! mapping for the 2-queue loads, but Debian's 7.2 has no way to spread a
//! vhost-user-blk export's queues over iothreads: `iothread-vq-mapping`
//! (a virtio-blk device property, QEMU 9.0) and the export's `iothreads`
//! list (QEMU 9.x) came later, and 7.2 refuses `iothreads=` on an export.
//! The fairest mapping it has is the one used: every queue in one iothread
//! (QEMU's recommended set-up; the main loop alone is slower). The 2-queue
//! figures therefore compare sfera-blockd's two threads with qsd's one;
//! the server CPU time per I/O beside them is the figure that does not
//! depend on the thread count.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bench::blk_load::{self, Direction, LoadResult, LoadSpec};
use bench::cpu::process_cpu_ns;
use bench::report::{Comparison, print_table, results_dir};
use clap::Parser;
use harness::backend::{BlockBackend, BlockBackendKind};
use harness::blkio_client::BlkioClient;
use harness::peers::qsd::Export;
use harness::testdir::TestDir;

/// Compare sfera-blockd with qemu-storage-daemon over vhost-user-blk.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Size of the backing file in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Only 4 KiB random reads at depth 32 on one queue (the headline).
    #[arg(long)]
    quick: bool,
    /// sfera-blockd's busy-poll budget in µs (its export's `poll_us`).
    #[arg(long, default_value_t = 50)]
    poll_us: u32,
}

const BLOCK: usize = 4096;

/// What one server achieved on one load.
struct Measured {
    load: LoadResult,
    cpu_ns_per_io: f64,
}

fn measure_server(backend: &BlockBackend, spec: &LoadSpec) -> Result<Measured> {
    let mut client =
        BlkioClient::vhost_user(backend.socket(), spec.queues as i32, spec.buffer_len())?;
    let before = process_cpu_ns(backend.pid())?;
    let load = blk_load::run(&mut client, spec)?;
    let cpu = process_cpu_ns(backend.pid())? - before;
    Ok(Measured {
        cpu_ns_per_io: cpu as f64 / load.ios.max(1) as f64,
        load,
    })
}

/// One load's measurements: the two servers and the ceiling.
struct Outcome {
    ours: Measured,
    peer: Measured,
    ceiling: LoadResult,
}

impl Outcome {
    fn ratio_to_ceiling(&self) -> f64 {
        self.ours.load.iops() / self.ceiling.iops()
    }
}

/// The columns of the summary table, one row per load.
const COLUMNS: [&str; 10] = [
    "load",
    "sfera IOPS",
    "qsd IOPS",
    "ceiling",
    "vs qsd",
    "vs ceiling",
    "sfera p50/p99 us",
    "qsd p50/p99 us",
    "sfera ns/IO",
    "qsd ns/IO",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let shm = tempfile::Builder::new()
        .prefix("sfera-bench-blk-")
        .tempdir_in("/dev/shm")
        .context("cannot make a folder in /dev/shm")?;
    let disk = shm.path().join("disk.img");
    write_backing_file(&disk, args.size_mib)?;
    let dir = TestDir::new("bench-blk")?;
    let mut export = Export::new(&disk);
    export.num_queues = 2;
    export.iothread = true;
    export.poll_us = args.poll_us;
    let sfera = BlockBackend::start(BlockBackendKind::SferaBlockd, &dir, "sfera", &export)?;
    let qsd = BlockBackend::start(BlockBackendKind::QemuStorageDaemon, &dir, "qsd", &export)?;

    let mut rows = Vec::new();
    let mut headline = None;
    for spec in &loads(&args) {
        let name = format!(
            "blk-{}-4k-qd{}-q{}",
            spec.direction.name(),
            spec.depth,
            spec.queues
        );
        eprintln!("measuring {name} ...");
        let outcome = measure_load(&name, spec, &disk, &sfera, &qsd)?;
        let c = record(&name, &args, &outcome)?;
        rows.push(table_row(name, &outcome, c.ratio));
        if spec.direction == Direction::Read && spec.depth == 32 && spec.queues == 1 {
            headline = Some((c.ratio, outcome.ratio_to_ceiling()));
        }
    }
    print_table(&COLUMNS, &rows);
    eprintln!(
        "qemu-storage-daemon runs every queue in one iothread (7.2 cannot map queues to \
         iothreads); sfera-blockd runs one thread per queue: compare the 2-queue loads by ns/IO"
    );
    if let Some((vs_qsd, vs_ceiling)) = headline {
        eprintln!(
            "headline randread 4k QD32 1 queue: {vs_qsd:.2}x qemu-storage-daemon (target 1.5x), \
             {vs_ceiling:.2}x the io_uring ceiling (target 0.8x)"
        );
    }
    eprintln!("results in {}", results_dir().display());
    Ok(())
}

/// Writes the backing file, `size_mib` MiB of real data so that reads do
/// not hit holes.
fn write_backing_file(disk: &Path, size_mib: u64) -> Result<()> {
    let mut f = File::create(disk)?;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for _ in 0..size_mib {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    Ok(())
}

/// The loads to measure: reads and writes at depth 1 and 32 on 1 and 2
/// queues, or only the headline with `--quick`.
fn loads(args: &Args) -> Vec<LoadSpec> {
    let span = args.size_mib << 20;
    let mut loads = Vec::new();
    for queues in [1usize, 2] {
        for depth in [1usize, 32] {
            for direction in [Direction::Read, Direction::Write] {
                if args.quick && (queues, depth, direction) != (1, 32, Direction::Read) {
                    continue;
                }
                loads.push(LoadSpec {
                    direction,
                    block_size: BLOCK,
                    depth,
                    queues,
                    duration: Duration::from_secs(args.seconds),
                    span,
                });
            }
        }
    }
    loads
}

/// Runs one load on the file directly (the ceiling), then on each server.
fn measure_load(
    name: &str,
    spec: &LoadSpec,
    disk: &Path,
    sfera: &BlockBackend,
    qsd: &BlockBackend,
) -> Result<Outcome> {
    let mut ceiling_client =
        BlkioClient::io_uring(disk, spec.queues as i32, spec.buffer_len(), true)?;
    let ceiling = blk_load::run(&mut ceiling_client, spec)?;
    drop(ceiling_client);
    let ours = measure_server(sfera, spec).with_context(|| format!("{name} on sfera-blockd"))?;
    let peer =
        measure_server(qsd, spec).with_context(|| format!("{name} on qemu-storage-daemon"))?;
    Ok(Outcome {
        ours,
        peer,
        ceiling,
    })
}

/// Writes one load's comparison, with its details, to the results.
fn record(name: &str, args: &Args, o: &Outcome) -> Result<Comparison> {
    let (ours, peer, ceiling) = (&o.ours, &o.peer, &o.ceiling);
    let mut c = Comparison::new(
        name,
        "IOPS",
        ours.load.iops(),
        peer.load.iops(),
        "qemu-storage-daemon",
    );
    c.detail("ceiling_name", "libblkio io_uring on the file (O_DIRECT)");
    c.detail("ceiling_iops", ceiling.iops());
    c.detail("ratio_to_ceiling", o.ratio_to_ceiling());
    c.detail("ours_p50_us", ours.load.percentile_us(50.0));
    c.detail("ours_p99_us", ours.load.percentile_us(99.0));
    c.detail("peer_p50_us", peer.load.percentile_us(50.0));
    c.detail("peer_p99_us", peer.load.percentile_us(99.0));
    c.detail("ceiling_p50_us", ceiling.percentile_us(50.0));
    c.detail("ours_server_cpu_ns_per_io", ours.cpu_ns_per_io);
    c.detail("peer_server_cpu_ns_per_io", peer.cpu_ns_per_io);
    c.detail("seconds", args.seconds);
    c.detail("sfera_poll_us", args.poll_us);
    c.detail("ours_threads", "one per queue");
    c.detail("peer_version", qsd_version());
    c.detail(
        "peer_queue_mapping",
        "num-queues=2, every queue in one iothread: qemu-storage-daemon 7.2 has no per-queue \
         iothreads (iothread-vq-mapping and the export's iothreads list are QEMU 9)",
    );
    c.write(&results_dir())?;
    Ok(c)
}

/// qemu-storage-daemon's version line, as the results record it.
fn qsd_version() -> String {
    std::process::Command::new("qemu-storage-daemon")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

/// One load's row of the summary table ([`COLUMNS`]).
fn table_row(name: String, o: &Outcome, ratio: f64) -> Vec<String> {
    let (ours, peer) = (&o.ours, &o.peer);
    vec![
        name,
        format!("{:.0}", ours.load.iops()),
        format!("{:.0}", peer.load.iops()),
        format!("{:.0}", o.ceiling.iops()),
        format!("{ratio:.2}"),
        format!("{:.2}", o.ratio_to_ceiling()),
        format!(
            "{:.1}/{:.1}",
            ours.load.percentile_us(50.0),
            ours.load.percentile_us(99.0)
        ),
        format!(
            "{:.1}/{:.1}",
            peer.load.percentile_us(50.0),
            peer.load.percentile_us(99.0)
        ),
        format!("{:.0}", ours.cpu_ns_per_io),
        format!("{:.0}", peer.cpu_ns_per_io),
    ]
}
