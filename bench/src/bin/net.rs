//! `sfera-bench-net`: sfera-vswitchd against Open vSwitch with DPDK.
//!
//! One dpdk-testpmd with two `net_virtio_user` ports plays two VMs on the
//! first CPU this process may run on and forwards in `io` mode after
//! `tx_first`, so frames circulate VM → switch → VM both ways; the switch
//! under test runs on the second (OVS: one busy-polling PMD thread, netdev
//! bridge, two dpdkvhostuserclient ports, NORMAL action; sfera-vswitchd:
//! pinned there). With one CPU both share it, and the table says so. Both
//! switches in one run, 64- and 1518-byte frames.
//!
//! Cycles per packet, counted the same way for both: TSC cycles of the
//! poll iterations that moved packets, divided by the packets. OVS reports
//! it ("avg processing cycles per packet" of `dpif-netdev/pmd-stats-show`);
//! sfera-vswitchd's worker counts it (`worker_busy_cycles` and
//! `worker_packets` of `GET /v1/stats`). The JSON also carries the whole
//! process's CPU time per packet for sfera-vswitchd (idle polling included).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::cpu::process_cpu_ns;
use bench::report::{Comparison, print_table, results_dir};
use clap::Parser;
use harness::backend::{SwitchBackend, SwitchBackendKind};
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
}

const SIZES: [usize; 2] = [64, 1518];

#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    mpps: f64,
    cycles_per_packet: f64,
    /// The switch process's CPU time per packet, in TSC cycles.
    process_cycles_per_packet: f64,
}

/// sfera-vswitchd's worker: (busy cycles, packets).
fn worker_counters(switch: &SwitchBackend) -> Result<Option<(u64, u64)>> {
    let Some(stats) = switch.sfera_stats() else {
        return Ok(None);
    };
    let stats = stats?;
    let get = |k: &str| {
        stats[k]
            .as_u64()
            .with_context(|| format!("no {k} in the stats: {stats}"))
    };
    Ok(Some((get("worker_busy_cycles")?, get("worker_packets")?)))
}

fn rx_total(testpmd: &mut Testpmd) -> Result<u64> {
    Ok(testpmd.port_stats(0)?.rx_packets + testpmd.port_stats(1)?.rx_packets)
}

