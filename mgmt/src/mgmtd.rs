//! Starting sfera-mgmtd: its directories and database, the first admin,
//! the certificate, the supervised daemons, the VMs found running, and the
//! API server; and stopping it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use datapath::privileges::Account;

use crate::auth::{self, Role};
use crate::daemon_users::{self, DaemonUsers};
use crate::db::Db;
use crate::db::retention::Retention;
use crate::host::{self, Accel, HostFacts};
use crate::host_paths::Roots;
use crate::membership::{self, ClusterFile};
use crate::service::{Mgmt, Paths};
use crate::supervisor::{DaemonSpec, Readiness, Supervisor};
use crate::vswitchd::Vswitchd;

/// How mgmtd is run.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub listen: SocketAddr,
    /// Plain HTTP instead of HTTPS.
    pub http: bool,
    pub blockd: PathBuf,
    pub vswitchd: PathBuf,
    /// The system users they run as (`root`: as mgmtd).
    pub blockd_user: String,
    pub vswitchd_user: String,
    pub qemu: PathBuf,
    pub vmm: PathBuf,
    /// sfera-jailer.
    pub jailer: PathBuf,
    pub qemu_img: PathBuf,
    /// Where images to import and ISOs may be (empty: `<data-dir>/import`).
    pub import_dirs: Vec<PathBuf>,
    /// Where datastores may be made besides `<data-dir>/datastores`.
    pub datastore_roots: Vec<PathBuf>,
    pub guest_dir: PathBuf,
    pub web_dir: Option<PathBuf>,
    pub accel: Option<Accel>,
    /// The first administrator's password hash (argon2 PHC string), instead
    /// of a random password.
    pub admin_password_hash_file: Option<PathBuf>,
    /// How often performance samples are taken (20 s; tests take less).
    pub sample_interval: Duration,
    /// Stop the daemons and VMs when mgmtd stops (instead of leaving them
    /// for the next mgmtd to adopt).
    pub stop_on_exit: bool,
    /// A login session unused this long ends.
    pub session_idle_timeout: Duration,
    /// HTTP connections served at once.
    pub max_connections: usize,
    /// How big the daemons' and VMs' logs may grow.
    pub log_cap: crate::logs::LogCap,
    /// This host's name in the cluster (default: from the host name).
    pub host_name: Option<String>,
    /// The etcd cluster's client URLs (none: run a one-member etcd here).
    pub etcd_endpoints: Vec<String>,
    /// Where this host's etcd member listens for the other hosts.
    pub cluster_address: std::net::IpAddr,
    /// The cluster to join at the first start.
    pub join: Option<Join>,
}

/// A cluster to join: a member host's API and a join token from it.
#[derive(Debug, Clone)]
pub struct Join {
    pub url: String,
    pub token: String,
}

/// The name of the datastore made on first start.
pub const DEFAULT_DATASTORE: &str = "local";
/// How often old events and tasks are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the inventory's copy of datastores and networks is refreshed.
const SYNC_EVERY: Duration = Duration::from_secs(20);

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("Cannot create {}", p.display()))
}

/// Makes `p` (if missing) with `mode`, and sets that mode on one made
/// before (an upgrade from a release that used the umask's).
fn mkdir_mode(p: &Path, mode: u32) -> Result<()> {
    mkdir(p)?;
    datapath::privileges::set_mode(p, mode)
        .with_context(|| format!("Cannot set the mode of {}", p.display()))
}

/// The import directories and the datastore roots, made when they are
/// the defaults (the import directory private to root), resolved.
fn host_roots(o: &Options, data_dir: &Path) -> Result<(Roots, Roots)> {
    let import_dirs = if o.import_dirs.is_empty() {
        let d = data_dir.join("import");
        if !d.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .with_context(|| format!("Cannot create {}", d.display()))?;
        }
        vec![d]
    } else {
        o.import_dirs.clone()
    };
    let datastores = data_dir.join("datastores");
    mkdir_mode(&datastores, 0o711)?;
    let mut roots = vec![datastores];
    roots.extend(o.datastore_roots.iter().cloned());
    let import_dirs = Roots::new(&import_dirs).context("An import directory (--import-dir)")?;
    let roots = Roots::new(&roots).context("A datastore root (--datastore-root)")?;
    Ok((import_dirs, roots))
}

