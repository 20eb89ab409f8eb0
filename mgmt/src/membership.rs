//! This host's place in the cluster (docs/cluster.md): the etcd member it
//! runs, its connection to the cluster's store, and the lease that says it
//! is alive.
//!
//! `<data>/cluster.json` holds the host's name in the cluster, the etcd
//! endpoints it talks to and, when it runs a member, that member's
//! settings. A host started for the first time with nothing else said
//! starts a new one-member cluster on loopback ports picked then and kept
//! in that file, so a restarted member keeps its URLs.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cluster::member::free_port_on;
use cluster::{Batch, Lease, LeaseState, MemberConfig, MemberTls, Store, TlsDir, pki};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::db::{Db, now};
use crate::host::HostFacts;
use crate::supervisor::{DaemonSpec, Readiness};

/// Every key of Sfera's records starts with this.
pub const PREFIX: &str = "/sfera/";
/// A host whose lease is not renewed for this long is not responding.
pub const HOST_TTL: Duration = Duration::from_secs(6);
/// How long mgmtd waits at start for the cluster's store to answer (its
/// own member's first start included).
pub const CONNECT_WITHIN: Duration = Duration::from_secs(60);
/// The name of the file under the data directory.
const FILE: &str = "cluster.json";

/// `<data>/cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// This host's name in the cluster.
    pub host: String,
    /// This host's identity, random at first start: another host given
    /// the same name is told apart and refused.
    pub host_id: String,
    /// The etcd client URLs this host's mgmtd uses.
    pub endpoints: Vec<String>,
    /// The etcd member this host runs, if it runs one.
    pub member: Option<MemberSettings>,
}

/// How this host's etcd member runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    pub client_url: String,
    pub peer_url: String,
    /// The members when this one first started, `(name, peer URL)`.
    pub initial_cluster: Vec<(String, String)>,
    /// True when this member started a new cluster.
    pub new_cluster: bool,
    pub cluster_token: String,
}

impl ClusterFile {
    /// Reads `<data>/cluster.json`, or makes it: with `endpoints` given,
    /// this host uses that cluster and runs no member; otherwise it starts
    /// a new one-member cluster on `address` (loopback unless other hosts
    /// are to join).
    pub fn load_or_create(
        data_dir: &Path,
        host: &str,
        endpoints: &[String],
        address: IpAddr,
    ) -> Result<Self> {
        let path = data_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: ClusterFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not valid", path.display()))?;
                file.check()
                    .with_context(|| format!("{} is not valid", path.display()))?;
                if !endpoints.is_empty() && endpoints != file.endpoints.as_slice() {
                    bail!(
                        "--etcd-endpoints {endpoints:?} differs from the cluster this host is in ({:?}, in {}); a host changes cluster by leaving and joining",
                        file.endpoints,
                        path.display()
                    );
                }
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = if endpoints.is_empty() {
                    Self::new_local(host, address)?
                } else {
                    ClusterFile {
                        host: host.to_owned(),
                        host_id: new_host_id()?,
                        endpoints: endpoints.to_vec(),
                        member: None,
                    }
                };
                file.check()?;
                file.save(data_dir)?;
                Ok(file)
            }
            Err(e) => Err(e).with_context(|| format!("Cannot read {}", path.display())),
        }
    }

    /// Writes it as `<data>/cluster.json`.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        control::files::write_atomically(&data_dir.join(FILE), &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// A new one-member cluster on ports of `address` free now.
    fn new_local(host: &str, address: IpAddr) -> Result<Self> {
        let url = |port: u16| match address {
            IpAddr::V4(a) => format!("https://{a}:{port}"),
            IpAddr::V6(a) => format!("https://[{a}]:{port}"),
        };
        let client = url(free_port_on(address)?);
        let peer = url(free_port_on(address)?);
        let token = crate::auth::new_secret()?;
        Ok(ClusterFile {
            host: host.to_owned(),
            host_id: new_host_id()?,
            endpoints: vec![client.clone()],
            member: Some(MemberSettings {
                client_url: client,
                peer_url: peer.clone(),
                initial_cluster: vec![(host.to_owned(), peer)],
                new_cluster: true,
                cluster_token: token.chars().take(16).collect(),
            }),
        })
    }

    fn check(&self) -> Result<()> {
        if let Some(why) = control::names::problem(&self.host) {
            bail!("host name {:?}: {why}", self.host);
        }
        if self.endpoints.is_empty() {
            bail!("no etcd endpoint");
        }
        for url in &self.endpoints {
            check_url(url)?;
        }
        if let Some(m) = &self.member {
            check_url(&m.client_url)?;
            check_url(&m.peer_url)?;
        }
        Ok(())
    }

    /// The supervised etcd member's spec, if this host runs one: its data
    /// in `<data>/etcd`, its pidfile in the run directory beside the other
    /// daemons', TLS with the cluster's certificates (made here when this
    /// host starts a new cluster).
    pub fn member_spec(
        &self,
        data_dir: &Path,
        run_dir: &Path,
        logs: &Path,
    ) -> Result<Option<DaemonSpec>> {
        let Some(m) = self.member.as_ref() else {
            return Ok(None);
        };
        let tls = tls_dir(data_dir);
        if m.new_cluster {
            let sans = [m.client_url.as_str(), m.peer_url.as_str()].map(url_host);
            pki::ensure_member_files(&tls, &m.cluster_token, &self.host, &sans).with_context(
                || {
                    format!(
                        "Cannot make the cluster's certificates in {}",
                        tls.0.display()
                    )
                },
            )?;
        }
        let etcd_dir = data_dir.join("etcd");
        let config = MemberConfig {
            name: self.host.clone(),
            data_dir: etcd_dir.clone(),
            client_url: m.client_url.clone(),
            peer_url: m.peer_url.clone(),
            initial_cluster: m.initial_cluster.clone(),
            new_cluster: m.new_cluster,
            cluster_token: m.cluster_token.clone(),
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
            log: logs.join("etcd.log"),
            tls: Some(MemberTls {
                ca: tls.ca(),
                cert: tls.member_cert(),
                key: tls.member_key(),
            }),
        };
        Ok(Some(DaemonSpec {
            name: "etcd",
            binary: PathBuf::from(cluster::member::ETCD),
            args: config.args().into_iter().map(OsString::from).collect(),
            // Its data directory names its process in /proc.
            api: etcd_dir,
            log: logs.join("etcd.log"),
            pidfile: run_dir.join("etcd.pid"),
            ready: Readiness::Listening(url_authority(&m.client_url).to_owned()),
        }))
    }
}

