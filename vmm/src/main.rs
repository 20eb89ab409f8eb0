//! `sfera-vmm`: runs one VM, from a JSON config file (`--config`) and/or
//! driven over the REST API on a Unix socket (`--api-sock`). The process
//! exits when the VM ends: 0 for a power-off, reset or shutdown request,
//! 1 for a guest fault or a VMM error, 2 for a refused configuration.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use control::ApiError;
use control::server::{Reply, ServeOptions};
use control::socket::ApiSocket;
use vmm::api::http::VmmApi;
use vmm::api::request::VmmAction;
use vmm::api::service::{SharedVmm, Vmm, handle};
use vmm::config::{ConsoleConfig, ConsoleHistory, VmConfig, host_limits};
use vmm::seccomp;
use vmm::timings::{self, Step};
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
    /// When the VM ends, print on stderr one JSON line with the
    /// CLOCK_MONOTONIC time of each start-up step, from `main` to the
    /// guest's first console byte (vmm/src/timings.rs).
    #[arg(long)]
    timings: bool,
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
            history: ConsoleHistory::Replay,
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

/// Prints a refused request as the API would answer it; returns the exit
/// status it ends the process with.
fn refuse(e: &ApiError) -> i32 {
    eprintln!("{}", e.body());
    if e.status < 500 { 2 } else { 1 }
}

fn main() -> Result<()> {
    timings::mark(Step::Main);
    control::logging::init();
    let args = Args::parse();
    if args.api_sock.is_none() && args.config.is_none() {
        bail!("Nothing to do: give --config FILE and/or --api-sock PATH");
    }
    // The API socket is bound before the seccomp filter goes on, so the
    // filter need not allow what only the bind does (flock, mkdir, chmod);
    // nothing serves it until the VM is set up.
    let (listener, lock) = match &args.api_sock {
        Some(path) => {
            let ApiSocket { listener, lock } = control::socket::bind(path)
                .with_context(|| format!("Cannot serve the API on {}", path.display()))?;
            (Some(listener), Some(lock))
        }
        None => (None, None),
    };
    let outcome = run(&args, listener);
    if args.timings {
        eprintln!("{}", timings::json());
    }
    if let Some(lock) = lock {
        lock.remove_socket();
    }
    std::process::exit(outcome?);
}

/// Runs the VM until it ends; returns the process's exit status.
fn run(args: &Args, listener: Option<UnixListener>) -> Result<i32> {
    // Before any thread starts, so that every thread inherits the filter.
    let seccomp = match args.seccomp {
        SeccompArg::Kill => Some(seccomp::Mode::Kill),
        SeccompArg::Log => Some(seccomp::Mode::Log),
        SeccompArg::Off => None,
    };
    if let Some(mode) = seccomp {
        seccomp::install(mode).context("Cannot sandbox sfera-vmm")?;
    }
    timings::mark(Step::Seccomp);
    let console = args.console.as_deref().map(parse_console).transpose()?;

    let max_vcpus = host_max_vcpus().context("Cannot use KVM")?;
    let (exit_tx, exit_rx) = channel();
    let vmm = Vmm::new(host_limits(max_vcpus), exit_tx);

    if let Some(path) = &args.config {
        if let Err(e) = boot_from_file(&vmm, path, console)? {
            return Ok(refuse(&e));
        }
    } else if console.is_some() {
        tracing::warn!("--console applies to --config; API clients set it in the VM config");
    }

    let options = VmmApi::options();
    let open_connections = Arc::clone(&options.open);
    let _api = match listener {
        Some(listener) => Some(start_api(listener, &vmm, options)?),
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
    if let Ok(Reply::Json(info)) = handle(&vmm, VmmAction::GetVmInfo) {
        tracing::debug!("final state: {info}");
    }
    if !end.clean {
        eprintln!("sfera-vmm: the VM failed: {}", end.reason);
    }
    Ok(end.exit_code())
}

/// Creates and boots the VM of the config file at `path`; the inner error
/// is a refusal (the API's answer to the same request).
fn boot_from_file(
    vmm: &SharedVmm,
    path: &std::path::Path,
    console: Option<ConsoleArg>,
) -> Result<Result<(), ApiError>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("Cannot read {}", path.display()))?;
    let mut config: VmConfig = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(ApiError::invalid(format!(
                "Invalid VM configuration in {}: {e}",
                path.display()
            ))));
        }
    };
    match console {
        Some(ConsoleArg::Set(c)) => config.console = c,
        Some(ConsoleArg::BothWithConfigSocket) => config.console.stdout = true,
        None => {}
    }
    for action in [VmmAction::CreateVm(Box::new(config)), VmmAction::BootVm] {
        if let Err(e) = handle(vmm, action) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Serves the API on its own thread with a single-threaded runtime.
fn start_api(
    listener: UnixListener,
    vmm: &SharedVmm,
    options: ServeOptions,
) -> Result<std::thread::JoinHandle<()>> {
    let api = Arc::new(VmmApi::new(vmm.clone()));
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
                match tokio::net::UnixListener::from_std(listener) {
                    Ok(listener) => control::server::serve(listener, api, options).await,
                    Err(e) => tracing::error!("Cannot use the API socket: {e}"),
                }
            });
        })?;
    Ok(thread)
}
