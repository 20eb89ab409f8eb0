//! Editing a VM (`PATCH /api/v1/vms/{vm}`): checked field by field and
//! against the daemons before anything is done, then made as a task that
//! undoes what it did when a step fails, so a failed edit leaves the
//! inventory, the datastores and the switch as they were. The name may
//! change at any time; the hardware only while the VM is stopped.

use std::collections::HashSet;
use std::sync::Arc;

use blockstore::api::types::VolumeInfo;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::request::{
    DiskRequest, MAX_DISKS, MAX_NICS, NicRequest, check_boot, check_disk, check_mac, check_memory,
    check_nic, check_vcpus, check_vm_name,
};
use super::service::Made;
use crate::Error;
use crate::db::{Boot, Vm, VmDisk, VmNic, VmState};
use crate::driver::{self, Driver};
use crate::service::Mgmt;
use crate::tasks::TaskCtx;

/// Body of `PATCH /api/v1/vms/{vm}`: what is left out stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VmEdit)]
pub struct EditVm {
    /// A new name (any time)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::vcpus)]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::memory)]
    pub memory_mib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::boot_or_null)]
    pub boot: Option<Boot>,
    /// The hypervisor driver; null: the one the host and the boot source
    /// call for. sfera-vmm needs /dev/kvm
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::api::schema::new_disks)]
    pub add_disks: Vec<DiskRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::api::schema::removed_disks)]
    pub remove_disks: Vec<RemoveDisk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::api::schema::new_nics)]
    pub add_nics: Vec<NicRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::api::schema::removed_nics)]
    pub remove_nics: Vec<RemoveNic>,
    /// The VM's `resource_version` this edit was made from: if the VM
    /// changed since (through any host), the edit is refused with 409
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub resource_version: Option<i64>,
}

/// A disk to take off the VM, by its volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveDisk {
    #[schema(schema_with = crate::api::schema::object_name)]
    pub datastore: String,
    #[schema(schema_with = crate::api::schema::volume_name)]
    pub volume: String,
    /// Delete the volume too (default: it stays on its datastore).
    #[serde(default)]
    pub delete_volume: bool,
}

/// A NIC to take off the VM, by its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveNic {
    #[schema(pattern = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    pub mac: String,
}

impl EditVm {
    /// Changes anything but the name.
    pub fn changes_hardware(&self) -> bool {
        self.vcpus.is_some()
            || self.memory_mib.is_some()
            || self.boot.is_some()
            || self.driver.is_some()
            || !self.add_disks.is_empty()
            || !self.remove_disks.is_empty()
            || !self.add_nics.is_empty()
            || !self.remove_nics.is_empty()
    }

    /// The checks that need nothing but the request.
    pub fn check(&self, host_memory_mib: u64) -> Result<(), Error> {
        if self.name.is_none() && !self.changes_hardware() {
            return Err(Error::Invalid(
                "Nothing to change: give at least one field".into(),
            ));
        }
        if let Some(n) = &self.name {
            check_vm_name(n)?;
        }
        if let Some(v) = self.vcpus {
            check_vcpus(v)?;
        }
        if let Some(m) = self.memory_mib {
            check_memory(m, host_memory_mib)?;
        }
        if self.add_disks.len() > MAX_DISKS {
            return Err(Error::Invalid(format!("at most {MAX_DISKS} disks")));
        }
        for (i, d) in self.add_disks.iter().enumerate() {
            check_disk("add_disks", i, d, &self.add_disks[..i])?;
        }
        for (i, d) in self.remove_disks.iter().enumerate() {
            control::names::check_volume("volume", &d.volume)
                .map_err(|e| Error::Invalid(format!("remove_disks[{i}].{e}")))?;
        }
        if self.add_nics.len() > MAX_NICS {
            return Err(Error::Invalid(format!("at most {MAX_NICS} NICs")));
        }
        for (i, n) in self.remove_nics.iter().enumerate() {
            check_mac(&n.mac).map_err(|e| Error::Invalid(format!("remove_nics[{i}]: {e}")))?;
        }
        Ok(())
    }
}

