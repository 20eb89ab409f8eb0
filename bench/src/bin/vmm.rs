//! `sfera-bench-vmm`: sfera-vmm against QEMU (`-M microvm,pcie=on`, KVM,
//! memfd RAM), both running the same CPL3 test guest (vmm/testguest).
//!
//! - **first byte**: exec to the first console byte of the start-up probe
//!   (vmm/testguest/firstbyte.S, which writes at its third instruction and
//!   resets), read from a pipe on the VMM's stdout: the VMM's own start-up,
//!   median of `--probe-runs`. sfera-vmm runs with `--timings`, so its
//!   share is broken down by step (exec to `main`, seccomp, config, guest
//!   RAM, KVM VM and memory slots, irqchip and PIT, devices, boot loader,
//!   vCPUs, first KVM_RUN, first exit, first console byte), each the
//!   median over the runs of the time since the step before.
//! - **start**: process start to the test guest's first console line
//!   (`SFERA-TESTGUEST start`), median of several runs; the guest has
//!   virtio-rng only, and its entry runs ~26 CPL0 instructions, which this
//!   host's KVM emulates (shared/PVM.md). The console file is polled
//!   every 0.2 ms.
//! - **overhead**: the VMM's resident memory excluding guest RAM, while the
//!   guest runs a disk benchmark (devices connected, vCPU busy): the sum of
//!   `Rss` over the process's mappings in /proc/PID/smaps, minus the `Rss`
//!   of the guest RAM mapping(s) (the memfd; its pages the guest touched).
//!   Shared libraries' pages count in full (Rss, not Pss), as a lone VMM on
//!   a host would pay them.
//! - **blk**: the test guest's polled 4 KiB random reads
//!   (`blk.bench=`, depth 16, one queue) through sfera-vmm to sfera-blockd,
//!   next to the libblkio client on the same export: the VMM is not in the
//!   data path (ioeventfd/irqfd go between KVM and the backend), so the gap
//!   is the guest's own cost (a doorbell is a ~7 µs exit here, PVM.md).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::blk_load::{self, Direction, LoadSpec};
use bench::report::{Comparison, print_table, results_dir};
use clap::Parser;
use harness::blkio_client::BlkioClient;
use harness::daemons::binary;
use harness::daemons::blockd::Blockd;
use harness::peers::qsd::Export;
use harness::testdir::TestDir;
use harness::testguest::{Devices, Hypervisor, TestGuestVm, qemu_args};
use harness::vm_config::VmConfigBuilder;

/// Compare sfera-vmm with QEMU microvm on the CPL3 test guest.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Start-time runs per hypervisor (the median is reported).
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// First-byte runs per hypervisor with the start-up probe guest.
    #[arg(long, default_value_t = 21)]
    probe_runs: usize,
    /// Seconds of the guest's disk benchmark (and of libblkio's).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Requests in flight for both disk loads (the guest allows 1-16).
    #[arg(long, default_value_t = 16)]
    depth: usize,
}