/// A host's default name in the cluster: its host name up to the first
/// dot, with characters a name cannot hold replaced by `-`.
pub fn default_host_name(hostname: &str) -> String {
    let short: String = hostname
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    match short.trim_start_matches('-') {
        "" => "host".to_owned(),
        s => s.to_owned(),
    }
}

/// A new host identity: 128 random bits, hex.
pub(crate) fn new_host_id() -> Result<String> {
    Ok(crate::auth::new_secret()?.chars().take(32).collect())
}

/// `<data>/cluster-tls`.
pub fn tls_dir(data_dir: &Path) -> TlsDir {
    TlsDir(data_dir.join("cluster-tls"))
}

/// `HOST:PORT` of a URL.
fn url_authority(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

/// `HOST` of a URL.
pub(crate) fn url_host(url: &str) -> String {
    let authority = url_authority(url);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_matches(['[', ']'])
        .to_owned()
}

/// An etcd URL: `https://HOST:PORT` (or `http://` for a cluster without
/// TLS that someone else runs).
pub(crate) fn check_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        bail!("etcd URL {url:?} is not https://HOST:PORT");
    };
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => bail!("etcd URL {url:?} is not https://HOST:PORT"),
    }
}

/// Connects to the cluster's store, trying for up to `within` (a member
/// started with mgmtd needs a moment to serve).
///
/// mgmtd presents its client certificate from `<data>/cluster-tls` when the
/// endpoints are `https://`.
pub async fn connect(file: &ClusterFile, data_dir: &Path, within: Duration) -> Result<Store> {
    let tls = if file.endpoints.iter().any(|u| u.starts_with("https://")) {
        let dir = tls_dir(data_dir);
        Some(dir.client().with_context(|| {
            format!(
                "Cannot read this host's cluster certificates in {}",
                dir.0.display()
            )
        })?)
    } else {
        None
    };
    let until = tokio::time::Instant::now() + within;
    loop {
        let attempt = async {
            let store = Store::connect(&file.endpoints, PREFIX, tls.as_ref()).await?;
            // A read proves a quorum answers, not only a socket.
            store
                .get::<serde_json::Value>(&store.key("schema", "layout"))
                .await?;
            Ok::<_, cluster::StoreError>(store)
        };
        match attempt.await {
            Ok(store) => return Ok(store),
            Err(e) if tokio::time::Instant::now() < until => {
                tracing::debug!(error = %e, "The cluster store does not answer yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("Cannot reach the cluster store at {:?}", file.endpoints)
                });
            }
        }
    }
}

