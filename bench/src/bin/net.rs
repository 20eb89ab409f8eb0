//! `sfera-bench-net`: sfera-vswitchd against Open vSwitch with DPDK, and
//! the generator's own ceiling, with the same traffic for each.
//!
//! One dpdk-testpmd with two `net_virtio_user` ports plays two VMs on the
//! first CPU this process may run on and forwards in `io` mode after
//! `tx_first`, so frames circulate VM → switch → VM both ways; what is
//! measured runs on the second: sfera-vswitchd (under `taskset`), OVS-DPDK
//! (one busy-polling PMD there, every other thread moved there too), or a
//! second testpmd that loops the two ports back to back (the ceiling).
//!
//! The same traffic for every forwarder: testpmd's ports have fixed MACs
//! and send to each other's (`--eth-peer`), the switches learn both during
//! a warm-up, and the run fails unless each switch's MAC table holds both
//! on the right ports. Every measurement starts everything afresh, and the
//! runs interleave the forwarders so that a noisy minute hits all of them;
//! the figures are medians of `--runs` runs.
//!
//! Cycles per packet, counted the same way for both switches: TSC cycles
//! of the poll iterations that moved packets, divided by the packets. OVS
//! reports it ("avg processing cycles per packet" of
//! `dpif-netdev/pmd-stats-show`); sfera-vswitchd's worker counts it
//! (`worker_busy_cycles` and `worker_packets` of `GET /v1/stats`).

#[path = "net/forwarder.rs"]
mod forwarder;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::cpu::process_cpu_ns;
use bench::net_counters::testpmd_fwd_drops;
use bench::report::{Comparison, median, print_table, results_dir};
use clap::Parser;
use forwarder::{Forwarder, MACS, Target};
use harness::hugepages::Hugepages;
use harness::peers::testpmd::Testpmd;
use harness::testdir::TestDir;

/// Compare sfera-vswitchd with OVS-DPDK using testpmd as the two VMs.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Measurements of each forwarder and frame size; the figures are
    /// their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of traffic before each measurement (learning, warm-up).
    #[arg(long, default_value_t = 2)]
    warm_up: u64,
}

const SIZES: [usize; 2] = [64, 1518];
/// A median at or above this share of the ceiling measures the generator.
const GENERATOR_BOUND: f64 = 0.9;

/// One measurement of one forwarder.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    mpps: f64,
    /// The switch's own cycles per packet (none for the wire).
    cycles_per_packet: Option<f64>,
    /// The forwarding process's CPU time per packet, in TSC cycles.
    process_cycles_per_packet: f64,
    /// Frames the forwarder dropped during the measurement.
    drops: u64,
    /// Deliveries it retried on a full ring.
    retries: u64,
    /// Frames testpmd (the generator) dropped during the measurement.
    generator_drops: u64,
}

/// Counters at the start or the end of a measurement.
struct Snapshot {
    at: Instant,
    rx: u64,
    cpu_ns: u64,
    generator_drops: u64,
    forwarder: forwarder::ForwarderCounters,
}

fn snapshot(fwd: &mut Forwarder, generator: &mut Testpmd, pid: u32) -> Result<Snapshot> {
    let rx = generator.port_stats(0)?.rx_packets + generator.port_stats(1)?.rx_packets;
    let text = generator.command("show fwd stats all")?;
    let (rx_dropped, tx_dropped) =
        testpmd_fwd_drops(&text).with_context(|| format!("no forward statistics in:\n{text}"))?;
    Ok(Snapshot {
        at: Instant::now(),
        rx,
        cpu_ns: process_cpu_ns(pid)?,
        generator_drops: rx_dropped + tx_dropped,
        forwarder: fwd.counters()?,
    })
}

