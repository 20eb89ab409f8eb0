//! A host leaves the cluster: `DELETE /api/v1/hosts/{host}` through any
//! other host, as vCenter's "Remove from inventory".
//!
//! Refused (409) while the host has VMs (delete them first; moving them
//! needs migration, not built yet) and on the host that answers (ask
//! another: a host cannot vote itself out and still answer). Otherwise, in
//! this order, each step done again harmlessly by a retry after a failure:
//! 1. `hosts/<host>`, `host-alive/<host>` and `host-maintenance/<host>`
//!    go, and `removed-hosts/<host>`
//!    records the host's identity, in one transaction: the host's mgmtd,
//!    if it still runs, sees it and stops writing itself back;
//! 2. its lease is revoked;
//! 3. its etcd member is removed from the cluster (etcd needs a quorum of
//!    the members for that, the leaving one included while it is one: a
//!    cluster of two cannot remove a host that is down).
//!
//! A host of the same name that joins later with a new token is admitted:
//! the join clears the record.

use cluster::{Batch, StoreError};
use serde::{Deserialize, Serialize};

use crate::db::now;
use crate::error::Error;
use crate::membership::{Alive, HostRecord};
use crate::service::Mgmt;

/// How many seconds a removal waits for etcd to count the cluster healthy.
const UNHEALTHY_TRIES: u32 = 15;

/// `removed-hosts/<host>`: the identity of a host taken out of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedHost {
    /// The removed host's identity (`cluster.json`'s `host_id`).
    pub id: String,
    pub at: i64,
    pub by: String,
}

/// What a removal did, for the event.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// The host's records were there and are gone.
    pub records: bool,
    /// Its etcd member was there and is gone.
    pub member: bool,
}

impl Mgmt {
    /// Takes `host` out of the cluster (see the module's description).
    pub async fn remove_host(&self, host: &str, by: &str) -> Result<Removed, Error> {
        if host == self.cluster.host {
            return Err(Error::Conflict(format!(
                "{host} is the host answering this request: remove it through another host \
                 of the cluster"
            )));
        }
        let store = &self.cluster.store;
        let key = store.key("hosts", host);
        let mut done = Removed::default();
        if let Some(record) = store.get::<HostRecord>(&key).await? {
            let vms: Vec<String> = self
                .inventory
                .vms()
                .await?
                .into_iter()
                .filter(|v| v.host == host)
                .map(|v| v.name)
                .collect();
            if !vms.is_empty() {
                return Err(Error::Conflict(format!(
                    "host {host} has {} VM(s) ({}): delete them (or, once migration exists, \
                     move them) before removing it",
                    vms.len(),
                    vms.join(", ")
                )));
            }
            let alive_key = store.key("host-alive", host);
            let alive = store.get::<Alive>(&alive_key).await?;
            let gone = RemovedHost {
                id: record.value.id.clone(),
                at: now(),
                by: by.to_owned(),
            };
            let batch = Batch::new()
                .delete(&key, record.revision)
                .remove(&alive_key)
                .remove(&store.key(crate::maintenance::KIND, host))
                .put(&store.key("removed-hosts", host), &gone, None)?;
            match store.commit(batch).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                    return Err(Error::Conflict(format!(
                        "host {host} changed while it was being removed: try again"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            done.records = true;
            if let Some(alive) = alive {
                // Gone already if it ran out meanwhile: nothing to undo.
                let _ = store.client().lease_revoke(alive.value.lease).await;
            }
        }
        done.member = self.remove_member(host).await?;
        if !done.records && !done.member {
            return Err(Error::NotFound {
                kind: "host",
                name: host.to_owned(),
            });
        }
        Ok(done)
    }

    /// Removes the etcd member named `host`; false if there is none.
    async fn remove_member(&self, host: &str) -> Result<bool, Error> {
        let mut etcd = self.cluster.store.client();
        let members = etcd.member_list().await.map_err(StoreError::from)?;
        let Some(id) = members
            .members()
            .iter()
            .find(|m| m.name() == host)
            .map(|m| m.id())
        else {
            return Ok(false);
        };
        // etcd refuses (strict reconfiguration check) while the members
        // left would not all have been connected for its health interval
        // (5 s): just after a member joined or came back. That passes.
        let mut tries = 0;
        loop {
            match etcd.member_remove(id).await {
                Ok(_) => return Ok(true),
                Err(e)
                    if e.to_string().contains("unhealthy cluster") && tries < UNHEALTHY_TRIES =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) if e.to_string().contains("unhealthy cluster") => {
                    return Err(Error::Store(StoreError::Unavailable(format!(
                        "etcd refuses to remove {host}'s member while the other members are not \
                         all connected (one is down or just came back): {e}; try again once \
                         every other host is connected"
                    ))));
                }
                Err(e) => return Err(StoreError::from(e).into()),
            }
        }
    }
}
