//! Supervision of sfera-blockd and sfera-vswitchd: each runs as mgmtd's
//! child in its own process group (a Ctrl-C on mgmtd's terminal does not
//! reach it), is restarted with backoff when it dies, and is re-adopted
//! from its pidfile when mgmtd itself restarts, so VMs keep their disks and
//! NICs across an mgmtd restart.

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::db::{Db, now};
use crate::pid;
use control::client::UnixApi;

/// How a daemon shows it is ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// `GET` on this path of its API answers 2xx.
    Api(&'static str),
    /// These files (sockets it binds) exist.
    Files(Vec<PathBuf>),
    /// It accepts TCP connections on this address (`HOST:PORT`): for an
    /// etcd member, which may have to wait for its peers before it serves
    /// reads, and must not be restarted meanwhile.
    Listening(String),
}

/// How to run one daemon.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    pub name: &'static str,
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    /// Its API socket (or, for a daemon without an API, its configuration
    /// file): also what identifies its process in /proc.
    pub api: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
    pub pidfile: PathBuf,
    pub ready: Readiness,
}

/// What the API shows of a supervised daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Daemon)]
pub struct DaemonStatus {
    pub name: String,
    /// `starting`, `running`, `restarting` (waiting out a backoff) or
    /// `stopped`.
    #[schema(schema_with = crate::api::schema::daemon_state)]
    pub state: String,
    pub pid: Option<u32>,
    /// Found running from a previous mgmtd, not started by this one.
    pub adopted: bool,
    /// Restarts after the daemon died.
    pub restarts: u32,
    pub started_at: Option<i64>,
    pub last_exit: Option<String>,
}

/// How long a daemon has to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon that ran this long before dying is restarted without delay
/// growth.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One supervised daemon.
#[derive(Debug)]
pub struct Supervisor {
    spec: Mutex<DaemonSpec>,
    status: watch::Sender<DaemonStatus>,
    restart: Notify,
    db: Arc<Db>,
}

enum Running {
    Child(tokio::process::Child),
    Adopted(u32),
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::Child(c) => c.id(),
            Running::Adopted(p) => Some(*p),
        }
    }

    async fn exited(&mut self) -> String {
        match self {
            Running::Child(c) => match c.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("cannot wait: {e}"),
            },
            Running::Adopted(p) => {
                while pid::alive(*p) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                "exited".to_owned()
            }
        }
    }

    async fn stop(&mut self) {
        let Some(p) = self.pid() else { return };
        pid::signal(p, libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.exited())
            .await
            .is_err()
        {
            pid::signal(p, libc::SIGKILL);
            self.exited().await;
        }
    }
}

impl Supervisor {
    pub fn new(spec: DaemonSpec, db: Arc<Db>) -> Arc<Self> {
        let status = DaemonStatus {
            name: spec.name.to_owned(),
            state: "starting".to_owned(),
            pid: None,
            adopted: false,
            restarts: 0,
            started_at: None,
            last_exit: None,
        };
        Arc::new(Supervisor {
            spec: Mutex::new(spec),
            status: watch::Sender::new(status),
            restart: Notify::new(),
            db,
        })
    }