/// Starts `target` and the generator afresh, warms up, checks learning and
/// measures `size`-byte frames for `args.seconds`. Also returns OVS's
/// configuration as it ran.
fn measure(target: Target, size: usize, args: &Args, hz: f64) -> Result<(Run, Option<String>)> {
    let dir = TestDir::new("bench-net")?;
    let wire_dir = TestDir::new("bench-net-wire")?;
    let (mut fwd, vdevs) = Forwarder::start(target, &dir, &wire_dir)?;
    let hugepages = Hugepages::reserve(&dir, 256)?;
    let peers = [
        format!("--eth-peer=0,{}", MACS[1]),
        format!("--eth-peer=1,{}", MACS[0]),
    ];
    // Declared after the forwarder: quits first.
    let mut generator = Testpmd::start_with_args(
        &dir,
        "testpmd",
        &hugepages,
        &vdevs,
        0,
        &[&peers[0], &peers[1]],
    )?;
    generator.command("set fwd io")?;
    // Frame sizes include the 4-byte FCS, which virtio does not carry.
    generator.command(&format!("set txpkts {}", size - 4))?;
    fwd.place_threads()?;
    generator.command("start tx_first 4")?;
    std::thread::sleep(Duration::from_secs(args.warm_up));
    fwd.check_learned(&dir)?;
    let config = forwarder::ovs_config(&mut fwd)?;
    let pid = fwd.pid()?;
    fwd.clear_cycles()?;
    let s0 = snapshot(&mut fwd, &mut generator, pid)?;
    std::thread::sleep(Duration::from_secs(args.seconds));
    let s1 = snapshot(&mut fwd, &mut generator, pid)?;
    let ovs_cycles = fwd.ovs_cycles_per_packet()?;
    generator.command("stop")?;
    fwd.ensure_running()?;
    let packets = s1.rx.saturating_sub(s0.rx);
    if packets == 0 {
        bail!("no frames moved through {} at {size} bytes", target.name());
    }
    let worker_cycles = match (s0.forwarder.worker, s1.forwarder.worker) {
        (Some((c0, p0)), Some((c1, p1))) if p1 > p0 => {
            Some(c1.wrapping_sub(c0) as f64 / (p1 - p0) as f64)
        }
        (Some(_), Some(_)) => bail!("sfera-vswitchd's worker counted no packets at {size} bytes"),
        _ => None,
    };
    let run = Run {
        mpps: packets as f64 / (s1.at - s0.at).as_secs_f64() / 1e6,
        cycles_per_packet: ovs_cycles.or(worker_cycles),
        process_cycles_per_packet: (s1.cpu_ns - s0.cpu_ns) as f64 / 1e9 * hz / packets as f64,
        drops: s1.forwarder.drops.saturating_sub(s0.forwarder.drops),
        retries: s1.forwarder.retries.saturating_sub(s0.forwarder.retries),
        generator_drops: s1.generator_drops.saturating_sub(s0.generator_drops),
    };
    Ok((run, config))
}

/// The runs of one forwarder at one size.
struct Series(Vec<Run>);

impl Series {
    fn median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(&self.0.iter().map(f).collect::<Vec<_>>())
    }

    fn each<T>(&self, f: impl Fn(&Run) -> T) -> Vec<T> {
        self.0.iter().map(f).collect()
    }

    fn mpps(&self) -> f64 {
        self.median(|r| r.mpps)
    }

    fn cycles(&self) -> f64 {
        self.median(|r| r.cycles_per_packet.unwrap_or(0.0))
    }
}

/// Everything measured, by frame size and forwarder.
type Results = BTreeMap<(usize, Target), Series>;

fn drops_json(results: &Results, size: usize) -> serde_json::Value {
    let get = |t: Target| &results[&(size, t)];
    let (ours, peer, wire) = (get(Target::Sfera), get(Target::Ovs), get(Target::Wire));
    serde_json::json!({
        "ours": ours.each(|r| r.drops),
        "peer": peer.each(|r| r.drops),
        "generator_with_ours": ours.each(|r| r.generator_drops),
        "generator_with_peer": peer.each(|r| r.generator_drops),
        "ceiling_wire": wire.each(|r| r.drops),
        "generator_with_wire": wire.each(|r| r.generator_drops),
        "ours_rx_retries": ours.each(|r| r.retries),
        "peer_tx_retries": peer.each(|r| r.retries),
    })
}

