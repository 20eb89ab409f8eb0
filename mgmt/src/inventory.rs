//! The cluster-wide inventory in etcd: the same records and the same code
//! whether the cluster has one host or many.
//!
//! A VM is three records, written together:
//! - `vms/<id>`: its settings and the host that runs it. Their revision is
//!   the VM's `resource_version`; an edit is written only if it is still
//!   the one the edit was planned on, so of two concurrent edits one wins
//!   and the other is refused, never merged.
//! - `vm-names/<name>`: the id, so a name is held by one VM in the cluster.
//! - `vm-status/<id>`: its power state and process, written by its host
//!   alone. Kept apart so that powering a VM on does not count as a change
//!   of its settings to an edit planned meanwhile.
//! - `vm-ops/<id>` and `vm-ops-status/<id>`: the requests (power, edit,
//!   delete) any host's API made and what the VM's host did with them
//!   ([`crate::vm::ops`]); removed with the VM.
//!
//! `schema` holds the layout's version: a mgmtd that finds a newer one
//! refuses to start rather than misread it. The VMs of a host that ran
//! before the cluster existed (SQLite) move here at its first start.

use cluster::{Batch, Store, StoreError, Versioned};
use serde::{Deserialize, Serialize};

use crate::db::{Boot, Db, Vm, VmDisk, VmNic, VmState, now};
use crate::error::Error;

/// The version of the layout above and of the accounts' (`crate::accounts`):
/// 1, VMs; 2, users and API tokens, and power requests carried out by
/// each VM's host (a mgmtd of version 1 would keep its own users apart
/// from the cluster's and never carry out a request: it must not run in
/// such a cluster); 3, power requests became requests of any operation
/// (`vm-power/` became `vm-ops/`: a version-2 mgmtd would not carry out
/// an edit or deletion asked of its VMs).
pub const SCHEMA_VERSION: u32 = 3;

/// The records of version 2 that version 3 replaced: requests that were
/// waiting when the cluster was upgraded are dropped (their asking tasks
/// ended with the mgmtd that ran them).
const DROPPED_IN_3: [&str; 2] = ["vm-power", "vm-power-status"];

/// How often a status write is tried again when the VM's records changed
/// under it (each try reads them afresh).
const STATUS_TRIES: usize = 5;

/// The `schema` record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Schema {
    version: u32,
}

/// `vms/<id>`: what a VM is and where it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmSettings {
    id: String,
    name: String,
    host: String,
    vcpus: u32,
    memory_mib: u32,
    boot: Boot,
    driver: String,
    driver_reason: String,
    disks: Vec<VmDisk>,
    nics: Vec<VmNic>,
    created_at: i64,
    updated_at: i64,
}

/// `vm-status/<id>`: what its host last did with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmStatus {
    state: VmState,
    pid: Option<u32>,
    since: i64,
}

/// `vm-names/<name>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmName {
    id: String,
}

impl VmSettings {
    fn of(vm: &Vm) -> Self {
        VmSettings {
            id: vm.id.clone(),
            name: vm.name.clone(),
            host: vm.host.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            boot: vm.boot.clone(),
            driver: vm.driver.clone(),
            driver_reason: vm.driver_reason.clone(),
            disks: vm.disks.clone(),
            nics: vm.nics.clone(),
            created_at: vm.created_at,
            updated_at: vm.updated_at,
        }
    }

    fn into_vm(self, revision: i64, status: Option<VmStatus>) -> Vm {
        // A VM whose status is not written yet is being created.
        let status = status.unwrap_or(VmStatus {
            state: VmState::Creating,
            pid: None,
            since: self.created_at,
        });
        Vm {
            id: self.id,
            name: self.name,
            host: self.host,
            resource_version: revision,
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            boot: self.boot,
            driver: self.driver,
            driver_reason: self.driver_reason,
            state: status.state,
            pid: status.pid,
            disks: self.disks,
            nics: self.nics,
            created_at: self.created_at,
            updated_at: self.updated_at.max(status.since),
        }
    }
}

/// The inventory, as one host's mgmtd sees it.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub(crate) store: Store,
    host: String,
}

impl Inventory {
    pub fn new(store: Store, host: String) -> Self {
        Inventory { store, host }
    }

