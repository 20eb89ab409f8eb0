//! Debian's kernel prints its early boot lines under sfera-vmm as under QEMU (Linux itself).
//!
//! Debian's cloud kernel under sfera-vmm, from the guest image `make
//! guest-image` builds: the ELF inside the bzImage boots through the PVH
//! entry, and the bzImage through the 64-bit boot protocol, and each prints
//! its early boot lines (version banner, our command line,
//! the memory map we gave it) on our serial console. On this machine's
//! paravirtual KVM, kernel code runs emulated, slowly, until the emulator
//! meets an instruction it cannot handle; the VMM then ends with status 1
//! and the reason. On hardware virtualization the same kernel boots on.
//!
//! QEMU is the reference: the same kernel, entry and command line under
//! `qemu-system-x86_64 -M microvm,acpi=off` on the same KVM (microvm without
//! ACPI is the machine closest to ours: no firmware tables, no PCI BIOS).
//! Every line the kernel prints under one must be printed under the other,
//! except the lines listed in [`EXPLAINED`] with the reason they differ, and
//! both must stop at the same guest instruction. Slow here (minutes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::daemons::binary;
use harness::guest::GuestImage;
use harness::process::Process;
use harness::testdir::TestDir;
use harness::tools;
use harness::vm_config::VmConfigBuilder;
use harness::wait::wait_until;

const BOOT: Duration = Duration::from_secs(600);

/// Extracts the ELF `vmlinux` from a bzImage by finding its compressed
/// payload (LZ4 legacy, gzip, xz or zstd) and running the matching tool.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(bzimage)?;
    let formats: [(&[u8], &str, &[&str]); 4] = [
        (&[0x02, 0x21, 0x4c, 0x18], "lz4", &["-dc"]),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dc"]),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz", &["-dc"]),
        (&[0x1f, 0x8b, 0x08], "gzip", &["-dc"]),
    ];
    for (magic, tool, args) in formats {
        let Some(at) = data.windows(magic.len()).position(|w| w == magic) else {
            continue;
        };
        let payload = out.with_extension("payload");
        std::fs::write(&payload, &data[at..])?;
        // Trailing bytes after the stream make the tools complain; the
        // output is complete all the same, so the ELF magic decides.
        let _ = Command::new(tool)
            .args(args)
            .stdin(std::fs::File::open(&payload)?)
            .stdout(std::fs::File::create(out)?)
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("{tool} (Debian package {tool})"))?;
        let head = std::fs::read(out)?;
        if head.starts_with(b"\x7fELF") {
            return Ok(());
        }
    }
    bail!("no known compressed payload in {}", bzimage.display())
}

fn vmm_config(dir: &TestDir, kernel: &Path, cmdline: &str) -> Result<PathBuf> {
    let path = dir.join("vm.json");
    let config = VmConfigBuilder::new(kernel)
        .memory_mib(512)
        .cmdline(cmdline)
        .build();
    std::fs::write(&path, serde_json::to_value(config)?.to_string())?;
    Ok(path)
}

#[test]
fn debian_kernel_prints_its_early_boot_lines_through_pvh() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("vmm-linux-pvh")?;
    let vmlinux = dir.join("vmlinux");
    extract_vmlinux(&image.kernel, &vmlinux)?;
    let (ours, qemu) = boot_both(&dir, &vmlinux, "pvh")?;
    compare_with_qemu(&ours, &qemu, false)
}

/// The bzImage itself, through the 64-bit boot protocol: its decompressor
/// runs first (emulated here: a few minutes).
#[test]
fn debian_bzimage_prints_its_early_boot_lines_through_the_64bit_entry() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("vmm-linux-bzimage")?;
    let (ours, qemu) = boot_both(&dir, &image.kernel, "bzimage")?;
    compare_with_qemu(&ours, &qemu, true)
}

/// The kernel under sfera-vmm and under QEMU at the same time (each is
/// minutes of CPL0 emulation here; two CPUs take them side by side).
fn boot_both(dir: &TestDir, kernel: &Path, tag: &str) -> Result<(Boot, Boot)> {
    std::thread::scope(|s| {
        let qemu = s.spawn(|| qemu_boot(dir, kernel, &cmdline(tag)));
        let ours = boot_to_early_lines(dir, kernel, tag);
        let qemu = qemu
            .join()
            .map_err(|_| anyhow::anyhow!("the QEMU thread panicked"))?;
        Ok((ours?, qemu?))
    })
}

