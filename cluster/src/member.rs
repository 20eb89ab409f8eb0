//! An etcd member this host runs: Debian's `etcd` (etcd-server 3.4), one
//! process per host, its data in the host's data directory.
//!
//! A host that starts a cluster runs the first member with
//! `--initial-cluster-state new`; a host that joins is added to the
//! cluster's member list first and then starts with `existing`. A member
//! that has data already ignores both and rejoins with what it stored.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::pki::ClientTls;
use crate::store::{StoreError, deadline};

/// The etcd program Debian installs.
pub const ETCD: &str = "/usr/bin/etcd";

/// How a member starts.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The member's name in the cluster (the host's name).
    pub name: String,
    /// Where it keeps its data (`<data>/etcd`).
    pub data_dir: PathBuf,
    /// The URL clients reach it on, e.g. `http://10.0.0.1:2379`.
    pub client_url: String,
    /// The URL the other members reach it on, e.g. `http://10.0.0.1:2380`.
    pub peer_url: String,
    /// Every member at start, as `(name, peer URL)`, this one included.
    pub initial_cluster: Vec<(String, String)>,
    /// True for the first member of a new cluster.
    pub new_cluster: bool,
    /// The cluster's token: members of other clusters with the same
    /// member URLs cannot join this one by mistake.
    pub cluster_token: String,
    /// Raft's heartbeat and election timeout. etcd's defaults (100 ms,
    /// 1 s) suit a LAN; a loaded test machine needs more slack.
    pub heartbeat: Duration,
    pub election: Duration,
    /// Where the member's own log goes.
    pub log: PathBuf,
    /// TLS for clients and peers (URLs then say `https://`), accepting
    /// only certificates the cluster's authority signed.
    pub tls: Option<MemberTls>,
}

/// The member's certificate files.
#[derive(Debug, Clone)]
pub struct MemberTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl MemberConfig {
    /// The command line of the member.
    pub fn args(&self) -> Vec<String> {
        let cluster = self
            .initial_cluster
            .iter()
            .map(|(name, url)| format!("{name}={url}"))
            .collect::<Vec<_>>()
            .join(",");
        let state = if self.new_cluster { "new" } else { "existing" };
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", self.client_url),
            format!("--advertise-client-urls={}", self.client_url),
            format!("--listen-peer-urls={}", self.peer_url),
            format!("--initial-advertise-peer-urls={}", self.peer_url),
            format!("--initial-cluster={cluster}"),
            format!("--initial-cluster-state={state}"),
            format!("--initial-cluster-token={}", self.cluster_token),
            format!("--heartbeat-interval={}", self.heartbeat.as_millis()),
            format!("--election-timeout={}", self.election.as_millis()),
            // Only the v3 API; a backend of 2 GiB (etcd's default) with a
            // compaction of old revisions every hour keeps it in bounds.
            "--enable-v2=false".into(),
            "--auto-compaction-mode=periodic".into(),
            "--auto-compaction-retention=1h".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ];
        if let Some(tls) = &self.tls {
            let (ca, cert, key) = (tls.ca.display(), tls.cert.display(), tls.key.display());
            args.extend([
                format!("--trusted-ca-file={ca}"),
                format!("--cert-file={cert}"),
                format!("--key-file={key}"),
                "--client-cert-auth=true".into(),
                format!("--peer-trusted-ca-file={ca}"),
                format!("--peer-cert-file={cert}"),
                format!("--peer-key-file={key}"),
                "--peer-client-cert-auth=true".into(),
            ]);
        }
        args
    }
}

/// Errors of running a member.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("cannot start {ETCD} (is Debian's etcd-server installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("cannot prepare {path}")]
    Prepare {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd member {name} exited during start-up ({status}); its log is {log}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("etcd member {name} did not answer within {secs} s; its log is {log}")]
    NotReady {
        name: String,
        secs: u64,
        log: String,
    },
}

/// A running member.
#[derive(Debug)]
pub struct Member {
    config: MemberConfig,
    child: Child,
}

impl Member {
    /// Starts the member. It serves once a quorum of the cluster is up:
    /// [`Member::wait_serving`] waits for that.
    pub fn start(config: MemberConfig) -> Result<Self, MemberError> {
        prepare_dir(&config.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log)
            .map_err(|source| MemberError::Prepare {
                path: config.log.display().to_string(),
                source,
            })?;
        let child = Command::new(ETCD)
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(MemberError::Spawn)?;
        Ok(Member { config, child })
    }

    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the member answers a linearizable read (it has a
    /// leader and a quorum), up to `within`.
    /// `tls` is the client side to reach a member that speaks TLS.
    pub async fn wait_serving(
        &mut self,
        within: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<(), MemberError> {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Err(MemberError::Exited {
                    name: self.config.name.clone(),
                    status,
                    log: self.config.log.display().to_string(),
                });
            }
            if serving(&self.config.client_url, tls).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(MemberError::NotReady {
                    name: self.config.name.clone(),
                    secs: within.as_secs(),
                    log: self.config.log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the member (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on our own child's pid, which we have not
            // reaped yet, so it cannot name another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One linearizable read on `url`: Ok once the member serves.
async fn serving(url: &str, tls: Option<&ClientTls>) -> Result<(), StoreError> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(1))
        .with_require_leader(true);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options());
    }
    let mut client = deadline(etcd_client::Client::connect([url], Some(options))).await?;
    deadline(client.get("/sfera-health", None))
        .await
        .map(|_| ())
}

/// Makes the data directory: etcd refuses one others can read.
fn prepare_dir(dir: &Path) -> Result<(), MemberError> {
    crate::private_dir(dir).map_err(|source| MemberError::Prepare {
        path: dir.display().to_string(),
        source,
    })
}

/// A TCP port on 127.0.0.1 nobody listens on now (the kernel's pick), for
/// a member that only this host's mgmtd talks to.
pub fn free_loopback_port() -> std::io::Result<u16> {
    free_port_on(std::net::Ipv4Addr::LOCALHOST.into())
}

/// A TCP port on `address` (one of this host's) nobody listens on now.
pub fn free_port_on(address: std::net::IpAddr) -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind((address, 0))?;
    Ok(l.local_addr()?.port())
}