/// How long a joined host's member may take to catch up with the leader
/// before mgmtd gives up promoting it (and says so).
const PROMOTE_WITHIN: Duration = Duration::from_secs(120);

/// Makes this host's member, when it joined as a learner, a voting
/// member once it has caught up (etcd refuses before), and adds its client
/// URL to the endpoints mgmtd uses (and to `cluster.json`): from then on
/// the host reaches the store through its own member too.
pub async fn promote_own_member(
    store: &Store,
    file: &mut ClusterFile,
    data_dir: &Path,
) -> Result<()> {
    let Some(m) = file.member.clone() else {
        return Ok(());
    };
    if m.new_cluster {
        return Ok(());
    }
    let mut etcd = store.client();
    let until = tokio::time::Instant::now() + PROMOTE_WITHIN;
    loop {
        let list = etcd
            .member_list()
            .await
            .map_err(cluster::StoreError::from)?;
        let Some(me) = list
            .members()
            .iter()
            .find(|x| x.peer_urls().contains(&m.peer_url))
        else {
            bail!(
                "this host's etcd member ({}) is not in the cluster's member list: it was \
                 removed; the host must join again",
                m.peer_url
            );
        };
        if !me.is_learner() {
            break;
        }
        match etcd.member_promote(me.id()).await {
            Ok(_) => {
                tracing::info!(host = file.host, "This host's etcd member votes now");
                break;
            }
            Err(e) if tokio::time::Instant::now() < until => {
                tracing::info!(error = %e, "This host's etcd member is catching up");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(cluster::StoreError::from(e))
                    .context("This host's etcd member did not catch up with the cluster in time");
            }
        }
    }
    if !file.endpoints.contains(&m.client_url) {
        etcd.add_endpoint(&m.client_url)
            .await
            .map_err(cluster::StoreError::from)?;
        file.endpoints.push(m.client_url.clone());
        file.save(data_dir)?;
    }
    Ok(())
}

/// What `hosts/<host>` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    /// The identity of the host that holds the name.
    pub id: String,
    pub facts: HostFacts,
    /// When this mgmtd started (seconds since the epoch).
    pub started_at: i64,
}

/// Whether a host's mgmtd holds its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its lease is held: it runs its VMs and answers for them.
    Connected,
    /// Its lease ran out: it is down, cut off, or its mgmtd stopped.
    NotResponding,
    /// Its lease is held and it is in maintenance mode
    /// ([`crate::maintenance`]): no VM of it powers on, none is made on it.
    Maintenance,
}

/// A host of the cluster, as the API lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterHost {
    pub name: String,
    pub state: HostState,
    /// The host whose mgmtd answered
    pub this_host: bool,
    /// When its mgmtd last started (seconds since the epoch)
    pub started_at: i64,
    /// Since when and by whom it is in maintenance mode (also while it is
    /// not responding); absent when it is not
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::maintenance::Maintenance>,
    pub facts: HostFacts,
    /// What its VMs use of it, from the cluster's inventory
    pub usage: HostUsage,
}

/// What a host's VMs use of it: the basis of placing new VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HostUsage {
    /// Its VMs, of any state
    pub vms: usize,
    /// Its VMs that run or are paused
    pub vms_running: usize,
    /// The memory given to its running and paused VMs
    pub memory_allocated_bytes: u64,
    /// Its memory less that (never below zero)
    pub memory_free_bytes: u64,
    /// The vCPUs of its running and paused VMs
    pub vcpus_allocated: u64,
}

impl HostUsage {
    /// The usage of host `host` (of `memory_bytes`) by the VMs `vms`, of
    /// every host.
    pub fn of(host: &str, memory_bytes: u64, vms: &[crate::db::Vm]) -> Self {
        let mut u = HostUsage::default();
        for vm in vms.iter().filter(|v| v.host == host) {
            u.vms += 1;
            if matches!(
                vm.state,
                crate::db::VmState::Running | crate::db::VmState::Paused
            ) {
                u.vms_running += 1;
                u.memory_allocated_bytes += u64::from(vm.memory_mib) << 20;
                u.vcpus_allocated += u64::from(vm.vcpus);
            }
        }
        u.memory_free_bytes = memory_bytes.saturating_sub(u.memory_allocated_bytes);
        u
    }
}