const MEMORY_MIB: u64 = 256;
const PEER: Hypervisor = Hypervisor::QemuMicrovm;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds from process start to the guest's first console line.
fn start_ms(dir: &TestDir, hypervisor: Hypervisor, run: usize) -> Result<f64> {
    let name = format!("{}-start{run}", hypervisor.name());
    let devices = Devices {
        rng: true,
        ..Devices::default()
    };
    let mut vm = TestGuestVm::start(dir, &name, hypervisor, MEMORY_MIB, "require=rng", &devices)?;
    let console = dir.join(format!("{name}.console"));
    let deadline = vm.started() + Duration::from_secs(30);
    let elapsed = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("SFERA-TESTGUEST start") {
            break vm.started().elapsed();
        }
        if Instant::now() > deadline {
            bail!("{name}: no console line after 30 s:\n{}", vm.log());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let (status, report) = vm.wait_exit(Duration::from_secs(30))?;
    if report.done() != Some(true) {
        bail!("{name} ended with {status:?}:\n{}", report.text());
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of sfera-vmm's `--timings`).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The start-up probe guest, built next to the test guest.
fn probe_elf() -> Result<PathBuf> {
    let elf = harness::testguest::elf()?.with_file_name("firstbyte.elf");
    if !elf.exists() {
        bail!("{} is missing: run `make testguest`", elf.display());
    }
    Ok(elf)
}

/// One start of the probe guest: exec to its first console byte, and
/// sfera-vmm's own steps (name, ms since the step before; the first is
/// exec to `main`).
struct FirstByte {
    ms: f64,
    steps: Vec<(String, f64)>,
}

/// The command that runs the probe under `hypervisor`.
fn probe_command(dir: &TestDir, hypervisor: Hypervisor, run: usize) -> Result<Command> {
    let elf = probe_elf()?;
    let name = format!("{}-firstbyte{run}", hypervisor.name());
    Ok(match hypervisor {
        Hypervisor::SferaVmm => {
            let config = dir.join(format!("{name}.json"));
            let doc = VmConfigBuilder::new(&elf).memory_mib(MEMORY_MIB).build();
            std::fs::write(&config, serde_json::to_string(&doc)?)?;
            let mut c = Command::new(binary("sfera-vmm")?);
            c.arg("--config").arg(&config).arg("--timings");
            c.arg("--api-sock")
                .arg(dir.join(format!("{name}.api.sock")));
            c
        }
        _ => {
            let mut args = qemu_args(hypervisor, MEMORY_MIB, "", &Devices::default())?;
            let kernel = args
                .iter()
                .position(|a| a == "-kernel")
                .context("QEMU's arguments have no -kernel")?;
            args[kernel + 1] = elf.to_string_lossy().into_owned();
            let mut c = Command::new(harness::tools::require(
                "qemu-system-x86_64",
                "qemu-system-x86",
            )?);
            c.args(args);
            c
        }
    })
}

/// Starts the probe under `hypervisor` and times its first console byte.
fn first_byte(dir: &TestDir, hypervisor: Hypervisor, run: usize) -> Result<FirstByte> {
    let mut command = probe_command(dir, hypervisor, run)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let exec_ns = monotonic_ns();
    let mut child = command.spawn().context("cannot start the probe's VMM")?;
    let mut byte = [0u8; 1];
    let mut stdout = child.stdout.take().context("stdout is piped")?;
    let n = stdout.read(&mut byte)?;
    let first_ns = monotonic_ns();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if n == 0 || !rest.contains("FIRSTBYTE") {
        bail!(
            "{} ended ({:?}) without the probe's line:\n{stderr}",
            hypervisor.name(),
            output.status
        );
    }
    let mut steps = Vec::new();
    if hypervisor == Hypervisor::SferaVmm {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("{\"timings_monotonic_ns\""))
            .with_context(|| format!("no --timings line from sfera-vmm:\n{stderr}"))?;
        let doc: serde_json::Value = serde_json::from_str(line)?;
        let mut marks: Vec<(String, u64)> = doc["timings_monotonic_ns"]
            .as_object()
            .context("timings are an object")?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
        marks.sort_by_key(|(_, ns)| *ns);
        let mut before = exec_ns;
        for (step, ns) in marks {
            steps.push((step, ns.saturating_sub(before) as f64 / 1e6));
            before = ns;
        }
        steps.push((
            "to_reader".to_owned(),
            first_ns.saturating_sub(before) as f64 / 1e6,
        ));
    }
    Ok(FirstByte {
        ms: first_ns.saturating_sub(exec_ns) as f64 / 1e6,
        steps,
    })
}

/// Each step's median over the runs, in the order of the first run.
fn median_steps(runs: &[FirstByte]) -> Vec<(String, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .steps
        .iter()
        .map(|(step, _)| {
            let all = runs
                .iter()
                .filter_map(|r| r.steps.iter().find(|(s, _)| s == step).map(|(_, ms)| *ms))
                .collect();
            (step.clone(), median(all))
        })
        .collect()
}

/// The first-byte comparison, probe runs alternating between the two.
fn first_byte_comparison(dir: &TestDir, runs: usize) -> Result<Comparison> {
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for run in 0..runs {
        ours.push(first_byte(dir, Hypervisor::SferaVmm, run)?);
        peer.push(first_byte(dir, PEER, run)?);
    }
    let ours_ms: Vec<f64> = ours.iter().map(|r| r.ms).collect();
    let peer_ms: Vec<f64> = peer.iter().map(|r| r.ms).collect();
    let mut c = Comparison::new(
        "vmm-exec-to-first-console-byte",
        "ms",
        median(ours_ms.clone()),
        median(peer_ms.clone()),
        "qemu-system-x86_64 -M microvm,pcie=on (KVM)",
    );
    let breakdown = median_steps(&ours);
    eprintln!("sfera-vmm start-up, median ms per step (time since the step before):");
    for (step, ms) in &breakdown {
        eprintln!("  {step:<20} {ms:7.3}");
    }
    c.detail(
        "guest",
        "vmm/testguest/firstbyte.S: first byte at its third instruction",
    );
    c.detail(
        "ours_breakdown_ms",
        serde_json::Value::Object(
            breakdown
                .into_iter()
                .map(|(step, ms)| (step, ms.into()))
                .collect(),
        ),
    );
    c.detail("ours_runs_ms", ours_ms);
    c.detail("peer_runs_ms", peer_ms);
    c.detail("lower_is_better", true);
    c.detail("target_at_most_ms", 10);
    Ok(c)
}

/// Resident KiB of a process: in all, in its guest RAM, and by what is
/// mapped (a file's path, `[heap]`, `[stack]`, or `anonymous`), largest
/// first; and besides guest RAM, the process's own pages (`Private_*`,
/// what no other process shares) and its proportional share (`Pss`).
struct Rss {
    total_kib: u64,
    guest_kib: u64,
    private_kib: u64,
    pss_kib: u64,
    by_mapping: Vec<(String, u64)>,
}

fn rss_kib(pid: u32, guest_ram_kib: u64) -> Result<Rss> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("cannot read /proc/{pid}/smaps"))?;
    let (mut total, mut guest, mut private, mut pss) = (0, 0, 0, 0);
    let mut is_guest_ram = false;
    let mut mapping = String::new();
    let mut by_mapping = std::collections::BTreeMap::<String, u64>::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            // A mapping's header: "start-end perms offset dev inode [path]".
            let (start, end) = first.split_once('-').unwrap_or(("0", "0"));
            let size_kib = (u64::from_str_radix(end, 16).unwrap_or(0)
                - u64::from_str_radix(start, 16).unwrap_or(0))
                / 1024;
            let path = line.split_whitespace().nth(5).unwrap_or("");
            is_guest_ram = path.starts_with("/memfd:") && size_kib == guest_ram_kib;
            mapping = if path.is_empty() { "anonymous" } else { path }.to_owned();
        } else if !is_guest_ram && (first == "Private_Clean:" || first == "Private_Dirty:") {
            private += words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if !is_guest_ram && first == "Pss:" {
            pss += words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += kib;
            if is_guest_ram {
                guest += kib;
            } else {
                *by_mapping.entry(mapping.clone()).or_default() += kib;
            }
        }
    }
    if guest == 0 {
        bail!("no guest RAM mapping ({guest_ram_kib} KiB memfd) in /proc/{pid}/smaps");
    }
    let mut by_mapping: Vec<_> = by_mapping.into_iter().filter(|(_, kib)| *kib > 0).collect();
    by_mapping.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    Ok(Rss {
        total_kib: total,
        guest_kib: guest,
        private_kib: private,
        pss_kib: pss,
        by_mapping,
    })
}