fn cmdline(tag: &str) -> String {
    format!("console=ttyS0 earlyprintk=serial,ttyS0,115200 loglevel=8 sfera.test={tag}")
}

/// What a boot left on the console: the kernel's lines without their
/// timestamps, and the address of the instruction the run stopped at.
#[derive(Debug)]
struct Boot {
    lines: Vec<String>,
    stopped_at: Option<u64>,
}

impl Boot {
    fn parse(text: &str, stop_marker: &str) -> Boot {
        let lines = text
            .lines()
            .filter_map(|line| {
                let rest = line.trim_start_matches(|c: char| c != '[');
                let (stamp, message) = rest.strip_prefix('[')?.split_once("] ")?;
                let stamp = stamp.trim();
                let is_stamp =
                    !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.');
                is_stamp.then(|| message.trim_end().to_owned())
            })
            .collect();
        let stopped_at = text.lines().find_map(|line| {
            let at = line.find(stop_marker)? + stop_marker.len();
            let hex: String = line[at..]
                .trim_start_matches("0x")
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect();
            u64::from_str_radix(&hex, 16).ok()
        });
        Boot { lines, stopped_at }
    }
}

/// Lines the kernel prints differently under the two VMMs, by the prefix
/// they start with, and why. Anything else that differs fails the test.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "BIOS-e820: ",
        "the memory maps differ by design: microvm maps its firmware area \
         (0x9fc00-0xfffff, part ACPI NVS) and QEMU's KVM TSS/identity-map \
         pages at 0xfeffc000; sfera-vmm keeps page 0 out of RAM and reserves \
         the legacy hole and its 32-bit PCI window from 0xe0000000",
    ),
    (
        "[mem 0x20000000-",
        "the gap left for PCI devices follows the memory map",
    ),
    (
        "Memory: ",
        "the kernel's reserved total follows the memory map (a page apart)",
    ),
    (
        "kvm-clock: using sched offset of ",
        "the time from VM creation to the kernel's first clock read",
    ),
    (
        "Disabled",
        "microvm leaves MTRRs off (no firmware programs them); sfera-vmm \
         enables them with write-back as the default type, as firmware does",
    ),
    (
        "x86/PAT: MTRRs disabled",
        "as above: with MTRRs off the kernel skips its PAT set-up",
    ),
    ("CPU MTRRs all blank", "as above"),
    (
        "x86/PAT: Configuration ",
        "as above: the kernel's PAT layout with and without MTRRs",
    ),
];

fn explained(line: &str) -> Option<&'static str> {
    EXPLAINED
        .iter()
        .find(|(prefix, _)| line.starts_with(prefix))
        .map(|(_, why)| *why)
}

/// How many times each unexplained line was printed.
fn unexplained(boot: &Boot) -> BTreeMap<&str, usize> {
    let mut lines = BTreeMap::new();
    for line in boot.lines.iter().filter(|l| explained(l).is_none()) {
        *lines.entry(line.as_str()).or_default() += 1;
    }
    lines
}

/// The granularity of the kernel's randomized virtual base.
const KASLR_ALIGN: u64 = 2 << 20;

/// Every unexplained line of one boot is in the other, as many times, and
/// both stopped at the same instruction.
fn compare_with_qemu(ours: &Boot, qemu: &Boot, kaslr: bool) -> Result<()> {
    let (mine, theirs) = (unexplained(ours), unexplained(qemu));
    let only = |a: &BTreeMap<&str, usize>, b: &BTreeMap<&str, usize>| {
        a.iter()
            .filter(|(line, n)| b.get(*line) != Some(n))
            .map(|(line, n)| format!("  {n}x {line}"))
            .collect::<Vec<_>>()
    };
    let (ours_only, qemu_only) = (only(&mine, &theirs), only(&theirs, &mine));
    ensure!(
        ours_only.is_empty() && qemu_only.is_empty(),
        "the kernel printed differently under sfera-vmm and QEMU:\n\
         only under sfera-vmm:\n{}\nonly under QEMU:\n{}",
        ours_only.join("\n"),
        qemu_only.join("\n")
    );
    ensure!(
        mine.len() >= 30,
        "too few lines to compare ({}): {:?}",
        mine.len(),
        ours.lines
    );
    for (prefix, why) in EXPLAINED {
        let seen = |b: &Boot| b.lines.iter().filter(|l| l.starts_with(prefix)).count();
        if seen(ours) + seen(qemu) > 0 {
            eprintln!("differs by design: {prefix}... ({why})");
        }
    }
    // The bzImage's decompressor moves the kernel by a random multiple of
    // 2 MiB (KASLR); the PVH entry has no decompressor, so no offset.
    let kaslr_mask = if kaslr { KASLR_ALIGN - 1 } else { u64::MAX };
    ensure!(
        ours.stopped_at.is_some()
            && ours.stopped_at.map(|a| a & kaslr_mask) == qemu.stopped_at.map(|a| a & kaslr_mask),
        "sfera-vmm stopped at {:x?}, QEMU at {:x?}",
        ours.stopped_at,
        qemu.stopped_at
    );
    eprintln!(
        "{} kernel lines alike under both; stopped at rip {:#x} (sfera-vmm) and {:#x} (QEMU)",
        mine.values().sum::<usize>(),
        ours.stopped_at.unwrap_or_default(),
        qemu.stopped_at.unwrap_or_default()
    );
    Ok(())
}

