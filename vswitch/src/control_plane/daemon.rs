//! The switch daemon's control object: it holds the configuration, applies
//! changes to the running dataplane, and reads its counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::control_plane::api::types::{MacEntry, PortStats, Stats, UplinkStats};
use crate::control_plane::config::{
    BadConfig, PortConfig, PortGroupConfig, SwitchConfig, UplinkConfig,
};
use crate::dataplane::counters::{PortCounters, WorkerCounters};
use crate::dataplane::teaming::Team;
use crate::dataplane::uplink::Uplink;
use crate::dataplane::vhost::backend::PortShared;
use crate::dataplane::vhost::port::PortThread;
use crate::dataplane::worker::{
    Command, MacPlace, PortEntry, PortPolicy, SwitchEntry, UplinkEntry, Worker, WorkerSetup,
};

/// Errors of the control object.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The new configuration does not validate: nothing changed.
    #[error(transparent)]
    Invalid(#[from] BadConfig),
    /// The configuration is valid but the host refused part of it (a TAP
    /// that cannot be created, a socket that cannot be bound): nothing
    /// changed.
    #[error("Cannot apply the configuration: {0}")]
    Apply(String),
}

/// Options of the daemon that are not part of the switching configuration.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// CPU the forwarding worker is pinned to.
    pub cpu: Option<usize>,
    /// Microseconds the worker keeps polling after its last frame before it
    /// sleeps on the guests' kicks (0: always sleep when idle).
    pub poll_us: u32,
}

/// How long the daemon waits for the worker to take a change.
const WORKER_WAIT: Duration = Duration::from_secs(5);

struct LivePort {
    config: PortConfig,
    shared: Arc<PortShared>,
    counters: Arc<PortCounters>,
    thread: Option<PortThread>,
}

struct LiveUplink {
    config: UplinkConfig,
    switch: String,
    counters: Arc<PortCounters>,
    link_up: Arc<AtomicBool>,
}

struct State {
    config: SwitchConfig,
    ports: BTreeMap<String, LivePort>,
    uplinks: BTreeMap<String, LiveUplink>,
}

