//! The VMM's control object: carries out [`VmmAction`]s on the one VM of
//! this process, and reports when the VM has ended so the process can exit
//! with the right status.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use control::ApiError;
use control::server::Reply;

use super::request::VmmAction;
use super::types::{Counters, VmEnd, VmInfo};
use crate::config::{HostLimits, VmConfig};
use crate::cpu::VmEvent;
use crate::machine::{BootSource, Machine, MachineState};
use crate::timings::{self, Step};

impl VmEnd {
    /// The process exit status for this end.
    pub fn exit_code(&self) -> i32 {
        if self.clean { 0 } else { 1 }
    }
}

impl From<VmEvent> for VmEnd {
    fn from(e: VmEvent) -> Self {
        match e {
            VmEvent::PowerOff { reason } => VmEnd {
                clean: true,
                reason,
            },
            VmEvent::Fault { cpu, reason } => VmEnd {
                clean: false,
                reason: format!("vCPU {cpu}: {reason}"),
            },
        }
    }
}

/// The VMM: at most one VM, created, booted and ended once.
#[derive(Debug)]
pub struct Vmm {
    host: HostLimits,
    config: Option<VmConfig>,
    machine: Option<Machine>,
    ended: Option<VmEnd>,
    exit: Sender<VmEnd>,
}

/// The VMM shared by the API and the VM's watcher thread.
pub type SharedVmm = Arc<Mutex<Vmm>>;

impl Vmm {
    /// A VMM with no VM yet; `exit` hears when the VM has ended.
    pub fn new(host: HostLimits, exit: Sender<VmEnd>) -> SharedVmm {
        Arc::new(Mutex::new(Vmm {
            host,
            config: None,
            machine: None,
            ended: None,
            exit,
        }))
    }

    fn state(&self) -> &'static str {
        match (&self.ended, &self.machine, &self.config) {
            (Some(_), _, _) => "stopped",
            (None, Some(m), _) => match m.state() {
                MachineState::Created => "created",
                MachineState::Running => "running",
                MachineState::Paused => "paused",
                MachineState::Stopped => "stopped",
            },
            (None, None, Some(_)) => "created",
            (None, None, None) => "not_created",
        }
    }

    /// The answer of `GET /v1/vm`.
    pub fn info(&self) -> VmInfo {
        VmInfo {
            state: self.state().to_owned(),
            config: self.config.clone(),
            end: self.ended.clone(),
        }
    }

    fn end(&mut self, end: VmEnd) {
        if self.ended.is_some() {
            return;
        }
        if let Some(m) = self.machine.as_mut() {
            m.stop();
        }
        if end.clean {
            tracing::info!("VM ended: {}", end.reason);
        } else {
            tracing::error!("VM failed: {}", end.reason);
        }
        self.ended = Some(end.clone());
        let _ = self.exit.send(end);
    }
}

fn lock(vmm: &SharedVmm) -> std::sync::MutexGuard<'_, Vmm> {
    vmm.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Carries out one request.