/// A checked edit: the VM before and after, and what changes on the
/// daemons.
#[derive(Debug, Clone)]
pub struct EditPlan {
    pub before: Vm,
    pub after: Vm,
    /// New disks, with whether each is an existing volume.
    pub added_disks: Vec<(VmDisk, bool)>,
    /// Disks taken off, with whether their volume goes too.
    pub removed_disks: Vec<(VmDisk, bool)>,
    pub added_nics: Vec<VmNic>,
    pub removed_nics: Vec<VmNic>,
}

/// The first `{prefix}{k}`, from `k = start` on, not in `used`.
fn free_name(prefix: &str, start: usize, used: &HashSet<String>) -> String {
    (start..)
        .map(|k| format!("{prefix}{k}"))
        .find(|n| !used.contains(n))
        .expect("a finite set leaves a free name")
}

/// What an edit made and unmade on the daemons, to undo on failure.
#[derive(Debug, Default)]
struct Done {
    made: Made,
    removed_exports: Vec<VmDisk>,
    removed_ports: Vec<VmNic>,
}

fn refuse_unless_stopped(vm: &Vm, edit_hardware: bool) -> Result<(), Error> {
    match vm.state {
        VmState::Creating | VmState::Deleting => Err(Error::Conflict(format!(
            "VM {} is being {}: it cannot be edited now",
            vm.name,
            if vm.state == VmState::Creating {
                "created"
            } else {
                "deleted"
            }
        ))),
        VmState::Running | VmState::Paused if edit_hardware => Err(Error::Conflict(format!(
            "VM {} is {}: power it off to change its hardware (only the name can change while it runs)",
            vm.name,
            vm.state.as_str()
        ))),
        _ => Ok(()),
    }
}

impl EditPlan {
    /// Changes anything but the name.
    fn changes_hardware(&self) -> bool {
        let (before, after) = (&self.before, &self.after);
        before.disks != after.disks
            || before.nics != after.nics
            || (
                before.vcpus,
                before.memory_mib,
                &before.boot,
                &before.driver,
            ) != (after.vcpus, after.memory_mib, &after.boot, &after.driver)
    }

    /// What the edit changed, for its event: "renamed from a, 2 vCPUs, ...".
    fn summary(&self) -> String {
        let (before, after) = (&self.before, &self.after);
        let mut what = Vec::new();
        if before.name != after.name {
            what.push(format!("renamed from {}", before.name));
        }
        if before.vcpus != after.vcpus {
            what.push(format!("{} vCPUs", after.vcpus));
        }
        if before.memory_mib != after.memory_mib {
            what.push(format!("{} MiB", after.memory_mib));
        }
        for (d, _) in &self.added_disks {
            what.push(format!("disk {}/{} added", d.datastore, d.volume));
        }
        for (d, del) in &self.removed_disks {
            what.push(format!(
                "disk {}/{} removed{}",
                d.datastore,
                d.volume,
                if *del { " and deleted" } else { "" }
            ));
        }
        for n in &self.added_nics {
            what.push(format!("NIC {} on {} added", n.mac, n.port_group));
        }
        for n in &self.removed_nics {
            what.push(format!("NIC {} removed", n.mac));
        }
        if before.boot != after.boot {
            what.push("boot source changed".to_owned());
        }
        if before.driver != after.driver {
            what.push(format!("driver {}", after.driver));
        }
        what.join(", ")
    }
}

/// Takes the disks to remove off `after`: each, with whether its volume
/// goes too.
fn take_off_disks(
    vm: &Vm,
    after: &mut Vm,
    remove: &[RemoveDisk],
) -> Result<Vec<(VmDisk, bool)>, Error> {
    let mut removed = Vec::new();
    for (i, r) in remove.iter().enumerate() {
        let Some(pos) = after
            .disks
            .iter()
            .position(|d| d.datastore == r.datastore && d.volume == r.volume)
        else {
            return Err(Error::Invalid(format!(
                "remove_disks[{i}]: VM {} has no disk {}/{}",
                vm.name, r.datastore, r.volume
            )));
        };
        removed.push((after.disks.remove(pos), r.delete_volume));
    }
    Ok(removed)
}

