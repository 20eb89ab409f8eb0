//! This host's VM controller: it follows every VM's requests (`vm-ops/`,
//! [`super::ops`]) and carries out those of the VMs this host runs, through
//! the same code as this host's own API ([`Mgmt::power`],
//! [`Mgmt::edit_vm`], [`Mgmt::delete_vm`]), then records what came of each
//! in the VM's status.
//!
//! It acts on requests (a generation it has not carried out), never on
//! drift: a VM that stopped by itself stays stopped. At start, and after
//! its watch ends (a broken stream, or history compacted under it), it
//! lists every request record again, so a request made while this mgmtd
//! was away or not watching is carried out all the same. A request is
//! carried out at least once: one whose outcome could not be recorded is
//! carried out again (on a VM already in the state asked for, a power-on,
//! power-off, pause or resume changes nothing; an edit is planned against
//! the VM's `resource_version` and so is refused the second time if it
//! named one; a deletion finds the VM gone).

use std::sync::Arc;
use std::time::Duration;

use cluster::{Change, WatchEnded};

use super::ops::{OpOutcome, OpRequest, OpRequests, REQUESTS, VmOp};
use crate::db::now;
use crate::error::Error;
use crate::service::Mgmt;

/// The pause before listing again after the watch ended or a list failed.
const RELIST_PAUSE: Duration = Duration::from_millis(500);
/// How often one VM's requests are tried when recording fails, before
/// they wait for the next change or the next list.
const TRIES: u32 = 3;

impl Mgmt {
    /// The controller loop; runs as long as mgmtd.
    pub async fn run_vm_controller(self: Arc<Self>) {
        loop {
            match self.inventory.store.list_at::<OpRequests>(REQUESTS).await {
                Ok((records, at)) => {
                    for (id, _) in records {
                        self.kick(&id);
                    }
                    let ended = self.follow_requests(at).await;
                    tracing::info!("VM requests listed again: {ended}");
                }
                Err(e) => tracing::warn!("Cannot list the VMs' requests: {e}"),
            }
            tokio::time::sleep(RELIST_PAUSE).await;
        }
    }

    /// Kicks the VM of each request record written after revision `at`,
    /// until the watch ends.
    async fn follow_requests(self: &Arc<Self>, at: i64) -> WatchEnded {
        let mut watch = match self.inventory.store.watch::<OpRequests>(REQUESTS, at).await {
            Ok(w) => w,
            Err(e) => return e,
        };
        loop {
            match watch.next().await {
                Ok(changes) => {
                    for change in changes {
                        if let Change::Put(id, _) = change {
                            self.kick(&id);
                        }
                    }
                }
                Err(e) => return e,
            }
        }
    }

    /// Has VM `id`'s requests looked at: by a new worker, or by the one at
    /// work on them once it is done with what it read.
    fn kick(self: &Arc<Self>, id: &str) {
        let mut busy = self.vm_workers();
        match busy.get_mut(id) {
            Some(again) => *again = true,
            None => {
                busy.insert(id.to_owned(), false);
                tokio::spawn(Arc::clone(self).vm_worker(id.to_owned()));
            }
        }
    }

    /// One VM's worker: carries out its requests until none is left, then
    /// ends (the next kick starts another).
    async fn vm_worker(self: Arc<Self>, id: String) {
        let mut failures = 0;
        loop {
            match self.carry_out_requests(&id).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(vm = id, "Cannot carry out its requests: {e}");
                    if failures < TRIES {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let mut busy = self.vm_workers();
            match busy.get_mut(&id) {
                Some(again) if *again => *again = false,
                _ => {
                    busy.remove(&id);
                    return;
                }
            }
        }
    }

    /// Carries out VM `id`'s requests not carried out yet, oldest first,
    /// if this host runs it, recording each outcome.
    async fn carry_out_requests(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let Some(vm) = self.inventory.vm(id).await? else {
            return Ok(());
        };
        if vm.id != id || vm.host != self.inventory.host() {
            return Ok(());
        }
        let Some(requests) = self.inventory.op_requests(id).await? else {
            return Ok(());
        };
        let (mut status, mut revision) = match self.inventory.op_status(id).await? {
            Some(s) => (s.value, Some(s.revision)),
            None => Default::default(),
        };
        let pending: Vec<OpRequest> = requests.value.pending_after(status.done).cloned().collect();
        if pending.is_empty() {
            return Ok(());
        }
        // Taken up: the askers wait for the outcome, not for this host.
        status.take_up(requests.value.generation);
        revision = Some(self.inventory.set_op_status(id, &status, revision).await?);
        for r in pending {
            tracing::info!(
                vm = vm.name,
                generation = r.generation,
                op = r.op.noun(),
                "Request of {} through {} (task {})",
                r.user,
                r.host,
                r.task
            );
            let deletion = matches!(r.op, VmOp::Delete { .. });
            let done = Arc::clone(self).carry_out(id, &r).await;
            if deletion && done.is_ok() {
                // Its records went with it; the askers see them go.
                return Ok(());
            }
            let (result, error) = match done {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e.to_string())),
            };
            status.record(OpOutcome {
                generation: r.generation,
                op: r.op.noun().to_owned(),
                result,
                error,
                at: now(),
            });
            revision = Some(self.inventory.set_op_status(id, &status, revision).await?);
        }
        Ok(())
    }

    /// Carries out one request of VM `id` as this host's API would: an
    /// edit is checked and planned here, against this host's memory, its
    /// daemons and the VM as it is now; an edit or a deletion is a task
    /// here too (its steps are this host's).
    async fn carry_out(
        self: Arc<Self>,
        id: &str,
        r: &OpRequest,
    ) -> Result<serde_json::Value, Error> {
        let by = format!("{} (through {})", r.user, r.host);
        match &r.op {
            VmOp::Power(action) => self.power(id.to_owned(), *action, r.user.clone()).await,
            VmOp::Edit(edit) => {
                let vm = self.find_vm(id).await?;
                edit.check(self.host.memory_bytes >> 20)?;
                let plan = self.plan_edit(&vm, edit).await?;
                let (m, user) = (Arc::clone(&self), r.user.clone());
                crate::tasks::run(&self.db, "vm.edit", id, &by, move |ctx| {
                    m.edit_vm(plan, user, ctx)
                })
                .await
            }
            VmOp::Delete { disks } => {
                let (m, user, disks) = (Arc::clone(&self), r.user.clone(), *disks);
                crate::tasks::run(&self.db, "vm.delete", id, &by, move |_| {
                    m.delete_vm(id.to_owned(), disks, user)
                })
                .await
            }
        }
    }
}
