//! VMs whose thin datastore is out of space are paused, and resumed when
//! space is freed: vSphere's and QEMU's `werror=stop`. sfera-blockd holds
//! a write the datastore has no room for and reports it in its export's
//! `no_space.held`; a VM waiting on such a write is paused with an event and
//! a reason the API shows, instead of its guest seeing I/O time out.
//!
//! Pausing stops the VM's vhost-user queues: with QEMU the held writes move
//! to the inflight region and blockd holds nothing any more, so "space is
//! freed" cannot be read from `held`. It is read from the datastore's free
//! space instead: the VM resumes when it grew by [`MIN_FREED`] since the
//! pause, after the pause's back-off. Resuming resubmits the writes; if
//! they fail again the VM is paused again, with the back-off doubled (up
//! to [`MAX_BACKOFF`]), so a datastore that stays full cannot make a VM
//! flap. After [`MAX_BACKOFF`] a paused VM is resumed to let its writes
//! decide even if the free space did not visibly grow (space freed before
//! the pause was measured would otherwise never count).
//!
//! Only VMs mgmtd paused for space are resumed; a user's pause or resume
//! ends mgmtd's claim. The claims live in memory: a restarted mgmtd leaves
//! such a VM paused for the user to resume.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{Vm, VmState};
use crate::driver::{self, Driver};
use crate::service::Mgmt;

/// How often blockd's exports are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// The shortest pause.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest back-off, and the longest a VM stays paused before its
/// writes are retried anyway.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How much the datastore's free space must grow for a paused VM to go on.
pub const MIN_FREED: u64 = 1 << 20;

/// A VM mgmtd paused for space.
#[derive(Debug, Clone)]
struct Pause {
    datastore: String,
    free_at_pause: Option<u64>,
    at: Instant,
    backoff: Duration,
}

/// Whether a paused VM may go on, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Not yet.
    Wait,
    /// The datastore's free space grew.
    Freed,
    /// Paused for [`MAX_BACKOFF`]: its writes are retried.
    Retry,
}

/// The VMs mgmtd paused for space, and when it last resumed each.
#[derive(Debug, Default)]
pub struct NoSpacePauses {
    paused: HashMap<String, Pause>,
    resumed: HashMap<String, (Instant, Duration)>,
}

impl NoSpacePauses {
    /// Why `vm` is paused, if mgmtd paused it for space.
    pub fn reason(&self, vm: &str) -> Option<String> {
        self.paused
            .get(vm)
            .map(|p| format!("datastore {} is out of space", p.datastore))
    }

    /// Ends mgmtd's claim on `vm` (a user paused, resumed or stopped it).
    pub fn forget(&mut self, vm: &str) {
        self.paused.remove(vm);
    }

    /// Notes that `vm` was paused at `now`, its datastore then having
    /// `free` bytes; returns how long it stays paused at least: the
    /// back-off doubles when the VM fills the datastore again soon after
    /// it was resumed.
    pub fn paused(
        &mut self,
        vm: &str,
        datastore: &str,
        free: Option<u64>,
        now: Instant,
    ) -> Duration {
        let backoff = match self.resumed.get(vm) {
            Some(&(at, last)) if now.saturating_duration_since(at) < MAX_BACKOFF => {
                (last * 2).min(MAX_BACKOFF)
            }
            _ => FIRST_BACKOFF,
        };
        self.paused.insert(
            vm.to_owned(),
            Pause {
                datastore: datastore.to_owned(),
                free_at_pause: free,
                at: now,
                backoff,
            },
        );
        backoff
    }

    /// Whether the paused `vm` may go on at `now`, its datastore having
    /// `free` bytes (None: not known).
    pub fn may_resume(&self, vm: &str, free: Option<u64>, now: Instant) -> Resume {
        let Some(p) = self.paused.get(vm) else {
            return Resume::Wait;
        };
        let paused_for = now.saturating_duration_since(p.at);
        if paused_for < p.backoff {
            return Resume::Wait;
        }
        let freed = matches!((free, p.free_at_pause),
            (Some(now), Some(then)) if now >= then.saturating_add(MIN_FREED));
        if freed {
            Resume::Freed
        } else if paused_for >= MAX_BACKOFF {
            Resume::Retry
        } else {
            Resume::Wait
        }
    }

