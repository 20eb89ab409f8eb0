//! Graceful shutdown: the guest is asked to shut itself down and given a
//! time to do it, instead of the power cord.
//!
//! Under QEMU the ask is the ACPI power button (QMP `system_powerdown`);
//! QEMU exits when the guest powers off, and the VM is stopped from then
//! on. A guest that does not act on the button (still in its firmware or
//! boot loader, or without a handler) is left running when the time is
//! up: the action fails and says how to stop it at once. sfera-vmm has no
//! ACPI (its guests boot from an MP table, and its i8042 only carries the
//! guest's reset to the host), so there is no button to press: its VMs
//! are refused with a 409, never answered with a stop that did not
//! happen.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::Error;
use crate::db::VmState;
use crate::driver::{self, Driver};
use crate::qemu::qmp;
use crate::service::Mgmt;

/// How often the wait looks whether the hypervisor has exited.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Whether VMs under `driver` can be asked to shut down, and why not.
pub fn refuse_without_button(driver: Driver, vm: &str) -> Result<(), Error> {
    match driver {
        Driver::Qemu => Ok(()),
        Driver::SferaVmm => Err(Error::Conflict(format!(
            "VM {vm} runs under sfera-vmm, which has no ACPI power button to ask its guest to \
             shut down: shut it down from inside the guest, or power it off (the power cord)"
        ))),
    }
}

impl Mgmt {
    /// Asks VM `id`'s guest to shut down and waits up to `timeout_s` for
    /// its hypervisor to exit. The caller holds the VM's lock.
    pub(super) async fn shut_down_locked(
        &self,
        id: &str,
        timeout_s: u32,
        user: &str,
    ) -> Result<serde_json::Value, Error> {
        let vm = self.find_vm(id).await?;
        match vm.state {
            VmState::Running => {}
            // Asked again after it happened (a request is carried out at
            // least once): nothing to do.
            VmState::Stopped => return Ok(json!({ "id": vm.id, "state": "stopped" })),
            VmState::Paused => {
                return Err(Error::Conflict(format!(
                    "VM {} is paused: resume it first (a paused guest cannot see the power \
                     button)",
                    vm.name
                )));
            }
            other => {
                return Err(Error::Conflict(format!(
                    "VM {} is {}",
                    vm.name,
                    other.as_str()
                )));
            }
        }
        let d = Driver::parse(&vm.driver);
        refuse_without_button(d, &vm.name)?;
        let paths = self.vm_paths(&vm.id);
        let started = Instant::now();
        if driver::running_pid(d, &paths).is_some() {
            qmp::execute(&paths.qmp(), qmp::Command::SystemPowerdown)
                .await
                .map_err(|e| {
                    Error::Internal(format!(
                        "Cannot press the power button of VM {}: {}",
                        vm.name,
                        control::error_chain(&e)
                    ))
                })?;
        }
        let deadline = started + Duration::from_secs(u64::from(timeout_s));
        while driver::running_pid(d, &paths).is_some() {
            if Instant::now() >= deadline {
                let message = format!(
                    "VM {} did not shut down within {timeout_s} s: its guest did not act on the \
                     ACPI power button (it may still be in its firmware or boot loader, or have \
                     nothing that handles the button). The VM still runs and nothing is lost: \
                     try again with a longer timeout_s, or power it off \
                     (POST /api/v1/vms/{}/power/off), which stops it at once like pulling the \
                     power cord",
                    vm.name, vm.name
                );
                self.db.event(
                    "warning",
                    "vm.shutdown_timed_out",
                    &vm.id,
                    &message,
                    Some(user),
                );
                return Err(Error::Conflict(message));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
        crate::jail::clean_up(&paths).await;
        self.inventory
            .set_vm_state(&vm.id, VmState::Stopped, None)
            .await?;
        self.db.event(
            "info",
            "vm.shut_down",
            &vm.id,
            &format!(
                "VM {} shut down by its guest (ACPI power button, {:.1} s)",
                vm.name,
                started.elapsed().as_secs_f64()
            ),
            Some(user),
        );
        Ok(json!({ "id": vm.id, "state": "stopped" }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::{GUEST_STOP_DEFAULT_S, PowerAction, parse_guest_timeout};
    use super::*;

    #[test]
    fn shutdown_and_reboot_parse_with_the_default_timeout() {
        assert_eq!(
            PowerAction::parse("shutdown"),
            Some(PowerAction::Shutdown {
                timeout_s: GUEST_STOP_DEFAULT_S
            })
        );
        let reboot = PowerAction::parse("reboot").unwrap();
        assert_eq!(reboot, PowerAction::Reboot { timeout_s: 120 });
        assert_eq!(reboot.as_str(), "reboot");
        assert_eq!(reboot.task_kind(), "vm.reboot");
        assert_eq!(reboot.guest_wait(), Duration::from_secs(120));
        assert_eq!(PowerAction::Off.guest_wait(), Duration::ZERO);
        assert_eq!(PowerAction::parse("powerdown"), None);
    }

    #[test]
    fn the_guest_timeout_is_whole_seconds_up_to_an_hour() {
        assert_eq!(parse_guest_timeout("1"), Ok(1));
        assert_eq!(parse_guest_timeout("3600"), Ok(3600));
        for bad in ["0", "3601", "-1", "1.5", "", "ten", "99999999999"] {
            let e = parse_guest_timeout(bad).unwrap_err();
            assert!(e.contains("timeout_s must be"), "{bad}: {e}");
        }
        let shutdown = PowerAction::parse("shutdown").unwrap();
        assert_eq!(
            shutdown.with_guest_timeout("5"),
            Ok(PowerAction::Shutdown { timeout_s: 5 })
        );
        let e = PowerAction::Off.with_guest_timeout("5").unwrap_err();
        assert!(e.contains("not off"), "{e}");
    }

    #[test]
    fn a_request_record_keeps_the_timeout() {
        let a = PowerAction::Reboot { timeout_s: 30 };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"reboot":{"timeout_s":30}}"#);
        assert_eq!(serde_json::from_str::<PowerAction>(&text).unwrap(), a);
        // The actions of before keep their form.
        assert_eq!(
            serde_json::to_string(&PowerAction::Off).unwrap(),
            r#""off""#
        );
    }

    #[test]
    fn sfera_vmm_has_no_power_button() {
        assert!(refuse_without_button(Driver::Qemu, "web").is_ok());
        let e = refuse_without_button(Driver::SferaVmm, "web").unwrap_err();
        assert!(
            matches!(&e, Error::Conflict(m) if m.contains("no ACPI power button")),
            "{e}"
        );
    }
}
