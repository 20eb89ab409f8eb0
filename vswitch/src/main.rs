//! `sfera-vswitchd`: the virtual switch daemon, and its CLI.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};

use control::peers::ApiPeers;
use control::server::ServeOptions;
use control::shutdown::Shutdown;
use control::socket::ApiSocket;
use datapath::privileges::{self, Account, Capability};

use vswitch::cli::{self, ClientCommand};
use vswitch::control_plane::api::http::{MAX_BODY, VswitchdApi};
use vswitch::control_plane::config::SwitchConfig;
use vswitch::control_plane::daemon::{Daemon, DaemonOptions};
use vswitch::control_plane::persist::{self, Origin, StateFile};
use vswitch::control_plane::service::Vswitchd;

const DEFAULT_API: &str = "/run/sfera/vswitchd.sock";
const DEFAULT_DATA_DIR: &str = "/var/lib/sfera/vswitchd";
/// Long enough to catch a busy port's next frame without a wake-up, short
/// enough to cost little when idle (as sfera-blockd's exports).
const DEFAULT_POLL_US: u32 = 50;

#[derive(Debug, Parser)]
#[command(
    name = "sfera-vswitchd",
    version,
    about = "Sfera's virtual switch: switches, port groups and uplinks for VM NICs over vhost-user-net"
)]
struct Args {
    /// The daemon's API socket (for `serve` and the client commands).
    #[arg(long, global = true, default_value = DEFAULT_API)]
    api: PathBuf,
    /// Print the API's JSON as is.
    #[arg(long, global = true)]
    json: bool,
    /// Without a subcommand: run the switch on this configuration (JSON),
    /// without an API and without saving state.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Without a subcommand: CPU to pin the forwarding worker to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Without a subcommand: µs the worker polls after its last frame
    /// before it sleeps [default: 50].
    #[arg(long)]
    poll_us: Option<u32>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, clap::Args)]
struct RunOptions {
    /// CPU to pin the forwarding worker to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Microseconds the worker keeps polling after its last frame before it
    /// sleeps (0: sleep at once).
    #[arg(long, default_value_t = DEFAULT_POLL_US)]
    poll_us: u32,
}

