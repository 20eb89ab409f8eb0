//! `sfera-mgmtd`: Sfera's management plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use mgmt::host::Accel;
use mgmt::mgmtd::{Options, run};

/// Sfera's management plane: supervises sfera-blockd and sfera-vswitchd,
/// keeps the inventory, runs VMs, and serves the /api/v1 REST API.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Persistent state: database, daemons' state, default datastore, TLS
    /// certificate, admin password.
    #[arg(long, default_value = "/var/lib/sfera")]
    data_dir: PathBuf,
    /// Sockets and pidfiles (default: <data-dir>/run).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Address of the API and web console.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS (local development and tests).
    #[arg(long)]
    http: bool,
    /// sfera-blockd (default: next to this program).
    #[arg(long)]
    blockd: Option<PathBuf>,
    /// sfera-vswitchd (default: next to this program).
    #[arg(long)]
    vswitchd: Option<PathBuf>,
    /// QEMU.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// sfera-vmm, the driver of kernel-boot VMs on hardware virtualization
    /// (default: next to this program).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// sfera-jailer, which starts every VM process in its sandbox
    /// (default: next to this program).
    #[arg(long)]
    jailer: Option<PathBuf>,
    /// qemu-img, which imports disk images (raw, qcow2, vmdk).
    #[arg(long, default_value = "qemu-img")]
    qemu_img: PathBuf,
    /// A directory images are imported from and ISOs booted from (may be
    /// repeated; replaces the default <data-dir>/import, which is made on
    /// start). The API refuses files outside these directories.
    #[arg(long = "import-dir", value_name = "DIR")]
    import_dirs: Vec<PathBuf>,
    /// A directory (or block device) under which the API may make
    /// datastores, besides <data-dir>/datastores (may be repeated).
    #[arg(long = "datastore-root", value_name = "DIR")]
    datastore_roots: Vec<PathBuf>,
    /// The Tiny Linux image, vmlinuz and initrd.img (default: ../guest from
    /// this program, i.e. target/guest in a build tree).
    #[arg(long)]
    guest_dir: Option<PathBuf>,
    /// The web console's files, served at / (default: <data-dir>/web,
    /// ../share/sfera/web from this program, or the source tree's
    /// mgmt/web/dist, the first that has an index.html).
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Seconds between performance samples (charts).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_interval: u64,
    /// How QEMU runs guests (default: kvm on hardware virtualization, tcg
    /// otherwise, PVM included).
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    /// On first start, the administrator's password is the one this file
    /// holds as an argon2 hash (the appliance's installer writes it from
    /// the answer file), instead of a random one written to
    /// <data-dir>/admin-password.
    #[arg(long)]
    admin_password_hash_file: Option<PathBuf>,
    /// Stop the daemons and VMs when mgmtd stops, instead of leaving them
    /// running for the next mgmtd to adopt.
    #[arg(long)]
    stop_on_exit: bool,
    /// Seconds a login session may go unused before it ends (sessions
    /// also end 12 hours after logging in).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(10..=43200))]
    session_idle_timeout: u64,
    /// The system user sfera-blockd runs as (made with useradd if missing;
    /// `root` keeps it root).
    #[arg(long, default_value = mgmt::daemon_users::BLOCKD_USER)]
    blockd_user: String,
    /// The system user sfera-vswitchd runs as (made with useradd if
    /// missing; `root` keeps it root).
    #[arg(long, default_value = mgmt::daemon_users::VSWITCHD_USER)]
    vswitchd_user: String,
    /// HTTP connections served at once (more wait until one closes; a
    /// client has 10 s to send a request's headers).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
    /// Bytes a daemon's or a VM's log (console, VMM, QEMU) may reach
    /// before it is rotated.
    #[arg(long, default_value_t = mgmt::logs::LogCap::default().max_bytes,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 40)))]
    log_max_size: u64,
    /// Rotated copies kept of each log.
    #[arg(long, default_value_t = mgmt::logs::LogCap::default().keep,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    log_keep: u32,
    /// This host's name in the cluster (default: the machine's host name
    /// up to its first dot). Kept in <data-dir>/cluster.json on first start.
    #[arg(long)]
    host_name: Option<String>,
    /// The etcd cluster to use, as client URLs (http://HOST:PORT, comma
    /// separated). Default: this host runs a one-member etcd of its own on
    /// loopback (docs/cluster.md).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// The address this host's etcd member listens on for the other hosts
    /// (at the first start, or the join): one of this host's addresses
    /// that they reach. Default: loopback, where only hosts on this
    /// machine can join.
    #[arg(long, default_value = "127.0.0.1")]
    cluster_address: std::net::IpAddr,
    /// Join the cluster of the mgmtd at this URL (https://HOST:PORT) at the
    /// first start, with --join-token.
    #[arg(long, requires = "join_token")]
    join: Option<String>,
    /// A join token made on a host of that cluster (`sfera host
    /// join-token`), in this file (a token is a secret: not on the
    /// command line).
    #[arg(long, requires = "join")]
    join_token: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    control::logging::init();
    let exe_dir = std::env::current_exe()
        .context("Cannot find this program")?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let web_dir = args
        .web_dir
        .or_else(|| mgmt::mgmtd::find_web_dir(&args.data_dir, &exe_dir));
    let options = Options {
        run_dir: args.run_dir.unwrap_or_else(|| args.data_dir.join("run")),
        data_dir: args.data_dir,
        listen: args.listen,
        http: args.http,
        blockd: args.blockd.unwrap_or_else(|| exe_dir.join("sfera-blockd")),
        vswitchd: args
            .vswitchd
            .unwrap_or_else(|| exe_dir.join("sfera-vswitchd")),
        blockd_user: args.blockd_user,
        vswitchd_user: args.vswitchd_user,
        qemu: args.qemu,
        vmm: args.vmm.unwrap_or_else(|| exe_dir.join("sfera-vmm")),
        jailer: args.jailer.unwrap_or_else(|| exe_dir.join("sfera-jailer")),
        qemu_img: args.qemu_img,
        import_dirs: args.import_dirs,
        datastore_roots: args.datastore_roots,
        guest_dir: args.guest_dir.unwrap_or_else(|| exe_dir.join("../guest")),
        web_dir,
        sample_interval: std::time::Duration::from_secs(args.sample_interval),
        accel: args.accel,
        admin_password_hash_file: args.admin_password_hash_file,
        stop_on_exit: args.stop_on_exit,
        log_cap: mgmt::logs::LogCap {
            max_bytes: args.log_max_size,
            keep: args.log_keep,
        },
        session_idle_timeout: std::time::Duration::from_secs(args.session_idle_timeout),
        host_name: args.host_name,
        etcd_endpoints: args.etcd_endpoints,
        cluster_address: args.cluster_address,
        join: match (args.join, args.join_token) {
            (Some(url), Some(file)) => Some(mgmt::mgmtd::Join {
                url,
                token: std::fs::read_to_string(&file)
                    .with_context(|| format!("Cannot read the join token in {}", file.display()))?
                    .trim()
                    .to_owned(),
            }),
            _ => None,
        },
        max_connections: usize::try_from(args.max_connections)
            .context("--max-connections is too large")?,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("Cannot start the runtime")?
        .block_on(run(options))
}
