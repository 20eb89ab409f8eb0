//! Maintenance mode: a host taken out of service for work on it, as
//! vSphere's "Enter maintenance mode". Set and cleared through any host
//! (`PUT`/`DELETE /api/v1/hosts/{host}/maintenance`, `sfera host
//! maintenance enter|exit`), recorded in `host-maintenance/<host>`.
//!
//! A host in maintenance mode runs no VM: entering is refused while one of
//! its VMs runs or is paused (power them off first; once live migration
//! exists, entering will move them), and while it is in maintenance no VM
//! of it powers on and no new VM is made on it. The host's own mgmtd checks
//! the record again when it carries out a power-on, so a request that was
//! let through by another host a moment before the mode was entered is
//! still refused. One window stays: a power-on that its host has already
//! begun when the mode is entered completes, and the entering host, which
//! read the VM as stopped, lets the mode in; `GET /api/v1/hosts` then
//! shows a host in maintenance with a running VM.

use cluster::StoreError;
use serde::{Deserialize, Serialize};

use crate::db::{VmState, now};
use crate::error::Error;
use crate::membership::HostRecord;
use crate::service::Mgmt;

/// The kind of the records.
pub const KIND: &str = "host-maintenance";

/// `host-maintenance/<host>`: since when the host is in maintenance mode,
/// and who put it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// When it entered (seconds since the epoch)
    pub since: i64,
    /// Who asked
    pub by: String,
}

impl Mgmt {
    /// Puts `host` in maintenance mode; a host already in it stays as it
    /// is. Whether it entered now, and its record.
    pub async fn enter_maintenance(
        &self,
        host: &str,
        by: &str,
    ) -> Result<(bool, Maintenance), Error> {
        self.known_host(host).await?;
        let store = &self.cluster.store;
        let key = store.key(KIND, host);
        let record = Maintenance {
            since: now(),
            by: by.to_owned(),
        };
        let revision = match store.create(&key, &record).await {
            Ok(r) => r,
            Err(StoreError::Exists { .. }) => {
                let now = store.get::<Maintenance>(&key).await?;
                return match now {
                    Some(m) => Ok((false, m.value)),
                    None => Err(Error::Conflict(format!(
                        "host {host} left maintenance mode while it was entering it: try again"
                    ))),
                };
            }
            Err(e) => return Err(e.into()),
        };
        // Written first, checked after: a power-on its host carries out
        // from now on finds the record and is refused.
        let running: Vec<String> = self
            .inventory
            .vms()
            .await?
            .into_iter()
            .filter(|v| v.host == host && matches!(v.state, VmState::Running | VmState::Paused))
            .map(|v| v.name)
            .collect();
        if !running.is_empty() {
            // Ours to take back: written above, at `revision`.
            if let Err(e) = store.delete(&key, revision).await {
                tracing::warn!(host, "Cannot take back the maintenance record: {e}");
            }
            return Err(Error::Conflict(format!(
                "host {host} runs {} VM(s) ({}): power them off before it enters maintenance \
                 mode (moving them needs live migration, not built yet)",
                running.len(),
                running.join(", ")
            )));
        }
        Ok((true, record))
    }

    /// Takes `host` out of maintenance mode; whether it was in it.
    pub async fn exit_maintenance(&self, host: &str) -> Result<bool, Error> {
        self.known_host(host).await?;
        let store = &self.cluster.store;
        let key = store.key(KIND, host);
        match store.get::<Maintenance>(&key).await? {
            None => Ok(false),
            Some(m) => match store.delete(&key, m.revision).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => Ok(true),
                Err(StoreError::Conflict { .. }) => Err(Error::Conflict(format!(
                    "host {host}'s maintenance mode changed meanwhile: try again"
                ))),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// `host`'s maintenance record, if it is in maintenance mode.
    pub async fn maintenance_of(&self, host: &str) -> Result<Option<Maintenance>, Error> {
        let store = &self.cluster.store;
        Ok(store
            .get::<Maintenance>(&store.key(KIND, host))
            .await?
            .map(|m| m.value))
    }

    /// Refuses `what` (a power-on, a new VM) on a host in maintenance mode.
    pub async fn refuse_in_maintenance(&self, host: &str, what: &str) -> Result<(), Error> {
        match self.maintenance_of(host).await? {
            None => Ok(()),
            Some(m) => Err(Error::Conflict(format!(
                "host {host} is in maintenance mode (put there by {}): {what} is refused until \
                 it exits (sfera host maintenance exit {host})",
                m.by
            ))),
        }
    }

    /// 404 for a host that is not a member.
    async fn known_host(&self, host: &str) -> Result<(), Error> {
        let store = &self.cluster.store;
        match store.get::<HostRecord>(&store.key("hosts", host)).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                kind: "host",
                name: host.to_owned(),
            }),
        }
    }
}
