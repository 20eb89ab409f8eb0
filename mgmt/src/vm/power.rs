//! Power requests through the cluster: any host's API asks, the VM's host
//! carries the request out (docs/cluster.md, "Controller loops").
//!
//! Two records per VM, each with one kind of writer:
//! - `vm-power/<id>` ([`PowerRequests`]): written by whichever host's API
//!   takes a request. Each request gets the next generation, given by a
//!   compare-and-swap on the record's revision, so two hosts asking at the
//!   same moment get two generations and neither request is lost. The
//!   record holds the requests its VM's host has not carried out yet, in
//!   order; a reset is a request like any other (a new generation), not a
//!   state.
//! - `vm-power-status/<id>` ([`PowerStatus`]): written by the VM's host
//!   alone: the last generation it has taken up (`seen`), the last it has
//!   carried out (`done`), and the outcome of each recent one, which the
//!   asking host's task reports.
//!
//! The host acts on requests, not on drift: a VM that stops by itself is
//! not started again here.

use std::sync::Arc;
use std::time::Duration;

use cluster::{Batch, Change, StoreError, Versioned, WatchEnded};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::service::PowerAction;
use crate::db::{Vm, now};
use crate::error::Error;
use crate::inventory::Inventory;
use crate::membership::HostState;
use crate::service::Mgmt;
use crate::tasks::TaskCtx;

/// The kind of the request records.
pub const REQUESTS: &str = "vm-power";
/// The kind of the outcome records.
pub const STATUS: &str = "vm-power-status";
/// How many requests of one VM may wait for its host.
pub const PENDING_MAX: usize = 16;
/// How many outcomes a VM's status keeps: at least as many as may wait,
/// so each waiting request's outcome is still there when its asker looks.
const OUTCOMES_KEPT: usize = 2 * PENDING_MAX;
/// How often a request is written again when another host's request
/// moved the record under it.
const REQUEST_TRIES: usize = 8;

/// `vm-power/<id>`: the power requests of a VM its host has not carried
/// out yet, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequests {
    /// The generation of the latest request (0: none ever).
    pub generation: u64,
    pub pending: Vec<PowerRequest>,
}

/// One power request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub generation: u64,
    pub action: PowerAction,
    /// Who asked.
    pub user: String,
    /// The host whose API took the request.
    pub host: String,
    /// The task on that host that reports it.
    pub task: i64,
    /// When (seconds since the epoch).
    pub at: i64,
}

/// Too many requests wait already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany;

impl PowerRequests {
    /// The record with `request` added under the next generation, and the
    /// requests carried out up to `done` dropped. Too many waiting is
    /// refused rather than queued without end behind a host that is slow.
    pub fn push(&self, done: u64, mut request: PowerRequest) -> Result<Self, TooMany> {
        let mut pending: Vec<PowerRequest> = self.pending_after(done).cloned().collect();
        if pending.len() >= PENDING_MAX {
            return Err(TooMany);
        }
        request.generation = self.generation + 1;
        pending.push(request);
        Ok(PowerRequests {
            generation: self.generation + 1,
            pending,
        })
    }

    /// The requests after generation `done`, oldest first.
    pub fn pending_after(&self, done: u64) -> impl Iterator<Item = &PowerRequest> {
        self.pending.iter().filter(move |r| r.generation > done)
    }
}

/// `vm-power-status/<id>`: what the VM's host did with its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerStatus {
    /// The latest generation the host has taken up (queued behind the VM's
    /// operations).
    pub seen: u64,
    /// The latest generation carried out.
    pub done: u64,
    /// The outcomes of the latest generations carried out, oldest first.
    pub outcomes: Vec<PowerOutcome>,
}

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerOutcome {
    pub generation: u64,
    pub action: PowerAction,
    /// What the operation answered, when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Why it failed, in the host's words.
    pub error: Option<String>,
    /// When it ended (seconds since the epoch).
    pub at: i64,
}

impl PowerStatus {
    /// Records that generations up to `generation` are taken up.
    pub fn take_up(&mut self, generation: u64) {
        self.seen = self.seen.max(generation);
    }