/// This host's view of the cluster: the store, its own name in it, and
/// the etcd member it runs (if it runs one).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub store: Store,
    pub host: String,
    /// This host's `cluster.json`.
    pub file: ClusterFile,
    pub member: Option<Arc<crate::supervisor::Supervisor>>,
}

impl Cluster {
    /// Every host that ever joined, with its state, by name (its usage
    /// not counted: see [`Cluster::hosts_with_usage`]).
    pub async fn hosts(&self) -> Result<Vec<ClusterHost>, cluster::StoreError> {
        let records = self.store.list::<HostRecord>("hosts").await?;
        let alive = self.store.list::<Alive>("host-alive").await?;
        let mut maintenance = self
            .store
            .list::<crate::maintenance::Maintenance>(crate::maintenance::KIND)
            .await?;
        Ok(records
            .into_iter()
            .map(|(name, r)| {
                let maintenance = maintenance
                    .iter()
                    .position(|(m, _)| *m == name)
                    .map(|i| maintenance.swap_remove(i).1.value);
                ClusterHost {
                    state: match (alive.iter().any(|(a, _)| *a == name), &maintenance) {
                        (false, _) => HostState::NotResponding,
                        (true, None) => HostState::Connected,
                        (true, Some(_)) => HostState::Maintenance,
                    },
                    this_host: name == self.host,
                    started_at: r.value.started_at,
                    maintenance,
                    facts: r.value.facts,
                    usage: HostUsage::default(),
                    name,
                }
            })
            .collect())
    }
}

impl Cluster {
    /// [`Cluster::hosts`], each with what the VMs `vms` use of it.
    pub async fn hosts_with_usage(
        &self,
        vms: &[crate::db::Vm],
    ) -> Result<Vec<ClusterHost>, cluster::StoreError> {
        let mut hosts = self.hosts().await?;
        for h in &mut hosts {
            h.usage = HostUsage::of(&h.name, h.facts.memory_bytes, vms);
        }
        Ok(hosts)
    }
}

/// What `host-alive/<host>` holds, tied to the host's lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alive {
    pub lease: i64,
    pub since: i64,
}

/// Takes `host` as this host's name in the cluster, or refuses it when
/// another host (another identity) holds it.
pub async fn claim_name(store: &Store, file: &ClusterFile, facts: &HostFacts) -> Result<()> {
    let key = store.key("hosts", &file.host);
    let ours = HostRecord {
        name: file.host.clone(),
        id: file.host_id.clone(),
        facts: facts.clone(),
        started_at: now(),
    };
    if let Some(gone) = store
        .get::<crate::leave::RemovedHost>(&store.key("removed-hosts", &file.host))
        .await?
        && gone.value.id == file.host_id
    {
        bail!(
            "This host ({}) was removed from the cluster by {}: stop it, or clear its data \
             directory and join again with a new token (sfera host join)",
            file.host,
            gone.value.by
        );
    }
    let held = match store.get::<HostRecord>(&key).await? {
        Some(r) => r.value,
        None => match store.create(&key, &ours).await {
            Ok(_) => return Ok(()),
            // Another host took it between the read and the write.
            Err(cluster::StoreError::Exists { .. }) => store
                .get::<HostRecord>(&key)
                .await?
                .map(|r| r.value)
                .context("the host record vanished while it was claimed")?,
            Err(e) => return Err(e.into()),
        },
    };
    if held.id != file.host_id {
        bail!(
            "The host name {:?} is another host's in this cluster (hostname {}); start this host with another --host-name",
            file.host,
            held.facts.hostname
        );
    }
    Ok(())
}

