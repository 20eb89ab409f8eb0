//! Operations on a VM through the cluster (power, edit, delete): any
//! host's API asks, the VM's host carries the request out (docs/cluster.md,
//! "Controller loops").
//!
//! Two records per VM, each with one kind of writer:
//! - `vm-ops/<id>` ([`OpRequests`]): written by whichever host's API
//!   takes a request. Each request gets the next generation, given by a
//!   compare-and-swap on the record's revision, so two hosts asking at the
//!   same moment get two generations and neither request is lost. The
//!   record holds the requests its VM's host has not carried out yet, in
//!   order; a reset is a request like any other (a new generation), not a
//!   state.
//! - `vm-ops-status/<id>` ([`OpStatus`]): written by the VM's host
//!   alone: the last generation it has taken up (`seen`), the last it has
//!   carried out (`done`), and the outcome of each recent one, which the
//!   asking host's task reports.
//!
//! The host acts on requests, not on drift: a VM that stops by itself is
//! not started again here. A request is checked by the asking host as far
//! as it can be without the VM's host (the action, the edit's fields, a
//! running VM's deletion), and planned and carried out by the VM's host,
//! whose refusals the asking task reports.

use std::sync::Arc;
use std::time::Duration;

use cluster::{Batch, Change, StoreError, Versioned, WatchEnded};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::edit::EditVm;
use super::service::PowerAction;
use crate::db::{Vm, now};
use crate::error::Error;
use crate::host::HostFacts;
use crate::inventory::Inventory;
use crate::membership::HostState;
use crate::service::Mgmt;
use crate::tasks::TaskCtx;

/// The kind of the request records.
pub const REQUESTS: &str = "vm-ops";
/// The kind of the outcome records.
pub const STATUS: &str = "vm-ops-status";
/// How many requests of one VM may wait for its host.
pub const PENDING_MAX: usize = 16;
/// How many outcomes a VM's status keeps: at least as many as may wait,
/// so each waiting request's outcome is still there when its asker looks.
const OUTCOMES_KEPT: usize = 2 * PENDING_MAX;
/// How often a request is written again when another host's request
/// moved the record under it.
const REQUEST_TRIES: usize = 8;

/// `vm-ops/<id>`: the requests of a VM its host has not carried
/// out yet, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequests {
    /// The generation of the latest request (0: none ever).
    pub generation: u64,
    pub pending: Vec<OpRequest>,
}

/// What a request asks of the VM's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VmOp {
    /// `POST /api/v1/vms/{vm}/power/{action}`.
    Power(PowerAction),
    /// `PATCH /api/v1/vms/{vm}`, planned by the VM's host.
    Edit(Box<EditVm>),
    /// `DELETE /api/v1/vms/{vm}`, with its volumes or not.
    Delete { disks: bool },
}