/// What one hypervisor did in the disk run.
struct DiskRun {
    iops: f64,
    rss: Rss,
}

impl DiskRun {
    fn overhead_kib(&self) -> u64 {
        self.rss.total_kib - self.rss.guest_kib
    }

    /// The ten largest resident mappings besides guest RAM, as JSON.
    fn largest_mappings(&self) -> serde_json::Value {
        let top = self.rss.by_mapping.iter().take(10);
        serde_json::Value::Object(
            top.map(|(name, kib)| (name.clone(), (*kib).into()))
                .collect(),
        )
    }
}

/// The guest's polled random-read benchmark on `blockd`'s export; RSS is
/// sampled halfway through.
fn disk_run(
    dir: &TestDir,
    hypervisor: Hypervisor,
    blockd: &Blockd,
    args: &Args,
) -> Result<DiskRun> {
    let name = format!("{}-blk", hypervisor.name());
    let devices = Devices {
        disk: Some(blockd.socket().to_path_buf()),
        ..Devices::default()
    };
    let cmdline = format!(
        "require=blk blk.bench={} blk.depth={} blk.req=8",
        args.seconds * 1000,
        args.depth
    );
    let mut vm = TestGuestVm::start(dir, &name, hypervisor, MEMORY_MIB, &cmdline, &devices)?;
    vm.wait_for_line("blk id=", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(args.seconds * 500));
    let rss = rss_kib(vm.pid(), MEMORY_MIB * 1024)?;
    let (status, report) = vm.wait_exit(Duration::from_secs(args.seconds + 30))?;
    let line = report
        .line("blk bench ")
        .with_context(|| format!("{name} ({status:?}): no bench line:\n{}", report.text()))?
        .to_owned();
    let iops = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("iops="))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("{name}: {line}"))?;
    Ok(DiskRun { iops, rss })
}

