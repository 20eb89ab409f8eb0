//! VMs and their templates: creating, editing, powering and deleting VMs
//! (each a task, answered 202), reading them, and their console logs.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, accepted, ok};
use super::request::ApiRequest;
use crate::db::VmState;
use crate::driver::Driver;
use crate::service::Mgmt;
use crate::vm::edit::EditVm;
use crate::vm::ops::VmOp;
use crate::vm::request::{CreateVm, templates};
use crate::vm::service::PowerAction;
use crate::vm::shutdown::refuse_without_button;

/// A VM as the API shows it: the record with where its console is.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Vm)]
pub struct VmReply {
    #[serde(flatten)]
    vm: crate::db::Vm,
    /// The serial console's Unix socket on the host
    #[schema(value_type = String)]
    console_socket: PathBuf,
    /// Everything the serial console printed
    #[schema(value_type = String)]
    console_log: PathBuf,
    /// Why mgmtd paused the VM (its datastore is out of space); null otherwise
    paused_reason: Option<String>,
}

impl VmReply {
    fn new(mgmt: &Mgmt, vm: crate::db::Vm) -> Self {
        let paths = mgmt.vm_paths(&vm.id);
        VmReply {
            console_socket: paths.console(),
            console_log: paths.console_log(),
            paused_reason: mgmt.paused_reason(&vm.id),
            vm,
        }
    }
}

/// `GET /api/v1/templates`.
pub fn templates_list(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    ok(page.of(templates(&mgmt.paths.guest_dir)))
}

/// `GET /api/v1/vms`.
pub async fn list(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let vms = mgmt.inventory.vms().await?;
    ok(page.of(vms.into_iter().map(|v| VmReply::new(mgmt, v)).collect()))
}

/// `GET /api/v1/vms/{vm}`: by id or name.
pub async fn get(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    ok(VmReply::new(mgmt, mgmt.find_vm(r.param("vm")).await?))
}

/// `POST /api/v1/vms`: the VM is reserved now, its disks and NICs made
/// by the task.
pub async fn create(mgmt: &Arc<Mgmt>, r: &ApiRequest) -> Result<Reply, ApiError> {
    let body: CreateVm = r.body()?;
    mgmt.refuse_in_maintenance(mgmt.inventory.host(), "a new VM")
        .await?;
    let plan = body.plan(
        &mgmt.paths.guest_dir,
        &mgmt.paths.boot_dirs(),
        mgmt.host.memory_bytes >> 20,
    )?;
    let vm = mgmt.reserve_vm(&plan).await?;
    let user = r.user()?;
    let m = Arc::clone(mgmt);
    let (id, by) = (vm.id.clone(), user.clone());
    let attached = plan.disks.iter().map(|d| d.volume.is_some()).collect();
    let task = crate::tasks::spawn(&mgmt.db, "vm.create", &id, &by, move |ctx| {
        m.create_vm(vm, attached, plan.power_on, user, ctx)
    })?;
    accepted(&task)
}

/// `PATCH /api/v1/vms/{vm}`: planned (and refused) before the task starts
/// when this host runs the VM; for another host's VM, checked here as far
/// as it can be (its fields, against that host's memory; the version it
/// was made from) and then planned and carried out by that host, whose
/// refusal the task reports (`crate::vm::ops`).
pub async fn edit(mgmt: &Arc<Mgmt>, r: &ApiRequest) -> Result<Reply, ApiError> {
    let vm = mgmt.find_vm(r.param("vm")).await?;
    let edit: EditVm = r.body()?;
    let facts = mgmt.check_vm_host(&vm, "edit").await?;
    edit.check(facts.memory_bytes >> 20)?;
    let user = r.user()?;
    let m = Arc::clone(mgmt);
    let by = user.clone();
    let task = if vm.host == mgmt.inventory.host() {
        let plan = mgmt.plan_edit(&vm, &edit).await?;
        crate::tasks::spawn(&mgmt.db, "vm.edit", &vm.id, &by, move |ctx| {
            m.edit_vm(plan, user, ctx)
        })?
    } else {
        if edit
            .resource_version
            .is_some_and(|v| v != vm.resource_version)
        {
            return Err(crate::vm::edit::changed_since(&vm).into());
        }
        let id = vm.id.clone();
        crate::tasks::spawn(&mgmt.db, "vm.edit", &id, &by, move |ctx| {
            m.ask(vm, VmOp::Edit(Box::new(edit)), user, ctx)
        })?
    };
    accepted(&task)
}