/// The same kernel under QEMU's microvm on this KVM, until its CPL0
/// emulation fails (QEMU then dumps the registers and stays paused).
fn qemu_boot(dir: &TestDir, kernel: &Path, cmdline: &str) -> Result<Boot> {
    let mut command = Command::new(tools::require("qemu-system-x86_64", "qemu-system-x86")?);
    command
        .args(harness::qemu_kvm::kvm_args()?)
        .args(["-M", "microvm,acpi=off"])
        .args(["-m", "512", "-smp", "1", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg(cmdline);
    let log = dir.join("qemu.log");
    let mut qemu = Process::spawn("qemu", command, &log)?;
    let stopped = wait_until("QEMU's register dump", BOOT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("Code=")) {
            return Ok(Some(true));
        }
        Ok(qemu.try_wait()?.map(|_| false))
    })
    .with_context(|| qemu.log_tail(40))?;
    qemu.kill()?;
    ensure!(
        stopped,
        "QEMU ended without a register dump:\n{}",
        qemu.log_tail(40)
    );
    Ok(Boot::parse(&std::fs::read_to_string(&log)?, "RIP="))
}

fn boot_to_early_lines(dir: &TestDir, kernel: &Path, tag: &str) -> Result<Boot> {
    let cmdline = cmdline(tag);
    let config = vmm_config(dir, kernel, &cmdline)?;
    let mut command = Command::new(binary("sfera-vmm")?);
    command.arg("--config").arg(&config);
    let log = dir.join("vmm.log");
    let mut vmm = Process::spawn("sfera-vmm", command, &log)?;
    let wanted = [
        "Linux version ".to_owned(),
        format!("Command line: {cmdline}"),
        "BIOS-e820: [mem 0x0000000000001000-0x000000000009fbff] usable".to_owned(),
        "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved".to_owned(),
        "BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable".to_owned(),
        "BIOS-e820: [mem 0x00000000e0000000-0x00000000ffffffff] reserved".to_owned(),
        "Hypervisor detected: KVM".to_owned(),
    ];
    let seen = wait_until("the kernel's early boot lines", BOOT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if wanted.iter().all(|w| text.contains(w.as_str())) {
            return Ok(Some(true));
        }
        Ok(vmm.try_wait()?.map(|_| false))
    });
    match seen {
        Ok(true) => {}
        Ok(false) => bail!(
            "sfera-vmm ended before the kernel printed all of {wanted:?}:\n{}",
            vmm.log_tail(60)
        ),
        Err(e) => bail!("{e}\n--- log ---\n{}", vmm.log_tail(60)),
    }
    // Where the kernel stops is this host's business: on this paravirtual
    // KVM the CPL0 emulator gives up and the VMM must say so and exit 1.
    let status = vmm
        .wait_timeout(Duration::from_secs(300))?
        .with_context(|| format!("sfera-vmm still running:\n{}", vmm.log_tail(20)))?;
    let text = std::fs::read_to_string(&log)?;
    ensure!(
        status.code() == Some(1) && text.contains("the VM failed"),
        "sfera-vmm ended with {status} without a reason:\n{}",
        vmm.log_tail(20)
    );
    Ok(Boot::parse(&text, " rip="))
}