fn ovs_cycles_per_packet(text: &str) -> Option<f64> {
    // "avg processing cycles per packet: 487.53 (...)"
    text.lines()
        .find_map(|l| l.split("avg processing cycles per packet:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn measure(kind: SwitchBackendKind, args: &Args) -> Result<Vec<Measured>> {
    let dir = TestDir::new("bench-net")?;
    let mut switch = SwitchBackend::start_on(kind, &dir, Some(1))?;
    let p0 = switch.attach_virtio_user(&dir, "pmd0")?;
    let p1 = switch.attach_virtio_user(&dir, "pmd1")?;
    let hugepages = Hugepages::reserve(&dir, 256)?;
    let mut testpmd = Testpmd::start(&dir, "testpmd", &hugepages, &[p0, p1], 0)?;
    testpmd.command("set fwd io")?;
    // Measured, not read from "cpu MHz" (see datapath::cycles).
    let hz = datapath::cycles::hz();
    let mut out = Vec::new();
    for size in SIZES {
        // Frame sizes include the 4-byte FCS, which virtio does not carry.
        testpmd.command(&format!("set txpkts {}", size - 4))?;
        testpmd.command("start tx_first 4")?;
        std::thread::sleep(Duration::from_secs(2));
        if let Some(ovs) = switch.ovs() {
            ovs.appctl(&["dpif-netdev/pmd-stats-clear"])?;
        }
        let pid = switch.forwarding_pid().context("switch has no process")?;
        let cpu0 = process_cpu_ns(pid)?;
        let worker0 = worker_counters(&switch)?;
        let rx0 = rx_total(&mut testpmd)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(args.seconds));
        let rx1 = rx_total(&mut testpmd)?;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu1 = process_cpu_ns(pid)?;
        let worker1 = worker_counters(&switch)?;
        let packets = rx1.saturating_sub(rx0);
        if packets == 0 {
            bail!("no frames moved through {kind:?} at {size} bytes");
        }
        let process_cycles_per_packet = (cpu1 - cpu0) as f64 / 1e9 * hz / packets as f64;
        let cycles_per_packet = match (switch.ovs(), worker0, worker1) {
            (Some(ovs), _, _) => {
                let stats = ovs.appctl(&["dpif-netdev/pmd-stats-show"])?;
                ovs_cycles_per_packet(&stats)
                    .with_context(|| format!("no cycles per packet in:\n{stats}"))?
            }
            (None, Some((c0, p0)), Some((c1, p1))) if p1 > p0 => {
                c1.wrapping_sub(c0) as f64 / (p1 - p0) as f64
            }
            _ => bail!("sfera-vswitchd's worker counted no packets at {size} bytes"),
        };
        testpmd.command("stop")?;
        out.push(Measured {
            mpps: packets as f64 / elapsed / 1e6,
            cycles_per_packet,
            process_cycles_per_packet,
        });
    }
    switch.ensure_running()?;
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cpus = harness::cpus::allowed()?;
    if cpus.len() < 2 {
        eprintln!(
            "only CPU {cpus:?} here: testpmd and the switch share it, so both figures include the generator's time"
        );
    }
    eprintln!("measuring sfera-vswitchd ...");
    let ours = measure(SwitchBackendKind::SferaVswitchd, &args)?;
    eprintln!("measuring Open vSwitch with DPDK ...");
    let peer = measure(SwitchBackendKind::OvsDpdk, &args)?;
    let mut rows = Vec::new();
    for (i, size) in SIZES.iter().enumerate() {
        let (o, p) = (ours[i], peer[i]);
        let mut mpps = Comparison::new(
            &format!("net-{size}b-mpps"),
            "Mpps",
            o.mpps,
            p.mpps,
            "ovs-dpdk",
        );
        mpps.detail("frame_bytes", *size);
        mpps.detail("seconds", args.seconds);
        mpps.write(&results_dir())?;
        let mut cpp = Comparison::new(
            &format!("net-{size}b-cycles-per-packet"),
            "cycles/packet (lower is better)",
            o.cycles_per_packet,
            p.cycles_per_packet,
            "ovs-dpdk",
        );
        cpp.detail("frame_bytes", *size);
        cpp.detail(
            "ours_method",
            "GET /v1/stats: worker_busy_cycles / worker_packets (TSC cycles of poll rounds that moved packets)",
        );
        cpp.detail(
            "ours_process_cycles_per_packet",
            o.process_cycles_per_packet,
        );
        cpp.detail(
            "peer_process_cycles_per_packet",
            p.process_cycles_per_packet,
        );
        cpp.detail(
            "peer_method",
            "ovs-appctl dpif-netdev/pmd-stats-show: avg processing cycles per packet",
        );
        cpp.write(&results_dir())?;
        rows.push(vec![
            format!("{size} B"),
            format!("{:.3}", o.mpps),
            format!("{:.3}", p.mpps),
            format!("{:.2}", mpps.ratio),
            format!("{:.0}", o.cycles_per_packet),
            format!("{:.0}", p.cycles_per_packet),
            format!("{:.2}", cpp.ratio),
            format!("{:.0}", o.process_cycles_per_packet),
        ]);
    }
    print_table(
        &[
            "frames",
            "sfera Mpps",
            "ovs Mpps",
            "Mpps ratio",
            "sfera cyc/pkt",
            "ovs cyc/pkt",
            "cyc ratio",
            "sfera process cyc/pkt",
        ],
        &rows,
    );
    eprintln!(
        "testpmd plays both VMs on CPU 0 and busy-polls: it is at 100% by design; when \
         the switch is faster than testpmd can feed it, Mpps measures testpmd."
    );
    eprintln!("results in {}", results_dir().display());
    Ok(())
}