pub fn handle(vmm: &SharedVmm, action: VmmAction) -> Result<Reply, ApiError> {
    let mut guard = lock(vmm);
    let v = &mut *guard;
    let conflict = |v: &Vmm, what: &str| {
        ApiError::conflict(format!("Cannot {what} a VM that is {}", v.state()))
    };
    match action {
        VmmAction::CreateVm(config) => {
            if v.machine.is_some() || v.ended.is_some() {
                return Err(conflict(v, "re-create"));
            }
            config.validate(&v.host)?;
            timings::mark(Step::Config);
            v.config = Some(*config);
            Ok(Reply::Empty)
        }
        VmmAction::BootVm => {
            if v.machine.is_some() || v.ended.is_some() {
                return Err(conflict(v, "boot"));
            }
            let config = v
                .config
                .clone()
                .ok_or_else(|| ApiError::conflict("No VM configured: PUT /v1/vm first"))?;
            let mut machine = Machine::build(&config, BootSource::Kernel)?;
            let events = machine.take_events();
            machine.start()?;
            v.machine = Some(machine);
            drop(guard);
            if let Some(events) = events {
                watch(Arc::clone(vmm), events);
            }
            Ok(Reply::Empty)
        }
        VmmAction::PauseVm => match v.machine.as_mut() {
            Some(m) if v.ended.is_none() && m.state() != MachineState::Stopped => {
                m.pause();
                Ok(Reply::Empty)
            }
            _ => Err(conflict(v, "pause")),
        },
        VmmAction::ResumeVm => match v.machine.as_mut() {
            Some(m) if v.ended.is_none() && m.state() != MachineState::Stopped => {
                m.resume();
                Ok(Reply::Empty)
            }
            _ => Err(conflict(v, "resume")),
        },
        VmmAction::ShutdownVm => {
            if v.ended.is_some() {
                return Err(conflict(v, "shut down"));
            }
            v.end(VmEnd {
                clean: true,
                reason: "shutdown requested through the API".to_owned(),
            });
            Ok(Reply::Empty)
        }
        VmmAction::GetVmInfo => answer(&v.info()),
        VmmAction::GetCounters => {
            let Some(m) = v.machine.as_ref() else {
                return Err(conflict(v, "count"));
            };
            answer(&Counters {
                exits: m
                    .exit_counters()
                    .snapshot()
                    .into_iter()
                    .map(|(k, n)| (k.to_owned(), n))
                    .collect(),
                devices: m.device_counter_list(),
            })
        }
    }
}

/// A 200 answer with `body` as JSON.
fn answer(body: &impl serde::Serialize) -> Result<Reply, ApiError> {
    serde_json::to_value(body)
        .map(Reply::Json)
        .map_err(|e| ApiError::internal(format!("Cannot encode the answer: {e}")))
}

/// Waits for the VM's first event and ends the VM with it.
fn watch(vmm: SharedVmm, events: Receiver<VmEvent>) {
    let spawned = std::thread::Builder::new()
        .name("vm-watch".to_owned())
        .spawn(move || {
            if let Ok(event) = events.recv() {
                lock(&vmm).end(event.into());
            }
        });
    if let Err(e) = spawned {
        tracing::error!("Cannot start the VM watcher thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmm() -> (SharedVmm, Receiver<VmEnd>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let host = HostLimits {
            max_vcpus: 4,
            memory_mib: 1024,
        };
        (Vmm::new(host, tx), rx)
    }

    #[test]
    fn lifecycle_requests_before_create_conflict() {
        let (v, _rx) = vmm();
        for a in [
            VmmAction::BootVm,
            VmmAction::PauseVm,
            VmmAction::ResumeVm,
            VmmAction::GetCounters,
        ] {
            assert_eq!(handle(&v, a.clone()).unwrap_err().status, 409, "{a:?}");
        }
        let Reply::Json(info) = handle(&v, VmmAction::GetVmInfo).unwrap() else {
            panic!("info is JSON");
        };
        assert_eq!(info["state"], "not_created");
    }

    #[test]
    fn invalid_config_is_refused_and_nothing_is_kept() {
        let (v, _rx) = vmm();
        let config: VmConfig = serde_json::from_value(serde_json::json!({
            "vcpus": 0, "memory_mib": 64, "kernel": "/nonexistent"
        }))
        .unwrap();
        let e = handle(&v, VmmAction::CreateVm(Box::new(config))).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_config"));
        let Reply::Json(info) = handle(&v, VmmAction::GetVmInfo).unwrap() else {
            panic!("info is JSON");
        };
        assert_eq!(info["state"], "not_created");
    }

    #[test]
    fn shutdown_reports_a_clean_end_once() {
        let (v, rx) = vmm();
        handle(&v, VmmAction::ShutdownVm).unwrap();
        assert_eq!(rx.try_recv().unwrap().exit_code(), 0);
        assert_eq!(handle(&v, VmmAction::ShutdownVm).unwrap_err().status, 409);
    }
}
