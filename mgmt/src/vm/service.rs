//! VM operations. Each takes the VM's lock, so operations on one VM run one
//! at a time. A create that fails half-way undoes what it made, so the
//! inventory and the datastores are left as they were.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::request::VmPlan;
use crate::Error;
use crate::db::{Vm, VmDisk, VmNic, VmState, now};
use crate::driver::{self, Driver, VmPaths};
use crate::qemu::{self, Launch};
use crate::service::Mgmt;
use crate::tasks::TaskCtx;

/// Power actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    Off,
    Reset,
    Pause,
    Resume,
    /// The ACPI power button: the guest shuts itself down, within
    /// `timeout_s` seconds or the action fails and the VM runs on.
    Shutdown {
        timeout_s: u32,
    },
    /// A graceful restart: [`PowerAction::Shutdown`], then a power-on once
    /// the hypervisor has exited (ACPI has no reboot button).
    Reboot {
        timeout_s: u32,
    },
}

impl PowerAction {
    /// The action the API's path names; a shutdown or reboot waits
    /// [`GUEST_STOP_DEFAULT_S`] for the guest until
    /// [`PowerAction::with_guest_timeout`] says otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "on" => Some(PowerAction::On),
            "off" => Some(PowerAction::Off),
            "reset" => Some(PowerAction::Reset),
            "pause" => Some(PowerAction::Pause),
            "resume" => Some(PowerAction::Resume),
            "shutdown" => Some(PowerAction::Shutdown {
                timeout_s: GUEST_STOP_DEFAULT_S,
            }),
            "reboot" => Some(PowerAction::Reboot {
                timeout_s: GUEST_STOP_DEFAULT_S,
            }),
            _ => None,
        }
    }

    /// The action as the API's path names it.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Reset => "reset",
            PowerAction::Pause => "pause",
            PowerAction::Resume => "resume",
            PowerAction::Shutdown { .. } => "shutdown",
            PowerAction::Reboot { .. } => "reboot",
        }
    }

    /// What the action is called in a sentence ("power on of VM x").
    pub fn noun(self) -> &'static str {
        match self {
            PowerAction::On => "power on",
            PowerAction::Off => "power off",
            PowerAction::Reset => "reset",
            PowerAction::Pause => "pause",
            PowerAction::Resume => "resume",
            PowerAction::Shutdown { .. } => "guest shutdown",
            PowerAction::Reboot { .. } => "guest restart",
        }
    }

    pub fn task_kind(self) -> &'static str {
        match self {
            PowerAction::On => "vm.power_on",
            PowerAction::Off => "vm.power_off",
            PowerAction::Reset => "vm.reset",
            PowerAction::Pause => "vm.pause",
            PowerAction::Resume => "vm.resume",
            PowerAction::Shutdown { .. } => "vm.shutdown",
            PowerAction::Reboot { .. } => "vm.reboot",
        }
    }

    /// The action with the guest given `timeout` (`timeout_s`, as the
    /// client wrote it) to stop: only a shutdown or a reboot waits for the
    /// guest.
    pub fn with_guest_timeout(self, timeout: &str) -> Result<Self, String> {
        let timeout_s = parse_guest_timeout(timeout)?;
        match self {
            PowerAction::Shutdown { .. } => Ok(PowerAction::Shutdown { timeout_s }),
            PowerAction::Reboot { .. } => Ok(PowerAction::Reboot { timeout_s }),
            other => Err(format!(
                "timeout_s is for shutdown and reboot, not {}",
                other.as_str()
            )),
        }
    }

    /// How long the action may wait for the guest, beyond what any power
    /// action takes.
    pub fn guest_wait(self) -> Duration {
        match self {
            PowerAction::Shutdown { timeout_s } | PowerAction::Reboot { timeout_s } => {
                Duration::from_secs(u64::from(timeout_s))
            }
            _ => Duration::ZERO,
        }
    }
}

