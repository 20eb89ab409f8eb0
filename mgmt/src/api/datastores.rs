//! Datastores and their volumes: registering and removing datastores,
//! creating, growing and deleting volumes, and importing disk images as
//! volumes. A change checks what depends on it (disks of VMs) before it
//! asks sfera-blockd, so a refused change changes nothing.

use std::sync::Arc;

use blockstore::api::types::VolumeInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, accepted, created, ok};
use super::request::ApiRequest;
use super::{rules, schema};
use crate::db::{Vm, VmState};
use crate::service::Mgmt;

/// Body of `POST /api/v1/datastores`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatastoreCreate {
    #[schema(schema_with = schema::object_name)]
    name: String,
    /// An existing directory inside a datastore root (<data-dir>/datastores, or a --datastore-root of sfera-mgmtd), or a block device that is a root or inside one; symlinks are resolved before the check. Elsewhere (/, /etc): 400 path_not_allowed
    #[schema(pattern = "^/")]
    path: String,
}

/// Body of `POST /api/v1/datastores/{datastore}/volumes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    #[schema(schema_with = schema::volume_name)]
    pub name: String,
    #[schema(schema_with = schema::disk_size)]
    pub size_bytes: u64,
}

/// Body of `PATCH /api/v1/datastores/{datastore}/volumes/{volume}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeResize {
    #[schema(schema_with = schema::new_disk_size)]
    pub size_bytes: u64,
}

/// The `{datastore}` of the path, checked.
fn datastore_param(r: &ApiRequest) -> Result<String, ApiError> {
    let ds = r.param("datastore");
    rules::check_object_name("datastore", ds)?;
    Ok(ds.to_owned())
}

/// The `{datastore}` and `{volume}` of the path, checked.
fn volume_params(r: &ApiRequest) -> Result<(String, String), ApiError> {
    let ds = datastore_param(r)?;
    let name = r.param("volume");
    rules::check_volume_name(name)?;
    Ok((ds, name.to_owned()))
}

/// VMs with a disk on `datastore` (and `volume`, if given).
fn disk_users(vms: &[Vm], datastore: &str, volume: Option<&str>) -> Vec<String> {
    vms.iter()
        .filter(|vm| {
            vm.disks
                .iter()
                .any(|d| d.datastore == datastore && volume.is_none_or(|v| d.volume == v))
        })
        .map(|vm| vm.name.clone())
        .collect()
}

async fn datastore_exists(mgmt: &Mgmt, ds: &str) -> Result<(), ApiError> {
    mgmt.need_blockd().await?;
    let (stores, _) = mgmt.sync_datastores().await?;
    if stores.iter().any(|s| s.name == ds) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("No datastore {ds:?}")))
    }
}

/// The volume as sfera-blockd lists it, or 404.
async fn volume(mgmt: &Mgmt, ds: &str, name: &str) -> Result<VolumeInfo, ApiError> {
    let list = mgmt.blockd.volumes(ds).await?;
    list.into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Datastore {ds} has no volume {name}")))
}

/// 409 if `ds` has a volume `name`.
async fn volume_is_new(mgmt: &Mgmt, ds: &str, name: &str) -> Result<(), ApiError> {
    let list = mgmt.blockd.volumes(ds).await?;
    if list.iter().any(|v| v.name == name) {
        Err(ApiError::conflict(format!(
            "Datastore {ds} has a volume {name} already"
        )))
    } else {
        Ok(())
    }
}

/// `GET /api/v1/datastores`: sfera-blockd's, or the inventory's copy
/// (marked stale) when it is down.
pub async fn list(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let (rows, stale) = mgmt.sync_datastores().await?;
    ok(page.of_maybe_stale(rows, stale))
}

/// `POST /api/v1/datastores`: a directory (made sfera-blockd's) or a
/// block device inside a datastore root.
pub async fn add(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: DatastoreCreate = r.body()?;
    rules::check_object_name("datastore", &body.name)?;
    rules::check_datastore_path(&body.path)?;
    let path = mgmt.paths.datastore_roots.datastore("path", &body.path)?;
    mgmt.need_blockd().await?;
    // A directory becomes sfera-blockd's (made by root, it could not
    // write its metadata); a block device is reached through its group.
    if path.is_dir() {
        crate::daemon_users::give(&path, mgmt.paths.users.blockd.as_ref())
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    }
    let path = path.display().to_string();
    let v = mgmt.blockd.add_datastore(&body.name, &path).await?;
    mgmt.sync_datastores().await?;
    r.event(
        mgmt,
        "datastore.added",
        &body.name,
        &format!("Datastore {} at {path}", body.name),
    );
    created(v)
}

/// `GET /api/v1/datastores/{datastore}`.
pub async fn get(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let ds = datastore_param(r)?;
    ok(mgmt.blockd.datastore(&ds).await?)
}

/// `DELETE /api/v1/datastores/{datastore}`: refused while disks of VMs
/// are on it; its files stay.
pub async fn remove(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let ds = datastore_param(r)?;
    datastore_exists(mgmt, &ds).await?;
    let users = disk_users(&mgmt.inventory.vms_here().await?, &ds, None);
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "Datastore {ds} holds disks of VMs {}; remove them first",
            users.join(", ")
        )));
    }
    mgmt.blockd.remove_datastore(&ds).await?;
    mgmt.sync_datastores().await?;
    r.event(
        mgmt,
        "datastore.removed",
        &ds,
        &format!("Datastore {ds} unregistered (its files stay)"),
    );
    Ok(Reply::Empty)
}