fn write_image(path: &Path, mib: u64) -> Result<()> {
    // Real data, so reads do not hit holes.
    let mut f = File::create(path)?;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for _ in 0..mib {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    Ok(())
}

/// The test guest's first console line, runs alternating between the two.
fn start_line_comparison(dir: &TestDir, runs: usize) -> Result<Comparison> {
    eprintln!("measuring the test guest's start ({} runs each) ...", runs);
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for run in 0..runs {
        // Alternate, so load from other work hits both alike.
        ours.push(start_ms(dir, Hypervisor::SferaVmm, run)?);
        peer.push(start_ms(dir, PEER, run)?);
    }
    let mut c = Comparison::new(
        "vmm-start-to-first-console-line",
        "ms",
        median(ours.clone()),
        median(peer.clone()),
        "qemu-system-x86_64 -M microvm,pcie=on (KVM)",
    );
    c.detail("ours_runs_ms", ours);
    c.detail("peer_runs_ms", peer);
    c.detail("lower_is_better", true);
    c.detail("target_ratio_at_most", 0.5);
    Ok(c)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = TestDir::new("bench-vmm")?;
    let mut comparisons = Vec::new();

    eprintln!(
        "measuring first console bytes of the probe guest ({} runs each) ...",
        args.probe_runs
    );
    comparisons.push(first_byte_comparison(&dir, args.probe_runs)?);

    comparisons.push(start_line_comparison(&dir, args.runs)?);

    eprintln!("measuring the disk path and resident memory ...");
    let shm = tempfile::Builder::new()
        .prefix("sfera-bench-vmm-")
        .tempdir_in("/dev/shm")
        .context("cannot make a folder in /dev/shm")?;
    let image = shm.path().join("disk.img");
    let size_mib = 256;
    write_image(&image, size_mib)?;
    let blockd = Blockd::start(&dir, "vda", &Export::new(&image))?;
    let ours = disk_run(&dir, Hypervisor::SferaVmm, &blockd, &args)?;
    let qemu = disk_run(&dir, PEER, &blockd, &args)?;
    let spec = LoadSpec {
        direction: Direction::Read,
        block_size: 4096,
        depth: args.depth,
        queues: 1,
        duration: Duration::from_secs(args.seconds),
        span: size_mib << 20,
    };
    let mut client = BlkioClient::vhost_user(blockd.socket(), 1, spec.buffer_len())?;
    let blkio = blk_load::run(&mut client, &spec)?;
    drop(client);

    let mut c = Comparison::new(
        "vmm-rss-excluding-guest-ram",
        "KiB",
        ours.overhead_kib() as f64,
        qemu.overhead_kib() as f64,
        "qemu-system-x86_64 -M microvm,pcie=on (KVM)",
    );
    c.detail("method", "sum of Rss in /proc/PID/smaps minus the Rss of the guest RAM memfd mapping, sampled halfway through the guest's disk benchmark");
    c.detail("ours_rss_total_kib", ours.rss.total_kib);
    c.detail("ours_guest_ram_rss_kib", ours.rss.guest_kib);
    c.detail("ours_largest_mappings_kib", ours.largest_mappings());
    c.detail("ours_private_kib_excluding_guest_ram", ours.rss.private_kib);
    c.detail("ours_pss_kib_excluding_guest_ram", ours.rss.pss_kib);
    c.detail("peer_private_kib_excluding_guest_ram", qemu.rss.private_kib);
    c.detail("peer_pss_kib_excluding_guest_ram", qemu.rss.pss_kib);
    c.detail("peer_rss_total_kib", qemu.rss.total_kib);
    c.detail("peer_guest_ram_rss_kib", qemu.rss.guest_kib);
    c.detail("peer_largest_mappings_kib", qemu.largest_mappings());
    c.detail("lower_is_better", true);
    c.detail("target_at_most_kib", 3 * 1024);
    comparisons.push(c);

    let name = format!("vmm-guest-randread-4k-qd{}-polled", args.depth);
    let mut c = Comparison::new(
        &name,
        "IOPS",
        ours.iops,
        blkio.iops(),
        "libblkio virtio-blk-vhost-user client on the same export",
    );
    c.detail("qemu_microvm_guest_iops", qemu.iops);
    c.detail("ratio_to_qemu_guest", ours.iops / qemu.iops.max(1.0));
    c.detail("blkio_p50_us", blkio.percentile_us(50.0));
    c.detail("seconds", args.seconds);
    comparisons.push(c);

    let mut rows = Vec::new();
    for c in &comparisons {
        c.write(&results_dir())?;
        rows.push(vec![
            c.name.clone(),
            c.unit.clone(),
            format!("{:.1}", c.ours),
            format!("{:.1}", c.peer),
            format!("{:.2}", c.ratio),
            c.peer_name.clone(),
        ]);
    }
    rows.push(vec![
        name.replace("vmm-guest", "qemu-guest"),
        "IOPS".to_owned(),
        format!("{:.1}", qemu.iops),
        format!("{:.1}", blkio.iops()),
        format!("{:.2}", qemu.iops / blkio.iops().max(1.0)),
        "(QEMU microvm's guest vs libblkio)".to_owned(),
    ]);
    print_table(
        &["measure", "unit", "sfera-vmm", "peer", "ratio", "peer"],
        &rows,
    );
    eprintln!("results in {}", results_dir().display());
    Ok(())
}
