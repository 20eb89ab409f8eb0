//! This host's power controller: it follows every VM's power requests
//! (`vm-power/`, [`super::power`]) and carries out, through
//! [`Mgmt::power`], those of the VMs this host runs, then records what
//! came of each in the VM's power status.
//!
//! It acts on requests (a generation it has not carried out), never on
//! drift: a VM that stopped by itself stays stopped. At start, and after
//! its watch ends (a broken stream, or history compacted under it), it
//! lists every request record again, so a request made while this mgmtd
//! was away or not watching is carried out all the same. A request is
//! carried out at least once: one whose outcome could not be recorded is
//! carried out again (on a VM already in the state asked for, a power-on,
//! power-off, pause or resume changes nothing).

use std::sync::Arc;
use std::time::Duration;

use cluster::{Change, WatchEnded};

use super::power::{PowerOutcome, PowerRequest, PowerRequests, REQUESTS};
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
    pub async fn run_power_controller(self: Arc<Self>) {
        loop {
            match self
                .inventory
                .store
                .list_at::<PowerRequests>(REQUESTS)
                .await
            {
                Ok((records, at)) => {
                    for (id, _) in records {
                        self.kick_power(&id);
                    }
                    let ended = self.follow_power_requests(at).await;
                    tracing::info!("Power requests listed again: {ended}");
                }
                Err(e) => tracing::warn!("Cannot list the power requests: {e}"),
            }
            tokio::time::sleep(RELIST_PAUSE).await;
        }
    }

    /// Kicks the VM of each request record written after revision `at`,
    /// until the watch ends.
    async fn follow_power_requests(self: &Arc<Self>, at: i64) -> WatchEnded {
        let mut watch = match self
            .inventory
            .store
            .watch::<PowerRequests>(REQUESTS, at)
            .await
        {
            Ok(w) => w,
            Err(e) => return e,
        };
        loop {
            match watch.next().await {
                Ok(changes) => {
                    for change in changes {
                        if let Change::Put(id, _) = change {
                            self.kick_power(&id);
                        }
                    }
                }
                Err(e) => return e,
            }
        }
    }

    /// Has VM `id`'s requests looked at: by a new worker, or by the one at
    /// work on them once it is done with what it read.
    fn kick_power(self: &Arc<Self>, id: &str) {
        let mut busy = self.power_workers();
        match busy.get_mut(id) {
            Some(again) => *again = true,
            None => {
                busy.insert(id.to_owned(), false);
                tokio::spawn(Arc::clone(self).power_worker(id.to_owned()));
            }
        }
    }

    /// One VM's worker: carries out its requests until none is left, then
    /// ends (the next kick starts another).
    async fn power_worker(self: Arc<Self>, id: String) {
        let mut failures = 0;
        loop {
            match self.carry_out_power(&id).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(vm = id, "Cannot carry out its power requests: {e}");
                    if failures < TRIES {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let mut busy = self.power_workers();
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
    async fn carry_out_power(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let Some(vm) = self.inventory.vm(id).await? else {
            return Ok(());
        };
        if vm.id != id || vm.host != self.inventory.host() {
            return Ok(());
        }
        let Some(requests) = self.inventory.power_requests(id).await? else {
            return Ok(());
        };
        let (mut status, mut revision) = match self.inventory.power_status(id).await? {
            Some(s) => (s.value, Some(s.revision)),
            None => Default::default(),
        };
        let pending: Vec<PowerRequest> =
            requests.value.pending_after(status.done).cloned().collect();
        if pending.is_empty() {
            return Ok(());
        }
        // Taken up: the askers wait for the outcome, not for this host.
        status.take_up(requests.value.generation);
        revision = Some(
            self.inventory
                .set_power_status(id, &status, revision)
                .await?,
        );
        for r in pending {
            tracing::info!(
                vm = vm.name,
                generation = r.generation,
                action = r.action.as_str(),
                "Power request of {} through {} (task {})",
                r.user,
                r.host,
                r.task
            );
            let done = Arc::clone(self)
                .power(id.to_owned(), r.action, r.user.clone())
                .await;
            let (result, error) = match done {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e.to_string())),
            };
            status.record(PowerOutcome {
                generation: r.generation,
                action: r.action,
                result,
                error,
                at: now(),
            });
            revision = Some(
                self.inventory
                    .set_power_status(id, &status, revision)
                    .await?,
            );
        }
        Ok(())
    }
}