/// How long a shutdown or reboot waits for the guest to stop by default.
pub const GUEST_STOP_DEFAULT_S: u32 = 120;
/// The longest a client may have it wait.
pub const GUEST_STOP_MAX_S: u32 = 3600;

/// `timeout_s`: whole seconds, 1 to [`GUEST_STOP_MAX_S`].
pub fn parse_guest_timeout(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(t) if (1..=GUEST_STOP_MAX_S).contains(&t) => Ok(t),
        _ => Err(format!(
            "timeout_s must be a whole number of seconds from 1 to {GUEST_STOP_MAX_S}, not {s:?}"
        )),
    }
}

/// What a create made so far, to undo on failure.
#[derive(Debug, Default)]
pub(super) struct Made {
    pub(super) volumes: Vec<(String, String)>,
    pub(super) exports: Vec<String>,
    pub(super) ports: Vec<String>,
}

fn new_vm_id() -> Result<String, Error> {
    let s = crate::auth::new_secret().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(format!("vm-{}", &s[..12]))
}

impl Mgmt {
    pub fn vm_paths(&self, id: &str) -> VmPaths {
        VmPaths::new(&self.paths.vms_dir, id)
    }

    fn port_socket(&self, port: &str) -> PathBuf {
        self.paths.net_dir.join(format!("{port}.sock"))
    }