    /// Records a request's outcome, keeping the latest few.
    pub fn record(&mut self, outcome: PowerOutcome) {
        self.seen = self.seen.max(outcome.generation);
        self.done = self.done.max(outcome.generation);
        self.outcomes.push(outcome);
        let extra = self.outcomes.len().saturating_sub(OUTCOMES_KEPT);
        self.outcomes.drain(..extra);
    }

    /// The outcome of `generation`, if it is carried out and still kept.
    pub fn outcome(&self, generation: u64) -> Option<&PowerOutcome> {
        self.outcomes.iter().find(|o| o.generation == generation)
    }
}

impl Inventory {
    /// Records a power request for VM `id` as its next generation: the
    /// generation and the revision it was written at (what came of it is
    /// written after that revision).
    pub async fn request_power(
        &self,
        id: &str,
        request: PowerRequest,
    ) -> Result<(u64, i64), Error> {
        let key = self.store.key(REQUESTS, id);
        for _ in 0..REQUEST_TRIES {
            let stored = self.store.get::<PowerRequests>(&key).await?;
            let done = self.power_status(id).await?.map_or(0, |s| s.value.done);
            let current = stored.as_ref().map(|s| s.value.clone()).unwrap_or_default();
            let Ok(next) = current.push(done, request.clone()) else {
                return Err(Error::Conflict(format!(
                    "{PENDING_MAX} power requests of VM {id} are waiting for its host already: \
                     wait for them to end"
                )));
            };
            let batch = Batch::new().require_present(&self.store.key("vms", id));
            let batch = match &stored {
                Some(s) => batch.update(&key, &next, s.revision)?,
                None => batch.create(&key, &next)?,
            };
            match self.store.commit(batch).await {
                Ok(revision) => return Ok((next.generation, revision)),
                // Another request took the generation: take the next one.
                Err(StoreError::Conflict { .. } | StoreError::Exists { .. }) => {}
                // The VM is gone (with its records).
                Err(StoreError::NotFound { .. }) => {
                    return Err(Error::NotFound {
                        kind: "VM",
                        name: id.to_owned(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "VM {id} gets too many power requests at once: try again"
        )))
    }

    /// VM `id`'s power requests.
    pub async fn power_requests(
        &self,
        id: &str,
    ) -> Result<Option<Versioned<PowerRequests>>, Error> {
        Ok(self.store.get(&self.store.key(REQUESTS, id)).await?)
    }

    /// What VM `id`'s host did with its power requests.
    pub async fn power_status(&self, id: &str) -> Result<Option<Versioned<PowerStatus>>, Error> {
        Ok(self.store.get(&self.store.key(STATUS, id)).await?)
    }

    /// Writes VM `id`'s power status if it is still at `revision` (none:
    /// not written yet) and the VM still exists. Its new revision.
    pub async fn set_power_status(
        &self,
        id: &str,
        status: &PowerStatus,
        revision: Option<i64>,
    ) -> Result<i64, Error> {
        let key = self.store.key(STATUS, id);
        let batch = Batch::new().require_present(&self.store.key("vms", id));
        let batch = match revision {
            Some(r) => batch.update(&key, status, r)?,
            None => batch.create(&key, status)?,
        };
        Ok(self.store.commit(batch).await?)
    }
}

/// How long the VM's host has to take a request up before the asking
/// task gives up on it.
pub const TAKE_UP_WITHIN: Duration = Duration::from_secs(15);
/// How long a request taken up may take (a power-on waits up to a minute
/// for the daemons it needs).
pub const CARRY_OUT_WITHIN: Duration = Duration::from_secs(600);
/// How often a waiting task checks its deadline and that the VM's host is
/// still there.
const CHECK_EVERY: Duration = Duration::from_secs(2);

impl Mgmt {
    /// Refuses at once a power request that the VM's host cannot take: a
    /// host that left the cluster, or whose lease ran out. This host
    /// answers for itself.
    pub async fn check_power_host(&self, vm: &Vm) -> Result<(), Error> {
        if vm.host == self.inventory.host() {
            return Ok(());
        }
        let hosts = self.cluster.hosts().await?;
        match hosts.iter().find(|h| h.name == vm.host) {
            None => Err(Error::Conflict(format!(
                "VM {} runs on host {}, which is not a member of the cluster: its power \
                 cannot change",
                vm.name, vm.host
            ))),
            Some(h) if h.state == HostState::NotResponding => Err(Error::Conflict(format!(
                "VM {} runs on host {}, which is not responding (its cluster lease ran out): \
                 its power cannot change until that host is back (see GET /api/v1/hosts)",
                vm.name, vm.host
            ))),
            Some(_) => Ok(()),
        }
    }

    /// A power request as a task: recorded for the VM's host (this one or
    /// another), carried out by that host's controller, and answered with
    /// what came of it there.
    pub async fn ask_power(
        self: Arc<Self>,
        vm: Vm,
        action: PowerAction,
        user: String,
        ctx: TaskCtx,
    ) -> Result<serde_json::Value, Error> {
        let request = new_request(action, &user, self.inventory.host(), ctx.id);
        let (generation, after) = self.inventory.request_power(&vm.id, request).await?;
        ctx.progress(10, &format!("waiting for host {}", vm.host));
        let waiting = Waiting {
            vm: &vm,
            action,
            generation,
            since: Instant::now(),
            ctx: &ctx,
        };
        self.await_power(&waiting, after).await
    }

    /// Follows the VM's power status from revision `after` until its host
    /// has recorded what came of the request.
    async fn await_power(
        &self,
        w: &Waiting<'_>,
        mut after: i64,
    ) -> Result<serde_json::Value, Error> {
        let mut taken = false;
        loop {
            let watch = self
                .inventory
                .store
                .watch::<PowerStatus>(STATUS, after)
                .await;
            // What is there now (a watch that restarted may have missed it).
            if let Some(s) = self.inventory.power_status(&w.vm.id).await? {
                taken = w.taken(&s.value, taken);
                if let Some(done) = w.outcome(&s.value) {
                    return done;
                }
            }
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::debug!(vm = w.vm.name, "Cannot watch the VM's power status: {e}");
                    self.still_waiting(w, taken).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    changes = watch.next() => match changes {
                        Ok(changes) => {
                            for change in changes.into_iter().filter(|c| c.name() == w.vm.id) {
                                let Change::Put(_, s) = change else {
                                    return Err(Error::Conflict(format!(
                                        "VM {} was deleted before its {} was carried out",
                                        w.vm.name,
                                        w.action.noun()
                                    )));
                                };
                                after = after.max(s.revision);
                                taken = w.taken(&s.value, taken);
                                if let Some(done) = w.outcome(&s.value) {
                                    return done;
                                }
                            }
                        }
                        Err(WatchEnded::Compacted(at)) => {
                            after = after.max(at - 1);
                            break;
                        }
                        Err(WatchEnded::Lost(why)) => {
                            tracing::debug!(vm = w.vm.name, "The power status watch ended: {why}");
                            break;
                        }
                    },
                    () = tokio::time::sleep(CHECK_EVERY) => self.still_waiting(w, taken).await?,
                }
            }
        }
    }

    /// Fails a wait that is over its deadline, or whose host went away.
    async fn still_waiting(&self, w: &Waiting<'_>, taken: bool) -> Result<(), Error> {
        let (host, what) = (
            &w.vm.host,
            format!("the {} of VM {}", w.action.noun(), w.vm.name),
        );
        if !taken && w.since.elapsed() > TAKE_UP_WITHIN {
            return Err(Error::Unavailable(format!(
                "host {host} did not carry out {what} within {} s: is it connected? \
                 (see GET /api/v1/hosts)",
                TAKE_UP_WITHIN.as_secs()
            )));
        }
        // A shutdown or reboot waits for the guest on top.
        let within = CARRY_OUT_WITHIN + w.action.guest_wait();
        if w.since.elapsed() > within {
            return Err(Error::Unavailable(format!(
                "host {host} took up {what} but did not report its end within {} s",
                within.as_secs()
            )));
        }
        if taken && *host != self.inventory.host() {
            let hosts = self.cluster.hosts().await?;
            if !hosts
                .iter()
                .any(|h| h.name == *host && h.state == HostState::Connected)
            {
                return Err(Error::Unavailable(format!(
                    "host {host} stopped responding while it carried out {what}: whether it \
                     happened is unknown (see GET /api/v1/vms/{})",
                    w.vm.name
                )));
            }
        }
        Ok(())
    }
}

/// A request a task waits for.
struct Waiting<'a> {
    vm: &'a Vm,
    action: PowerAction,
    generation: u64,
    since: Instant,
    ctx: &'a TaskCtx,
}