    /// Notes that `vm` was resumed at `now`; its datastore, if it was paused
    /// for space.
    pub fn resumed(&mut self, vm: &str, now: Instant) -> Option<String> {
        let p = self.paused.remove(vm)?;
        self.resumed.insert(vm.to_owned(), (now, p.backoff));
        Some(p.datastore)
    }

    /// Keeps the claims on VMs that `paused` says are still paused.
    fn retain(&mut self, paused: impl Fn(&str) -> bool) {
        self.paused.retain(|vm, _| paused(vm));
        let now = Instant::now();
        self.resumed
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < MAX_BACKOFF);
    }
}

impl Mgmt {
    /// Why the VM is paused, when mgmtd paused it for space.
    pub fn paused_reason(&self, vm: &str) -> Option<String> {
        self.no_space().reason(vm)
    }

    /// The claims on VMs paused for space (a poisoned lock still holds
    /// good claims).
    pub fn no_space(&self) -> std::sync::MutexGuard<'_, NoSpacePauses> {
        self.no_space
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pauses VMs waiting for space and resumes them when it is freed, every
    /// [`WATCH_EVERY`], for as long as mgmtd runs.
    pub async fn watch_no_space(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            self.no_space_round().await;
        }
    }

    async fn no_space_round(&self) {
        let Ok(vms) = self.inventory.vms_here().await else {
            return;
        };
        self.no_space()
            .retain(|id| vms.iter().any(|v| v.id == id && v.state == VmState::Paused));
        let Ok(held) = self.blockd.held_for_space().await else {
            return;
        };
        let free: HashMap<String, u64> = match self.blockd.datastores().await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|d| Some((d.name, d.free_bytes?)))
                .collect(),
            Err(_) => HashMap::new(),
        };
        for vm in &vms {
            match vm.state {
                VmState::Running => {
                    let waiting = vm
                        .disks
                        .iter()
                        .find(|d| held.get(&d.export_id).is_some_and(|&n| n > 0));
                    if let Some(disk) = waiting {
                        let free = free.get(&disk.datastore).copied();
                        self.pause_for_space(vm, &disk.datastore, free).await;
                    }
                }
                VmState::Paused => {
                    let datastore = self
                        .no_space()
                        .paused
                        .get(&vm.id)
                        .map(|p| p.datastore.clone());
                    if let Some(ds) = datastore {
                        let free = free.get(&ds).copied();
                        let resume = self.no_space().may_resume(&vm.id, free, Instant::now());
                        if resume != Resume::Wait {
                            self.resume_after_space(vm, &ds, resume).await;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Pauses a running VM whose disk waits for space on `datastore`.
    async fn pause_for_space(&self, vm: &Vm, datastore: &str, free: Option<u64>) {
        let lock = self.vm_lock(&vm.id);
        // A VM under an operation is that operation's business.
        let Ok(_guard) = lock.try_lock() else { return };
        let d = Driver::parse(&vm.driver);
        if let Err(e) = driver::pause(d, &self.vm_paths(&vm.id)).await {
            datapath::log_limited!(warn, vm = %vm.name, "Cannot pause a VM waiting for space: {}", e.chain());
            return;
        }
        let backoff = self
            .no_space()
            .paused(&vm.id, datastore, free, Instant::now());
        if let Err(e) = self
            .inventory
            .set_vm_state(&vm.id, VmState::Paused, vm.pid)
            .await
        {
            tracing::warn!(vm = %vm.name, "Cannot record the VM as paused: {e}");
        }
        tracing::warn!(vm = %vm.name, datastore, ?backoff, "Paused: the datastore is out of space");
        self.db.event(
            "warning",
            "vm.paused_no_space",
            &vm.id,
            &format!(
                "VM {} paused: datastore {datastore} is out of space; it resumes when space is freed",
                vm.name
            ),
            None,
        );
    }

    /// Resumes a VM mgmtd paused for space.
    async fn resume_after_space(&self, vm: &Vm, datastore: &str, why: Resume) {
        let lock = self.vm_lock(&vm.id);
        let Ok(_guard) = lock.try_lock() else { return };
        let d = Driver::parse(&vm.driver);
        if let Err(e) = driver::resume(d, &self.vm_paths(&vm.id)).await {
            datapath::log_limited!(warn, vm = %vm.name, "Cannot resume a VM paused for space: {}", e.chain());
            return;
        }
        self.no_space().resumed(&vm.id, Instant::now());
        if let Err(e) = self
            .inventory
            .set_vm_state(&vm.id, VmState::Running, vm.pid)
            .await
        {
            tracing::warn!(vm = %vm.name, "Cannot record the VM as running: {e}");
        }
        let message = match why {
            Resume::Freed => format!(
                "VM {} resumed: datastore {datastore} has free space again",
                vm.name
            ),
            _ => format!(
                "VM {} resumed to retry its writes on datastore {datastore} (paused for {}s)",
                vm.name,
                MAX_BACKOFF.as_secs()
            ),
        };
        self.db
            .event("info", "vm.resumed_space_freed", &vm.id, &message, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_vm_resumes_once_space_is_freed_after_its_backoff() {
        let mut p = NoSpacePauses::default();
        let t0 = Instant::now();
        assert_eq!(p.paused("vm", "ds", Some(100), t0), FIRST_BACKOFF);
        assert_eq!(
            p.reason("vm").as_deref(),
            Some("datastore ds is out of space")
        );
        // Space freed at once: still waits out the back-off.
        assert_eq!(
            p.may_resume("vm", Some(100 + MIB), t0 + Duration::from_secs(1)),
            Resume::Wait
        );
        let later = t0 + FIRST_BACKOFF;
        assert_eq!(p.may_resume("vm", Some(100 + MIB - 1), later), Resume::Wait);
        assert_eq!(p.may_resume("vm", None, later), Resume::Wait);
        assert_eq!(p.may_resume("vm", Some(100 + MIB), later), Resume::Freed);
        assert_eq!(p.resumed("vm", later).as_deref(), Some("ds"));
        assert_eq!(p.reason("vm"), None);
    }

    #[test]
    fn a_vm_that_fills_the_datastore_again_backs_off_longer_up_to_the_cap() {
        let mut p = NoSpacePauses::default();
        let mut t = Instant::now();
        let mut backoffs = Vec::new();
        for _ in 0..7 {
            let b = p.paused("vm", "ds", Some(0), t);
            backoffs.push(b.as_secs());
            t += b;
            p.resumed("vm", t);
            t += Duration::from_secs(1);
        }
        assert_eq!(backoffs, [2, 4, 8, 16, 32, 60, 60]);
        // Full again only long after the last resume: back to the start.
        t += MAX_BACKOFF;
        assert_eq!(p.paused("vm", "ds", Some(0), t), FIRST_BACKOFF);
    }

    #[test]
    fn after_the_longest_backoff_a_paused_vm_retries_its_writes() {
        let mut p = NoSpacePauses::default();
        let t0 = Instant::now();
        p.paused("vm", "ds", Some(0), t0);
        assert_eq!(
            p.may_resume("vm", Some(0), t0 + MAX_BACKOFF - Duration::from_secs(1)),
            Resume::Wait
        );
        assert_eq!(p.may_resume("vm", None, t0 + MAX_BACKOFF), Resume::Retry);
    }

    #[test]
    fn vms_a_user_paused_or_resumed_are_not_mgmtds_to_resume() {
        let mut p = NoSpacePauses::default();
        let t0 = Instant::now();
        assert_eq!(
            p.may_resume("user-paused", Some(u64::MAX), t0 + MAX_BACKOFF),
            Resume::Wait
        );
        p.paused("vm", "ds", Some(0), t0);
        p.forget("vm");
        assert_eq!(
            p.may_resume("vm", Some(u64::MAX), t0 + MAX_BACKOFF),
            Resume::Wait
        );
        assert_eq!(p.resumed("vm", t0), None);
    }
}
