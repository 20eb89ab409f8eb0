//! `sfera-vswitchd`: the virtual switch daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use vswitch::config::SwitchConfig;
use vswitch::port::{NetPort, SocketMode};
use vswitch::switch::{PortConfig, Switch};

/// Sfera's virtual switch: VM NICs over vhost-user-net, VLANs, MAC learning.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The switch's configuration (JSON: port_groups and ports).
    #[arg(long)]
    config: PathBuf,
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
    config.validate()?;

    let switch = Arc::new(Switch::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in &config.ports {
        let group = config
            .port_groups
            .iter()
            .find(|g| g.name == p.port_group)
            .context("validated: the port group exists")?;
        let (id, port) = switch.add_port(PortConfig {
            name: p.name.clone(),
            mac: p.mac.parse()?,
            vlan: group.vlan.clone(),
            security: group.security,
            mtu: p.mtu,
        });
        let device = NetPort::new(Arc::clone(&switch), id, port);
        let mode = if p.mode == "client" {
            SocketMode::Client
        } else {
            SocketMode::Server
        };
        let socket = p.socket.clone();
        let stop = Arc::clone(&stop);
        let name = p.name.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("port-{name}"))
                .spawn(move || {
                    if let Err(e) = device.serve(&socket, mode, &stop) {
                        tracing::error!(port = %name, "Port stopped: {e}");
                    }
                })?,
        );
        tracing::info!(port = %p.name, socket = %p.socket.display(), mode = %p.mode, "Port ready");
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