impl Waiting<'_> {
    /// Whether the host has taken the request up, as `status` says (and
    /// the task says so the first time).
    fn taken(&self, status: &PowerStatus, before: bool) -> bool {
        let now = status.seen >= self.generation;
        if now && !before {
            self.ctx
                .progress(50, &format!("host {} is carrying it out", self.vm.host));
        }
        before || now
    }

    /// What came of the request, once `status` has it.
    fn outcome(&self, status: &PowerStatus) -> Option<Result<serde_json::Value, Error>> {
        if status.done < self.generation {
            return None;
        }
        Some(match status.outcome(self.generation) {
            Some(PowerOutcome { error: Some(e), .. }) => Err(Error::Internal(e.clone())),
            Some(o) => Ok(o.result.clone().unwrap_or_default()),
            None => Err(Error::Internal(format!(
                "host {} carried out the {} of VM {}, but its outcome is no longer recorded \
                 (see GET /api/v1/vms/{})",
                self.vm.host,
                self.action.noun(),
                self.vm.name,
                self.vm.name
            ))),
        })
    }
}

/// A request of `action` by `user` through `host`'s task `task`, its
/// generation not given yet.
pub fn new_request(action: PowerAction, user: &str, host: &str, task: i64) -> PowerRequest {
    PowerRequest {
        generation: 0,
        action,
        user: user.to_owned(),
        host: host.to_owned(),
        task,
        at: now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(action: PowerAction) -> PowerRequest {
        new_request(action, "admin", "esx-b", 7)
    }

    fn outcome(generation: u64) -> PowerOutcome {
        PowerOutcome {
            generation,
            action: PowerAction::On,
            result: Some(serde_json::json!({ "state": "running" })),
            error: None,
            at: 0,
        }
    }

    #[test]
    fn each_request_gets_the_next_generation_and_a_reset_is_one_too() {
        let r = PowerRequests::default();
        let r = r.push(0, ask(PowerAction::On)).unwrap();
        let r = r.push(0, ask(PowerAction::Reset)).unwrap();
        let r = r.push(0, ask(PowerAction::Reset)).unwrap();
        assert_eq!(r.generation, 3);
        let gens: Vec<(u64, PowerAction)> =
            r.pending.iter().map(|p| (p.generation, p.action)).collect();
        assert_eq!(
            gens,
            [
                (1, PowerAction::On),
                (2, PowerAction::Reset),
                (3, PowerAction::Reset)
            ]
        );
    }

    #[test]
    fn requests_carried_out_are_dropped_and_the_rest_keep_their_order() {
        let mut r = PowerRequests::default();
        for _ in 0..3 {
            r = r.push(0, ask(PowerAction::On)).unwrap();
        }
        let r = r.push(2, ask(PowerAction::Off)).unwrap();
        let gens: Vec<u64> = r.pending.iter().map(|p| p.generation).collect();
        assert_eq!(gens, [3, 4]);
        assert_eq!(r.pending_after(3).count(), 1);
    }

    #[test]
    fn too_many_waiting_requests_are_refused_until_the_host_catches_up() {
        let mut r = PowerRequests::default();
        for _ in 0..PENDING_MAX {
            r = r.push(0, ask(PowerAction::Reset)).unwrap();
        }
        assert_eq!(r.push(0, ask(PowerAction::Off)), Err(TooMany));
        assert!(r.push(1, ask(PowerAction::Off)).is_ok());
    }

    #[test]
    fn a_status_keeps_the_latest_outcomes_and_never_goes_back() {
        let mut s = PowerStatus::default();
        s.take_up(3);
        assert_eq!((s.seen, s.done), (3, 0));
        for g in 1..=(OUTCOMES_KEPT as u64 + 5) {
            s.record(outcome(g));
        }
        assert_eq!(s.outcomes.len(), OUTCOMES_KEPT);
        assert!(s.outcome(5).is_none());
        assert!(s.outcome(OUTCOMES_KEPT as u64 + 5).is_some());
        s.take_up(1);
        assert_eq!(s.seen, OUTCOMES_KEPT as u64 + 5);
    }

    /// A one-member etcd in `dir`, killed when dropped, and the inventory
    /// of host `esx-a` in it with one stopped VM, `vm-1`.
    async fn inventory_with_a_vm(dir: &std::path::Path) -> (tokio::process::Child, Inventory) {
        use crate::membership::ClusterFile;
        let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let file = ClusterFile::load_or_create(dir, "esx-a", &[], loopback).unwrap();
        let spec = file.member_spec(dir, dir, dir).unwrap().unwrap();
        let etcd = tokio::process::Command::new(&spec.binary)
            .args(&spec.args)
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcd runs (make test installs etcd-server)");
        let store = crate::membership::connect(&file, dir, Duration::from_secs(30))
            .await
            .unwrap();
        let inventory = Inventory::new(store, "esx-a".into());
        let vm = Vm {
            id: "vm-1".into(),
            name: "one".into(),
            host: "esx-a".into(),
            resource_version: 0,
            vcpus: 1,
            memory_mib: 64,
            boot: crate::db::Boot::Disk,
            driver: "qemu".into(),
            driver_reason: String::new(),
            state: crate::db::VmState::Stopped,
            pid: None,
            disks: Vec::new(),
            nics: Vec::new(),
            created_at: 0,
            updated_at: 0,
        };
        inventory.insert_vm(&vm).await.unwrap();
        (etcd, inventory)
    }

    /// Requests racing through the store each get their own generation
    /// (none lost), the host's status is written only at the revision it
    /// read, and the records go with the VM.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_requests_get_distinct_generations_through_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (_etcd, inventory) = inventory_with_a_vm(dir.path()).await;
        let racers: Vec<_> = (0..6)
            .map(|i| {
                let inv = inventory.clone();
                tokio::spawn(async move {
                    inv.request_power("vm-1", new_request(PowerAction::Reset, "admin", "esx-b", i))
                        .await
                })
            })
            .collect();
        let mut generations = Vec::new();
        for r in racers {
            generations.push(r.await.unwrap().unwrap().0);
        }
        generations.sort_unstable();
        assert_eq!(generations, [1, 2, 3, 4, 5, 6]);
        let stored = inventory.power_requests("vm-1").await.unwrap().unwrap();
        assert_eq!(stored.value.pending.len(), 6);

        let mut status = PowerStatus::default();
        status.take_up(6);
        let first = inventory
            .set_power_status("vm-1", &status, None)
            .await
            .unwrap();
        assert!(
            inventory
                .set_power_status("vm-1", &status, None)
                .await
                .is_err(),
            "a second create of the status"
        );
        status.record(outcome(1));
        let second = inventory
            .set_power_status("vm-1", &status, Some(first))
            .await
            .unwrap();
        assert!(
            matches!(
                inventory
                    .set_power_status("vm-1", &status, Some(first))
                    .await,
                Err(Error::Store(StoreError::Conflict { .. }))
            ),
            "a write at a stale revision"
        );
        assert!(second > first);
        // The next request drops what is carried out.
        let (g, _) = inventory
            .request_power("vm-1", new_request(PowerAction::Off, "admin", "esx-a", 9))
            .await
            .unwrap();
        assert_eq!(g, 7);
        let stored = inventory.power_requests("vm-1").await.unwrap().unwrap();
        assert_eq!(stored.value.pending.first().map(|r| r.generation), Some(2));

        inventory.delete_vm("vm-1").await.unwrap();
        assert!(inventory.power_requests("vm-1").await.unwrap().is_none());
        assert!(inventory.power_status("vm-1").await.unwrap().is_none());
        assert!(matches!(
            inventory
                .request_power("vm-1", new_request(PowerAction::On, "admin", "esx-a", 10))
                .await,
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn the_records_read_back_as_written() {
        let r = PowerRequests::default()
            .push(0, ask(PowerAction::Pause))
            .unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"action\":\"pause\""), "{text}");
        assert_eq!(serde_json::from_str::<PowerRequests>(&text).unwrap(), r);
    }
}
