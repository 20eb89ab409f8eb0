//! mgmtd's state and the work behind the API: the database, the host's
//! facts, the supervised daemons and the VMs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Error;
use crate::api::login_limit::{HashGate, LoginLimiter};
use crate::blockd::Blockd;
use crate::console::Consoles;
use crate::daemon_users::DaemonUsers;
use crate::db::Db;
use crate::host::HostFacts;
use crate::host_paths::Roots;
use crate::supervisor::Supervisor;
use crate::vswitchd::Vswitchd;

/// Where things are and which programs to run.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    /// Sockets, pidfiles, VM directories.
    pub run_dir: PathBuf,
    /// Port sockets of VM NICs.
    pub net_dir: PathBuf,
    /// VM runtime directories.
    pub vms_dir: PathBuf,
    pub qemu: PathBuf,
    /// sfera-vmm.
    pub vmm: PathBuf,
    /// sfera-jailer, which starts VM processes in their sandbox.
    pub jailer: PathBuf,
    /// qemu-img, for disk image imports.
    pub qemu_img: PathBuf,
    /// Where images to import (and ISOs to boot) may be.
    pub import_dirs: Roots,
    /// Where directory datastores may be made.
    pub datastore_roots: Roots,
    /// The Tiny Linux image (vmlinuz, initrd.img).
    pub guest_dir: PathBuf,
    /// The web console's files, served at / when present.
    pub web_dir: Option<PathBuf>,
    /// The API's HTTPS certificate (none: plain HTTP).
    pub api_cert: Option<PathBuf>,
    /// How often performance samples are taken.
    pub sample_every: Duration,
    /// Who sfera-blockd and sfera-vswitchd run as (what mgmtd makes for
    /// them is given to them).
    pub users: DaemonUsers,
}

impl Paths {
    /// Where a file a VM boots from (ISO, kernel, initrd) may be: an
    /// import directory, under a datastore root, or the Tiny Linux image's
    /// directory.
    pub fn boot_dirs(&self) -> Roots {
        let guest = Roots::new(std::slice::from_ref(&self.guest_dir)).unwrap_or_default();
        self.import_dirs.union(&self.datastore_roots).union(&guest)
    }
}

/// How long an operation waits for a daemon it needs.
pub const DAEMON_WAIT: Duration = Duration::from_secs(60);

/// The management plane.
#[derive(Debug)]
pub struct Mgmt {
    pub db: Arc<Db>,
    pub host: HostFacts,
    pub paths: Paths,
    pub blockd: Blockd,
    pub blockd_supervisor: Arc<Supervisor>,
    pub vswitchd: Arc<Vswitchd>,
    /// This host's view of the cluster's store.
    pub cluster: crate::membership::Cluster,
    /// The cluster's VMs.
    pub inventory: crate::inventory::Inventory,
    /// The cluster's users and API tokens.
    pub accounts: crate::accounts::Accounts,
    /// The web's serial console hubs.
    pub consoles: Consoles,
    /// mgmtd's own metrics (`GET /metrics`).
    pub own_metrics: crate::metrics::own::OwnMetrics,
    /// Failed logins per client address and user name.
    pub login_limiter: Mutex<LoginLimiter>,
    /// Bounds the password hashing of logins.
    pub hash_gate: HashGate,
    /// A session unused this long (seconds) ends.
    pub session_idle_s: i64,
    /// The hash of each session that ends by logging out, for the console
    /// WebSockets opened with it.
    pub session_ended: tokio::sync::broadcast::Sender<String>,
    /// One lock per VM: its operations run one at a time.
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The VMs whose requests a worker of this host's VM controller is
    /// at, each with whether more came meanwhile.
    vm_workers: Mutex<HashMap<String, bool>>,
    /// The VMs mgmtd paused because their datastore is out of space.
    pub(crate) no_space: Mutex<crate::vm::no_space::NoSpacePauses>,
}

impl Mgmt {
    pub fn new(
        db: Arc<Db>,
        host: HostFacts,
        paths: Paths,
        blockd_supervisor: Arc<Supervisor>,
        vswitchd: Arc<Vswitchd>,
        cluster: crate::membership::Cluster,
        session_idle_s: i64,
    ) -> Self {
        let inventory =
            crate::inventory::Inventory::new(cluster.store.clone(), cluster.host.clone());
        let accounts = crate::accounts::Accounts::new(cluster.store.clone());
        Mgmt {
            db,
            host,
            paths,
            cluster,
            inventory,
            accounts,
            blockd: Blockd {
                api: blockd_supervisor.api(),
            },
            blockd_supervisor,
            vswitchd,
            consoles: Consoles::default(),
            own_metrics: Default::default(),
            login_limiter: Mutex::default(),
            hash_gate: HashGate::default(),
            session_idle_s,
            session_ended: tokio::sync::broadcast::channel(64).0,
            vm_locks: Mutex::new(HashMap::new()),
            vm_workers: Mutex::new(HashMap::new()),
            no_space: Mutex::default(),
        }
    }

    /// The lock of a VM's operations.
    pub fn vm_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .vm_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }

    /// The VMs the VM controller's workers are at (a poisoned lock
    /// still holds good entries).
    pub(crate) fn vm_workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.vm_workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The login limiter (a poisoned lock still holds good counts).
    pub fn login_limiter(&self) -> std::sync::MutexGuard<'_, LoginLimiter> {
        self.login_limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for sfera-blockd to be up.
    pub async fn need_blockd(&self) -> Result<(), Error> {
        self.blockd_supervisor
            .wait_running(DAEMON_WAIT)
            .await
            .map_err(Error::Unavailable)
    }

    /// Waits for sfera-vswitchd to be up.
    pub async fn need_vswitchd(&self) -> Result<(), Error> {
        self.vswitchd
            .supervisor
            .wait_running(DAEMON_WAIT)
            .await
            .map_err(Error::Unavailable)
    }

    /// Refreshes the datastore mirror from sfera-blockd; the mirror as it
    /// was (marked stale) when blockd cannot be asked.
    pub async fn sync_datastores(&self) -> Result<(Vec<crate::db::DatastoreRow>, bool), Error> {
        match self.blockd.datastores().await {
            Ok(rows) => {
                self.db.replace_datastores(&rows)?;
                Ok((rows, false))
            }
            Err(e) => {
                tracing::warn!("Datastores from the inventory: {e}");
                Ok((self.db.datastores()?, true))
            }
        }
    }

    /// Refreshes the network mirror from sfera-vswitchd.
    pub async fn sync_networks(
        &self,
    ) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>, bool), Error> {
        match self.vswitchd.config().await {
            Ok(c) => {
                let switches = c
                    .switches
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<Vec<_>, _>>()?;
                let groups = c
                    .port_groups
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<Vec<_>, _>>()?;
                self.db.replace_networks(&switches, &groups)?;
                Ok((switches, groups, false))
            }
            Err(e) => {
                tracing::warn!("Networks from the inventory: {e}");
                let (s, g) = self.db.networks()?;
                Ok((s, g, true))
            }
        }
    }
}