impl RunOptions {
    fn daemon_options(&self) -> DaemonOptions {
        DaemonOptions {
            cpu: self.cpu,
            poll_us: self.poll_us,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the switch with its API on --api; every change is saved in the
    /// data directory and restored at start.
    Serve {
        /// Where the configuration in force is saved (vswitch-state.json).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The configuration to start with when the data directory holds
        /// none yet (default: one switch, vSwitch0, and nothing else).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        run: RunOptions,
        /// Started as root: take over the data directory, bind the API
        /// socket, then run as this user keeping only CAP_NET_ADMIN and
        /// CAP_NET_RAW, for uplinks (see docs/privileges.md).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    #[command(flatten)]
    Client(Box<ClientCommand>),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes on one line, without a backtrace:
            // this is what the user (and a supervisor's log) sees.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if args.command.is_some()
        && (args.config.is_some() || args.cpu.is_some() || args.poll_us.is_some())
    {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--config, --cpu and --poll-us before a subcommand are for running without one; \
                 `serve` takes its own",
            )
            .exit();
    }
    match args.command {
        Some(Command::Serve {
            data_dir,
            config,
            run,
            user,
        }) => {
            control::logging::init();
            privileges::private_umask();
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("Cannot create {}", data_dir.display()))?;
            // Held until the process exits.
            let _lock = persist::lock_data_dir(&data_dir)?;
            let state = StateFile::in_dir(&data_dir);
            let (initial, origin) = persist::initial_config(Some(&state), config.as_deref())
                .context("Cannot load the switch configuration")?;
            // Bound (or refused, if another daemon serves on it) before the
            // switch starts, so a second daemon leaves the first's ports
            // alone; it answers once the switch runs. Under --user, before
            // becoming the user too: the socket's directory is root's.
            let socket = control::socket::bind(&args.api)?;
            if let Some(name) = user
                && let Err(e) = become_user(&name, &args.api, &data_dir)
            {
                socket.lock.remove_socket();
                return Err(e);
            }
            run_switch(initial, &origin, &run, Some((&args.api, socket, state)))
        }
        Some(Command::Client(command)) => {
            let mut out = std::io::stdout().lock();
            Ok(cli::run(&args.api, args.json, *command, &mut out)?)
        }
        None => {
            let Some(file) = args.config else {
                bail!(
                    "Nothing to do: use `serve`, a client command, or --config FILE (see --help)"
                );
            };
            control::logging::init();
            let (initial, origin) = persist::initial_config(None, Some(&file))
                .context("Cannot load the switch configuration")?;
            let run = RunOptions {
                cpu: args.cpu,
                poll_us: args.poll_us.unwrap_or(DEFAULT_POLL_US),
            };
            run_switch(initial, &origin, &run, None)
        }
    }
}

/// Hands the data directory (and the API socket) to `name`, then becomes
/// that user keeping CAP_NET_ADMIN (TAP uplinks: TUNSETIFF, the link set
/// up) and CAP_NET_RAW (AF_PACKET uplinks), which uplinks added later
/// through the API need too. Ports' sockets need no capability.
fn become_user(name: &str, api: &Path, data_dir: &Path) -> Result<()> {
    let account = Account::lookup(name)?;
    privileges::set_mode(data_dir, 0o700)
        .with_context(|| format!("Cannot set the mode of {}", data_dir.display()))?;
    for path in [api, data_dir] {
        datapath::ownership::give_tree(path, &account)?;
    }
    privileges::become_user(
        &account,
        &[Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW],
    )?;
    Ok(())
}

/// Runs the switch (with its API when `api` is given) until SIGTERM or
/// SIGINT, then shuts it down.
fn run_switch(
    config: SwitchConfig,
    origin: &Origin,
    run: &RunOptions,
    api: Option<(&Path, ApiSocket, StateFile)>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the API runtime")?;
    let entered = runtime.enter();
    // Before the switch starts, so a signal from then on stops it cleanly.
    let mut shutdown = Shutdown::listen().context("Cannot handle SIGTERM and SIGINT")?;
    let daemon = match Daemon::start(config, run.daemon_options()) {
        Ok(daemon) => daemon,
        Err(e) => {
            if let Some((_, socket, _)) = api {
                socket.lock.remove_socket();
            }
            return Err(e).with_context(|| {
                format!("Cannot start the switch on the configuration from {origin}")
            });
        }
    };
    let Some((path, socket, state)) = api else {
        tracing::info!(%origin, "sfera-vswitchd started without an API");
        let stopped_by = runtime.block_on(shutdown.wait());
        tracing::info!(
            stats = %serde_json::to_string(&daemon.stats()).unwrap_or_default(),
            "{stopped_by}: stopping"
        );
        daemon.shutdown();
        return Ok(());
    };
    let ApiSocket { listener, lock } = socket;
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            daemon.shutdown();
            lock.remove_socket();
            return Err(e).context("Cannot serve the API socket");
        }
    };
    tracing::info!(%origin, api = %path.display(), "sfera-vswitchd started");
    let vswitchd = Arc::new(Vswitchd::new(daemon, Some(state)));
    let api = Arc::new(VswitchdApi(Arc::clone(&vswitchd)));
    let options = ServeOptions::new(MAX_BODY).with_peers(ApiPeers::new());
    let stopped_by = runtime.block_on(async {
        tokio::select! {
            () = control::server::serve(listener, api, options) => "the API server",
            signal = shutdown.wait() => signal,
        }
    });
    tracing::info!("{stopped_by}: stopping");
    // Dropping the runtime drops the connections' tasks (and waits for
    // requests being handled), which hold the other references.
    drop(shutdown);
    drop(entered);
    drop(runtime);
    match Arc::try_unwrap(vswitchd) {
        Ok(v) => v.into_daemon().shutdown(),
        Err(_) => tracing::warn!("The API still holds the switch; exiting without a shutdown"),
    }
    // Last: the lock keeps a new daemon off the socket (and the ports)
    // until this one has let them go.
    lock.remove_socket();
    Ok(())
}