/// Moves the users and tokens of a host that ran before the cluster held
/// them into the cluster's accounts.
async fn move_local_accounts(mgmt: &Mgmt) -> Result<()> {
    let (moved, left_out) = mgmt.accounts.move_local(&mgmt.db).await?;
    if moved > 0 {
        tracing::info!(
            moved,
            "Users of the local inventory moved into the cluster's"
        );
        mgmt.db.event(
            "info",
            "inventory.upgraded",
            "mgmtd",
            &format!("{moved} users of this host's local inventory moved into the cluster's"),
            None,
        );
    }
    for name in left_out {
        tracing::warn!(
            user = name,
            "The cluster has a user of this name: this host's is left out"
        );
        mgmt.db.event(
            "warning",
            "user.left_out",
            &name,
            &format!(
                "User {name} of this host was not moved into the cluster, which has a user of \
                 that name with another password: the cluster's account stands"
            ),
            None,
        );
    }
    Ok(())
}

/// Creates the administrator when the cluster has no user yet (its first
/// host's first start): with the password hash in `hash_file` when there
/// is one, else with a random password written to
/// `<data-dir>/admin-password` (mode 0600). A host that joins a cluster
/// uses the cluster's users.
async fn first_admin(mgmt: &Mgmt, hash_file: Option<&Path>) -> Result<()> {
    let file = mgmt.paths.data_dir.join("admin-password");
    if mgmt.accounts.any_user().await? {
        return Ok(());
    }
    let (hash, password) = match hash_file {
        Some(hash_file) => {
            let hash = std::fs::read_to_string(hash_file)
                .with_context(|| format!("Cannot read {}", hash_file.display()))?;
            let hash = hash.trim().to_owned();
            auth::check_password_hash(&hash).with_context(|| {
                format!("{} holds no usable password hash", hash_file.display())
            })?;
            (hash, None)
        }
        None => {
            let password = auth::new_password()?;
            (auth::hash_password(&password)?, Some(password))
        }
    };
    // The password is on disk before the account exists, so an account is
    // never made whose password nobody can read.
    if let Some(password) = &password {
        crate::tls::write_private(&file, format!("{password}\n").as_bytes())
            .with_context(|| format!("Cannot write {}", file.display()))?;
    }
    match mgmt
        .accounts
        .create_user("admin", &hash, Role::Administrator)
        .await
    {
        Ok(_) => {}
        // Another host of a new cluster made it first: that one stands.
        Err(crate::error::Error::Conflict(_)) => {
            if password.is_some() {
                std::fs::remove_file(&file).ok();
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    if password.is_none() {
        mgmt.db.event(
            "info",
            "user.created",
            "admin",
            "First start: administrator created with the installer's password",
            None,
        );
        tracing::info!("First start: user admin created with the given password hash");
        return Ok(());
    }
    mgmt.db.event(
        "info",
        "user.created",
        "admin",
        "First start: administrator created",
        None,
    );
    tracing::info!(file = %file.display(), "First start: user admin created");
    eprintln!(
        "sfera-mgmtd: first start; the password of user 'admin' is in {}",
        file.display()
    );
    Ok(())
}

/// Where the web console's files are when `--web-dir` does not say: under
/// the data directory (`<data-dir>/web`), where an install puts them
/// (`<prefix>/share/sfera/web` for `<prefix>/bin/sfera-mgmtd`), or where
/// this build made them (`mgmt/web/dist` of the source tree).
pub fn find_web_dir(data_dir: &Path, exe_dir: &Path) -> Option<PathBuf> {
    [
        data_dir.join("web"),
        exe_dir.join("../share/sfera/web"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist"),
    ]
    .into_iter()
    .find(|d| d.join("index.html").is_file())
}

/// Runs mgmtd until SIGINT or SIGTERM.
pub async fn run(o: Options) -> Result<()> {
    let run_dir = std::path::absolute(&o.run_dir)?;
    let data_dir = std::path::absolute(&o.data_dir)?;
    // Others may pass through (the daemons' users reach their own
    // directories inside), never list or read: all in it is private.
    mkdir_mode(&data_dir, 0o711)?;
    let users = DaemonUsers::ensure(&o.blockd_user, &o.vswitchd_user).await?;
    // Before anything is made: a data directory they cannot reach is said
    // at once, with the fix.
    daemon_users::check_reachable(
        "sfera-blockd",
        users.blockd.as_ref(),
        &data_dir.join("blockd"),
    )?;
    daemon_users::check_reachable(
        "sfera-vswitchd",
        users.vswitchd.as_ref(),
        &data_dir.join("vswitchd"),
    )?;
    let paths = paths(&o, run_dir, data_dir, users)?;
    let logs = make_run_dirs(&paths)?;
    let db = Arc::new(Db::open(&paths.data_dir.join("mgmt.db"))?);
    let abandoned = db.abandon_running_tasks()?;
    if abandoned > 0 {
        tracing::warn!(abandoned, "Tasks of the previous mgmtd marked failed");
    }
    let facts = host_facts(&o, &paths, &db)?;
    let tls = tls_config(&o, &paths.data_dir, &facts.hostname)?;
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("Cannot listen on {}", o.listen))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut daemons = tokio::task::JoinSet::new();
    let cluster = join_cluster(&o, &paths, &logs, &db, &facts, &stop_rx, &mut daemons).await?;

    let blockd = blockd_supervisor(&o, &paths, &logs, &db)?;
    let vsw_supervisor = vswitchd_supervisor(&o, &paths, &logs, &db)?;
    let vswitchd = Arc::new(Vswitchd::new(Arc::clone(&vsw_supervisor)));

    daemons.spawn(Arc::clone(&blockd).run(stop_rx.clone(), o.stop_on_exit));
    daemons.spawn(Arc::clone(&vsw_supervisor).run(stop_rx.clone(), o.stop_on_exit));

    let mgmt = Arc::new(Mgmt::new(
        Arc::clone(&db),
        facts,
        paths,
        blockd,
        vswitchd,
        cluster,
        o.session_idle_timeout
            .as_secs()
            .try_into()
            .unwrap_or(i64::MAX),
    ));
    mgmt.inventory.check_schema().await?;
    let moved = mgmt.inventory.move_local_vms(&db).await?;
    if moved > 0 {
        tracing::info!(moved, "VMs of the local inventory moved into the cluster's");
        db.event(
            "info",
            "inventory.upgraded",
            "mgmtd",
            &format!("{moved} VMs of this host's local inventory moved into the cluster's"),
            None,
        );
    }
    move_local_accounts(&mgmt).await?;
    first_admin(&mgmt, o.admin_password_hash_file.as_deref()).await?;
    mgmt.adopt_vms().await?;
    spawn_background(&mgmt, &o, logs);

    announce(&o, &mgmt, &listener)?;
    let server = tokio::spawn(crate::api::server::serve(
        listener,
        tls,
        Arc::clone(&mgmt),
        crate::api::server::ConnLimits {
            max_connections: o.max_connections,
            ..Default::default()
        },
        stop_rx.clone(),
    ));

    wait_for_stop_signal().await?;
    tracing::info!("Stopping");
    if o.stop_on_exit {
        stop_vms(&mgmt).await;
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    while daemons.join_next().await.is_some() {}
    db.event("info", "mgmtd.stopped", "mgmtd", "Stopped", None);
    Ok(())
}

/// This host's place in the cluster: its etcd member started (when it runs
/// one), the store reached, and its lease and records kept from now on.
async fn join_cluster(
    o: &Options,
    paths: &Paths,
    logs: &Path,
    db: &Arc<Db>,
    facts: &HostFacts,
    stop_rx: &watch::Receiver<bool>,
    daemons: &mut tokio::task::JoinSet<()>,
) -> Result<membership::Cluster> {
    let name = match &o.host_name {
        Some(n) => n.clone(),
        None => membership::default_host_name(&facts.hostname),
    };
    if let Some(join) = &o.join
        && !paths.data_dir.join("cluster.json").exists()
    {
        let plan = crate::join::JoinPlan {
            url: &join.url,
            token: &join.token,
            host: &name,
            address: o.cluster_address,
        };
        crate::join::join(&paths.data_dir, &plan)
            .await
            .with_context(|| format!("Cannot join the cluster at {}", join.url))?;
        tracing::info!(host = name, cluster = join.url, "Joined the cluster");
    }
    let mut file =
        ClusterFile::load_or_create(&paths.data_dir, &name, &o.etcd_endpoints, o.cluster_address)?;
    let member = file
        .member_spec(&paths.data_dir, &paths.run_dir, logs)?
        .map(|spec| Supervisor::new(spec, Arc::clone(db)));
    if let Some(etcd) = &member {
        daemons.spawn(Arc::clone(etcd).run(stop_rx.clone(), o.stop_on_exit));
    }
    let store = membership::connect(&file, &paths.data_dir, membership::CONNECT_WITHIN).await?;
    membership::claim_name(&store, &file, facts).await?;
    tracing::info!(host = file.host, endpoints = ?file.endpoints, "In the cluster");
    tokio::spawn(membership::heartbeat(
        store.clone(),
        file.host.clone(),
        file.host_id.clone(),
        facts.clone(),
        Arc::clone(db),
        stop_rx.clone(),
        o.stop_on_exit,
    ));
    membership::promote_own_member(&store, &mut file, &paths.data_dir).await?;
    Ok(membership::Cluster {
        store,
        host: file.host.clone(),
        file,
        member,
    })
}

/// Where things are: the host directories the API may name (made when
/// they are the defaults) and the programs to run.
fn paths(o: &Options, run_dir: PathBuf, data_dir: PathBuf, users: DaemonUsers) -> Result<Paths> {
    let api_cert = (!o.http).then(|| crate::tls::cert_paths(&data_dir.join("tls")).0);
    let (import_dirs, datastore_roots) = host_roots(o, &data_dir)?;
    tracing::info!(import = ?import_dirs.dirs(), datastores = ?datastore_roots.dirs(), "Host directories the API may name");
    Ok(Paths {
        net_dir: run_dir.join("net"),
        vms_dir: run_dir.join("vms"),
        data_dir,
        run_dir,
        qemu: o.qemu.clone(),
        vmm: std::path::absolute(&o.vmm)?,
        jailer: std::path::absolute(&o.jailer)?,
        qemu_img: o.qemu_img.clone(),
        import_dirs,
        datastore_roots,
        guest_dir: o.guest_dir.clone(),
        web_dir: o.web_dir.clone(),
        api_cert,
        sample_every: o.sample_interval,
        users,
    })
}

/// Makes the logs directory (private) and the run directory with its
/// `net`, `vms` and `blk`; `net` is given to vswitchd. Returns the logs
/// directory.
fn make_run_dirs(paths: &Paths) -> Result<PathBuf> {
    let logs = paths.data_dir.join("logs");
    mkdir_mode(&logs, 0o700)?;
    for d in [
        &paths.run_dir,
        &paths.net_dir,
        &paths.vms_dir,
        &paths.run_dir.join("blk"),
    ] {
        mkdir(d)?;
    }
    // vswitchd binds the NIC sockets there; VMs' processes pass through.
    mkdir_mode(&paths.net_dir, 0o711)?;
    daemon_users::give(&paths.net_dir, paths.users.vswitchd.as_ref())?;
    Ok(logs)
}

/// The host's facts (with the CPU model QEMU runs on KVM), recorded in
/// the database.
fn host_facts(o: &Options, paths: &Paths, db: &Db) -> Result<HostFacts> {
    let mut facts = host::detect(Path::new("/"), o.accel, &paths.vmm);
    if facts.accel == Accel::Kvm {
        match crate::qemu::cpu::probe(&paths.qemu) {
            Ok(model) => facts.qemu_cpu = Some(model),
            Err(why) => {
                tracing::error!(%why, "QEMU does not start on this KVM: VMs that QEMU runs will fail to start");
            }
        }
    }
    db.set_host(&serde_json::to_value(&facts)?)?;
    tracing::info!(kvm = %facts.kvm_kind, driver = facts.default_driver, accel = facts.accel.as_str(), "{}", facts.driver_reason);
    Ok(facts)
}

/// The HTTPS server's configuration, its certificate made on first start;
/// none with `--http`.
fn tls_config(
    o: &Options,
    data_dir: &Path,
    hostname: &str,
) -> Result<Option<Arc<rustls::ServerConfig>>> {
    if o.http {
        return Ok(None);
    }
    let dir = data_dir.join("tls");
    let cert = crate::tls::ensure_certificate(&dir, hostname)?;
    tracing::info!(cert = %cert.display(), "HTTPS certificate");
    Ok(Some(crate::tls::server_config(&dir)?))
}

/// sfera-blockd's supervisor, its data directory made.
fn blockd_supervisor(
    o: &Options,
    paths: &Paths,
    logs: &Path,
    db: &Arc<Db>,
) -> Result<Arc<Supervisor>> {
    let run_dir = &paths.run_dir;
    let blockd_api = run_dir.join("blockd.sock");
    let blockd_data = paths.data_dir.join("blockd");
    mkdir(&blockd_data)?;
    let user = paths.users.blockd.as_ref();
    daemon_users::check_reachable("sfera-blockd", user, &run_dir.join("blk"))?;
    Ok(Supervisor::new(
        DaemonSpec {
            name: "sfera-blockd",
            binary: o.blockd.clone(),
            args: with_user(
                vec![
                    "--api".into(),
                    blockd_api.clone().into(),
                    "serve".into(),
                    "--data-dir".into(),
                    blockd_data.into(),
                    "--run-dir".into(),
                    run_dir.join("blk").into(),
                ],
                user,
            ),
            api: blockd_api,
            log: logs.join("blockd.log"),
            pidfile: run_dir.join("blockd.pid"),
            ready: Readiness::Api("/v1/datastores"),
        },
        Arc::clone(db),
    ))
}

/// sfera-vswitchd's supervisor, its data directory made; mgmtd drives it
/// over its API and it keeps its own state.
fn vswitchd_supervisor(
    o: &Options,
    paths: &Paths,
    logs: &Path,
    db: &Arc<Db>,
) -> Result<Arc<Supervisor>> {
    let vsw_data = paths.data_dir.join("vswitchd");
    mkdir(&vsw_data)?;
    let user = paths.users.vswitchd.as_ref();
    daemon_users::check_reachable("sfera-vswitchd", user, &paths.net_dir)?;
    let vsw_api = paths.run_dir.join("vswitchd.sock");
    Ok(Supervisor::new(
        DaemonSpec {
            name: "sfera-vswitchd",
            binary: o.vswitchd.clone(),
            args: with_user(
                vec![
                    "--api".into(),
                    vsw_api.clone().into(),
                    "serve".into(),
                    "--data-dir".into(),
                    vsw_data.into(),
                ],
                user,
            ),
            api: vsw_api,
            log: logs.join("vswitchd.log"),
            pidfile: paths.run_dir.join("vswitchd.pid"),
            ready: Readiness::Api("/v1/config"),
        },
        Arc::clone(db),
    ))
}

/// The tasks that run beside the API: watching VMs and free space, the
/// defaults and the inventory's sync, pruning, log caps and sampling.
fn spawn_background(mgmt: &Arc<Mgmt>, o: &Options, logs: PathBuf) {
    tokio::spawn(Arc::clone(mgmt).watch_vms());
    // After the VMs are adopted: requests made while mgmtd was away are
    // carried out on the VMs as they are now.
    tokio::spawn(Arc::clone(mgmt).run_vm_controller());
    tokio::spawn(Arc::clone(mgmt).watch_no_space());
    tokio::spawn(defaults_and_sync(Arc::clone(mgmt)));
    tokio::spawn(prune(Arc::clone(&mgmt.db)));
    tokio::spawn(crate::logs::keep_capped(
        logs,
        mgmt.paths.vms_dir.clone(),
        o.log_cap,
    ));
    tokio::spawn(crate::metrics::sampler::run(
        Arc::clone(mgmt),
        o.sample_interval,
    ));
}

/// Says where the console and the API are: in the log, on stderr and as
/// an event.
fn announce(o: &Options, mgmt: &Mgmt, listener: &tokio::net::TcpListener) -> Result<()> {
    match &o.web_dir {
        Some(d) => tracing::info!(dir = %d.display(), "Web console files"),
        None => tracing::warn!(
            "No web console files (make web builds them into mgmt/web/dist; --web-dir names them)"
        ),
    }
    let scheme = if o.http { "http" } else { "https" };
    let local = listener.local_addr()?;
    tracing::info!(%local, "sfera-mgmtd listening");
    let password = mgmt.paths.data_dir.join("admin-password");
    // A host that joined a cluster made no admin: the cluster's users log in.
    let who = if password.exists() {
        format!("user admin, password in {}", password.display())
    } else {
        "the cluster's users".to_owned()
    };
    if o.web_dir.is_some() {
        eprintln!(
            "sfera-mgmtd: the console is on {scheme}://{local}/ and the API on {scheme}://{local}/api/v1 ({who})"
        );
    } else {
        eprintln!(
            "sfera-mgmtd: the API is on {scheme}://{local}/api/v1 ({who}); no web console files"
        );
    }
    mgmt.db.event(
        "info",
        "mgmtd.started",
        "mgmtd",
        &format!("Listening on {scheme}://{local}"),
        None,
    );
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_stop_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// A daemon's arguments, with `--user` after `serve` when it runs as its
/// own user.
fn with_user(mut args: Vec<OsString>, account: Option<&Account>) -> Vec<OsString> {
    if let Some(a) = account {
        args.extend(["--user".into(), a.name.clone().into()]);
    }
    args
}

/// With --stop-on-exit: power off the running VMs.
async fn stop_vms(mgmt: &Arc<Mgmt>) {
    let Ok(vms) = mgmt.inventory.vms_here().await else {
        return;
    };
    for vm in vms.into_iter().filter(|v| {
        matches!(
            v.state,
            crate::db::VmState::Running | crate::db::VmState::Paused
        )
    }) {
        let r = Arc::clone(mgmt)
            .power(
                vm.id.clone(),
                crate::vm::service::PowerAction::Off,
                "mgmtd".to_owned(),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(vm = vm.name, "Cannot power off: {e}");
        }
    }
}

/// On a new install, the datastore `local` (under the data directory) and
/// the port group `vm-network`; then the inventory's copy of datastores
/// and networks refreshed every 20 s.
/// Prunes events and finished tasks now and every [`PRUNE_EVERY`].
async fn prune(db: Arc<Db>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let keep = Retention::default();
        let t = crate::db::now();
        match (db.prune_events(keep, t), db.prune_tasks(keep, t)) {
            (Ok(events), Ok(tasks)) if events + tasks > 0 => {
                tracing::info!(events, tasks, "Pruned old events and tasks");
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => tracing::warn!("Cannot prune events and tasks: {e}"),
        }
    }
}

async fn defaults_and_sync(mgmt: Arc<Mgmt>) {
    if mgmt.need_blockd().await.is_ok() {
        mgmt.clean_abandoned_imports().await;
        match mgmt.blockd.datastores().await {
            Ok(list) if list.is_empty() => {
                let dir = mgmt
                    .paths
                    .data_dir
                    .join("datastores")
                    .join(DEFAULT_DATASTORE);
                let made = std::fs::create_dir_all(&dir)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        mkdir_mode(&dir, 0o700)
                            .and_then(|()| {
                                daemon_users::give(&dir, mgmt.paths.users.blockd.as_ref())
                            })
                            .map_err(|e| format!("{e:#}"))
                    })
                    .map(|()| dir.display().to_string());
                let r = match made {
                    Ok(path) => mgmt
                        .blockd
                        .add_datastore(DEFAULT_DATASTORE, &path)
                        .await
                        .map(|_| path)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(path) => mgmt.db.event(
                        "info",
                        "datastore.added",
                        DEFAULT_DATASTORE,
                        &format!("Default datastore at {path}"),
                        None,
                    ),
                    Err(e) => tracing::error!("Cannot make the default datastore: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("Cannot list datastores: {e}"),
        }
    }
    if mgmt.need_vswitchd().await.is_ok()
        && let Err(e) = mgmt.vswitchd.ensure_default_port_group().await
    {
        tracing::error!("Cannot make the default port group: {e}");
    }
    loop {
        let _ = mgmt.sync_datastores().await;
        let _ = mgmt.sync_networks().await;
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_console_is_found_under_the_data_directory_first() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let exe = dir.path().join("prefix/bin");
        std::fs::create_dir_all(&exe).unwrap();
        // An install's share/sfera/web.
        let share = dir.path().join("prefix/share/sfera/web");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join("index.html"), "<html>").unwrap();
        let found = find_web_dir(&data, &exe).unwrap();
        assert!(found.ends_with("share/sfera/web"), "{}", found.display());
        // <data-dir>/web wins; a directory without index.html does not count.
        std::fs::create_dir_all(data.join("web")).unwrap();
        assert!(
            find_web_dir(&data, &exe)
                .unwrap()
                .ends_with("share/sfera/web")
        );
        std::fs::write(data.join("web/index.html"), "<html>").unwrap();
        assert_eq!(find_web_dir(&data, &exe).unwrap(), data.join("web"));
    }
}