/// What the run knows besides the measurements: OVS's configuration and
/// the machine's load average (`/proc/loadavg`) before and after.
struct RunContext {
    ovs_config: String,
    loadavg: [String; 2],
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Writes the two comparisons of `size` and returns its table row.
fn record(
    results: &Results,
    size: usize,
    args: &Args,
    context: &RunContext,
) -> Result<Vec<String>> {
    let get = |t: Target| &results[&(size, t)];
    let (ours, peer, wire) = (get(Target::Sfera), get(Target::Ovs), get(Target::Wire));
    let runs = ours.0.len();
    let mut mpps = Comparison::new(
        &format!("net-{size}b-mpps"),
        "Mpps",
        ours.mpps(),
        peer.mpps(),
        "ovs-dpdk",
    );
    mpps.runs = Some(runs);
    mpps.ceiling = Some(wire.mpps());
    mpps.drops = Some(drops_json(results, size));
    mpps.detail("frame_bytes", size);
    mpps.detail("seconds", args.seconds);
    mpps.detail("ours_runs", ours.each(|r| r.mpps));
    mpps.detail("peer_runs", peer.each(|r| r.mpps));
    mpps.detail("ceiling_runs", wire.each(|r| r.mpps));
    mpps.detail(
        "ceiling_method",
        "testpmd's two ports looped back to back through a second testpmd (io forwarding) on the switch's CPU",
    );
    mpps.detail("macs", serde_json::json!(MACS));
    mpps.detail("peer_other_config", context.ovs_config.as_str());
    mpps.detail("loadavg_before", context.loadavg[0].as_str());
    mpps.detail("loadavg_after", context.loadavg[1].as_str());
    mpps.write(&results_dir())?;
    let mut cpp = Comparison::new(
        &format!("net-{size}b-cycles-per-packet"),
        "cycles/packet (lower is better)",
        ours.cycles(),
        peer.cycles(),
        "ovs-dpdk",
    );
    cpp.runs = Some(runs);
    cpp.drops = Some(drops_json(results, size));
    cpp.detail("frame_bytes", size);
    cpp.detail("ours_runs", ours.each(|r| r.cycles_per_packet));
    cpp.detail("peer_runs", peer.each(|r| r.cycles_per_packet));
    cpp.detail(
        "ours_method",
        "GET /v1/stats: worker_busy_cycles / worker_packets (TSC cycles of poll rounds that moved packets)",
    );
    cpp.detail(
        "peer_method",
        "ovs-appctl dpif-netdev/pmd-stats-show: avg processing cycles per packet",
    );
    cpp.detail(
        "ours_process_cycles_per_packet",
        ours.median(|r| r.process_cycles_per_packet),
    );
    cpp.detail(
        "peer_process_cycles_per_packet",
        peer.median(|r| r.process_cycles_per_packet),
    );
    cpp.write(&results_dir())?;
    let sum = |s: &Series, f: fn(&Run) -> u64| s.0.iter().map(f).sum::<u64>().to_string();
    Ok(vec![
        format!("{size} B"),
        format!("{:.3}", ours.mpps()),
        format!("{:.3}", peer.mpps()),
        format!("{:.3}", wire.mpps()),
        format!("{:.2}", mpps.ratio),
        format!("{:.0}", ours.cycles()),
        format!("{:.0}", peer.cycles()),
        format!("{:.2}", cpp.ratio),
        format!("{}/{}", sum(ours, |r| r.drops), sum(peer, |r| r.drops)),
        format!(
            "{}/{}",
            sum(ours, |r| r.generator_drops),
            sum(peer, |r| r.generator_drops)
        ),
        format!("{}/{}", sum(ours, |r| r.retries), sum(peer, |r| r.retries)),
    ])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cpus = harness::cpus::allowed()?;
    if cpus.len() < 2 {
        eprintln!(
            "only CPU {cpus:?} here: testpmd and the switch share it, so both figures include the generator's time"
        );
    }
    if args.runs < 3 {
        eprintln!(
            "{} run(s): medians of fewer than 3 runs say little",
            args.runs
        );
    }
    // Measured, not read from "cpu MHz" (see datapath::cycles).
    let hz = datapath::cycles::hz();
    let before = loadavg();
    eprintln!("load average before: {before}");
    let mut results = Results::new();
    let mut config = String::new();
    for run in 1..=args.runs {
        for size in SIZES {
            for target in Target::ALL {
                eprintln!(
                    "run {run}/{}: {} at {size} bytes ...",
                    args.runs,
                    target.name()
                );
                let (r, c) = measure(target, size, &args, hz)
                    .with_context(|| format!("{} at {size} bytes", target.name()))?;
                eprintln!(
                    "  {:.3} Mpps, {:.0} cycles/frame, drops {} (generator {}), retries {}",
                    r.mpps,
                    r.cycles_per_packet.unwrap_or(0.0),
                    r.drops,
                    r.generator_drops,
                    r.retries
                );
                config = c.unwrap_or(config);
                results
                    .entry((size, target))
                    .or_insert_with(|| Series(Vec::new()))
                    .0
                    .push(r);
            }
        }
    }
    let context = RunContext {
        ovs_config: config,
        loadavg: [before, loadavg()],
    };
    eprintln!("load average after: {}", context.loadavg[1]);
    let mut rows = Vec::new();
    for size in SIZES {
        rows.push(record(&results, size, &args, &context)?);
    }
    print_table(
        &[
            "frames",
            "sfera Mpps",
            "ovs Mpps",
            "ceiling Mpps",
            "Mpps ratio",
            "sfera cyc/pkt",
            "ovs cyc/pkt",
            "cyc ratio",
            "drops sfera/ovs",
            "gen drops sfera/ovs",
            "retries sfera/ovs",
        ],
        &rows,
    );
    eprintln!(
        "medians of {} runs of {} s; drops and retries are summed over the runs. The ceiling is \
         testpmd looped through a second testpmd on the switch's CPU, no switching at all.",
        args.runs, args.seconds
    );
    for size in SIZES {
        let ceiling = results[&(size, Target::Wire)].mpps();
        for t in [Target::Sfera, Target::Ovs] {
            let m = results[&(size, t)].mpps();
            if m >= GENERATOR_BOUND * ceiling {
                eprintln!(
                    "{} at {size} bytes: {m:.3} Mpps is {:.0}% of the testpmd wire's: \
                     the generator may be what is measured, not the switch",
                    t.name(),
                    100.0 * m / ceiling
                );
            }
        }
    }
    eprintln!("results in {}", results_dir().display());
    Ok(())
}