/// The running switch daemon. `Send + Sync`: the API shares it behind an
/// `Arc`; changes are serialized by an internal lock.
pub struct Daemon {
    state: Mutex<State>,
    commands: Mutex<mpsc::Sender<Command>>,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    worker_counters: Arc<WorkerCounters>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

fn apply_err(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Apply(e.to_string())
}

impl Daemon {
    /// Validates `config`, starts the forwarding worker and the ports.
    pub fn start(config: SwitchConfig, options: DaemonOptions) -> Result<Daemon, DaemonError> {
        config.validate()?;
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(apply_err)?);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(WorkerCounters::default());
        let (tx, rx) = mpsc::channel();
        let worker = Worker::new(WorkerSetup {
            commands: rx,
            wake: Arc::clone(&wake),
            stop: Arc::clone(&stop),
            counters: Arc::clone(&counters),
            poll_us: options.poll_us,
        });
        let cpu = options.cpu;
        let handle = std::thread::Builder::new()
            .name("forwarding".to_owned())
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(e) = datapath::reactor::pin_current_thread(cpu)
                {
                    tracing::warn!("Cannot pin the forwarding worker to CPU {cpu}: {e}");
                }
                worker.run();
            })
            .map_err(apply_err)?;
        let daemon = Daemon {
            state: Mutex::new(State {
                config: SwitchConfig {
                    switches: Vec::new(),
                    port_groups: Vec::new(),
                    ports: Vec::new(),
                },
                ports: BTreeMap::new(),
                uplinks: BTreeMap::new(),
            }),
            commands: Mutex::new(tx),
            wake,
            stop,
            worker: Mutex::new(Some(handle)),
            worker_counters: counters,
        };
        daemon.apply(config)?;
        Ok(daemon)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, c: Command) -> Result<(), DaemonError> {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(c)
            .map_err(|_| DaemonError::Apply("the forwarding worker has stopped".into()))?;
        let _ = self.wake.write(1);
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> SwitchConfig {
        self.state().config.clone()
    }

    /// Replaces the configuration: validates it, then adds, changes and
    /// removes switches, uplinks, port groups and ports to match. On error
    /// the configuration in force is unchanged.
    pub fn apply(&self, new: SwitchConfig) -> Result<(), DaemonError> {
        new.validate()?;
        let mut st = self.state();
        // Anything the host may refuse is opened first; a failure leaves
        // everything as it was (what was opened closes on return).
        let (uplinks, open) = open_uplinks(&st, &new)?;
        let (mut ports, started) = self.start_ports(&st, &new)?;
        let (switches, port_entries, uplink_entries) = worker_tables(&new, &ports, &uplinks);
        let (done_tx, done_rx) = mpsc::channel();
        let sent = self.send(Command::Update {
            switches,
            ports: port_entries,
            uplinks: uplink_entries,
            open,
            done: done_tx,
        });
        if sent.is_err() || done_rx.recv_timeout(WORKER_WAIT).is_err() {
            stop_all(started);
            return Err(DaemonError::Apply(
                "the forwarding worker did not take the change".into(),
            ));
        }
        // The worker runs the new tables: retire what left them.
        retire_ports(&mut st.ports, &new, &mut ports, started);
        st.ports = ports;
        st.uplinks = uplinks;
        st.config = new;
        Ok(())
    }

    /// The live ports of `new`: ports whose socket, mode and queues are
    /// unchanged are kept (their MAC and MTU updated), the others start now
    /// (a server socket binds here, so a bad path fails before anything
    /// changed). Returns them with the threads started, in `new`'s order.
    fn start_ports(
        &self,
        st: &State,
        new: &SwitchConfig,
    ) -> Result<(BTreeMap<String, LivePort>, Vec<PortThread>), DaemonError> {
        let mut ports = BTreeMap::new();
        let mut started = Vec::new();
        for p in &new.ports {
            let reuse = st.ports.get(&p.name).filter(|l| {
                l.config.socket == p.socket
                    && l.config.mode == p.mode
                    && l.config.queues == p.queues
            });
            let live = match reuse {
                Some(l) => keep_port(l, p),
                None => {
                    let shared = Arc::new(PortShared::new(
                        p.name.clone(),
                        p.mac,
                        p.mtu,
                        p.queues,
                        Arc::clone(&self.wake),
                    ));
                    match PortThread::start(Arc::clone(&shared), &p.socket, p.mode) {
                        Ok(t) => started.push(t),
                        Err(e) => {
                            stop_all(started);
                            return Err(DaemonError::Apply(format!("port {:?}: {e}", p.name)));
                        }
                    }
                    LivePort {
                        config: p.clone(),
                        shared,
                        counters: Arc::default(),
                        thread: None,
                    }
                }
            };
            ports.insert(p.name.clone(), live);
        }
        Ok((ports, started))
    }

    /// Counters of every port and uplink.
    pub fn stats(&self) -> Stats {
        let st = self.state();
        let ports = st
            .config
            .ports
            .iter()
            .filter_map(|p| {
                let live = st.ports.get(&p.name)?;
                let c = &live.counters;
                Some(PortStats {
                    name: p.name.clone(),
                    port_group: p.port_group.clone(),
                    switch: st
                        .config
                        .group_of(p)
                        .map(|g| g.switch.clone())
                        .unwrap_or_default(),
                    connected: live.shared.connected.load(Ordering::Acquire),
                    queues_enabled: live.shared.pairs_running(),
                    rx_packets: c.rx_packets.get(),
                    rx_bytes: c.rx_bytes.get(),
                    tx_packets: c.tx_packets.get(),
                    tx_bytes: c.tx_bytes.get(),
                    drops: c.drops(),
                    rx_retries: c.rx_retries.get(),
                })
            })
            .collect();
        let uplinks = st
            .uplinks
            .iter()
            .map(|(name, l)| UplinkStats {
                name: name.clone(),
                switch: l.switch.clone(),
                interface: l.config.interface.clone(),
                link_up: l.link_up.load(Ordering::Relaxed),
                rx_packets: l.counters.rx_packets.get(),
                rx_bytes: l.counters.rx_bytes.get(),
                tx_packets: l.counters.tx_packets.get(),
                tx_bytes: l.counters.tx_bytes.get(),
                drops: l.counters.drops(),
            })
            .collect();
        Stats {
            ports,
            uplinks,
            worker_busy_rounds: self.worker_counters.busy_rounds.get(),
            worker_busy_cycles: self.worker_counters.busy_cycles.get(),
            worker_packets: self.worker_counters.packets.get(),
        }
    }

    /// The MAC table of a switch; `None` when there is no such switch.
    pub fn mac_table(&self, switch: &str) -> Option<Vec<MacEntry>> {
        let index = self
            .state()
            .config
            .switches
            .iter()
            .position(|s| s.name == switch)?;
        let (tx, rx) = mpsc::channel();
        self.send(Command::MacTable {
            switch: index,
            reply: tx,
        })
        .ok()?;
        let entries = rx.recv_timeout(WORKER_WAIT).ok()?;
        Some(
            entries
                .into_iter()
                .map(|(e, place)| MacEntry {
                    vlan: e.vid,
                    mac: e.mac,
                    port: match place {
                        MacPlace::Port(n) | MacPlace::Uplink(n) => n,
                    },
                    age_s: e.age_ns / 1_000_000_000,
                })
                .collect(),
        )
    }

    /// Stops the worker and closes every port.
    pub fn shutdown(self) {
        self.halt();
    }

    fn halt(&self) {
        let ports = std::mem::take(&mut self.state().ports);
        for (_, mut p) in ports {
            if let Some(t) = p.thread.take() {
                t.stop();
            }
        }
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        let handle = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The live uplinks of `new`: unchanged ones kept, new and changed ones
/// opened (returned apart, for the worker to take).
fn open_uplinks(
    st: &State,
    new: &SwitchConfig,
) -> Result<(BTreeMap<String, LiveUplink>, Vec<Uplink>), DaemonError> {
    let mut open = Vec::new();
    let mut uplinks = BTreeMap::new();
    for s in &new.switches {
        for u in &s.uplinks {
            let kept = st
                .uplinks
                .get(&u.name)
                .filter(|l| l.config == *u && l.switch == s.name);
            let live = match kept {
                Some(l) => LiveUplink {
                    config: l.config.clone(),
                    switch: l.switch.clone(),
                    counters: Arc::clone(&l.counters),
                    link_up: Arc::clone(&l.link_up),
                },
                None => {
                    open.push(
                        Uplink::open(u)
                            .map_err(|e| DaemonError::Apply(format!("uplink {:?}: {e}", u.name)))?,
                    );
                    LiveUplink {
                        config: u.clone(),
                        switch: s.name.clone(),
                        counters: Arc::default(),
                        link_up: Arc::default(),
                    }
                }
            };
            uplinks.insert(u.name.clone(), live);
        }
    }
    Ok((uplinks, open))
}

/// A running port kept across a change: same socket and thread, the new
/// MAC and MTU.
fn keep_port(live: &LivePort, p: &PortConfig) -> LivePort {
    *live
        .shared
        .mac
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = p.mac;
    *live
        .shared
        .mtu
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = p.mtu;
    LivePort {
        config: p.clone(),
        shared: Arc::clone(&live.shared),
        counters: Arc::clone(&live.counters),
        thread: None,
    }
}

fn stop_all(threads: Vec<PortThread>) {
    for t in threads {
        PortThread::stop(t);
    }
}

/// The worker's tables for `new`, in configuration order: switches, ports
/// with their policy, uplinks.
fn worker_tables(
    new: &SwitchConfig,
    ports: &BTreeMap<String, LivePort>,
    uplinks: &BTreeMap<String, LiveUplink>,
) -> (Vec<SwitchEntry>, Vec<PortEntry>, Vec<UplinkEntry>) {
    let uplink_order: Vec<&str> = new
        .switches
        .iter()
        .flat_map(|s| s.uplinks.iter().map(|u| u.name.as_str()))
        .collect();
    let switch_index = |name: &str| new.switches.iter().position(|s| s.name == name);
    let port_entries = new
        .ports
        .iter()
        .filter_map(|p| {
            let group = new.group_of(p)?;
            let live = ports.get(&p.name)?;
            let sw = switch_index(&group.switch)?;
            Some(port_entry(new, &uplink_order, sw, group, p, live))
        })
        .collect();
    let uplink_entries = uplink_order
        .iter()
        .filter_map(|n| {
            let l = uplinks.get(*n)?;
            Some(UplinkEntry {
                name: (*n).to_owned(),
                switch: switch_index(&l.switch)?,
                counters: Arc::clone(&l.counters),
                link_up: Arc::clone(&l.link_up),
            })
        })
        .collect();
    let switches = new
        .switches
        .iter()
        .map(|s| SwitchEntry {
            name: s.name.clone(),
            ageing_ns: u64::from(s.mac_ageing_s) * 1_000_000_000,
        })
        .collect();
    (switches, port_entries, uplink_entries)
}

/// A port's entry in the worker's table: its group's policy, its team's
/// uplinks as indexes into `uplink_order`.
fn port_entry(
    new: &SwitchConfig,
    uplink_order: &[&str],
    sw: usize,
    group: &PortGroupConfig,
    p: &PortConfig,
    live: &LivePort,
) -> PortEntry {
    let index = |n: &String| uplink_order.iter().position(|u| u == n);
    let active: Vec<usize> = if group.teaming.active.is_empty() {
        new.switches[sw]
            .uplinks
            .iter()
            .filter_map(|u| index(&u.name))
            .collect()
    } else {
        group.teaming.active.iter().filter_map(index).collect()
    };
    PortEntry {
        shared: Arc::clone(&live.shared),
        counters: Arc::clone(&live.counters),
        policy: PortPolicy {
            switch: sw,
            vlan: group.vlan.clone(),
            security: group.security,
            mac: p.mac,
            mtu: p.mtu,
            shaping: group.shaping,
            team: Team {
                policy: group.teaming.policy,
                active,
                standby: group.teaming.standby.iter().filter_map(index).collect(),
            },
        },
    }
}

/// Once the worker runs `new`'s tables: each kept port takes its old
/// thread, each started one its new thread (in `new`'s order, as
/// started), and the ports replaced or gone are detached and stopped.
fn retire_ports(
    old: &mut BTreeMap<String, LivePort>,
    new: &SwitchConfig,
    ports: &mut BTreeMap<String, LivePort>,
    started: Vec<PortThread>,
) {
    let mut started = started.into_iter();
    for p in &new.ports {
        let Some(live) = ports.get_mut(&p.name) else {
            continue;
        };
        match old.remove(&p.name) {
            Some(mut o) if Arc::ptr_eq(&o.shared, &live.shared) => {
                live.thread = o.thread.take();
            }
            other => {
                live.thread = started.next();
                if let Some(o) = other {
                    retire(o);
                }
            }
        }
    }
    for (_, o) in std::mem::take(old) {
        retire(o);
    }
}

/// Detaches a port the worker no longer has and stops its thread.
fn retire(mut port: LivePort) {
    port.shared.detach();
    if let Some(t) = port.thread.take() {
        t.stop();
    }
}