    fn spec(&self) -> DaemonSpec {
        self.spec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// The daemon's API.
    pub fn api(&self) -> UnixApi {
        let spec = self.spec();
        UnixApi::new(spec.name, &spec.api)
    }

    pub fn status(&self) -> DaemonStatus {
        self.status.borrow().clone()
    }

    /// Changes how the daemon shows it is ready (from its next start).
    pub fn set_readiness(&self, ready: Readiness) {
        self.spec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ready = ready;
    }

    /// Waits until the daemon is running and ready.
    pub async fn wait_running(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.status.subscribe();
        let wait = rx.wait_for(|s| s.state == "running");
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "{} is not running ({})",
                self.name(),
                self.status().state
            )),
        }
    }

    /// Stops the daemon and starts it again at once (to apply a new
    /// configuration file), then waits for it to be ready.
    pub async fn restart_now(&self) -> Result<(), String> {
        // Mark it starting first, so the wait below sees the new run.
        self.status.send_modify(|s| s.state = "starting".to_owned());
        self.restart.notify_one();
        self.wait_running(READY_TIMEOUT + STOP_GRACE).await
    }

    /// Runs the daemon until `shutdown` turns true; stops it then if
    /// `stop_on_exit`, otherwise leaves it running for the next mgmtd.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>, stop_on_exit: bool) {
        let mut backoff = Duration::from_secs(1);
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let spec = self.spec();
            let mut running = match self.adopt_or_spawn(&spec, first) {
                Ok(r) => r,
                Err(e) => {
                    self.db.event("error", "daemon.failed", spec.name, &e, None);
                    tracing::error!(daemon = spec.name, "{e}");
                    self.status.send_modify(|s| {
                        s.state = "restarting".to_owned();
                        s.last_exit = Some(e.clone());
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            first = false;
            let started = Instant::now();
            let ready = self.wait_ready(&spec, &mut running);
            let requested = tokio::select! {
                r = ready => {
                    match r {
                        Ok(()) => {
                            self.status.send_modify(|s| s.state = "running".to_owned());
                            tracing::info!(daemon = spec.name, pid = ?running.pid(), "Daemon ready");
                        }
                        Err(e) => {
                            self.db.event("error", "daemon.not_ready", spec.name, &e, None);
                            running.stop().await;
                        }
                    }
                    tokio::select! {
                        why = running.exited() => Some(why),
                        () = self.restart.notified() => { running.stop().await; None }
                        _ = shutdown.changed() => {
                            if stop_on_exit { running.stop().await; }
                            self.status.send_modify(|s| s.state = "stopped".to_owned());
                            return;
                        }
                    }
                }
                () = self.restart.notified() => { running.stop().await; None }
                _ = shutdown.changed() => {
                    if stop_on_exit { running.stop().await; }
                    return;
                }
            };
            let Some(why) = requested else {
                // Restart asked for: no backoff, not a crash.
                continue;
            };
            let message = format!("{} exited ({why}); restarting in {backoff:?}", spec.name);
            tracing::warn!(daemon = spec.name, "{message}");
            self.db
                .event("warning", "daemon.exited", spec.name, &message, None);
            self.status.send_modify(|s| {
                s.state = "restarting".to_owned();
                s.pid = None;
                s.restarts += 1;
                s.last_exit = Some(why.clone());
            });
            if started.elapsed() >= STABLE_AFTER {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                () = self.restart.notified() => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// On the first start, a daemon left running by a previous mgmtd (its
    /// pidfile names a live process with our API socket in its command
    /// line) is adopted; otherwise a new one is started.
    fn adopt_or_spawn(&self, spec: &DaemonSpec, first: bool) -> Result<Running, String> {
        let api = spec.api.to_string_lossy().into_owned();
        if first
            && let Some(p) = pid::read_pidfile(&spec.pidfile)
            && pid::alive_with_arg(p, &api)
        {
            tracing::info!(daemon = spec.name, pid = p, "Adopting the running daemon");
            self.db.event(
                "info",
                "daemon.adopted",
                spec.name,
                &format!("{} (pid {p}) adopted from a previous mgmtd", spec.name),
                None,
            );
            self.status.send_modify(|s| {
                s.pid = Some(p);
                s.adopted = true;
                s.state = "starting".to_owned();
            });
            return Ok(Running::Adopted(p));
        }
        // A socket left by a dead daemon would pass for a live one.
        if std::fs::symlink_metadata(&spec.api).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&spec.api);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&spec.log)
            .map_err(|e| format!("Cannot open {}: {e}", spec.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("Cannot open {}: {e}", spec.log.display()))?;
        let child = tokio::process::Command::new(&spec.binary)
            .args(&spec.args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("Cannot start {}: {e}", spec.binary.display()))?;
        let p = child.id();
        if let Some(p) = p
            && let Err(e) = std::fs::write(&spec.pidfile, format!("{p}\n"))
        {
            tracing::warn!(
                daemon = spec.name,
                "Cannot write {}: {e}",
                spec.pidfile.display()
            );
        }
        tracing::info!(daemon = spec.name, pid = ?p, "Daemon started");
        self.status.send_modify(|s| {
            s.pid = p;
            s.adopted = false;
            s.state = "starting".to_owned();
            s.started_at = Some(now());
        });
        Ok(Running::Child(child))
    }

    async fn wait_ready(&self, spec: &DaemonSpec, running: &mut Running) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let api = UnixApi::new(spec.name, &spec.api);
        loop {
            let ready = match &spec.ready {
                Readiness::Api(path) => api.get(path).await.is_ok(),
                Readiness::Files(files) => files.iter().all(|f| f.exists()),
                Readiness::Listening(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
            };
            if ready {
                return Ok(());
            }
            if running.pid().is_none_or(|p| !pid::alive(p)) {
                return Err(format!(
                    "{} exited while starting (see {})",
                    spec.name,
                    spec.log.display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} was not ready within {READY_TIMEOUT:?}",
                    spec.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &std::path::Path) -> DaemonSpec {
        let api = dir.join("fake.sock");
        let ready = dir.join("ready");
        // The script's text holds the "API" path, as a daemon's arguments do.
        let script = format!("touch {}; sleep 60; : {}", ready.display(), api.display());
        DaemonSpec {
            name: "fake",
            binary: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            api,
            log: dir.join("fake.log"),
            pidfile: dir.join("fake.pid"),
            ready: Readiness::Files(vec![ready]),
        }
    }

    async fn wait_for(
        s: &Supervisor,
        what: &str,
        f: impl Fn(&DaemonStatus) -> bool,
    ) -> DaemonStatus {
        for _ in 0..200 {
            let st = s.status();
            if f(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: {:?}", s.status());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_daemon_is_restarted_and_a_live_one_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::in_memory().unwrap());
        let sup = Supervisor::new(fake(dir.path()), Arc::clone(&db));
        let (stop, rx) = watch::channel(false);
        let run = tokio::spawn(Arc::clone(&sup).run(rx, false));
        sup.wait_running(Duration::from_secs(10)).await.unwrap();
        let first = sup.status().pid.unwrap();
        assert!(pid::signal(first, libc::SIGKILL));
        let st = wait_for(&sup, "restart", |s| {
            s.restarts == 1 && s.state == "running" && s.pid.is_some_and(|p| p != first)
        })
        .await;
        let second = st.pid.unwrap();
        assert!(
            db.events(10, 0)
                .unwrap()
                .0
                .iter()
                .any(|e| e.kind == "daemon.exited")
        );
        // mgmtd stops without stopping the daemon ...
        stop.send(true).unwrap();
        run.await.unwrap();
        assert!(pid::alive(second));
        // ... and the next one adopts it.
        let next = Supervisor::new(fake(dir.path()), Arc::clone(&db));
        let (stop, rx) = watch::channel(false);
        let run = tokio::spawn(Arc::clone(&next).run(rx, true));
        next.wait_running(Duration::from_secs(10)).await.unwrap();
        let st = next.status();
        assert_eq!((st.pid, st.adopted), (Some(second), true));
        // A requested restart is not a crash.
        next.restart_now().await.unwrap();
        let st = next.status();
        assert!(
            !st.adopted && st.restarts == 0 && st.pid != Some(second),
            "{st:?}"
        );
        let third = st.pid.unwrap();
        stop.send(true).unwrap();
        run.await.unwrap();
        // Stopped on exit this time.
        assert!(!pid::alive(third));
    }
}
