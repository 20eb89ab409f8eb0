//! `sfera-blockd`: serves volumes to VMs over vhost-user-blk.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use blockstore::vhost_blk::{BlkDevice, ExportOptions, ExportServer};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Sfera's datastore daemon: volumes over vhost-user-blk from io_uring"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Export one file or block device on a vhost-user-blk socket, serving
    /// frontends one after another until killed.
    Export {
        /// The file or block device.
        #[arg(long)]
        image: PathBuf,
        /// The socket to listen on.
        #[arg(long)]
        socket: PathBuf,
        /// Request queues (1 to 16).
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// Refuse writes.
        #[arg(long)]
        read_only: bool,
        /// Logical block size the guest uses (512 or 4096).
        #[arg(long, default_value_t = 512)]
        blk_size: u32,
        /// Serial number returned by GET_ID.
        #[arg(long, default_value = "sfera")]
        serial: String,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Args::parse().command {
        Command::Export {
            image,
            socket,
            queues,
            read_only,
            blk_size,
            serial,
        } => {
            let options = ExportOptions {
                num_queues: queues,
                read_only,
                blk_size,
                serial,
            };
            let device = BlkDevice::new(&image, &options)
                .with_context(|| format!("cannot export {}", image.display()))?;
            tracing::info!(image = %image.display(), socket = %socket.display(), ?options, "Exporting");
            let server = ExportServer::start(device, &socket)
                .with_context(|| format!("cannot serve on {}", socket.display()))?;
            server.join();
            Ok(())
        }
    }
}