/// The size of the existing volume `name` that `add_disks[i]` attaches,
/// which must be no VM's disk yet; `listed` is its datastore's volumes.
fn attached_volume_size(
    i: usize,
    d: &DiskRequest,
    name: &str,
    listed: &[VolumeInfo],
    vms: &[Vm],
) -> Result<u64, Error> {
    let Some(size) = listed.iter().find(|v| v.name == name).map(|v| v.size) else {
        return Err(Error::Invalid(format!(
            "add_disks[{i}]: datastore {} has no volume {name}",
            d.datastore
        )));
    };
    let owner = vms.iter().find(|o| {
        o.disks
            .iter()
            .any(|x| x.datastore == d.datastore && x.volume == name)
    });
    if let Some(o) = owner {
        return Err(Error::Conflict(format!(
            "add_disks[{i}]: volume {}/{name} is a disk of VM {}",
            d.datastore, o.name
        )));
    }
    Ok(size)
}

/// The name of a new volume for the next disk of `after`: named after its
/// place in the VM, as at creation, and free on its datastore (`listed`).
fn new_volume_name(after: &Vm, listed: &[VolumeInfo]) -> String {
    let mut used: HashSet<String> = listed.iter().map(|v| v.name.clone()).collect();
    used.extend(after.disks.iter().map(|x| x.volume.clone()));
    free_name(&format!("{}/disk", after.name), after.disks.len(), &used)
}

/// The refusal of an edit made from an older version of the VM.
pub(crate) fn changed_since(vm: &Vm) -> Error {
    Error::Conflict(format!(
        "VM {} was changed by someone else since this edit was made (it is at \
         resource_version {} now): read it again and retry",
        vm.name, vm.resource_version
    ))
}

/// Takes the NICs to remove off `after`.
fn take_off_nics(vm: &Vm, after: &mut Vm, remove: &[RemoveNic]) -> Result<Vec<VmNic>, Error> {
    let mut removed = Vec::new();
    for (i, r) in remove.iter().enumerate() {
        let mac = check_mac(&r.mac)?;
        let Some(pos) = after.nics.iter().position(|n| n.mac == mac) else {
            return Err(Error::Invalid(format!(
                "remove_nics[{i}]: VM {} has no NIC {mac}",
                vm.name
            )));
        };
        removed.push(after.nics.remove(pos));
    }
    Ok(removed)
}

impl Mgmt {
    /// Checks an edit against the VM and the daemons; nothing is changed.
    pub async fn plan_edit(&self, vm: &Vm, edit: &EditVm) -> Result<EditPlan, Error> {
        if edit
            .resource_version
            .is_some_and(|v| v != vm.resource_version)
        {
            return Err(changed_since(vm));
        }
        refuse_unless_stopped(vm, edit.changes_hardware())?;
        let mut after = vm.clone();
        if let Some(n) = &edit.name
            && *n != vm.name
        {
            if self.inventory.vm(n).await?.is_some_and(|o| o.id != vm.id) {
                return Err(Error::NameTaken {
                    kind: "VM",
                    name: n.clone(),
                });
            }
            after.name = n.clone();
        }
        after.vcpus = edit.vcpus.unwrap_or(vm.vcpus);
        after.memory_mib = edit.memory_mib.unwrap_or(vm.memory_mib);
        let removed_disks = take_off_disks(vm, &mut after, &edit.remove_disks)?;
        let added_disks = self.add_disks(vm, &mut after, &edit.add_disks).await?;
        let removed_nics = take_off_nics(vm, &mut after, &edit.remove_nics)?;
        let added_nics = self
            .add_nics(vm, &mut after, &edit.add_nics, &removed_nics)
            .await?;
        self.plan_boot_and_driver(vm, &mut after, edit)?;
        Ok(EditPlan {
            before: vm.clone(),
            after,
            added_disks,
            removed_disks,
            added_nics,
            removed_nics,
        })
    }