    /// The VM by id or name, or 404.
    pub async fn find_vm(&self, id_or_name: &str) -> Result<Vm, Error> {
        self.inventory
            .vm(id_or_name)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "VM",
                name: id_or_name.to_owned(),
            })
    }

    /// The VM by id or name, if this host runs it: a VM of another host
    /// is changed through that host's mgmtd, which runs its processes.
    pub async fn find_vm_here(&self, id_or_name: &str) -> Result<Vm, Error> {
        let vm = self.find_vm(id_or_name).await?;
        if vm.host != self.inventory.host() {
            return Err(Error::Conflict(format!(
                "VM {} runs on host {}: ask that host's mgmtd (see GET /api/v1/hosts)",
                vm.name, vm.host
            )));
        }
        Ok(vm)
    }

    /// Checks what a plan names on the daemons (datastores, port groups)
    /// and records the VM as `creating`. Errors here are the client's, and
    /// nothing has been made.
    pub async fn reserve_vm(&self, plan: &VmPlan) -> Result<Vm, Error> {
        // The size of each disk: asked for, or the existing volume's.
        let mut sizes = Vec::new();
        if !plan.disks.is_empty() {
            self.need_blockd().await?;
            let (stores, _) = self.sync_datastores().await?;
            let vms = self.inventory.vms_here().await?;
            for (i, d) in plan.disks.iter().enumerate() {
                if !stores.iter().any(|s| s.name == d.datastore) {
                    return Err(Error::Invalid(format!(
                        "disks[{i}]: datastore {:?} does not exist",
                        d.datastore
                    )));
                }
                let Some(name) = &d.volume else {
                    sizes.push(d.size_bytes.unwrap_or_default());
                    continue;
                };
                let volumes = self.blockd.volumes(&d.datastore).await?;
                let Some(size) = volumes.iter().find(|v| v.name == *name).map(|v| v.size) else {
                    return Err(Error::Invalid(format!(
                        "disks[{i}]: datastore {} has no volume {name}",
                        d.datastore
                    )));
                };
                if let Some(owner) = vms.iter().find(|vm| {
                    vm.disks
                        .iter()
                        .any(|x| x.datastore == d.datastore && &x.volume == name)
                }) {
                    return Err(Error::Conflict(format!(
                        "disks[{i}]: volume {}/{name} is a disk of VM {}",
                        d.datastore, owner.name
                    )));
                }
                sizes.push(size);
            }
        }
        if !plan.nics.is_empty() {
            self.need_vswitchd().await?;
            let (_, groups, _) = self.sync_networks().await?;
            for (i, (g, _)) in plan.nics.iter().enumerate() {
                if !groups.iter().any(|x| x["name"] == g.as_str()) {
                    return Err(Error::Invalid(format!(
                        "nics[{i}]: port group {g:?} does not exist"
                    )));
                }
            }
        }
        if self.inventory.vm(&plan.name).await?.is_some() {
            return Err(Error::NameTaken {
                kind: "VM",
                name: plan.name.clone(),
            });
        }
        let (driver, driver_reason) = driver::choose(&self.host, &plan.boot, plan.driver)?;
        let id = new_vm_id()?;
        let t = now();
        let vm = Vm {
            id: id.clone(),
            name: plan.name.clone(),
            host: self.inventory.host().to_owned(),
            resource_version: 0,
            vcpus: plan.vcpus,
            memory_mib: plan.memory_mib,
            boot: plan.boot.clone(),
            driver: driver.as_str().to_owned(),
            driver_reason,
            state: VmState::Creating,
            pid: None,
            disks: plan
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| VmDisk {
                    datastore: d.datastore.clone(),
                    volume: d
                        .volume
                        .clone()
                        .unwrap_or_else(|| format!("{}/disk{i}", plan.name)),
                    size_bytes: sizes[i],
                    export_id: format!("{id}-disk{i}"),
                })
                .collect(),
            nics: plan
                .nics
                .iter()
                .enumerate()
                .map(|(i, (g, mac))| VmNic {
                    port_group: g.clone(),
                    mac: mac.clone(),
                    port: format!("{id}-nic{i}"),
                })
                .collect(),
            created_at: t,
            updated_at: t,
        };
        self.inventory.insert_vm(&vm).await?;
        Ok(vm)
    }

    /// Makes a reserved VM's disks (volume, unless `attached` says the
    /// disk is an existing volume, and export) and NICs (ports).
    pub async fn create_vm(
        self: Arc<Self>,
        vm: Vm,
        attached: Vec<bool>,
        power_on: bool,
        user: String,
        ctx: TaskCtx,
    ) -> Result<serde_json::Value, Error> {
        let lock = self.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let mut made = Made::default();
        let steps = (vm.disks.len() + vm.nics.len()).max(1);
        let result = self
            .make_devices(&vm, &attached, &mut made, steps, &ctx)
            .await;
        if let Err(e) = result {
            ctx.progress(90, "undoing");
            self.undo(&made).await;
            self.inventory.delete_vm(&vm.id).await?;
            self.db.event(
                "error",
                "vm.create_failed",
                &vm.id,
                &format!("VM {} was not created: {e}", vm.name),
                Some(&user),
            );
            return Err(e);
        }
        self.inventory
            .set_vm_state(&vm.id, VmState::Stopped, None)
            .await?;
        self.db.event(
            "info",
            "vm.created",
            &vm.id,
            &format!("VM {} created", vm.name),
            Some(&user),
        );
        if power_on {
            ctx.progress(95, "powering on");
            self.start_locked(&vm.id, &user).await?;
        }
        Ok(json!({ "id": vm.id, "name": vm.name }))
    }

    async fn make_devices(
        &self,
        vm: &Vm,
        attached: &[bool],
        made: &mut Made,
        steps: usize,
        ctx: &TaskCtx,
    ) -> Result<(), Error> {
        let mut step = 0;
        let mut tick = |what: String| {
            step += 1;
            let pct = u8::try_from(step * 90 / steps).unwrap_or(90);
            ctx.progress(pct, &what);
        };
        for (i, d) in vm.disks.iter().enumerate() {
            self.need_blockd().await?;
            // An existing volume is the VM's from now on, but not made
            // here: a failed create leaves it where it was.
            if !attached.get(i).copied().unwrap_or(false) {
                self.blockd
                    .create_volume(&d.datastore, &d.volume, d.size_bytes)
                    .await?;
                made.volumes.push((d.datastore.clone(), d.volume.clone()));
            }
            self.blockd
                .create_export(&d.export_id, &d.datastore, &d.volume)
                .await?;
            made.exports.push(d.export_id.clone());
            tick(format!("disk {} on {}", d.volume, d.datastore));
        }
        for n in &vm.nics {
            self.need_vswitchd().await?;
            self.vswitchd
                .add_port(&n.port, &self.port_socket(&n.port), &n.mac, &n.port_group)
                .await?;
            made.ports.push(n.port.clone());
            tick(format!("NIC {} on {}", n.mac, n.port_group));
        }
        Ok(())
    }

    pub(super) async fn undo(&self, made: &Made) {
        for p in made.ports.iter().rev() {
            if let Err(e) = self.vswitchd.remove_port(p).await {
                tracing::warn!(port = p, "Cannot remove port while undoing: {e}");
            }
        }
        for x in made.exports.iter().rev() {
            if let Err(e) = self.blockd.delete_export(x).await {
                tracing::warn!(export = x, "Cannot delete export while undoing: {e}");
            }
        }
        for (ds, v) in made.volumes.iter().rev() {
            if let Err(e) = self.blockd.delete_volume(ds, v).await {
                tracing::warn!(volume = v, "Cannot delete volume while undoing: {e}");
            }
        }
    }

    /// Runs a power action under the VM's lock.
    pub async fn power(
        self: Arc<Self>,
        id: String,
        action: PowerAction,
        user: String,
    ) -> Result<serde_json::Value, Error> {
        let lock = self.vm_lock(&id);
        let _guard = lock.lock().await;
        match action {
            PowerAction::On => self.start_locked(&id, &user).await,
            PowerAction::Off => self.stop_locked(&id, &user).await,
            PowerAction::Pause | PowerAction::Resume => {
                self.pause_resume_locked(&id, action == PowerAction::Pause, &user)
                    .await
            }
            PowerAction::Shutdown { timeout_s } => {
                self.shut_down_locked(&id, timeout_s, &user).await
            }
            PowerAction::Reboot { timeout_s } => {
                let vm = self.find_vm(&id).await?;
                if vm.state != VmState::Running {
                    return Err(Error::Conflict(format!(
                        "VM {} is {}: only a running VM can be restarted",
                        vm.name,
                        vm.state.as_str()
                    )));
                }
                self.shut_down_locked(&id, timeout_s, &user).await?;
                let started = self.start_locked(&id, &user).await?;
                self.db.event(
                    "info",
                    "vm.restarted",
                    &id,
                    &format!(
                        "VM {} restarted (its guest shut down, then power on)",
                        vm.name
                    ),
                    Some(&user),
                );
                Ok(started)
            }
            PowerAction::Reset => {
                let vm = self.find_vm(&id).await?;
                if vm.state != VmState::Running {
                    return Err(Error::Conflict(format!("VM {} is not running", vm.name)));
                }
                match Driver::parse(&vm.driver) {
                    Driver::Qemu => {
                        let qmp = self.vm_paths(&id).qmp();
                        qemu::qmp::execute(&qmp, qemu::qmp::Command::SystemReset)
                            .await
                            .map_err(|e| Error::Internal(control::error_chain(&e)))?;
                    }
                    // sfera-vmm has no reset request: a cold reset, the
                    // process ended and started again on the same devices.
                    Driver::SferaVmm => {
                        self.stop_locked(&id, &user).await?;
                        self.start_locked(&id, &user).await?;
                    }
                }
                self.db.event(
                    "info",
                    "vm.reset",
                    &id,
                    &format!("VM {} reset", vm.name),
                    Some(&user),
                );
                Ok(json!({ "id": id, "state": "running" }))
            }
        }
    }

    /// Pauses (`pause`) or resumes a VM through its driver.
    async fn pause_resume_locked(
        &self,
        id: &str,
        pause: bool,
        user: &str,
    ) -> Result<serde_json::Value, Error> {
        let vm = self.find_vm(id).await?;
        let (from, to, verb) = if pause {
            (VmState::Running, VmState::Paused, "paused")
        } else {
            (VmState::Paused, VmState::Running, "resumed")
        };
        if vm.state == to {
            return Ok(json!({ "id": vm.id, "state": to.as_str() }));
        }
        if vm.state != from {
            return Err(Error::Conflict(format!(
                "VM {} is {}: only a {} VM can be {verb}",
                vm.name,
                vm.state.as_str(),
                from.as_str()
            )));
        }
        let d = Driver::parse(&vm.driver);
        let paths = self.vm_paths(&vm.id);
        let done = if pause {
            driver::pause(d, &paths).await
        } else {
            driver::resume(d, &paths).await
        };
        done.map_err(|e| {
            Error::Internal(format!("{} could not be {verb}: {}", vm.name, e.chain()))
        })?;
        // The user's pause or resume ends mgmtd's own (for space).
        self.no_space().forget(&vm.id);
        self.inventory.set_vm_state(&vm.id, to, vm.pid).await?;
        self.db.event(
            "info",
            if pause { "vm.paused" } else { "vm.resumed" },
            &vm.id,
            &format!("VM {} {verb} ({})", vm.name, d.as_str()),
            Some(user),
        );
        Ok(json!({ "id": vm.id, "state": to.as_str() }))
    }

    async fn start_locked(&self, id: &str, user: &str) -> Result<serde_json::Value, Error> {
        let vm = self.find_vm(id).await?;
        match vm.state {
            VmState::Running => {
                return Ok(json!({ "id": vm.id, "state": "running", "pid": vm.pid }));
            }
            VmState::Paused => {
                return Err(Error::Conflict(format!(
                    "VM {} is paused: resume it",
                    vm.name
                )));
            }
            VmState::Stopped => {}
            other => {
                return Err(Error::Conflict(format!(
                    "VM {} is {}",
                    vm.name,
                    other.as_str()
                )));
            }
        }
        self.refuse_in_maintenance(&vm.host, &format!("the power on of VM {}", vm.name))
            .await?;
        let mut disk_sockets = Vec::new();
        if !vm.disks.is_empty() {
            self.need_blockd().await?;
        }
        for d in &vm.disks {
            let socket = match self.blockd.export_socket(&d.export_id).await {
                Ok(s) => s,
                // Deleted behind our back: serve the volume again.
                Err(e) if e.status() == Some(404) => {
                    self.blockd
                        .create_export(&d.export_id, &d.datastore, &d.volume)
                        .await?
                }
                Err(e) => return Err(e.into()),
            };
            disk_sockets.push(socket);
        }
        if !vm.nics.is_empty() {
            self.need_vswitchd().await?;
        }
        let nic_sockets: Vec<PathBuf> = vm.nics.iter().map(|n| self.port_socket(&n.port)).collect();
        for s in &nic_sockets {
            if !s.exists() {
                return Err(Error::Unavailable(format!(
                    "sfera-vswitchd has no socket {} for this VM's NIC",
                    s.display()
                )));
            }
        }
        let paths = self.vm_paths(&vm.id);
        let d = Driver::parse(&vm.driver);
        driver::prepare_power_on(&paths)
            .map_err(|e| Error::Internal(format!("Cannot prepare {}: {e}", paths.dir.display())))?;
        let launch = Launch {
            vm: &vm,
            paths: &paths,
            accel: self.host.accel,
            qemu_cpu: self.host.qemu_cpu.as_deref(),
            disk_sockets: &disk_sockets,
            nic_sockets: &nic_sockets,
        };
        let started = match d {
            Driver::Qemu => qemu::start(&self.paths.qemu, &self.paths.jailer, &launch).await,
            Driver::SferaVmm => {
                crate::sfera_vmm::start(&self.paths.vmm, &self.paths.jailer, &launch).await
            }
        };
        if started.is_err() && driver::running_pid(d, &paths).is_none() {
            crate::jail::clean_up(&paths).await;
        }
        let pid = started.map_err(|e| {
            let message = e.chain();
            self.db
                .event("error", "vm.power_on_failed", &vm.id, &message, Some(user));
            Error::Internal(message)
        })?;
        self.inventory
            .set_vm_state(&vm.id, VmState::Running, Some(pid))
            .await?;
        self.db.event(
            "info",
            "vm.powered_on",
            &vm.id,
            &format!(
                "VM {} powered on ({})",
                vm.name,
                match d {
                    Driver::Qemu => format!("QEMU pid {pid}, {}", self.host.accel.as_str()),
                    Driver::SferaVmm => format!("sfera-vmm pid {pid}"),
                }
            ),
            Some(user),
        );
        Ok(json!({ "id": vm.id, "state": "running", "pid": pid }))
    }

    async fn stop_locked(&self, id: &str, user: &str) -> Result<serde_json::Value, Error> {
        let vm = self.find_vm(id).await?;
        let paths = self.vm_paths(&vm.id);
        let d = Driver::parse(&vm.driver);
        if let Some(pid) = driver::running_pid(d, &paths) {
            driver::stop(d, &paths, pid)
                .await
                .map_err(|e| Error::Internal(e.chain()))?;
        }
        if matches!(vm.state, VmState::Running | VmState::Paused) {
            self.inventory
                .set_vm_state(&vm.id, VmState::Stopped, None)
                .await?;
            self.db.event(
                "info",
                "vm.powered_off",
                &vm.id,
                &format!("VM {} powered off", vm.name),
                Some(user),
            );
        }
        Ok(json!({ "id": vm.id, "state": "stopped" }))
    }

    /// Deletes a stopped VM: its ports and exports, and its volumes when
    /// `with_disks`.
    pub async fn delete_vm(
        self: Arc<Self>,
        id: String,
        with_disks: bool,
        user: String,
    ) -> Result<serde_json::Value, Error> {
        let lock = self.vm_lock(&id);
        let _guard = lock.lock().await;
        let vm = self.find_vm(&id).await?;
        if matches!(vm.state, VmState::Running | VmState::Paused) {
            return Err(Error::Conflict(format!(
                "VM {} is {}: power it off first",
                vm.name,
                vm.state.as_str()
            )));
        }
        self.inventory
            .set_vm_state(&vm.id, VmState::Deleting, None)
            .await?;
        let result = async {
            for n in &vm.nics {
                self.need_vswitchd().await?;
                self.vswitchd.remove_port(&n.port).await?;
            }
            for d in &vm.disks {
                self.need_blockd().await?;
                match self.blockd.delete_export(&d.export_id).await {
                    Err(e) if e.status() != Some(404) => return Err(Error::from(e)),
                    _ => {}
                }
                if with_disks {
                    match self.blockd.delete_volume(&d.datastore, &d.volume).await {
                        Err(e) if e.status() != Some(404) => return Err(Error::from(e)),
                        _ => {}
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // What is left is still the VM's: it stays in the inventory.
            self.inventory
                .set_vm_state(&vm.id, VmState::Stopped, None)
                .await?;
            return Err(e);
        }
        self.inventory.delete_vm(&vm.id).await?;
        let _ = std::fs::remove_dir_all(self.vm_paths(&vm.id).dir);
        self.db.event(
            "info",
            "vm.deleted",
            &vm.id,
            &format!(
                "VM {} deleted{}",
                vm.name,
                if with_disks {
                    " with its disks"
                } else {
                    "; its disks stay"
                }
            ),
            Some(&user),
        );
        Ok(json!({ "id": vm.id, "deleted": true, "disks_deleted": with_disks }))
    }

    /// At start: VMs recorded as running or paused whose hypervisor still
    /// runs are adopted, in the state the hypervisor reports; the others
    /// are stopped. VMs left half-made are removed.
    pub async fn adopt_vms(&self) -> Result<(), Error> {
        for vm in self.inventory.vms_here().await? {
            let paths = self.vm_paths(&vm.id);
            let d = Driver::parse(&vm.driver);
            match vm.state {
                VmState::Running | VmState::Paused => match driver::running_pid(d, &paths) {
                    Some(pid) => {
                        let state = match driver::observed_state(d, &paths).await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!(vm = vm.name, "Cannot ask its state: {}", e.chain());
                                vm.state
                            }
                        };
                        self.inventory
                            .set_vm_state(&vm.id, state, Some(pid))
                            .await?;
                        self.db.event(
                            "info",
                            "vm.adopted",
                            &vm.id,
                            &format!(
                                "VM {} still runs ({} pid {pid}, {}): adopted",
                                vm.name,
                                d.as_str(),
                                state.as_str()
                            ),
                            None,
                        );
                    }
                    None => {
                        crate::jail::clean_up(&paths).await;
                        self.inventory
                            .set_vm_state(&vm.id, VmState::Stopped, None)
                            .await?;
                        self.db.event(
                            "warning",
                            "vm.stopped",
                            &vm.id,
                            &format!("VM {} stopped while mgmtd was away", vm.name),
                            None,
                        );
                    }
                },
                VmState::Creating | VmState::Deleting => {
                    self.inventory
                        .set_vm_state(&vm.id, VmState::Stopped, None)
                        .await?;
                    self.db.event(
                        "warning",
                        "vm.interrupted",
                        &vm.id,
                        &format!(
                            "VM {} was being {} when mgmtd stopped; check its disks and NICs",
                            vm.name,
                            if vm.state == VmState::Creating {
                                "created"
                            } else {
                                "deleted"
                            }
                        ),
                        None,
                    );
                }
                VmState::Stopped => {}
            }
        }
        Ok(())
    }

    /// Notices VMs whose hypervisor exited (guest power-off, crash, kill).
    pub async fn watch_vms(self: Arc<Self>) {
        // VMs that ended whose sandbox is not cleaned up yet (their cgroup
        // still held by an unreaped process), and how many more times to
        // try.
        let mut unclean: Vec<(VmPaths, u32)> = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            unclean.retain_mut(|(p, tries)| {
                *tries -= 1;
                match crate::jail::try_clean_up(p) {
                    Ok(()) => false,
                    Err(e) if *tries == 0 => {
                        tracing::warn!(vm = p.id, "Sandbox left behind: {e}");
                        false
                    }
                    Err(_) => true,
                }
            });
            let Ok(vms) = self.inventory.vms_here().await else {
                continue;
            };
            for vm in vms
                .into_iter()
                .filter(|v| matches!(v.state, VmState::Running | VmState::Paused))
            {
                let lock = self.vm_lock(&vm.id);
                // A VM under an operation is that operation's business.
                let Ok(_guard) = lock.try_lock() else {
                    continue;
                };
                let d = Driver::parse(&vm.driver);
                let paths = self.vm_paths(&vm.id);
                if let Some(pid) = driver::running_pid(d, &paths) {
                    crate::jail::refresh_sockets(&self.paths.jailer, &paths, pid).await;
                    continue;
                }
                if crate::jail::try_clean_up(&paths).is_err()
                    && !unclean.iter().any(|(p, _)| p.id == paths.id)
                {
                    unclean.push((paths, 60));
                }
                if self
                    .inventory
                    .set_vm_state(&vm.id, VmState::Stopped, None)
                    .await
                    .is_ok()
                {
                    self.db.event(
                        "info",
                        "vm.stopped",
                        &vm.id,
                        &format!("VM {} stopped (its {} process exited)", vm.name, d.as_str()),
                        None,
                    );
                }
            }
        }
    }
}
