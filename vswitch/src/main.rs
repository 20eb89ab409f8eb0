//! `sfera-vswitchd`: the virtual switch daemon.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use vswitch::config::SwitchConfig;
use vswitch::daemon::{Daemon, DaemonOptions};

/// Sfera's virtual switch: VM NICs over vhost-user-net, VLANs, MAC learning.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The switch's configuration (JSON: switches, port_groups, ports).
    #[arg(long)]
    config: PathBuf,
    /// CPU to pin the forwarding worker to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Microseconds the worker keeps polling after its last frame.
    #[arg(long, default_value_t = 50)]
    poll_us: u32,
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts
/// later) and returns a function that waits for one of them.
fn block_signals() -> impl FnOnce() {
    // SAFETY: a sigset on the stack, initialised by sigemptyset before use;
    // pthread_sigmask only reads it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    move || {
        let mut sig = 0;
        // SAFETY: `set` is initialised above; `sig` is a valid out pointer.
        unsafe { libc::sigwait(&set, &mut sig) };
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config: SwitchConfig = serde_json::from_str(&text)
        .with_context(|| format!("invalid JSON in {}", args.config.display()))?;
    let wait = block_signals();
    let daemon = Daemon::start(
        config,
        DaemonOptions {
            cpu: args.cpu,
            poll_us: args.poll_us,
        },
    )?;
    tracing::info!("sfera-vswitchd running");
    wait();
    tracing::info!(
        stats = %serde_json::to_string(&daemon.stats()).unwrap_or_default(),
        "Stopping"
    );
    daemon.shutdown();
    Ok(())
}