/// Keeps this host's record and its lease until `shutdown`: grants a lease,
/// writes `hosts/<host>` and `host-alive/<host>` (tied to the lease), and
/// grants a new one whenever the lease is counted lost.
///
/// At shutdown the lease is revoked (the others see the host go at once)
/// only when mgmtd stops its VMs too (`stop_on_exit`). Otherwise the VMs
/// keep running for the next mgmtd, and so must the lease: it runs out by
/// itself if that mgmtd does not come back within its TTL.
pub async fn heartbeat(
    store: Store,
    host: String,
    host_id: String,
    facts: HostFacts,
    db: Arc<Db>,
    mut shutdown: watch::Receiver<bool>,
    stop_on_exit: bool,
) {
    let started_at = now();
    let mut pause = Duration::from_millis(200);
    loop {
        let lease = tokio::select! {
            l = hold(&store, &host, &host_id, &facts, started_at) => l,
            _ = shutdown.changed() => return,
        };
        let lease = match lease {
            Ok(l) => {
                pause = Duration::from_millis(200);
                l
            }
            Err(cluster::StoreError::Exists { key }) if key.contains("/removed-hosts/") => {
                let message = format!(
                    "{host} was removed from the cluster: it holds no lease and writes no \
                     record any more (stop its sfera-mgmtd; join again with a new token)"
                );
                tracing::error!("{message}");
                db.event("error", "host.removed", &host, &message, None);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot take this host's lease; trying again");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return,
                }
                pause = (pause * 2).min(HOST_TTL);
                continue;
            }
        };
        let mut state = lease.watch();
        let lost = async move {
            let _ = state.wait_for(|s| *s == LeaseState::Lost).await.map(|_| ());
        };
        tokio::select! {
            () = lost => {
                let message = format!("{host} lost its cluster lease: the cluster may count it not responding");
                tracing::error!("{message}");
                db.event("error", "host.lease_lost", &host, &message, None);
            }
            _ = shutdown.changed() => {
                if stop_on_exit {
                    let _ = lease.revoke().await;
                } else {
                    // Dropping the lease stops renewals but leaves it in etcd.
                    drop(lease);
                }
                return;
            }
        }
    }
}

