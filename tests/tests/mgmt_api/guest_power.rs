//! Guest power through the ACPI power button, the case
//! `the_guest_shuts_down_at_its_power_button` of `mgmt_api_end_to_end`: a
//! Tiny Linux VM under QEMU (its init runs busybox acpid, whose handler
//! shuts the guest down) is restarted and shut down gracefully, with the
//! guest's own shutdown messages on its console; a guest that ignores the
//! button fails the task when the time is up and runs on.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::guest::READY_LINE;
use serde_json::{Value, json};

use crate::EndToEnd;
use crate::mgmt_client::{Cred, Mgmtd, console_wait};

/// What the guest's power-button handler prints (tests/guest/init), and
/// the kernel's last line.
const SHUTDOWN_LINES: [&str; 3] = [
    "sfera-guest: power button pressed: shutting down",
    "sfera-guest: reached power off",
    "reboot: Power down",
];

/// The VM's console socket, once its guest is up.
fn booted(m: &Mgmtd, token: &str) -> Result<(Value, std::path::PathBuf)> {
    let vm = m.expect(Cred::Bearer(token), "GET", "/api/v1/vms/acpi", None, 200)?;
    ensure!(vm["state"] == "running", "{vm}");
    let console = std::path::PathBuf::from(vm["console_socket"].as_str().context("no console")?);
    console_wait(&console, None, READY_LINE, Duration::from_secs(180))?;
    Ok((vm, console))
}

/// A console log (`current` or `previous`) through the API.
fn console_log(m: &Mgmtd, token: &str, session: &str) -> Result<String> {
    let log = m.expect(
        Cred::Bearer(token),
        "GET",
        &format!("/api/v1/vms/acpi/console-logs/{session}"),
        None,
        200,
    )?;
    Ok(log
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| log.to_string()))
}

fn shows_the_guests_shutdown(log: &str) -> Result<()> {
    for line in SHUTDOWN_LINES {
        ensure!(log.contains(line), "no {line:?} in the console log: {log}");
    }
    Ok(())
}

/// Bad timeouts are refused; a guest without a button handler fails the
/// shutdown and runs on; a restart shuts the guest down (its messages in
/// the last power-on's log) and boots it again; a shutdown through the
/// CLI leaves it stopped with its messages in the log.
pub(crate) fn the_guest_shuts_down_at_its_power_button(s: &EndToEnd) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let body = json!({ "name": "acpi", "template": "tiny-linux", "driver": "qemu",
                       "power_on": true });
    let task = m.expect(admin, "POST", "/api/v1/vms", Some(&body), 202)?;
    m.wait_task(token, &task, Duration::from_secs(120))?;
    for (path, why) in [
        ("shutdown?timeout_s=0", "timeout_s must be"),
        ("reboot?timeout_s=3601", "timeout_s must be"),
        ("shutdown?timeout_s=soon", "timeout_s must be"),
        ("off?timeout_s=5", "not off"),
    ] {
        let e = m.expect(
            admin,
            "POST",
            &format!("/api/v1/vms/acpi/power/{path}"),
            None,
            400,
        )?;
        ensure!(e.to_string().contains(why), "{path}: {e}");
    }
    let (vm, console) = booted(m, token)?;

    // A guest that does not act on the button: the task fails when its
    // time is up, says how to stop the VM at once, and the VM runs on.
    console_wait(
        &console,
        Some("killall acpid; while pidof acpid; do sleep 1; done; echo acpid-$((1+1))-gone"),
        "acpid-2-gone",
        Duration::from_secs(30),
    )?;
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/vms/acpi/power/shutdown?timeout_s=3",
        None,
        202,
    )?;
    ensure!(task["kind"] == "vm.shutdown", "{task}");
    let failed = m.finished_task(token, &task, Duration::from_secs(60))?;
    let error = failed["error"].as_str().unwrap_or_default();
    ensure!(
        failed["state"] == "error"
            && error.contains("did not shut down within 3 s")
            && error.contains("power/off"),
        "{failed}"
    );
    let still = m.expect(admin, "GET", "/api/v1/vms/acpi", None, 200)?;
    ensure!(
        still["state"] == "running" && still["pid"] == vm["pid"],
        "{still}"
    );
    console_wait(
        &console,
        Some("acpid -c /etc/acpi -l /dev/null && echo acpid-$((1+2))-back"),
        "acpid-3-back",
        Duration::from_secs(30),
    )?;

    // Restart: the guest shuts down, and the VM is powered on again.
    let task = m.expect(admin, "POST", "/api/v1/vms/acpi/power/reboot", None, 202)?;
    let restarted = m.wait_task(token, &task, Duration::from_secs(180))?;
    ensure!(
        restarted["state"] == "running" && restarted["pid"] != vm["pid"],
        "{restarted}"
    );
    shows_the_guests_shutdown(&console_log(m, token, "previous")?)?;
    booted(m, token)?;

    // Shut down through the CLI: stopped, the guest's messages in its log.
    m.cli(token, &["vm", "shutdown", "acpi", "--timeout", "120"])?;
    ensure!(m.vm_state(token, "acpi")? == "stopped");
    shows_the_guests_shutdown(&console_log(m, token, "current")?)?;
    let events = m
        .expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?
        .to_string();
    for kind in ["vm.shutdown_timed_out", "vm.shut_down", "vm.restarted"] {
        ensure!(events.contains(kind), "no {kind} event");
    }
    let task = m.expect(admin, "DELETE", "/api/v1/vms/acpi?disks=true", None, 202)?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    Ok(())
}