impl VmOp {
    /// The operation as a task's text names it: "power on", "edit".
    pub fn noun(&self) -> &'static str {
        match self {
            VmOp::Power(a) => a.noun(),
            VmOp::Edit(_) => "edit",
            VmOp::Delete { .. } => "deletion",
        }
    }

    /// How long it may wait for the guest, on top of the host's own work
    /// (a shutdown's or reboot's timeout).
    pub fn guest_wait(&self) -> Duration {
        match self {
            VmOp::Power(a) => a.guest_wait(),
            VmOp::Edit(_) | VmOp::Delete { .. } => Duration::ZERO,
        }
    }

    /// The kind of the task that asks for it.
    pub fn task_kind(&self) -> &'static str {
        match self {
            VmOp::Power(a) => a.task_kind(),
            VmOp::Edit(_) => "vm.edit",
            VmOp::Delete { .. } => "vm.delete",
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequest {
    pub generation: u64,
    pub op: VmOp,
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

impl OpRequests {
    /// The record with `request` added under the next generation, and the
    /// requests carried out up to `done` dropped. Too many waiting is
    /// refused rather than queued without end behind a host that is slow.
    pub fn push(&self, done: u64, mut request: OpRequest) -> Result<Self, TooMany> {
        let mut pending: Vec<OpRequest> = self.pending_after(done).cloned().collect();
        if pending.len() >= PENDING_MAX {
            return Err(TooMany);
        }
        request.generation = self.generation + 1;
        pending.push(request);
        Ok(OpRequests {
            generation: self.generation + 1,
            pending,
        })
    }

    /// The requests after generation `done`, oldest first.
    pub fn pending_after(&self, done: u64) -> impl Iterator<Item = &OpRequest> {
        self.pending.iter().filter(move |r| r.generation > done)
    }
}

/// `vm-ops-status/<id>`: what the VM's host did with its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpStatus {
    /// The latest generation the host has taken up (queued behind the VM's
    /// operations).
    pub seen: u64,
    /// The latest generation carried out.
    pub done: u64,
    /// The outcomes of the latest generations carried out, oldest first.
    pub outcomes: Vec<OpOutcome>,
}

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpOutcome {
    pub generation: u64,
    /// What was carried out ([`VmOp::noun`]).
    pub op: String,
    /// What the operation answered, when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Why it failed, in the host's words.
    pub error: Option<String>,
    /// When it ended (seconds since the epoch).
    pub at: i64,
}

impl OpStatus {
    /// Records that generations up to `generation` are taken up.
    pub fn take_up(&mut self, generation: u64) {
        self.seen = self.seen.max(generation);
    }

    /// Records a request's outcome, keeping the latest few.
    pub fn record(&mut self, outcome: OpOutcome) {
        self.seen = self.seen.max(outcome.generation);
        self.done = self.done.max(outcome.generation);
        self.outcomes.push(outcome);
        let extra = self.outcomes.len().saturating_sub(OUTCOMES_KEPT);
        self.outcomes.drain(..extra);
    }

    /// The outcome of `generation`, if it is carried out and still kept.
    pub fn outcome(&self, generation: u64) -> Option<&OpOutcome> {
        self.outcomes.iter().find(|o| o.generation == generation)
    }
}

impl Inventory {
    /// Records a power request for VM `id` as its next generation: the
    /// generation and the revision it was written at (what came of it is
    /// written after that revision).
    pub async fn request_op(&self, id: &str, request: OpRequest) -> Result<(u64, i64), Error> {
        let key = self.store.key(REQUESTS, id);
        for _ in 0..REQUEST_TRIES {
            let stored = self.store.get::<OpRequests>(&key).await?;
            let done = self.op_status(id).await?.map_or(0, |s| s.value.done);
            let current = stored.as_ref().map(|s| s.value.clone()).unwrap_or_default();
            let Ok(next) = current.push(done, request.clone()) else {
                return Err(Error::Conflict(format!(
                    "{PENDING_MAX} requests of VM {id} are waiting for its host already: \
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
            "VM {id} gets too many requests at once: try again"
        )))
    }

    /// VM `id`'s power requests.
    pub async fn op_requests(&self, id: &str) -> Result<Option<Versioned<OpRequests>>, Error> {
        Ok(self.store.get(&self.store.key(REQUESTS, id)).await?)
    }

    /// What VM `id`'s host did with its power requests.
    pub async fn op_status(&self, id: &str) -> Result<Option<Versioned<OpStatus>>, Error> {
        Ok(self.store.get(&self.store.key(STATUS, id)).await?)
    }

    /// Writes VM `id`'s power status if it is still at `revision` (none:
    /// not written yet) and the VM still exists. Its new revision.
    pub async fn set_op_status(
        &self,
        id: &str,
        status: &OpStatus,
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
    /// Refuses at once a request that the VM's host cannot take: a host
    /// that left the cluster, or whose lease ran out. The host's facts, for
    /// the checks made before asking it. This host answers for itself.
    pub async fn check_vm_host(&self, vm: &Vm, what: &str) -> Result<HostFacts, Error> {
        if vm.host == self.inventory.host() {
            return Ok(self.host.clone());
        }
        let hosts = self.cluster.hosts().await?;
        match hosts.into_iter().find(|h| h.name == vm.host) {
            None => Err(Error::Conflict(format!(
                "VM {} runs on host {}, which is not a member of the cluster: its {what} \
                 cannot be carried out",
                vm.name, vm.host
            ))),
            Some(h) if h.state == HostState::NotResponding => Err(Error::Conflict(format!(
                "VM {} runs on host {}, which is not responding (its cluster lease ran out): \
                 its {what} cannot be carried out until that host is back (see GET \
                 /api/v1/hosts)",
                vm.name, vm.host
            ))),
            Some(h) => Ok(h.facts),
        }
    }

    /// A request as a task: recorded for the VM's host (this one or
    /// another), carried out by that host's controller, and answered with
    /// what came of it there.
    pub async fn ask(
        self: Arc<Self>,
        vm: Vm,
        op: VmOp,
        user: String,
        ctx: TaskCtx,
    ) -> Result<serde_json::Value, Error> {
        let request = new_request(op.clone(), &user, self.inventory.host(), ctx.id);
        let (generation, after) = self.inventory.request_op(&vm.id, request).await?;
        ctx.progress(10, &format!("waiting for host {}", vm.host));
        let waiting = Waiting {
            vm: &vm,
            op: &op,
            generation,
            since: Instant::now(),
            ctx: &ctx,
        };
        self.await_outcome(&waiting, after).await
    }

    /// Follows the VM's status from revision `after` until its host has
    /// recorded what came of the request.
    async fn await_outcome(
        &self,
        w: &Waiting<'_>,
        mut after: i64,
    ) -> Result<serde_json::Value, Error> {
        let mut taken = false;
        loop {
            let watch = self.inventory.store.watch::<OpStatus>(STATUS, after).await;
            // What is there now (a watch that restarted may have missed it).
            match self.inventory.op_status(&w.vm.id).await? {
                Some(s) => {
                    taken = w.taken(&s.value, taken);
                    if let Some(done) = w.outcome(&s.value) {
                        return done;
                    }
                }
                None if self.inventory.vm(&w.vm.id).await?.is_none() => return w.gone(),
                None => {}
            }
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::debug!(vm = w.vm.name, "Cannot watch the VM's status: {e}");
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
                                    return w.gone();
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
                            tracing::debug!(vm = w.vm.name, "The VM's status watch ended: {why}");
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
            format!("the {} of VM {}", w.op.noun(), w.vm.name),
        );
        if !taken && w.since.elapsed() > TAKE_UP_WITHIN {
            return Err(Error::Unavailable(format!(
                "host {host} did not carry out {what} within {} s: is it connected? \
                 (see GET /api/v1/hosts)",
                TAKE_UP_WITHIN.as_secs()
            )));
        }
        // A shutdown or reboot waits for the guest on top.
        let within = CARRY_OUT_WITHIN + w.op.guest_wait();
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
                .any(|h| h.name == *host && h.state != HostState::NotResponding)
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
    op: &'a VmOp,
    generation: u64,
    since: Instant,
    ctx: &'a TaskCtx,
}

impl Waiting<'_> {
    /// Whether the host has taken the request up, as `status` says (and
    /// the task says so the first time).
    fn taken(&self, status: &OpStatus, before: bool) -> bool {
        let now = status.seen >= self.generation;
        if now && !before {
            self.ctx
                .progress(50, &format!("host {} is carrying it out", self.vm.host));
        }
        before || now
    }

    /// What came of the request, once `status` has it.
    fn outcome(&self, status: &OpStatus) -> Option<Result<serde_json::Value, Error>> {
        if status.done < self.generation {
            return None;
        }
        Some(match status.outcome(self.generation) {
            Some(OpOutcome { error: Some(e), .. }) => Err(Error::Internal(e.clone())),
            Some(o) => Ok(o.result.clone().unwrap_or_default()),
            None => Err(Error::Internal(format!(
                "host {} carried out the {} of VM {}, but its outcome is no longer recorded \
                 (see GET /api/v1/vms/{})",
                self.vm.host,
                self.op.noun(),
                self.vm.name,
                self.vm.name
            ))),
        })
    }

    /// The VM is gone, its records with it: what a deletion asked for
    /// (its host deleted it, and with it the status it would have written
    /// the outcome in), anything else's end.
    fn gone(&self) -> Result<serde_json::Value, Error> {
        match self.op {
            VmOp::Delete { disks } => Ok(serde_json::json!({
                "id": self.vm.id,
                "deleted": true,
                "disks_deleted": disks,
            })),
            op => Err(Error::Conflict(format!(
                "VM {} was deleted before its {} was carried out",
                self.vm.name,
                op.noun()
            ))),
        }
    }
}

/// A request of `op` by `user` through `host`'s task `task`, its
/// generation not given yet.
pub fn new_request(op: VmOp, user: &str, host: &str, task: i64) -> OpRequest {
    OpRequest {
        generation: 0,
        op,
        user: user.to_owned(),
        host: host.to_owned(),
        task,
        at: now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(action: PowerAction) -> OpRequest {
        new_request(VmOp::Power(action), "admin", "esx-b", 7)
    }

    fn ask_as(action: PowerAction, task: i64) -> OpRequest {
        new_request(VmOp::Power(action), "admin", "esx-b", task)
    }

    fn outcome(generation: u64) -> OpOutcome {
        OpOutcome {
            generation,
            op: "power on".into(),
            result: Some(serde_json::json!({ "state": "running" })),
            error: None,
            at: 0,
        }
    }

    #[test]
    fn each_request_gets_the_next_generation_and_a_reset_is_one_too() {
        let r = OpRequests::default();
        let r = r.push(0, ask(PowerAction::On)).unwrap();
        let r = r.push(0, ask(PowerAction::Reset)).unwrap();
        let r = r.push(0, ask(PowerAction::Reset)).unwrap();
        assert_eq!(r.generation, 3);
        let gens: Vec<(u64, &VmOp)> = r.pending.iter().map(|p| (p.generation, &p.op)).collect();
        assert_eq!(
            gens,
            [
                (1, &VmOp::Power(PowerAction::On)),
                (2, &VmOp::Power(PowerAction::Reset)),
                (3, &VmOp::Power(PowerAction::Reset))
            ]
        );
    }

    #[test]
    fn requests_carried_out_are_dropped_and_the_rest_keep_their_order() {
        let mut r = OpRequests::default();
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
        let mut r = OpRequests::default();
        for _ in 0..PENDING_MAX {
            r = r.push(0, ask(PowerAction::Reset)).unwrap();
        }
        assert_eq!(r.push(0, ask(PowerAction::Off)), Err(TooMany));
        assert!(r.push(1, ask(PowerAction::Off)).is_ok());
    }

    #[test]
    fn a_status_keeps_the_latest_outcomes_and_never_goes_back() {
        let mut s = OpStatus::default();
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
                tokio::spawn(
                    async move { inv.request_op("vm-1", ask_as(PowerAction::Reset, i)).await },
                )
            })
            .collect();
        let mut generations = Vec::new();
        for r in racers {
            generations.push(r.await.unwrap().unwrap().0);
        }
        generations.sort_unstable();
        assert_eq!(generations, [1, 2, 3, 4, 5, 6]);
        let stored = inventory.op_requests("vm-1").await.unwrap().unwrap();
        assert_eq!(stored.value.pending.len(), 6);

        let mut status = OpStatus::default();
        status.take_up(6);
        let first = inventory
            .set_op_status("vm-1", &status, None)
            .await
            .unwrap();
        assert!(
            inventory
                .set_op_status("vm-1", &status, None)
                .await
                .is_err(),
            "a second create of the status"
        );
        status.record(outcome(1));
        let second = inventory
            .set_op_status("vm-1", &status, Some(first))
            .await
            .unwrap();
        assert!(
            matches!(
                inventory.set_op_status("vm-1", &status, Some(first)).await,
                Err(Error::Store(StoreError::Conflict { .. }))
            ),
            "a write at a stale revision"
        );
        assert!(second > first);
        // The next request drops what is carried out.
        let (g, _) = inventory
            .request_op("vm-1", ask_as(PowerAction::Off, 9))
            .await
            .unwrap();
        assert_eq!(g, 7);
        let stored = inventory.op_requests("vm-1").await.unwrap().unwrap();
        assert_eq!(stored.value.pending.first().map(|r| r.generation), Some(2));

        inventory.delete_vm("vm-1").await.unwrap();
        assert!(inventory.op_requests("vm-1").await.unwrap().is_none());
        assert!(inventory.op_status("vm-1").await.unwrap().is_none());
        assert!(matches!(
            inventory
                .request_op("vm-1", ask_as(PowerAction::On, 10))
                .await,
            Err(Error::NotFound { .. })
        ));
    }

    /// A cluster at schema 2 is raised to 3, its power requests of
    /// version 2 dropped and nothing else; a newer schema stops a start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_upgrade_to_schema_3_drops_the_old_power_requests_only() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let (_etcd, inventory) = inventory_with_a_vm(dir.path()).await;
        let store = &inventory.store;
        let schema = store.key("schema", "inventory");
        let old = store.get::<serde_json::Value>(&schema).await.unwrap();
        let at_2 = json!({ "version": 2 });
        match old {
            Some(v) => store.update(&schema, &at_2, v.revision).await.unwrap(),
            None => store.create(&schema, &at_2).await.unwrap(),
        };
        let old_request = json!({ "generation": 1, "pending": [] });
        for kind in ["vm-power", "vm-power-status"] {
            store
                .create(&store.key(kind, "vm-1"), &old_request)
                .await
                .unwrap();
        }
        inventory.check_schema().await.unwrap();
        let now = store
            .get::<serde_json::Value>(&schema)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.value["version"], crate::inventory::SCHEMA_VERSION);
        for kind in ["vm-power", "vm-power-status"] {
            assert!(
                store
                    .list::<serde_json::Value>(kind)
                    .await
                    .unwrap()
                    .is_empty(),
                "{kind}"
            );
        }
        assert!(
            inventory.vm("vm-1").await.unwrap().is_some(),
            "the VM went too"
        );
        // A newer layout than this mgmtd knows: refused, left as it is.
        store
            .update(&schema, &json!({ "version": 99 }), now.revision)
            .await
            .unwrap();
        let refused = inventory.check_schema().await.unwrap_err().to_string();
        assert!(refused.contains("newer than this mgmtd knows"), "{refused}");
    }

    #[test]
    fn the_records_read_back_as_written() {
        let edit = EditVm {
            name: Some("renamed".into()),
            memory_mib: Some(256),
            ..EditVm::default()
        };
        let r = OpRequests::default()
            .push(0, ask(PowerAction::Pause))
            .and_then(|r| {
                r.push(
                    0,
                    new_request(VmOp::Edit(Box::new(edit)), "ann", "esx-b", 8),
                )
            })
            .and_then(|r| {
                r.push(
                    0,
                    new_request(VmOp::Delete { disks: true }, "ann", "esx-c", 9),
                )
            })
            .unwrap();
        let text = serde_json::to_string(&r).unwrap();
        for part in [
            r#""op":{"power":"pause"}"#,
            r#""op":{"edit":{"name":"renamed","#,
            r#""op":{"delete":{"disks":true}}"#,
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(serde_json::from_str::<OpRequests>(&text).unwrap(), r);
        // An edit with a field this mgmtd does not know is refused, not
        // carried out in part.
        let unknown = text.replace(r#""name":"renamed""#, r#""name":"renamed","colour":"red""#);
        assert!(serde_json::from_str::<OpRequests>(&unknown).is_err());
    }
}
