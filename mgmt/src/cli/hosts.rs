//! `sfera host ...` beyond the list: join tokens, joining this host,
//! removing a host, and maintenance mode.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::Method;
use mgmt::client::Client;
use mgmt::join::{JoinPlan, JoinTokenCreate};

#[derive(Debug, Subcommand)]
pub(crate) enum HostCmd {
    List,
    /// Make a join token for a new host on the host this CLI talks to (an
    /// administrator's); it is printed once.
    JoinToken {
        /// Seconds it stays valid (60 to 86400; default 3600).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Join THIS host, whose mgmtd is stopped and has never run or has
    /// left its cluster, to the cluster of the mgmtd at URL; then start
    /// mgmtd. Runs locally as root: it writes into the data directory.
    Join(JoinArgs),
    /// Remove host NAME from the cluster, through another host (the one
    /// this CLI talks to): refused while NAME has VMs. Stop NAME's mgmtd
    /// afterwards; it writes nothing into the cluster any more.
    Remove {
        name: String,
    },
    /// Put host NAME in maintenance mode (`enter`: no VM of it powers on,
    /// none is made on it; refused while one of its VMs runs) or take it
    /// out (`exit`).
    Maintenance {
        #[arg(value_enum)]
        action: MaintenanceAction,
        name: String,
    },
}

/// `sfera host maintenance enter|exit`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum MaintenanceAction {
    Enter,
    Exit,
}

/// `sfera host join`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct JoinArgs {
    /// https://HOST:PORT of a member host's mgmtd.
    url: String,
    /// The join token (from `sfera host join-token`), in this file.
    #[arg(long)]
    token_file: PathBuf,
    /// This host's mgmtd data directory.
    #[arg(long, default_value = "/var/lib/sfera")]
    data_dir: PathBuf,
    /// This host's name in the cluster (default: its host name).
    #[arg(long)]
    host_name: Option<String>,
    /// The address this host's etcd member listens on, one the other
    /// hosts reach.
    #[arg(long)]
    address: std::net::IpAddr,
}

/// `sfera host join-token`.
pub(crate) async fn join_token(client: &Client, ttl: Option<u64>, json_out: bool) -> Result<()> {
    let made = client
        .call_with(
            Method::POST,
            "/api/v1/cluster/join-tokens",
            &JoinTokenCreate { ttl_s: ttl },
        )
        .await?;
    if json_out {
        crate::print_value(&made, json_out);
    } else {
        crate::print(made["token"].as_str().context("no token")?);
        eprintln!(
            "Valid until {} (seconds since the epoch); it admits one host.",
            made["expires_at"]
        );
    }
    Ok(())
}

/// `sfera host join`: on this host's files, before its mgmtd starts.
pub(crate) async fn join(a: JoinArgs, json_out: bool) -> Result<()> {
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("Cannot read {}", a.token_file.display()))?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = a
        .host_name
        .unwrap_or_else(|| mgmt::membership::default_host_name(hostname.trim()));
    let plan = JoinPlan {
        url: &a.url,
        token: token.trim(),
        host: &host,
        address: a.address,
    };
    let file = mgmt::join::join(&a.data_dir, &plan).await?;
    if json_out {
        crate::print_value(
            &serde_json::json!({ "host": file.host, "endpoints": file.endpoints }),
            json_out,
        );
    } else {
        eprintln!(
            "Host {} joined the cluster at {}; start sfera-mgmtd (--data-dir {}) to bring it in",
            file.host,
            a.url,
            a.data_dir.display()
        );
    }
    Ok(())
}

/// `sfera host remove NAME`.
pub(crate) async fn remove(client: &Client, name: &str, json_out: bool) -> Result<()> {
    client
        .call(
            Method::DELETE,
            &format!("/api/v1/hosts/{}", mgmt::blockd::encode_segment(name)),
            None,
        )
        .await?;
    crate::changes::show(
        &serde_json::json!({ "removed": name }),
        json_out,
        &format!("Removed host {name} from the cluster: stop its sfera-mgmtd"),
    );
    Ok(())
}

/// `sfera host maintenance enter|exit NAME`.
pub(crate) async fn maintenance(
    client: &Client,
    action: MaintenanceAction,
    name: &str,
    json_out: bool,
) -> Result<()> {
    let method = match action {
        MaintenanceAction::Enter => Method::PUT,
        MaintenanceAction::Exit => Method::DELETE,
    };
    let host = client
        .call(
            method,
            &format!(
                "/api/v1/hosts/{}/maintenance",
                mgmt::blockd::encode_segment(name)
            ),
            None,
        )
        .await?;
    let said = match action {
        MaintenanceAction::Enter => format!("Host {name} is in maintenance mode"),
        MaintenanceAction::Exit => format!("Host {name} is out of maintenance mode"),
    };
    crate::changes::show(&host, json_out, &said);
    Ok(())
}