/// `DELETE /api/v1/vms/{vm}?disks=`: a stopped VM, with its volumes if
/// asked; another host's VM is deleted by that host.
pub async fn delete(mgmt: &Arc<Mgmt>, r: &ApiRequest) -> Result<Reply, ApiError> {
    let vm = mgmt.find_vm(r.param("vm")).await?;
    let with_disks = match r.query.get("disks").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("disks must be true or false")),
    };
    if matches!(vm.state, VmState::Running | VmState::Paused) {
        return Err(ApiError::conflict(format!(
            "VM {} is {}: power it off first",
            vm.name,
            vm.state.as_str()
        )));
    }
    mgmt.check_vm_host(&vm, "deletion").await?;
    let user = r.user()?;
    let m = Arc::clone(mgmt);
    let id = vm.id.clone();
    let by = user.clone();
    let task = if vm.host == mgmt.inventory.host() {
        crate::tasks::spawn(&mgmt.db, "vm.delete", &id, &by, move |_| {
            m.delete_vm(vm.id, with_disks, user)
        })?
    } else {
        let op = VmOp::Delete { disks: with_disks };
        crate::tasks::spawn(&mgmt.db, "vm.delete", &id, &by, move |ctx| {
            m.ask(vm, op, user, ctx)
        })?
    };
    accepted(&task)
}

/// `POST /api/v1/vms/{vm}/power/{action}` (and `power/shutdown`,
/// `power/reboot`, which take `?timeout_s=`).
/// Any host takes it: the task asks the VM's host's controller
/// (`crate::vm::ops`), and is refused at once when that host is not
/// there to carry it out, or when the VM's driver has no way to ask its
/// guest to shut down.
pub async fn power(mgmt: &Arc<Mgmt>, r: &ApiRequest, action: &str) -> Result<Reply, ApiError> {
    let vm = mgmt.find_vm(r.param("vm")).await?;
    let mut action = PowerAction::parse(action).ok_or_else(|| {
        ApiError::invalid("action must be on, off, reset, pause, resume, shutdown or reboot")
    })?;
    if let Some(t) = r.query.get("timeout_s") {
        action = action.with_guest_timeout(t).map_err(ApiError::invalid)?;
    }
    if action.guest_wait() > std::time::Duration::ZERO {
        refuse_without_button(Driver::parse(&vm.driver), &vm.name)?;
    }
    mgmt.check_vm_host(&vm, action.noun()).await?;
    if action == PowerAction::On {
        // Checked again by the VM's host when it carries it out.
        mgmt.refuse_in_maintenance(&vm.host, &format!("the power on of VM {}", vm.name))
            .await?;
    }
    let user = r.user()?;
    let m = Arc::clone(mgmt);
    let by = user.clone();
    let target = vm.id.clone();
    let task = crate::tasks::spawn(&mgmt.db, action.task_kind(), &target, &by, move |ctx| {
        m.ask(vm, VmOp::Power(action), user, ctx)
    })?;
    accepted(&task)
}

/// `GET /api/v1/vms/{vm}/console` and `/display` without an upgrade: the
/// WebSocket itself is taken by the server before routing.
pub async fn not_upgraded(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    mgmt.find_vm(r.param("vm")).await?;
    Err(ApiError::invalid(
        "This is a WebSocket: connect with Upgrade: websocket",
    ))
}

/// A VM's console log as a file: `current` (this power-on's, or the last
/// one's while stopped) or `previous` (the power-on before it).
pub async fn console_log(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let vm = mgmt.find_vm_here(r.param("vm")).await?;
    let paths = mgmt.vm_paths(&vm.id);
    let path = match r.param("session") {
        "current" => paths.console_log(),
        "previous" => paths.previous_console_log(),
        other => {
            return Err(ApiError::not_found(format!(
                "No console log {other:?}: current or previous"
            )));
        }
    };
    let session = r.param("session");
    if !path.exists() {
        return Err(ApiError::not_found(format!(
            "VM {} has no {session} console log",
            vm.name
        )));
    }
    // The VM's process can replace its console log (a symlink to a host
    // file, a FIFO), so it is opened as a VM's file, and read up to a
    // bound: the newest MAX_DOWNLOAD bytes.
    let mut file = crate::jail::open_vm_file(&path, false)
        .map_err(|e| ApiError::internal(control::error_chain(&e)))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    std::io::Seek::seek(
        &mut file,
        std::io::SeekFrom::Start(len.saturating_sub(MAX_DOWNLOAD)),
    )
    .and_then(|_| {
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_DOWNLOAD), &mut bytes)
    })
    .map_err(|e| ApiError::internal(format!("Cannot read {}: {e}", path.display())))?;
    Ok(Reply::Download {
        filename: format!("{}-console-{session}.log", vm.name),
        bytes,
    })
}

/// The most of a console log one download returns (its newest part).
const MAX_DOWNLOAD: u64 = 64 << 20;