    /// This host's name: the VMs it runs carry it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks the store's layout is one this mgmtd reads, recording it in
    /// a new cluster.
    pub async fn check_schema(&self) -> Result<(), Error> {
        let key = self.store.key("schema", "inventory");
        match self.store.get::<Schema>(&key).await? {
            Some(s) if s.value.version > SCHEMA_VERSION => Err(Error::Internal(format!(
                "the cluster's inventory is at schema version {}, newer than this mgmtd \
                 knows ({SCHEMA_VERSION}): upgrade this host's Sfera",
                s.value.version
            ))),
            Some(s) if s.value.version < SCHEMA_VERSION => {
                if s.value.version < 3 {
                    self.drop_records(&DROPPED_IN_3).await?;
                }
                let newer = Schema {
                    version: SCHEMA_VERSION,
                };
                match self.store.update(&key, &newer, s.revision).await {
                    // Another host of the cluster upgraded it meanwhile.
                    Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Some(_) => Ok(()),
            None => match self
                .store
                .create(
                    &key,
                    &Schema {
                        version: SCHEMA_VERSION,
                    },
                )
                .await
            {
                Ok(_) | Err(StoreError::Exists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Removes every record of the kinds `kinds` (an upgrade's).
    async fn drop_records(&self, kinds: &[&str]) -> Result<(), Error> {
        for kind in kinds {
            let records = self.store.list::<serde_json::Value>(kind).await?;
            if records.is_empty() {
                continue;
            }
            // etcd takes at most 128 operations in one transaction.
            for chunk in records.chunks(100) {
                let batch = chunk.iter().fold(Batch::new(), |b, (name, _)| {
                    b.remove(&self.store.key(kind, name))
                });
                self.store.commit(batch).await?;
            }
            tracing::info!("Schema upgrade: {} {kind} record(s) dropped", records.len());
        }
        Ok(())
    }

    /// Moves the VMs this host's SQLite inventory still holds (a host that
    /// ran before the cluster) into the store as this host's, then forgets
    /// them locally. A crash in between is harmless: a VM already moved is
    /// recognised by its id and not moved twice. The VMs moved.
    pub async fn move_local_vms(&self, db: &Db) -> Result<usize, Error> {
        let local = db.vms()?;
        for vm in &local {
            let mut vm = vm.clone();
            vm.host.clone_from(&self.host);
            match self.insert_vm(&vm).await {
                Ok(()) => {}
                Err(Error::Conflict(_)) if self.vm(&vm.id).await?.is_some() => {}
                Err(Error::NameTaken { name, .. }) => {
                    return Err(Error::Internal(format!(
                        "VM {} ({}) of this host's local inventory cannot move into the \
                         cluster: another VM there is named {name}; start this host in a \
                         cluster of its own, or rename one of them",
                        vm.name, vm.id
                    )));
                }
                Err(e) => return Err(e),
            }
            self.set_vm_state(&vm.id, vm.state, vm.pid).await?;
            db.delete_vm(&vm.id)?;
        }
        Ok(local.len())
    }

    /// A VM by id, else by name.
    pub async fn vm(&self, id_or_name: &str) -> Result<Option<Vm>, Error> {
        if let Some(vm) = self.vm_by_id(id_or_name).await? {
            return Ok(Some(vm));
        }
        let name = self.store.key("vm-names", id_or_name);
        match self.store.get::<VmName>(&name).await? {
            Some(n) => self.vm_by_id(&n.value.id).await,
            None => Ok(None),
        }
    }

    async fn vm_by_id(&self, id: &str) -> Result<Option<Vm>, Error> {
        let Some(settings) = self
            .store
            .get::<VmSettings>(&self.store.key("vms", id))
            .await?
        else {
            return Ok(None);
        };
        let status = self
            .store
            .get::<VmStatus>(&self.store.key("vm-status", id))
            .await?;
        Ok(Some(
            settings
                .value
                .into_vm(settings.revision, status.map(|s| s.value)),
        ))
    }

    /// Every VM of the cluster, by name.
    pub async fn vms(&self) -> Result<Vec<Vm>, Error> {
        let settings = self.store.list::<VmSettings>("vms").await?;
        let mut status: std::collections::HashMap<String, VmStatus> = self
            .store
            .list::<VmStatus>("vm-status")
            .await?
            .into_iter()
            .map(|(id, s)| (id, s.value))
            .collect();
        let mut vms: Vec<Vm> = settings
            .into_iter()
            .map(|(id, Versioned { value, revision })| value.into_vm(revision, status.remove(&id)))
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }

    /// The VMs this host runs, by name.
    pub async fn vms_here(&self) -> Result<Vec<Vm>, Error> {
        let mut vms = self.vms().await?;
        vms.retain(|vm| vm.host == self.host);
        Ok(vms)
    }

    /// Records a new VM with its name and status.
    pub async fn insert_vm(&self, vm: &Vm) -> Result<(), Error> {
        let (key, name) = (
            self.store.key("vms", &vm.id),
            self.store.key("vm-names", &vm.name),
        );
        let status = VmStatus {
            state: vm.state,
            pid: vm.pid,
            since: now(),
        };
        let batch = Batch::new()
            .create(&key, &VmSettings::of(vm))?
            .create(&name, &VmName { id: vm.id.clone() })?
            .put(&self.store.key("vm-status", &vm.id), &status, None)?;
        match self.store.commit(batch).await {
            Ok(_) => Ok(()),
            Err(StoreError::Exists { key: k }) if k == name => Err(Error::NameTaken {
                kind: "VM",
                name: vm.name.clone(),
            }),
            Err(StoreError::Exists { .. }) => {
                Err(Error::Conflict(format!("VM id {} is taken", vm.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a VM's settings (an edit) if they are still at
    /// `vm.resource_version`; its name moves with it. Its status is its
    /// host's and is left alone. The new resource version.
    pub async fn update_vm(&self, vm: &Vm) -> Result<i64, Error> {
        let key = self.store.key("vms", &vm.id);
        let Some(stored) = self.store.get::<VmSettings>(&key).await? else {
            return Err(not_found(&vm.id));
        };
        if stored.revision != vm.resource_version {
            return Err(changed(&vm.name));
        }
        let mut settings = VmSettings::of(vm);
        settings.updated_at = now();
        let mut batch = Batch::new().update(&key, &settings, vm.resource_version)?;
        let new_name = self.store.key("vm-names", &vm.name);
        if stored.value.name != vm.name {
            batch = batch
                .remove(&self.store.key("vm-names", &stored.value.name))
                .create(&new_name, &VmName { id: vm.id.clone() })?;
        }
        match self.store.commit(batch).await {
            Ok(revision) => Ok(revision),
            Err(StoreError::Exists { key: k }) if k == new_name => Err(Error::NameTaken {
                kind: "VM",
                name: vm.name.clone(),
            }),
            Err(StoreError::Conflict { .. }) => Err(changed(&vm.name)),
            Err(StoreError::NotFound { .. }) => Err(not_found(&vm.id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a VM's power state and process.
    pub async fn set_vm_state(
        &self,
        id: &str,
        state: VmState,
        pid: Option<u32>,
    ) -> Result<(), Error> {
        let status = VmStatus {
            state,
            pid,
            since: now(),
        };
        let batch = Batch::new()
            .require_present(&self.store.key("vms", id))
            .put(&self.store.key("vm-status", id), &status, None)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.store.commit(batch.clone()).await {
                Ok(_) => return Ok(()),
                Err(StoreError::NotFound { .. }) => return Err(not_found(id)),
                // A write whose outcome is unknown is written again: the
                // status is the same either way.
                Err(StoreError::Unavailable(_)) if tries < STATUS_TRIES => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes a VM's records.
    pub async fn delete_vm(&self, id: &str) -> Result<(), Error> {
        let key = self.store.key("vms", id);
        let Some(stored) = self.store.get::<VmSettings>(&key).await? else {
            return Ok(());
        };
        let batch = Batch::new()
            .delete(&key, stored.revision)
            .remove(&self.store.key("vm-names", &stored.value.name))
            .remove(&self.store.key("vm-status", id))
            .remove(&self.store.key(crate::vm::ops::REQUESTS, id))
            .remove(&self.store.key(crate::vm::ops::STATUS, id));
        match self.store.commit(batch).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(changed(&stored.value.name)),
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "VM",
        name: id.to_owned(),
    }
}

fn changed(name: &str) -> Error {
    Error::Conflict(format!(
        "VM {name} was changed by someone else since it was read: read it again and retry"
    ))
}