    /// Adds the new disks to `after`, checked against the datastores: each,
    /// with whether it is an existing volume.
    async fn add_disks(
        &self,
        vm: &Vm,
        after: &mut Vm,
        add: &[DiskRequest],
    ) -> Result<Vec<(VmDisk, bool)>, Error> {
        let mut added = Vec::new();
        if add.is_empty() {
            return Ok(added);
        }
        self.need_blockd().await?;
        let (stores, _) = self.sync_datastores().await?;
        let vms = self.inventory.vms_here().await?;
        let mut exports: HashSet<String> = vm.disks.iter().map(|d| d.export_id.clone()).collect();
        for (i, d) in add.iter().enumerate() {
            if !stores.iter().any(|s| s.name == d.datastore) {
                return Err(Error::Invalid(format!(
                    "add_disks[{i}]: datastore {:?} does not exist",
                    d.datastore
                )));
            }
            let listed = self.blockd.volumes(&d.datastore).await?;
            let (volume, size, attached) = match (&d.volume, d.size_bytes) {
                (Some(name), _) => {
                    let size = attached_volume_size(i, d, name, &listed, &vms)?;
                    (name.clone(), size, true)
                }
                (None, size) => (
                    new_volume_name(after, &listed),
                    size.unwrap_or_default(),
                    false,
                ),
            };
            let export_id = free_name(&format!("{}-disk", vm.id), 0, &exports);
            exports.insert(export_id.clone());
            let disk = VmDisk {
                datastore: d.datastore.clone(),
                volume,
                size_bytes: size,
                export_id,
            };
            after.disks.push(disk.clone());
            added.push((disk, attached));
        }
        if after.disks.len() > MAX_DISKS {
            return Err(Error::Invalid(format!(
                "A VM has at most {MAX_DISKS} disks"
            )));
        }
        Ok(added)
    }

    /// Adds the new NICs to `after`, checked against the port groups; their
    /// MACs differ from those kept and those `removed`.
    async fn add_nics(
        &self,
        vm: &Vm,
        after: &mut Vm,
        add: &[NicRequest],
        removed: &[VmNic],
    ) -> Result<Vec<VmNic>, Error> {
        let mut added = Vec::new();
        if add.is_empty() {
            return Ok(added);
        }
        self.need_vswitchd().await?;
        let (_, groups, _) = self.sync_networks().await?;
        let mut ports: HashSet<String> = vm.nics.iter().map(|n| n.port.clone()).collect();
        for (i, n) in add.iter().enumerate() {
            let mac = check_nic(
                "add_nics",
                i,
                n,
                after
                    .nics
                    .iter()
                    .map(|x| x.mac.as_str())
                    .chain(removed.iter().map(|x| x.mac.as_str())),
            )?;
            if !groups.iter().any(|x| x["name"] == n.port_group.as_str()) {
                return Err(Error::Invalid(format!(
                    "add_nics[{i}]: port group {:?} does not exist",
                    n.port_group
                )));
            }
            let port = free_name(&format!("{}-nic", vm.id), 0, &ports);
            ports.insert(port.clone());
            let nic = VmNic {
                port_group: n.port_group.clone(),
                mac,
                port,
            };
            after.nics.push(nic.clone());
            added.push(nic);
        }
        if after.nics.len() > MAX_NICS {
            return Err(Error::Invalid(format!("A VM has at most {MAX_NICS} NICs")));
        }
        Ok(added)
    }

