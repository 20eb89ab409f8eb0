//! `sfera-blockd`: serves volumes to VMs over vhost-user-blk, and its CLI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hyper::Method;

use blockstore::api::http::BlockdApi;
use blockstore::api::types::{
    AddDatastore, CreateVolume, DEFAULT_POLL_US, ExportSpec, Qos, ResizeVolume,
};
use blockstore::service::{Blockd, Config};
use blockstore::vhost_blk::{BlkDevice, ExportOptions, ExportServer, RESTART_LOCK_WAIT};
use control::client::UnixApi;
use control::path::encode_segment;
use control::shutdown::Shutdown;
use control::socket::ApiSocket;
use datapath::privileges::{self, Account};

const DEFAULT_API: &str = "/run/sfera/blockd.sock";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Sfera's datastore daemon: volumes over vhost-user-blk from io_uring"
)]
struct Args {
    /// The daemon's API socket (for `serve` and the client commands).
    #[arg(long, global = true, default_value = DEFAULT_API)]
    api: PathBuf,
    /// Print the API's JSON as is.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: datastores, volumes and exports managed over the API,
    /// restored at start from the data directory.
    Serve {
        /// Persistent state.
        #[arg(long, default_value = "/var/lib/sfera/blockd")]
        data_dir: PathBuf,
        /// Export sockets.
        #[arg(long, default_value = "/run/sfera/blk")]
        run_dir: PathBuf,
        /// Started as root: take over the data directory, the run directory
        /// and the datastores, bind the API socket, then run as this user
        /// with no capabilities (see docs/privileges.md).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Export one file or block device on a socket without the API, serving
    /// frontends one after another until killed.
    Export {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        socket: PathBuf,
        /// Request queues (1 to 16).
        #[arg(long, default_value_t = 1)]
        queues: u16,
        #[arg(long)]
        read_only: bool,
        /// Logical block size the guest uses (512 or 4096).
        #[arg(long, default_value_t = 512)]
        blk_size: u32,
        /// Serial number returned by GET_ID.
        #[arg(long, default_value = "sfera")]
        serial: String,
        /// Busy-poll budget in µs after each event (0: no busy-polling).
        #[arg(long, default_value_t = DEFAULT_POLL_US)]
        poll_us: u32,
        /// CPUs to pin the queue threads to, e.g. 0,1.
        #[arg(long, value_delimiter = ',')]
        cpus: Vec<usize>,
    },
    /// Datastores.
    #[command(subcommand)]
    Datastore(DatastoreCmd),
    /// Volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Exports.
    #[command(subcommand, name = "export-ctl")]
    ExportCtl(ExportCmd),
    /// Print the Prometheus metrics.
    Metrics,
}

#[derive(Debug, Subcommand)]
enum DatastoreCmd {
    List,
    /// Register a directory (or block device) as a datastore.
    Add {
        name: String,
        path: PathBuf,
    },
    Show {
        name: String,
    },
    /// Unregister a datastore (its files stay).
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum VolumeCmd {
    List {
        datastore: String,
    },
    /// Create a thin volume; SIZE takes K, M, G, T suffixes (powers of 1024).
    Create {
        datastore: String,
        name: String,
        size: String,
    },
    Show {
        datastore: String,
        name: String,
    },
    /// Grow a volume (not while exported).
    Resize {
        datastore: String,
        name: String,
        size: String,
    },
    Delete {
        datastore: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ExportCmd {
    List,
    /// Export a volume on `<run-dir>/<ID>.sock`.
    Create {
        id: String,
        datastore: String,
        volume: String,
        #[arg(long)]
        read_only: bool,
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// IOPS limit.
        #[arg(long)]
        iops: Option<u64>,
        /// Bandwidth limit in bytes per second.
        #[arg(long)]
        bps: Option<u64>,
        /// Busy-poll budget in µs after each event.
        #[arg(long, default_value_t = DEFAULT_POLL_US)]
        poll_us: u32,
        /// CPUs to pin the queue threads to, e.g. 0,1.
        #[arg(long, value_delimiter = ',')]
        cpus: Vec<usize>,
    },
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Set the limits of a running export (no flag: no limit).
    Qos {
        id: String,
        #[arg(long)]
        iops: Option<u64>,
        #[arg(long)]
        iops_burst: Option<u64>,
        #[arg(long)]
        bps: Option<u64>,
        #[arg(long)]
        bps_burst: Option<u64>,
    },
}

/// Parses `4096`, `512K`, `10G`...
fn parse_size(text: &str) -> Result<u64> {
    Ok(control::size::parse_size(text)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let call = match args.command {
        Command::Serve {
            data_dir,
            run_dir,
            user,
        } => {
            control::logging::init();
            return serve(&args.api, Config { data_dir, run_dir }, user.as_deref());
        }
        Command::Export {
            image,
            socket,
            queues,
            read_only,
            blk_size,
            serial,
            poll_us,
            cpus,
        } => {
            control::logging::init();
            let options = ExportOptions {
                num_queues: queues,
                read_only,
                blk_size,
                serial,
                poll_us,
                cpus,
                // Started again by its supervisor after a crash, it waits
                // for its predecessor's hold on the image to go.
                lock_wait: RESTART_LOCK_WAIT,
            };
            return export(&image, &socket, options);
        }
        Command::Datastore(cmd) => datastore_call(cmd)?,
        Command::Volume(cmd) => volume_call(cmd)?,
        Command::ExportCtl(cmd) => export_call(cmd)?,
        Command::Metrics => {
            return run_client(&args.api, true, Method::GET, "/metrics", None);
        }
    };
    run_client(
        &args.api,
        args.json,
        call.method,
        &call.path,
        call.body.as_ref(),
    )
}

/// One request of a client command.
struct Call {
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
}

impl Call {
    fn new(method: Method, path: String) -> Self {
        Call {
            method,
            path,
            body: None,
        }
    }

    fn with_body(self, body: &impl serde::Serialize) -> Result<Self> {
        Ok(Call {
            body: Some(serde_json::to_value(body)?),
            ..self
        })
    }
}

fn datastore_call(cmd: DatastoreCmd) -> Result<Call> {
    let one = |name: &str| format!("/v1/datastores/{}", encode_segment(name));
    Ok(match cmd {
        DatastoreCmd::List => Call::new(Method::GET, "/v1/datastores".to_owned()),
        DatastoreCmd::Add { name, path } => {
            let path = std::path::absolute(&path)?.to_string_lossy().into_owned();
            Call::new(Method::POST, "/v1/datastores".to_owned())
                .with_body(&AddDatastore { name, path })?
        }
        DatastoreCmd::Show { name } => Call::new(Method::GET, one(&name)),
        DatastoreCmd::Remove { name } => Call::new(Method::DELETE, one(&name)),
    })
}

fn volume_call(cmd: VolumeCmd) -> Result<Call> {
    let all = |ds: &str| format!("/v1/datastores/{}/volumes", encode_segment(ds));
    let one = |ds: &str, name: &str| format!("{}/{}", all(ds), encode_segment(name));
    Ok(match cmd {
        VolumeCmd::List { datastore } => Call::new(Method::GET, all(&datastore)),
        VolumeCmd::Create {
            datastore,
            name,
            size,
        } => Call::new(Method::POST, all(&datastore)).with_body(&CreateVolume {
            name,
            size: parse_size(&size)?,
        })?,
        VolumeCmd::Show { datastore, name } => Call::new(Method::GET, one(&datastore, &name)),
        VolumeCmd::Resize {
            datastore,
            name,
            size,
        } => Call::new(Method::PATCH, one(&datastore, &name)).with_body(&ResizeVolume {
            size: parse_size(&size)?,
        })?,
        VolumeCmd::Delete { datastore, name } => Call::new(Method::DELETE, one(&datastore, &name)),
    })
}

fn export_call(cmd: ExportCmd) -> Result<Call> {
    let one = |id: &str| format!("/v1/exports/{}", encode_segment(id));
    Ok(match cmd {
        ExportCmd::List => Call::new(Method::GET, "/v1/exports".to_owned()),
        ExportCmd::Create {
            id,
            datastore,
            volume,
            read_only,
            queues,
            iops,
            bps,
            poll_us,
            cpus,
        } => Call::new(Method::POST, "/v1/exports".to_owned()).with_body(&ExportSpec {
            id,
            datastore,
            volume,
            read_only,
            queues,
            qos: Qos {
                iops,
                bytes_per_sec: bps,
                ..Qos::default()
            },
            poll_us,
            cpus,
        })?,
        ExportCmd::Show { id } => Call::new(Method::GET, one(&id)),
        ExportCmd::Delete { id } => Call::new(Method::DELETE, one(&id)),
        ExportCmd::Qos {
            id,
            iops,
            iops_burst,
            bps,
            bps_burst,
        } => Call::new(Method::PUT, format!("{}/qos", one(&id))).with_body(&Qos {
            iops,
            iops_burst,
            bytes_per_sec: bps,
            bytes_burst: bps_burst,
        })?,
    })
}

/// `sfera-blockd export`: one image on one socket, no API.
fn export(image: &Path, socket: &Path, options: ExportOptions) -> Result<()> {
    let device = BlkDevice::new(image, &options)
        .with_context(|| format!("cannot export {}", image.display()))?;
    tracing::info!(image = %image.display(), socket = %socket.display(), ?options, "Exporting");
    let server = ExportServer::start(device, socket)
        .with_context(|| format!("cannot serve on {}", socket.display()))?;
    server.join();
    Ok(())
}

/// `sfera-blockd serve`: restores the state, serves the API until SIGTERM
/// or SIGINT, then removes its socket.
fn serve(api: &Path, config: Config, user: Option<&str>) -> Result<()> {
    privileges::private_umask();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the API runtime")?;
    // From before the socket appears: a signal from then on stops the
    // daemon cleanly instead of killing it.
    let mut shutdown = {
        let _entered = runtime.enter();
        Shutdown::listen().context("cannot listen for signals")?
    };
    // The API socket appears once the state is restored (what scripts and
    // tests wait for), except under --user: it must be bound before the
    // switch to the user (its directory is root's), and answers once the
    // state is restored. A socket left by a previous run is stale once we
    // hold the state.
    let early = match user {
        Some(name) => {
            let socket = control::socket::bind(api)?;
            become_user(name, api, &config.data_dir, &config.run_dir)?;
            Some(socket)
        }
        None => None,
    };
    let blockd = Blockd::open(config).map_err(|e| anyhow::anyhow!(e.message))?;
    let ApiSocket { listener, lock } = match early {
        Some(socket) => socket,
        None => control::socket::bind(api)?,
    };
    tracing::info!(?blockd, api = %api.display(), user, "sfera-blockd started");
    let signal = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)
            .with_context(|| format!("cannot listen on {}", api.display()))?;
        let api = Arc::new(BlockdApi::new(blockd));
        tokio::select! {
            () = control::server::serve(listener, api, BlockdApi::options()) => {
                bail!("the API server stopped")
            }
            signal = shutdown.wait() => anyhow::Ok(signal),
        }
    })?;
    tracing::info!("{signal}: stopping");
    lock.remove_socket();
    Ok(())
}

/// Hands the daemon's files to `name` (state root made before the daemon
/// ran as its own user included: an upgrade keeps working), then becomes
/// that user with no capabilities: files and block devices are reached
/// through their owner and group (`disk`), io_uring needs none.
fn become_user(name: &str, api: &Path, data_dir: &Path, run_dir: &Path) -> Result<()> {
    let account = Account::lookup(name)?;
    for dir in [data_dir, run_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // VMs' processes reach their export sockets in the run directory.
    privileges::set_mode(run_dir, 0o711)
        .with_context(|| format!("cannot set the mode of {}", run_dir.display()))?;
    privileges::set_mode(data_dir, 0o700)
        .with_context(|| format!("cannot set the mode of {}", data_dir.display()))?;
    let datastores =
        blockstore::service::datastore_paths(data_dir).map_err(|e| anyhow::anyhow!(e.message))?;
    for dir in [api, data_dir, run_dir] {
        datapath::ownership::give_tree(dir, &account)?;
    }
    // One that cannot be taken over is left out at open, as one that is gone.
    for dir in &datastores {
        if let Err(e) = datapath::ownership::give_tree(dir, &account) {
            tracing::error!(datastore = %dir.display(), "{:#}", anyhow::Error::from(e));
        }
    }
    privileges::become_user(&account, &[])?;
    Ok(())
}

fn run_client(
    api: &Path,
    raw: bool,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<()> {
    let (status, text) = UnixApi::new("sfera-blockd", api)
        .call_blocking(method, path, body)
        .with_context(|| format!("is sfera-blockd running with --api {}?", api.display()))?;
    if status >= 400 {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{message} (HTTP {status})");
    }
    let out = if raw || text.is_empty() {
        text
    } else {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => serde_json::to_string_pretty(&v)?,
            Err(_) => text,
        }
    };
    if !out.is_empty() {
        // The CLI's answer is its output.
        #[allow(clippy::print_stdout)]
        {
            println!("{out}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