/// `GET /api/v1/datastores/{datastore}/volumes`.
pub async fn list_volumes(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let ds = datastore_param(r)?;
    let v = mgmt.blockd.volumes(&ds).await?;
    ok(page.of(v))
}

/// `POST /api/v1/datastores/{datastore}/volumes`: a thin volume.
pub async fn create_volume(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let ds = datastore_param(r)?;
    let body: VolumeCreate = r.body()?;
    rules::check_volume_name(&body.name)?;
    rules::check_size(body.size_bytes)?;
    datastore_exists(mgmt, &ds).await?;
    volume_is_new(mgmt, &ds, &body.name).await?;
    let v = mgmt
        .blockd
        .create_volume(&ds, &body.name, body.size_bytes)
        .await?;
    r.event(
        mgmt,
        "volume.created",
        &format!("{ds}/{}", body.name),
        &format!(
            "Volume {ds}/{} created ({} bytes)",
            body.name, body.size_bytes
        ),
    );
    created(v)
}

/// `DELETE /api/v1/datastores/{datastore}/volumes/{volume}`: refused
/// while it is a disk of a VM.
pub async fn delete_volume(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let (ds, name) = volume_params(r)?;
    datastore_exists(mgmt, &ds).await?;
    volume(mgmt, &ds, &name).await?;
    let users = disk_users(&mgmt.inventory.vms_here().await?, &ds, Some(&name));
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "Volume {ds}/{name} is a disk of VM {}; remove it from the VM first",
            users.join(", ")
        )));
    }
    mgmt.blockd.delete_volume(&ds, &name).await?;
    r.event(
        mgmt,
        "volume.deleted",
        &format!("{ds}/{name}"),
        &format!("Volume {ds}/{name} deleted"),
    );
    Ok(Reply::Empty)
}

/// `PATCH /api/v1/datastores/{datastore}/volumes/{volume}`: volumes only
/// grow.
pub async fn resize_volume(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let (ds, name) = volume_params(r)?;
    let body: VolumeResize = r.body()?;
    rules::check_size(body.size_bytes)?;
    datastore_exists(mgmt, &ds).await?;
    let current = volume(mgmt, &ds, &name).await?.size;
    if body.size_bytes <= current {
        return Err(ApiError::invalid(format!(
            "size_bytes must be larger than the volume's {current} bytes: volumes only grow"
        )));
    }
    let v = resize(mgmt, &ds, &name, body.size_bytes).await?;
    r.event(
        mgmt,
        "volume.resized",
        &format!("{ds}/{name}"),
        &format!(
            "Volume {ds}/{name} grown from {current} to {} bytes",
            body.size_bytes
        ),
    );
    ok(v)
}

/// Grows a volume. sfera-blockd refuses while it is exported, so a disk of
/// a stopped VM has its export taken down and made again around it (under
/// the VM's lock); a disk of a running VM is refused.
async fn resize(mgmt: &Mgmt, ds: &str, name: &str, size: u64) -> Result<VolumeInfo, ApiError> {
    let vms = mgmt.inventory.vms_here().await?;
    let Some(owner) = vms.iter().find(|vm| {
        vm.disks
            .iter()
            .any(|d| d.datastore == ds && d.volume == name)
    }) else {
        return Ok(mgmt.blockd.resize_volume(ds, name, size).await?);
    };
    let lock = mgmt.vm_lock(&owner.id);
    let _guard = lock.lock().await;
    let mut vm = mgmt.find_vm(&owner.id).await?;
    if vm.state != VmState::Stopped {
        return Err(ApiError::conflict(format!(
            "Volume {ds}/{name} is a disk of VM {}, which is {}: power it off to grow the disk",
            vm.name,
            vm.state.as_str()
        )));
    }
    let Some(disk) = vm
        .disks
        .iter_mut()
        .find(|d| d.datastore == ds && d.volume == name)
    else {
        return Err(ApiError::conflict(format!(
            "VM {} changed meanwhile: try again",
            vm.name
        )));
    };
    let export = disk.export_id.clone();
    match mgmt.blockd.delete_export(&export).await {
        Err(e) if e.status() != Some(404) => return Err(e.into()),
        _ => {}
    }
    let grown = mgmt.blockd.resize_volume(ds, name, size).await;
    // Served again either way: the VM keeps its disk.
    let again = mgmt.blockd.create_export(&export, ds, name).await;
    let grown = grown?;
    again?;
    disk.size_bytes = size;
    mgmt.inventory.update_vm(&vm).await?;
    Ok(grown)
}

/// `POST /api/v1/datastores/{datastore}/import`: a task that converts
/// the image into a new volume of the image's virtual size.
pub async fn import_disk(mgmt: &Arc<Mgmt>, r: &ApiRequest) -> Result<Reply, ApiError> {
    let ds = datastore_param(r)?;
    let body: crate::import::ImportDisk = r.body()?;
    let source = body.check(&mgmt.paths.import_dirs)?;
    datastore_exists(mgmt, &ds).await?;
    volume_is_new(mgmt, &ds, &body.volume).await?;
    let size = crate::import::image::inspect(&mgmt.paths.qemu_img, &source, body.format).await?;
    let size = size.div_ceil(512) * 512;
    let user = r.user()?;
    let target = format!("{ds}/{}", body.volume);
    let m = Arc::clone(mgmt);
    let by = user.clone();
    let task = crate::tasks::spawn(&mgmt.db, "volume.import", &target, &by, move |ctx| {
        m.import_disk(ds, body, source, size, user, ctx)
    })?;
    accepted(&task)
}
