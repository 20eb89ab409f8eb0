//! mgmtd's sfera-vmm driver, the cases of `mgmt_runs_a_vm_under_sfera_vmm`:
//! sfera-vmm's test guest as a VM, through the API, the console WebSocket
//! and the CLI, across crashes of mgmtd.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::EndToEnd;
use crate::mgmt_client::{Cred, Mgmtd, WsConsole, poll, ws_upgrade};

/// The guest benchmarks its disk for 30 s (long enough to pause it and
/// restart mgmtd), then sends frames on its NIC and powers off.
const TESTGUEST_CMDLINE: &str =
    "require=rng,blk,net blk.bench=30000 blk.req=8 blk.depth=4 net.role=send net.count=4";

/// A VM that asks for sfera-vmm gets it (and one asking for an unknown
/// driver is refused); mgmtd and the host page say why.
pub(crate) fn a_vm_asks_for_sfera_vmm_and_gets_it(s: &EndToEnd, elf: &Path) -> Result<()> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    let body = json!({ "name": "tg", "driver": "sfera-vmm", "vcpus": 1, "memory_mib": 128,
                       "boot": { "kind": "kernel", "kernel": elf, "cmdline": TESTGUEST_CMDLINE },
                       "disks": [{ "datastore": "local", "size_bytes": 64 << 20 }],
                       "nics": [{ "port_group": "vm-network" }] });
    let bad = json!({ "name": "tg", "driver": "vmware", "boot": body["boot"] });
    let e = m.expect(admin, "POST", "/api/v1/vms", Some(&bad), 400)?;
    ensure!(e.to_string().contains("sfera-vmm"), "{e}");
    let task = m.expect(admin, "POST", "/api/v1/vms", Some(&body), 202)?;
    m.wait_task(&s.token, &task, Duration::from_secs(60))?;
    let vm = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    ensure!(
        vm["driver"] == "sfera-vmm"
            && vm["driver_reason"]
                .as_str()
                .is_some_and(|r| r.contains("asked for")),
        "{vm}"
    );
    let host = m.expect(admin, "GET", "/api/v1/host", None, 200)?;
    ensure!(
        host["vm_drivers"].as_array().is_some_and(|a| a
            .iter()
            .any(|v| v["name"] == "tg" && v["driver"] == "sfera-vmm")),
        "{host}"
    );
    Ok(())
}

/// Powered on, the VM runs in sfera-vmm; its console shows the guest, and
/// a graphical console is refused (sfera-vmm has no framebuffer). The
/// running VM.
pub(crate) fn it_runs_with_a_console_and_no_display(s: &EndToEnd) -> Result<Value> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    m.power(&s.token, "tg", "on")?;
    let running = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    let pid = running["pid"].as_u64().context("no pid")?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    ensure!(
        running["state"] == "running" && cmd.windows(9).any(|w| w == b"sfera-vmm"),
        "{running}"
    );
    console_without_display(s)?;
    no_power_button(s)?;
    Ok(running)
}

/// sfera-vmm has no ACPI power button: a graceful shutdown or restart is
/// refused at once (409, saying so), not answered with a stop that did not
/// happen, and the VM runs on.
fn no_power_button(s: &EndToEnd) -> Result<()> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    for action in ["shutdown", "reboot?timeout_s=5"] {
        let e = m.expect(
            admin,
            "POST",
            &format!("/api/v1/vms/tg/power/{action}"),
            None,
            409,
        )?;
        ensure!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("no ACPI power button")),
            "{action}: {e}"
        );
    }
    ensure!(m.vm_state(&s.token, "tg")? == "running");
    Ok(())
}

/// The test guest's first report line on the console WebSocket, and a 409
/// for the display (sfera-vmm has no framebuffer, and it says so).
fn console_without_display(s: &EndToEnd) -> Result<()> {
    let port = s.m.port()?;
    let mut console = WsConsole::open(port, "tg", &s.token)?;
    console.wait("SFERA-TESTGUEST blk capacity=", Duration::from_secs(60))?;
    let (_, head) = ws_upgrade(port, "/api/v1/vms/tg/display", &s.token)?;
    ensure!(
        head.starts_with("HTTP/1.1 409"),
        "display of a sfera-vmm VM: {head}"
    );
    Ok(())
}