    /// Sets the new boot source on `after` (a VM booting from its disk
    /// keeps one), and the driver: the one asked for, else the current one
    /// if it can boot the source, else the host's choice.
    fn plan_boot_and_driver(&self, vm: &Vm, after: &mut Vm, edit: &EditVm) -> Result<(), Error> {
        if let Some(b) = &edit.boot {
            after.boot = check_boot(b, !after.disks.is_empty(), &self.paths.boot_dirs())?;
        } else if after.boot == Boot::Disk && after.disks.is_empty() {
            return Err(Error::Invalid(
                "The VM boots from its first disk: it cannot lose all its disks".into(),
            ));
        }
        if edit.boot.is_some() || edit.driver.is_some() {
            let current = Driver::parse(&vm.driver);
            let (d, why) = match edit.driver {
                Some(d) => driver::choose(&self.host, &after.boot, Some(d))?,
                // Keep the driver if it can boot the new source.
                None => driver::choose(&self.host, &after.boot, Some(current))
                    .or_else(|_| driver::choose(&self.host, &after.boot, None))?,
            };
            after.driver = d.as_str().to_owned();
            after.driver_reason = why;
        }
        Ok(())
    }

    /// Makes a planned edit under the VM's lock.
    pub async fn edit_vm(
        self: Arc<Self>,
        plan: EditPlan,
        user: String,
        ctx: TaskCtx,
    ) -> Result<serde_json::Value, Error> {
        let id = plan.before.id.clone();
        let lock = self.vm_lock(&id);
        let _guard = lock.lock().await;
        self.check_still_planned(&plan).await?;
        let mut done = Done::default();
        ctx.progress(10, "changing devices");
        let result = self.edit_devices(&plan, &mut done).await;
        let result = match result {
            Ok(()) => self.save_edited(&plan.after).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            ctx.progress(90, "undoing");
            self.undo_edit(&done).await;
            self.db.event(
                "error",
                "vm.edit_failed",
                &id,
                &format!("VM {} was not changed: {e}", plan.before.name),
                Some(&user),
            );
            return Err(e);
        }
        // Volumes go last: their deletion cannot be undone.
        let kept = self.delete_removed_volumes(&plan, &user).await;
        self.db.event(
            "info",
            "vm.edited",
            &id,
            &format!("VM {} edited: {}", plan.after.name, plan.summary()),
            Some(&user),
        );
        Ok(json!({ "id": id, "name": plan.after.name, "volumes_not_deleted": kept }))
    }

    /// Refuses the edit if the VM runs and the edit changes its hardware,
    /// or if its settings changed since the edit was planned (another
    /// edit, through this host or another, landed first).
    async fn check_still_planned(&self, plan: &EditPlan) -> Result<(), Error> {
        let now = self.find_vm(&plan.before.id).await?;
        refuse_unless_stopped(&now, plan.changes_hardware())?;
        if now.resource_version != plan.before.resource_version {
            return Err(changed_since(&now));
        }
        Ok(())
    }

    /// Writes the edited VM to the inventory; a name taken meanwhile is a
    /// conflict.
    async fn save_edited(&self, after: &Vm) -> Result<(), Error> {
        self.inventory.update_vm(after).await.map(|_| ())
    }

    /// Deletes the volumes of the disks taken off that go too: the ones
    /// that could not be deleted (each also an event).
    async fn delete_removed_volumes(&self, plan: &EditPlan, user: &str) -> Vec<String> {
        let mut kept = Vec::new();
        for (d, delete) in &plan.removed_disks {
            if !delete {
                continue;
            }
            match self.blockd.delete_volume(&d.datastore, &d.volume).await {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => {
                    self.db.event(
                        "warning",
                        "volume.delete_failed",
                        &format!("{}/{}", d.datastore, d.volume),
                        &format!(
                            "Volume {}/{} left VM {} but could not be deleted: {e}",
                            d.datastore, d.volume, plan.after.name
                        ),
                        Some(user),
                    );
                    kept.push(format!("{}/{}", d.datastore, d.volume));
                }
            }
        }
        kept
    }

