//! `sfera-tryout`: what `make run` starts until the management plane exists.
//!
//! Boots the Tiny Linux guest under QEMU TCG with its console on this
//! terminal and a persistent thin disk served over vhost-user-blk, with all
//! state under a local folder. The disk server is qemu-storage-daemon today;
//! sfera-blockd takes its place when it exists, and sfera-mgmtd then replaces
//! this program as what `make run` starts.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Parser;
use harness::guest::{ConsoleMode, Disk, GuestConfig, GuestImage};
use harness::peers::qsd::{Export, QemuStorageDaemon};
use harness::testdir::TestDir;
use harness::tools;

/// Boot the Tiny Linux VM with a disk on a local datastore folder.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Folder for the VM's disk; created if missing, kept between runs.
    #[arg(long, default_value = ".sfera/data")]
    data_dir: PathBuf,
    /// Size of the thin disk in GiB when it is first created.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    disk_gib: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(256..=16384))]
    memory_mib: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    vcpus: u8,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let image = GuestImage::locate()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let disk_path = args.data_dir.join("tiny-linux.img");
    if !disk_path.exists() {
        File::create(&disk_path)
            .and_then(|f| f.set_len(args.disk_gib << 30))
            .with_context(|| format!("cannot create {}", disk_path.display()))?;
    }

    // Sockets and logs live in a fresh run folder; the disk persists.
    let run_dir = TestDir::new("run")?;
    let qsd = QemuStorageDaemon::start(&run_dir, "vda", &Export::new(&disk_path))?;
    let config = GuestConfig::new("tiny-linux")
        .console(ConsoleMode::Terminal)
        .memory_mib(args.memory_mib)
        .vcpus(args.vcpus)
        .disk(Disk::new(qsd.socket()));

    eprintln!(
        "Sfera try-out: Tiny Linux with a {} GiB thin disk ({}) on vhost-user-blk.\n\
         The disk is /dev/vda in the guest. Ctrl-A X quits; logs in {}.",
        std::fs::metadata(&disk_path)?.len() >> 30,
        disk_path.display(),
        run_dir.path().display()
    );
    let qemu = tools::require("qemu-system-x86_64", "qemu-system-x86")?;
    let status = Command::new(qemu)
        .args(config.qemu_args(&image))
        .status()
        .context("cannot run QEMU")?;
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}
