//! `sfera-tryout`: what `make run` starts until the management plane exists.
//!
//! Starts `sfera-blockd` with its state under a local folder, makes sure a
//! datastore, the Tiny Linux VM's disk and its export exist (through the
//! daemon's CLI, on its API), and boots the Tiny Linux guest under QEMU TCG
//! with its console on this terminal and its disk on that export. The
//! state persists: the next run finds the same disk. sfera-mgmtd replaces
//! this program as what `make run` starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Parser;
use harness::daemons::{self, blockd::BlockdDaemon};
use harness::guest::{ConsoleMode, Disk, GuestConfig, GuestImage};
use harness::tools;

/// Boot the Tiny Linux VM with its disk on sfera-blockd.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Folder for all state (daemon state, datastore, sockets, logs).
    #[arg(long, default_value = ".sfera")]
    data_dir: PathBuf,
    /// Size of the VM's thin disk when it is first created (K, M, G, T).
    #[arg(long, default_value = "4G")]
    disk_size: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(256..=16384))]
    memory_mib: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    vcpus: u8,
}

const DATASTORE: &str = "local";
const VOLUME: &str = "tiny-linux/disk0";
const EXPORT: &str = "tiny-linux-disk0";

/// Runs the daemon's CLI against its API; `Ok(None)` for a 404.
fn ctl(api: &Path, args: &[&str]) -> Result<Option<String>> {
    let output = Command::new(daemons::binary("sfera-blockd")?)
        .arg("--api")
        .arg(api)
        .arg("--json")
        .args(args)
        .output()
        .context("cannot run sfera-blockd's CLI")?;
    if output.status.success() {
        return Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("HTTP 404") {
        return Ok(None);
    }
    bail!("sfera-blockd {}: {}", args.join(" "), stderr.trim())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let image = GuestImage::locate()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let root = std::path::absolute(&args.data_dir)?;
    let store = root.join("datastore");
    std::fs::create_dir_all(&store)?;

    let blockd = BlockdDaemon::start_in(&root)?;
    let api = blockd.api().to_owned();
    if ctl(&api, &["datastore", "show", DATASTORE])?.is_none() {
        ctl(
            &api,
            &["datastore", "add", DATASTORE, &store.display().to_string()],
        )?;
    }
    if ctl(&api, &["volume", "show", DATASTORE, VOLUME])?.is_none() {
        ctl(
            &api,
            &["volume", "create", DATASTORE, VOLUME, &args.disk_size],
        )?;
    }
    if ctl(&api, &["export-ctl", "show", EXPORT])?.is_none() {
        ctl(&api, &["export-ctl", "create", EXPORT, DATASTORE, VOLUME])?;
    }
    let config = GuestConfig::new("tiny-linux")
        .console(ConsoleMode::Terminal)
        .memory_mib(args.memory_mib)
        .vcpus(args.vcpus)
        .disk(Disk::new(blockd.export_socket(EXPORT)));

    eprintln!(
        "Sfera try-out: Tiny Linux with its disk {VOLUME} on datastore {DATASTORE} ({}),\n\
         served by sfera-blockd over vhost-user-blk. The disk is /dev/vda in the guest.\n\
         Ctrl-A X quits. Meanwhile: {} --api {} volume list {DATASTORE}",
        store.display(),
        daemons::binary("sfera-blockd")?.display(),
        api.display()
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