/// Paused through the CLI, the VM outlives a crash of mgmtd, and the next
/// mgmtd adopts it still paused.
pub(crate) fn paused_through_the_cli_it_outlives_mgmtd(
    s: &mut EndToEnd,
    running: &Value,
) -> Result<()> {
    let pid = running["pid"].as_u64().context("no pid")?;
    s.m.cli(&s.token, &["vm", "pause", "tg"])?;
    ensure!(s.m.vm_state(&s.token, "tg")? == "paused");
    let list = s.m.cli(&s.token, &["vm", "list"])?;
    ensure!(
        list.lines()
            .any(|l| l.contains("tg") && l.contains("paused") && l.contains("sfera-vmm")),
        "{list}"
    );
    s.m.crash()?;
    ensure!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "sfera-vmm died with mgmtd"
    );
    s.m = Mgmtd::start(&s.site, false, 2)?;
    let again =
        s.m.expect(Cred::Bearer(&s.token), "GET", "/api/v1/vms/tg", None, 200)?;
    ensure!(
        again["state"] == "paused" && again["pid"] == running["pid"],
        "not adopted as paused: {again}"
    );
    Ok(())
}

/// The report, through the console WebSocket of the second mgmtd, opened
/// before the guest runs on to its end: what the guest printed before is
/// the history frame (sfera-vmm's framed history, after the session event), not
/// a replay that a terminal would take for live output and answer; and
/// through `sfera vm console`
/// (the same WebSocket, from the CLI: with stdin closed it shows the
/// console until the VM ends). The guest powers itself off; mgmtd
/// notices, and the CLI refuses the console of a stopped VM.
pub(crate) fn its_report_shows_on_the_console_and_in_the_cli(s: &EndToEnd) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let mut console = WsConsole::open(m.port()?, "tg", token)?;
    let (event, history) = console.opening(Duration::from_secs(10))?;
    ensure!(
        event.starts_with(r#"{"type":"session","powered_on_at":"#),
        "the console's first frame: {event}"
    );
    let history = String::from_utf8_lossy(&history);
    ensure!(
        history.contains("SFERA-TESTGUEST blk capacity="),
        "the console's history frame: {history:?}"
    );
    let cli_out = s.site.dir.join("cli-console.out");
    let mut cli_console = m.cli_spawn(token, &["vm", "console", "tg"], &cli_out)?;
    poll(
        "the CLI's console to show the guest",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&cli_out).unwrap_or_default();
            Ok(text.contains("SFERA-TESTGUEST blk capacity=").then_some(()))
        },
    )?;
    m.cli(token, &["vm", "resume", "tg"])?;
    let text = console.wait("SFERA-TESTGUEST done status=", Duration::from_secs(120))?;
    let report = harness::testguest::Report::parse(&text);
    if let Some(why) = report.failure(&["rng ok", "blk ok bench", "net ok role=send"]) {
        bail!(why);
    }
    ensure!(
        report.cmdline() == Some(TESTGUEST_CMDLINE),
        "{:?}",
        report.cmdline()
    );
    poll("the VM to be stopped", Duration::from_secs(30), || {
        Ok((m.vm_state(token, "tg")? == "stopped").then_some(()))
    })?;
    let status = poll("the CLI's console to end", Duration::from_secs(30), || {
        Ok(cli_console.try_wait()?)
    })?;
    let shown = std::fs::read_to_string(&cli_out)?;
    ensure!(
        status.success() && shown.contains("SFERA-TESTGUEST done status=ok"),
        "sfera vm console ended with {status}; it showed:\n{shown}\n{}",
        std::fs::read_to_string(cli_out.with_extension("err"))?
    );
    let refused = m.cli(token, &["vm", "console", "tg"]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("power it on first")),
        "{refused:?}"
    );
    Ok(())
}

/// Again, this time powered off through mgmtd while it runs; a crash of
/// mgmtd in between finds it running, and the events tell it all.
pub(crate) fn running_it_is_adopted_and_powered_off(s: &mut EndToEnd) -> Result<()> {
    let admin_token = s.token.clone();
    let admin = Cred::Bearer(&admin_token);
    s.m.power(&s.token, "tg", "on")?;
    let running = s.m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    let pid = running["pid"].as_u64().context("no pid")?;
    console_without_display(s)?;
    s.m.crash()?;
    s.m = Mgmtd::start(&s.site, true, 3)?;
    let m = &s.m;
    let again = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    ensure!(
        again["state"] == "running" && again["pid"] == running["pid"],
        "not adopted: {again}"
    );
    m.power(&s.token, "tg", "off")?;
    ensure!(m.vm_state(&s.token, "tg")? == "stopped");
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || !std::fs::read(format!("/proc/{pid}/cmdline"))?
                .windows(9)
                .any(|w| w == b"sfera-vmm"),
        "sfera-vmm still runs"
    );
    let events = m
        .expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?
        .to_string();
    for kind in [
        "vm.powered_on",
        "vm.paused",
        "vm.adopted",
        "vm.resumed",
        "vm.stopped",
        "vm.powered_off",
    ] {
        ensure!(events.contains(kind), "no {kind} event in {events}");
    }
    let task = m.expect(admin, "DELETE", "/api/v1/vms/tg?disks=true", None, 202)?;
    m.wait_task(&s.token, &task, Duration::from_secs(60))?;
    Ok(())
}
