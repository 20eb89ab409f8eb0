//! `sfera-bench-net`: sfera-vswitchd against Open vSwitch with DPDK.
//!
//! One dpdk-testpmd with two `net_virtio_user` ports plays two VMs on CPU 0
//! and forwards in `io` mode after `tx_first`, so frames circulate
//! VM → switch → VM both ways; the switch under test runs on CPU 1 (OVS:
//! one busy-polling PMD thread, netdev bridge, two dpdkvhostuserclient
//! ports, NORMAL action; sfera-vswitchd: pinned to CPU 1). Both switches in
//! one run, 64- and 1518-byte frames.
//!
//! Cycles per packet: OVS's own figure ("avg processing cycles per packet"
//! of `dpif-netdev/pmd-stats-show`); for sfera-vswitchd, its CPU time over
//! the interval times the TSC frequency, divided by packets (it counts idle
//! polling too, so it is an upper bound of processing cycles).

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
}

/// TSC frequency in Hz, from the kernel's reported CPU clock.
fn tsc_hz() -> Result<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo")?;
    let mhz: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz").and_then(|r| r.split(':').nth(1)))
        .and_then(|v| v.trim().parse().ok())
        .context("no 'cpu MHz' in /proc/cpuinfo")?;
    Ok(mhz * 1e6)
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
    let hz = tsc_hz()?;
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
        let rx0 = rx_total(&mut testpmd)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(args.seconds));
        let rx1 = rx_total(&mut testpmd)?;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu1 = process_cpu_ns(pid)?;
        let packets = rx1.saturating_sub(rx0);
        if packets == 0 {
            bail!("no frames moved through {kind:?} at {size} bytes");
        }
        let cycles_per_packet = match switch.ovs() {
            Some(ovs) => {
                let stats = ovs.appctl(&["dpif-netdev/pmd-stats-show"])?;
                ovs_cycles_per_packet(&stats)
                    .with_context(|| format!("no cycles per packet in:\n{stats}"))?
            }
            None => (cpu1 - cpu0) as f64 / 1e9 * hz / packets as f64,
        };
        testpmd.command("stop")?;
        out.push(Measured {
            mpps: packets as f64 / elapsed / 1e6,
            cycles_per_packet,
        });
    }
    switch.ensure_running()?;
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
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
            "CPU time of the sfera-vswitchd process x TSC Hz / packets (includes idle polling)",
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