    async fn edit_devices(&self, plan: &EditPlan, done: &mut Done) -> Result<(), Error> {
        for (d, attached) in &plan.added_disks {
            self.need_blockd().await?;
            if !attached {
                self.blockd
                    .create_volume(&d.datastore, &d.volume, d.size_bytes)
                    .await?;
                done.made
                    .volumes
                    .push((d.datastore.clone(), d.volume.clone()));
            }
            self.blockd
                .create_export(&d.export_id, &d.datastore, &d.volume)
                .await?;
            done.made.exports.push(d.export_id.clone());
        }
        for n in &plan.added_nics {
            self.need_vswitchd().await?;
            self.vswitchd
                .add_port(
                    &n.port,
                    &self.paths.net_dir.join(format!("{}.sock", n.port)),
                    &n.mac,
                    &n.port_group,
                )
                .await?;
            done.made.ports.push(n.port.clone());
        }
        for n in &plan.removed_nics {
            self.need_vswitchd().await?;
            self.vswitchd.remove_port(&n.port).await?;
            done.removed_ports.push(n.clone());
        }
        for (d, _) in &plan.removed_disks {
            self.need_blockd().await?;
            match self.blockd.delete_export(&d.export_id).await {
                Err(e) if e.status() != Some(404) => return Err(e.into()),
                _ => done.removed_exports.push(d.clone()),
            }
        }
        Ok(())
    }

    async fn undo_edit(&self, done: &Done) {
        for d in done.removed_exports.iter().rev() {
            if let Err(e) = self
                .blockd
                .create_export(&d.export_id, &d.datastore, &d.volume)
                .await
            {
                tracing::warn!(
                    export = d.export_id,
                    "Cannot export again while undoing: {e}"
                );
            }
        }
        for n in done.removed_ports.iter().rev() {
            let socket = self.paths.net_dir.join(format!("{}.sock", n.port));
            if let Err(e) = self
                .vswitchd
                .add_port(&n.port, &socket, &n.mac, &n.port_group)
                .await
            {
                tracing::warn!(port = n.port, "Cannot add port again while undoing: {e}");
            }
        }
        self.undo(&done.made).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ApiError;

    fn parse(json: &str) -> EditVm {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn bad_edits_are_refused_with_their_field() {
        let cases = [
            ("{}", "Nothing to change"),
            (r#"{"name":"bad name"}"#, "name"),
            (r#"{"vcpus":0}"#, "vcpus"),
            (r#"{"memory_mib":64}"#, "memory_mib"),
            (r#"{"memory_mib":9000}"#, "memory_mib"),
            (
                r#"{"add_disks":[{"datastore":"l","size_bytes":1000}]}"#,
                "add_disks[0].size_bytes",
            ),
            (r#"{"add_disks":[{"datastore":"l"}]}"#, "one of them"),
            (
                r#"{"remove_disks":[{"datastore":"l","volume":"a/b/c"}]}"#,
                "remove_disks[0].volume",
            ),
            (r#"{"remove_nics":[{"mac":"zz"}]}"#, "remove_nics[0]"),
        ];
        for (json, word) in cases {
            let e = ApiError::from(parse(json).check(4096).unwrap_err());
            assert_eq!(e.status, 400, "{json}");
            assert!(e.message.contains(word), "{json}: {}", e.message);
        }
        assert!(serde_json::from_str::<EditVm>(r#"{"state":"running"}"#).is_err());
        assert!(parse(r#"{"name":"ok-1"}"#).check(4096).is_ok());
        assert!(!parse(r#"{"name":"ok-1"}"#).changes_hardware());
        assert!(parse(r#"{"memory_mib":256}"#).changes_hardware());
    }

    #[test]
    fn free_names_skip_the_used_ones() {
        let used: HashSet<String> = ["vm-1-nic0", "vm-1-nic2"].map(String::from).into();
        assert_eq!(free_name("vm-1-nic", 0, &used), "vm-1-nic1");
        assert_eq!(free_name("vm-1-nic", 2, &used), "vm-1-nic3");
    }
}
