//! `sfera-vmm`: runs one VM, from a JSON config file (`--config`) and/or
//! driven over the REST API on a Unix socket (`--api-sock`). The process
//! exits when the VM ends: 0 for a power-off, reset or shutdown request,
//! 1 for a guest fault or a VMM error, 2 for a refused configuration.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use vmm::api::request::{ApiError, Response, VmmAction};
use vmm::api::service::{Vmm, handle};
use vmm::config::{ConsoleConfig, VmConfig, host_limits};
use vmm::seccomp;
use vmm::vm::host_max_vcpus;

#[derive(Debug, Parser)]
#[command(version, about = "Sfera's VMM: one KVM virtual machine per process")]
struct Args {
    /// Serve the control API on this Unix socket.
    #[arg(long)]
    api_sock: Option<PathBuf>,
    /// Create and boot the VM from this JSON file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the serial console goes: `stdout`, `socket:PATH`,
    /// `both:PATH`, `both` (stdout and the config's socket) or `none`
    /// (overrides the config's `console`).
    #[arg(long)]
    console: Option<String>,
    /// The seccomp filter (vmm/src/seccomp.rs): `kill` ends the process on
    /// a system call outside its list, `log` lets the call through and
    /// has the kernel log it (to find one missing), `off` installs none.
    #[arg(long, value_enum, default_value_t = SeccompArg::Kill)]
    seccomp: SeccompArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SeccompArg {
    Kill,
    Log,
    Off,
}

/// `--console`: replaces the config's console, except that plain `both`
/// keeps the config's socket and adds stdout.
#[derive(Debug, Clone)]
enum ConsoleArg {
    Set(ConsoleConfig),
    BothWithConfigSocket,
}

fn parse_console(s: &str) -> Result<ConsoleArg> {
    let set = |stdout, socket: Option<&str>| {
        ConsoleArg::Set(ConsoleConfig {
            stdout,
            socket: socket.map(PathBuf::from),
        })
    };
    Ok(match s.split_once(':') {
        None if s == "stdout" => set(true, None),
        None if s == "none" => set(false, None),
        None if s == "both" => ConsoleArg::BothWithConfigSocket,
        Some(("socket", path)) if !path.is_empty() => set(false, Some(path)),
        Some(("both", path)) if !path.is_empty() => set(true, Some(path)),
        _ => bail!("--console takes stdout, none, both, socket:PATH or both:PATH; got {s:?}"),
    })
}

/// Prints a refused request as the API would answer it, and exits.
fn refuse(e: &ApiError) -> ! {
    eprintln!("{}", e.body());
    std::process::exit(if e.status < 500 { 2 } else { 1 });
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SFERA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    // Before any thread starts, so that every thread inherits the filter.
    let seccomp = match args.seccomp {
        SeccompArg::Kill => Some(seccomp::Mode::Kill),
        SeccompArg::Log => Some(seccomp::Mode::Log),
        SeccompArg::Off => None,
    };
    if let Some(mode) = seccomp {
        seccomp::install(mode).context("Cannot sandbox sfera-vmm")?;
    }
    if args.api_sock.is_none() && args.config.is_none() {
        bail!("Nothing to do: give --config FILE and/or --api-sock PATH");
    }
    let console = args.console.as_deref().map(parse_console).transpose()?;

    let max_vcpus = host_max_vcpus().context("Cannot use KVM")?;
    let (exit_tx, exit_rx) = channel();
    let vmm = Vmm::new(host_limits(max_vcpus), exit_tx);

    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Cannot read {}", path.display()))?;
        let mut config: VmConfig = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => refuse(&ApiError::invalid(format!(
                "Invalid VM configuration in {}: {e}",
                path.display()
            ))),
        };
        match console.clone() {
            Some(ConsoleArg::Set(c)) => config.console = c,
            Some(ConsoleArg::BothWithConfigSocket) => config.console.stdout = true,
            None => {}
        }
        for action in [VmmAction::CreateVm(Box::new(config)), VmmAction::BootVm] {
            if let Err(e) = handle(&vmm, action) {
                refuse(&e);
            }
        }
    } else if console.is_some() {
        tracing::warn!("--console applies to --config; API clients set it in the VM config");
    }

    let open_connections = Arc::new(AtomicUsize::new(0));
    let _api = match &args.api_sock {
        Some(path) => Some(start_api(path, &vmm, Arc::clone(&open_connections))?),
        None => None,
    };

    let end = exit_rx
        .recv()
        .context("The VMM ended without a VM result")?;
    // Let answers in flight (the one to a shutdown request above all) go
    // out, for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(1);
    while open_connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Ok(Response::Json(info)) = handle(&vmm, VmmAction::GetVmInfo) {
        tracing::debug!("final state: {info}");
    }
    if let Some(path) = &args.api_sock {
        let _ = std::fs::remove_file(path);
    }
    if !end.clean {
        eprintln!("sfera-vmm: the VM failed: {}", end.reason);
    }
    std::process::exit(end.exit_code());
}

/// Serves the API on its own thread with a single-threaded runtime.
fn start_api(
    path: &PathBuf,
    vmm: &vmm::api::service::SharedVmm,
    open: Arc<AtomicUsize>,
) -> Result<std::thread::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("Cannot listen on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let vmm = vmm.clone();
    let thread = std::thread::Builder::new()
        .name("api".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("Cannot start the API runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("Cannot use the API socket: {e}");
                        return;
                    }
                };
                if let Err(e) = vmm::api::http::serve(listener, vmm, open).await {
                    tracing::error!("The API stopped: {e}");
                }
            });
        })?;
    Ok(thread)
}
