//! Debian's cloud kernel under sfera-vmm, from the guest image `make
//! guest-image` builds: the ELF inside the bzImage boots through the PVH
//! entry, and the bzImage through the 64-bit boot protocol, and each prints
//! its early boot lines (version banner, our command line,
//! the memory map we gave it) on our serial console. On this machine's
//! paravirtual KVM, kernel code runs emulated, slowly, until the emulator
//! meets an instruction it cannot handle; the VMM then ends with status 1
//! and the reason. On hardware virtualization the same kernel boots on.
//! Slow here (minutes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::daemons::binary;
use harness::guest::GuestImage;
use harness::process::Process;
use harness::testdir::TestDir;
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
    let config = serde_json::json!({
        "vcpus": 1,
        "memory_mib": 512,
        "kernel": kernel,
        "cmdline": cmdline,
        "console": {"stdout": true},
    });
    std::fs::write(&path, config.to_string())?;
    Ok(path)
}

#[test]
fn debian_kernel_prints_its_early_boot_lines_through_pvh() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("vmm-linux-pvh")?;
    let vmlinux = dir.join("vmlinux");
    extract_vmlinux(&image.kernel, &vmlinux)?;
    boot_to_early_lines(&dir, &vmlinux, "pvh")
}

/// The bzImage itself, through the 64-bit boot protocol: its decompressor
/// runs first (emulated here: a few minutes).
#[test]
fn debian_bzimage_prints_its_early_boot_lines_through_the_64bit_entry() -> Result<()> {
    let image = GuestImage::locate()?;
    let dir = TestDir::new("vmm-linux-bzimage")?;
    boot_to_early_lines(&dir, &image.kernel, "bzimage")
}

fn boot_to_early_lines(dir: &TestDir, kernel: &Path, tag: &str) -> Result<()> {
    let cmdline =
        format!("console=ttyS0 earlyprintk=serial,ttyS0,115200 loglevel=8 sfera.test={tag}");
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
    if let Some(status) = vmm.wait_timeout(Duration::from_secs(180))? {
        let text = std::fs::read_to_string(&log)?;
        ensure!(
            status.code() == Some(1) && text.contains("the VM failed"),
            "sfera-vmm ended with {status} without a reason:\n{}",
            vmm.log_tail(20)
        );
    }
    Ok(())
}