/// Takes a new lease and writes this host's records with it.
async fn hold(
    store: &Store,
    host: &str,
    host_id: &str,
    facts: &HostFacts,
    started_at: i64,
) -> Result<Lease, cluster::StoreError> {
    let lease = Lease::grant(store, HOST_TTL).await?;
    let record = HostRecord {
        name: host.to_owned(),
        id: host_id.to_owned(),
        facts: facts.clone(),
        started_at,
    };
    let alive = Alive {
        lease: lease.id(),
        since: now(),
    };
    // Not once the host is removed from the cluster (crate::leave).
    let batch = Batch::new()
        .require_absent(&store.key("removed-hosts", host))
        .put(&store.key("hosts", host), &record, None)?
        .put(&store.key("host-alive", host), &alive, Some(lease.id()))?;
    if let Err(e) = store.commit(batch).await {
        let _ = lease.revoke().await;
        return Err(e);
    }
    tracing::info!(
        host,
        lease = lease.id(),
        "This host's cluster lease is held"
    );
    Ok(lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_new_host_starts_a_one_member_cluster_and_keeps_its_ports() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterFile::load_or_create(dir.path(), "esx1", &[], LOOPBACK).unwrap();
        let m = first.member.clone().unwrap();
        assert_eq!(first.endpoints, vec![m.client_url.clone()]);
        assert!(m.new_cluster);
        assert_eq!(
            m.initial_cluster,
            vec![("esx1".to_owned(), m.peer_url.clone())]
        );
        // The second start reads the same settings.
        let again = ClusterFile::load_or_create(dir.path(), "esx1", &[], LOOPBACK).unwrap();
        assert_eq!(again, first);
        let spec = first
            .member_spec(dir.path(), dir.path(), dir.path())
            .unwrap()
            .unwrap();
        assert!(m.client_url.starts_with("https://127.0.0.1:"));
        assert!(
            tls_dir(dir.path()).client().is_ok(),
            "the certificates are made"
        );
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect();
        assert!(args.contains(&format!("--listen-client-urls={}", m.client_url)));
        assert!(args.contains(&"--initial-cluster-state=new".to_owned()));
    }

    #[test]
    fn a_host_of_another_cluster_runs_no_member_and_cannot_be_moved_by_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let urls = vec!["http://10.0.0.1:2379".to_owned()];
        let f = ClusterFile::load_or_create(dir.path(), "esx2", &urls, LOOPBACK).unwrap();
        assert!(f.member.is_none());
        assert!(
            f.member_spec(dir.path(), dir.path(), dir.path())
                .unwrap()
                .is_none()
        );
        let other = vec!["http://10.0.0.9:2379".to_owned()];
        let err = ClusterFile::load_or_create(dir.path(), "esx2", &other, LOOPBACK).unwrap_err();
        assert!(
            format!("{err:#}").contains("leaving and joining"),
            "{err:#}"
        );
    }

    fn facts(hostname: &str) -> HostFacts {
        HostFacts {
            hostname: hostname.into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            kvm: false,
            kvm_kind: "none".into(),
            default_driver: "qemu".into(),
            accel: crate::host::Accel::Tcg,
            qemu_cpu: None,
            driver_reason: String::new(),
            sfera_vmm_available: false,
        }
    }

    /// Two hosts given one name: the first keeps it (across its own
    /// restarts), the second is refused with the fix.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_name_is_one_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterFile::load_or_create(dir.path(), "esx1", &[], LOOPBACK).unwrap();
        let spec = first
            .member_spec(dir.path(), dir.path(), dir.path())
            .unwrap()
            .unwrap();
        let mut etcd = tokio::process::Command::new(&spec.binary)
            .args(&spec.args)
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcd runs (make test installs etcd-server)");
        let store = connect(&first, dir.path(), Duration::from_secs(30))
            .await
            .unwrap();
        claim_name(&store, &first, &facts("a")).await.unwrap();
        claim_name(&store, &first, &facts("a")).await.unwrap();
        let other = ClusterFile {
            host_id: new_host_id().unwrap(),
            ..first.clone()
        };
        let err = claim_name(&store, &other, &facts("b")).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("is another host's")
                && format!("{err:#}").contains("--host-name"),
            "{err:#}"
        );
        etcd.kill().await.unwrap();
    }

    #[test]
    fn a_default_host_name_is_a_valid_name() {
        assert_eq!(default_host_name("esx1.example.com"), "esx1");
        assert_eq!(default_host_name("my host"), "my-host");
        assert_eq!(default_host_name("-x"), "x");
        assert_eq!(default_host_name(""), "host");
    }

    #[test]
    fn bad_settings_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            vec!["10.0.0.1:2379".to_owned()],
            vec!["http://x:0".to_owned()],
        ] {
            let err = ClusterFile::load_or_create(dir.path(), "esx3", &bad, LOOPBACK).unwrap_err();
            assert!(format!("{err:#}").contains("https://HOST:PORT"), "{err:#}");
        }
        std::fs::write(dir.path().join(FILE), b"{\"host\": 1}").unwrap();
        let err = ClusterFile::load_or_create(dir.path(), "esx3", &[], LOOPBACK).unwrap_err();
        assert!(
            format!("{err:#}").contains("cluster.json is not valid"),
            "{err:#}"
        );
        let fresh = tempfile::tempdir().unwrap();
        let err = ClusterFile::load_or_create(fresh.path(), "-bad", &[], LOOPBACK).unwrap_err();
        assert!(format!("{err:#}").contains("host name"), "{err:#}");
    }

    fn vm(host: &str, state: crate::db::VmState, memory_mib: u32, vcpus: u32) -> crate::db::Vm {
        crate::db::Vm {
            id: format!("vm-{host}-{memory_mib}"),
            name: format!("{host}-{memory_mib}"),
            host: host.into(),
            resource_version: 0,
            vcpus,
            memory_mib,
            boot: crate::db::Boot::Disk,
            driver: "qemu".into(),
            driver_reason: String::new(),
            state,
            pid: None,
            disks: Vec::new(),
            nics: Vec::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_hosts_usage_counts_its_running_and_paused_vms_only() {
        use crate::db::VmState;
        let vms = [
            vm("a", VmState::Running, 1024, 2),
            vm("a", VmState::Paused, 512, 1),
            vm("a", VmState::Stopped, 4096, 4),
            vm("b", VmState::Running, 2048, 8),
        ];
        let u = HostUsage::of("a", 4 << 30, &vms);
        assert_eq!(
            u,
            HostUsage {
                vms: 3,
                vms_running: 2,
                memory_allocated_bytes: 1536 << 20,
                memory_free_bytes: (4096 - 1536) << 20,
                vcpus_allocated: 3,
            }
        );
        // Overcommitted: no free memory, not a negative amount.
        assert_eq!(HostUsage::of("b", 1 << 30, &vms).memory_free_bytes, 0);
        assert_eq!(HostUsage::of("c", 1 << 30, &vms).vms, 0);
    }
}
