//! sfera-mgmtd takes a VM from creation to deletion, through its own crash (curl, a Linux guest).
//!
//! sfera-mgmtd end to end, with curl as the HTTP client: it starts its own
//! sfera-blockd and sfera-vswitchd, refuses callers without credentials
//! (401, nothing more) and read-only users' changes (403), and takes a
//! Tiny Linux VM with a disk and a NIC from creation to deletion, through a
//! crash of mgmtd itself: the VM keeps running, the next mgmtd adopts it
//! and its daemons, and the inventory, users and tokens are still there.
//! A second Tiny Linux VM under QEMU is restarted and shut down through
//! its ACPI power button (and a guest that ignores the button runs on).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::guest::READY_LINE;
use harness::mgmtd::Site;
use harness::scenario::case;
use serde_json::{Value, json};

#[path = "mgmt_api/guest_power.rs"]
mod guest_power;
#[path = "mgmt_api/images.rs"]
mod images;
mod mgmt_client;
#[path = "mgmt_api/sfera_vmm.rs"]
mod sfera_vmm;

use mgmt_client::{Cred, Mgmtd, console_wait, poll, unauthorized};

const GIB: u64 = 1 << 30;

/// The log cap the end-to-end test gives mgmtd (`--log-max-size`).
const LOG_CAP: u64 = 16 * 1024;

/// A guest that floods its serial console fills at most the capped
/// console log and its two rotated copies: of the flood (1.2 MB, 70 times
/// the cap, and several seconds of serial output: mgmtd looks once a
/// second, so each copy holds about a second of it) only the newest part
/// is kept, the live log is back under the cap once mgmtd has looked at
/// it, and the guest still answers.
fn console_flood_is_capped(console: &Path, vm: &Value) -> Result<()> {
    const LINE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    const LINES: u64 = 20_000;
    let flood = LINES * (LINE.len() as u64 + 2);
    let log = PathBuf::from(vm["console_socket"].as_str().context("no console socket")?)
        .with_file_name("console.log");
    let started = Instant::now();
    // The marker is computed by the shell, so the echoed command line
    // does not match it.
    console_wait(
        console,
        Some(&format!(
            "yes {LINE} | head -n {LINES}; echo FLOOD-$((40+2))"
        )),
        "FLOOD-42",
        Duration::from_secs(300),
    )?;
    eprintln!(
        "console flood of {flood} bytes took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let copy = |n: u32| log.with_file_name(format!("console.log.{n}"));
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    poll(
        "the console log back under its cap",
        Duration::from_secs(30),
        || Ok((copy(1).exists() && size(&log) <= LOG_CAP).then_some(())),
    )?;
    ensure!(!copy(3).exists(), "more rotated copies than --log-keep 2");
    let kept: u64 = [log.clone(), copy(1), copy(2)]
        .iter()
        .map(|p| size(p))
        .sum();
    ensure!(
        kept < flood,
        "the console logs keep {kept} bytes of a {flood}-byte flood under a {LOG_CAP}-byte cap"
    );
    console_wait(
        console,
        Some("echo ALIVE-$((1+1))"),
        "ALIVE-2",
        Duration::from_secs(60),
    )?;
    Ok(())
}

/// The port's counters on sfera-vswitchd, if the switch has the port.
fn port_stats(m: &Mgmtd, cred: Cred<'_>, port: &str) -> Result<Option<Value>> {
    let stats = m.expect(cred, "GET", "/api/v1/networks/stats", None, 200)?;
    Ok(stats["ports"]
        .as_array()
        .context("no ports in the switch's stats")?
        .iter()
        .find(|p| p["name"] == port)
        .cloned())
}

/// sfera-vswitchd is running, was never restarted, and (when `pid` is
/// given) is still that process; returns its pid.
fn vswitchd_unrestarted(m: &Mgmtd, cred: Cred<'_>, pid: Option<i64>) -> Result<i64> {
    let daemons = m.expect(cred, "GET", "/api/v1/daemons", None, 200)?;
    let d = daemons["items"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "sfera-vswitchd"))
        .context("no sfera-vswitchd")?;
    ensure!(
        d["state"] == "running" && d["restarts"] == 0,
        "sfera-vswitchd: {d}"
    );
    let now = d["pid"].as_i64().context("no vswitchd pid")?;
    ensure!(
        pid.is_none_or(|p| p == now),
        "sfera-vswitchd was restarted: pid {pid:?}, now {now}"
    );
    Ok(now)
}

/// The end-to-end scenario's state: one mgmtd (the next after a crash)
/// on one site, and the admin's token.
pub(crate) struct EndToEnd {
    pub(crate) site: Site,
    pub(crate) m: Mgmtd,
    pub(crate) token: String,
}

/// The Tiny Linux VM of the scenario, as it was made and booted.
struct Tiny {
    vm: Value,
    nic_port: String,
    vswitchd_pid: i64,
    console: PathBuf,
    qemu_pid: u64,
}

#[test]
fn mgmt_api_end_to_end() -> Result<()> {
    let site = Site::new("mgmt-api")?;
    let cap = LOG_CAP.to_string();
    let m = Mgmtd::start_with(
        &site,
        false,
        1,
        &["--log-max-size", &cap, "--log-keep", "2"],
    )?;
    case(
        "callers_without_credentials_get_401_and_nothing_more",
        || callers_without_credentials_get_401_and_nothing_more(&m),
    )?;
    let token = case("the_admin_logs_in_with_an_http_only_cookie", || {
        the_admin_logs_in_with_an_http_only_cookie(&m, &site)
    })?;
    let mut s = EndToEnd { site, m, token };
    let host = case("the_inventory_answers_every_parameterless_get", || {
        the_inventory_answers_every_parameterless_get(&s)
    })?;
    case("a_read_only_user_changes_nothing", || {
        a_read_only_user_changes_nothing(&s)
    })?;
    case("bad_vm_input_is_refused_and_leaves_nothing", || {
        bad_vm_input_is_refused_and_leaves_nothing(&s)
    })?;
    let mut tiny = case("a_vm_is_made_with_a_disk_and_a_port_on_the_switch", || {
        a_vm_is_made_with_a_disk_and_a_port_on_the_switch(&s, &host)
    })?;
    let running = case("the_vm_boots_and_its_console_flood_is_capped", || {
        the_vm_boots_and_its_console_flood_is_capped(&s, &mut tiny)
    })?;
    case("a_paused_vm_refuses_power_on_and_delete", || {
        a_paused_vm_refuses_power_on_and_delete(&s)
    })?;
    case("the_next_mgmtd_adopts_the_vm_after_a_crash", || {
        the_next_mgmtd_adopts_the_vm_after_a_crash(&mut s, &tiny, &running)
    })?;
    case("a_killed_blockd_is_restarted_and_the_disk_works", || {
        a_killed_blockd_is_restarted_and_the_disk_works(&s, &tiny)
    })?;
    case("power_off_and_delete_leave_nothing", || {
        power_off_and_delete_leave_nothing(&s, &tiny)
    })?;
    case("the_guest_shuts_down_at_its_power_button", || {
        guest_power::the_guest_shuts_down_at_its_power_button(&s)
    })?;
    let (m, token) = (&s.m, s.token.as_str());
    case("disk_images_are_imported", || {
        images::import_images(m, token)
    })?;
    case("bad_imports_are_refused", || {
        images::bad_imports_are_refused(m, token)
    })?;
    case("a_failed_import_leaves_no_volume", || {
        images::a_failed_import_leaves_no_volume(m, token)
    })?;
    case("an_imported_disk_boots_through_firmware", || {
        images::boot_an_imported_disk(m, token, &s.site.dir)
    })?;
    case("an_iso_boots_through_firmware", || {
        images::boot_an_iso(m, token, &s.site.dir)
    })?;
    case("the_next_mgmtd_removes_an_import_cut_short", || {
        the_next_mgmtd_removes_an_import_cut_short(&mut s)
    })
}

/// Without credentials: 401 and nothing else, known path or not.
fn callers_without_credentials_get_401_and_nothing_more(m: &Mgmtd) -> Result<()> {
    unauthorized(
        &m.call(Cred::None, "GET", "/api/v1/host", None)?,
        "GET host",
    )?;
    unauthorized(
        &m.call(Cred::None, "GET", "/api/v1/no-such-thing", None)?,
        "unknown path",
    )?;
    unauthorized(
        &m.call(Cred::None, "POST", "/api/v1/vms", Some(&json!({})))?,
        "POST vms",
    )?;
    unauthorized(
        &m.call(Cred::None, "GET", "/api/v1/openapi.json", None)?,
        "openapi",
    )?;
    unauthorized(
        &m.call(Cred::Bearer("0123abcd"), "GET", "/api/v1/vms", None)?,
        "bad token",
    )?;
    unauthorized(&m.call(Cred::None, "GET", "/metrics", None)?, "metrics")?;
    let wrong = m.call(
        Cred::None,
        "POST",
        "/api/v1/session",
        Some(&json!({ "username": "admin", "password": "wrong password" })),
    )?;
    ensure!(wrong.status == 401, "a wrong password: {}", wrong.status);
    Ok(())
}

/// Login with the generated password gives an HttpOnly cookie of an
/// administrator, who makes an API token; the token.
fn the_admin_logs_in_with_an_http_only_cookie(m: &Mgmtd, site: &Site) -> Result<String> {
    let jar = site.dir.join("cookies");
    let login = m.login_admin(&jar)?;
    ensure!(
        login.status == 200,
        "login: {} {}",
        login.status,
        login.body
    );
    let cookie = login
        .headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .context("no cookie")?;
    ensure!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let me = m.expect(Cred::Cookies(&jar), "GET", "/api/v1/session", None, 200)?;
    ensure!(me["role"] == "administrator", "{me}");
    m.new_token(&jar)
}

/// The inventory (host, datastores, networks, templates) and every
/// parameterless GET of the OpenAPI document answer; the host.
fn the_inventory_answers_every_parameterless_get(s: &EndToEnd) -> Result<Value> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    let host = m.expect(admin, "GET", "/api/v1/host", None, 200)?;
    ensure!(
        host["cpus"].as_u64() > Some(0) && host["accel"] == "tcg",
        "{host}"
    );
    ensure!(
        host["driver_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{host}"
    );
    // This machine's KVM is PVM: QEMU (TCG) by default, sfera-vmm on request.
    if host["kvm_kind"] == "pvm" {
        ensure!(
            host["default_driver"] == "qemu" && host["sfera_vmm_available"] == true,
            "{host}"
        );
    }
    m.wait_defaults(admin)?;
    let templates = m.expect(admin, "GET", "/api/v1/templates", None, 200)?;
    ensure!(templates["items"][0]["available"] == true, "{templates}");
    let doc = m.expect(admin, "GET", "/api/v1/openapi.json", None, 200)?;
    for (path, ops) in doc["paths"].as_object().context("no paths")? {
        if ops.get("get").is_some() && !path.contains('{') {
            m.expect(admin, "GET", path, None, 200)?;
        }
    }
    let page = m.expect(admin, "GET", "/api/v1/events?limit=1&offset=1", None, 200)?;
    ensure!(
        page["items"].as_array().map(Vec::len) == Some(1) && page["total"].as_u64() > Some(1),
        "{page}"
    );
    // One host is a cluster of one: its own etcd member, its lease held.
    let hosts = m.expect(admin, "GET", "/api/v1/hosts", None, 200)?;
    let me = &hosts["items"][0];
    ensure!(
        hosts["total"] == 1
            && me["state"] == "connected"
            && me["this_host"] == true
            && me["facts"]["cpus"] == host["cpus"],
        "{hosts}"
    );
    let name = me["name"].as_str().context("a host name")?;
    m.expect(admin, "GET", &format!("/api/v1/hosts/{name}"), None, 200)?;
    m.expect(admin, "GET", "/api/v1/hosts/nosuchhost", None, 404)?;
    m.expect(admin, "GET", "/api/v1/hosts/-bad", None, 400)?;
    Ok(host)
}

/// A read-only user reads and changes nothing.
fn a_read_only_user_changes_nothing(s: &EndToEnd) -> Result<()> {
    let m = &s.m;
    let vjar = s.site.dir.join("viewer-cookies");
    m.add_viewer(Cred::Bearer(&s.token), &vjar)?;
    let viewer = Cred::Cookies(&vjar);
    m.expect(viewer, "GET", "/api/v1/vms", None, 200)?;
    for (method, path) in [
        ("POST", "/api/v1/vms"),
        ("DELETE", "/api/v1/vms/x"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/vms/x/power/on"),
        ("POST", "/api/v1/datastores"),
    ] {
        let a = m.call(viewer, method, path, Some(&json!({})))?;
        ensure!(
            a.status == 403 && a.body["error"]["code"] == "forbidden",
            "read-only {method} {path}: {} {}",
            a.status,
            a.body
        );
    }
    Ok(())
}

/// Bad input is refused with a message and leaves nothing behind.
fn bad_vm_input_is_refused_and_leaves_nothing(s: &EndToEnd) -> Result<()> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    for (body, word) in [
        (
            json!({ "name": "bad name", "template": "tiny-linux" }),
            "name",
        ),
        (
            json!({ "name": "x", "template": "tiny-linux", "disks": [{ "datastore": "nope", "size_bytes": GIB }] }),
            "datastore",
        ),
        (
            json!({ "name": "x", "template": "tiny-linux", "nics": [{ "port_group": "nope" }] }),
            "port group",
        ),
        (
            json!({ "name": "x", "template": "tiny-linux", "memory_mib": 1 }),
            "memory_mib",
        ),
        (
            json!({ "name": "x", "template": "tiny-linux", "surprise": 1 }),
            "unknown field",
        ),
        (
            json!({ "name": "x", "template": "tiny-linux", "driver": "xen" }),
            "sfera-vmm",
        ),
    ] {
        let e = m.expect(admin, "POST", "/api/v1/vms", Some(&body), 400)?;
        ensure!(e["error"]["code"] == "invalid_request", "{e}");
        ensure!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|s| s.contains(word)),
            "{body}: {e}"
        );
    }
    let vms = m.expect(admin, "GET", "/api/v1/vms", None, 200)?;
    ensure!(vms["total"] == 0, "{vms}");
    Ok(())
}

/// The Tiny Linux VM is made with a disk and a NIC, on the host's default
/// driver (the host page says why); its NIC's port goes to the running
/// sfera-vswitchd (POST /v1/ports), never through a restart.
fn a_vm_is_made_with_a_disk_and_a_port_on_the_switch(s: &EndToEnd, host: &Value) -> Result<Tiny> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    let vswitchd_pid = vswitchd_unrestarted(m, admin, None)?;
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "tiny", "template": "tiny-linux",
                      "disks": [{ "datastore": "local", "size_bytes": GIB }],
                      "nics": [{ "port_group": "vm-network" }] })),
        202,
    )?;
    ensure!(task["kind"] == "vm.create", "{task}");
    m.wait_task(&s.token, &task, Duration::from_secs(120))?;
    let vm = m.expect(admin, "GET", "/api/v1/vms/tiny", None, 200)?;
    ensure!(
        vm["state"] == "stopped"
            && vm["disks"].as_array().map(Vec::len) == Some(1)
            && vm["nics"].as_array().map(Vec::len) == Some(1),
        "{vm}"
    );
    let volumes = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
    ensure!(volumes["items"][0]["name"] == "tiny/disk0", "{volumes}");
    ensure!(
        vm["driver"] == host["default_driver"]
            && vm["driver_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{vm}"
    );
    let host_now = m.expect(admin, "GET", "/api/v1/host", None, 200)?;
    ensure!(
        host_now["vm_drivers"][0]["name"] == "tiny"
            && host_now["vm_drivers"][0]["driver"] == vm["driver"]
            && host_now["vm_drivers"][0]["driver_reason"] == vm["driver_reason"],
        "{host_now}"
    );
    let nic_port = vm["nics"][0]["port"]
        .as_str()
        .context("no port")?
        .to_owned();
    ensure!(
        port_stats(m, admin, &nic_port)?.is_some(),
        "port {nic_port} not on the switch"
    );
    vswitchd_unrestarted(m, admin, Some(vswitchd_pid))?;
    let console = PathBuf::from(vm["console_socket"].as_str().context("no console socket")?);
    Ok(Tiny {
        vm,
        nic_port,
        vswitchd_pid,
        console,
        qemu_pid: 0,
    })
}

/// Wrong methods are refused (401 without credentials, but for public
/// paths); the VM powers on, its guest comes up, floods its console
/// within the log cap, reaches the switch, and a running VM is not
/// deleted. The running VM.
fn the_vm_boots_and_its_console_flood_is_capped(s: &EndToEnd, tiny: &mut Tiny) -> Result<Value> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    m.expect(admin, "POST", "/api/v1/vms/tiny", None, 405)?;
    // Without credentials a wrong method is a 401 (the path stays secret),
    // except on a public path, whose methods are no secret.
    m.expect(Cred::None, "POST", "/api/v1/vms/tiny", None, 401)?;
    m.expect(Cred::None, "DELETE", "/api/v1/health", None, 405)?;
    m.expect(Cred::None, "GET", "/api/v1/health", None, 200)?;
    let task = m.expect(admin, "POST", "/api/v1/vms/tiny/power/on", None, 202)?;
    m.wait_task(&s.token, &task, Duration::from_secs(120))?;
    let started = Instant::now();
    console_wait(&tiny.console, None, READY_LINE, Duration::from_secs(180))?;
    eprintln!(
        "guest ready {:.1} s after power-on",
        started.elapsed().as_secs_f64()
    );
    console_flood_is_capped(&tiny.console, &tiny.vm)?;
    let running = m.expect(admin, "GET", "/api/v1/vms/tiny", None, 200)?;
    ensure!(running["state"] == "running", "{running}");
    poll("QEMU on the NIC's port", Duration::from_secs(30), || {
        Ok(port_stats(m, admin, &tiny.nic_port)?.filter(|p| p["connected"] == true))
    })?;
    m.expect(admin, "DELETE", "/api/v1/vms/tiny", None, 409)?;
    tiny.qemu_pid = running["pid"].as_u64().context("no pid")?;
    Ok(running)
}

/// Pause: QEMU stops the vCPUs (QMP stop); power-on and delete are
/// refused while paused, and the metrics count it all.
fn a_paused_vm_refuses_power_on_and_delete(s: &EndToEnd) -> Result<()> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    m.power(&s.token, "tiny", "pause")?;
    ensure!(m.vm_state(&s.token, "tiny")? == "paused");
    let e = m.expect(admin, "POST", "/api/v1/vms/tiny/power/on", None, 202)?;
    let id = e["id"].as_i64().context("no task id")?;
    let failed = poll("the refused power-on", Duration::from_secs(30), || {
        let t = m.expect(admin, "GET", &format!("/api/v1/tasks/{id}"), None, 200)?;
        Ok((t["state"] == "error").then_some(t))
    })?;
    ensure!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("paused")),
        "{failed}"
    );
    m.expect(admin, "DELETE", "/api/v1/vms/tiny", None, 409)?;
    m.expect(admin, "POST", "/api/v1/vms/tiny/power/sleep", None, 400)?;
    let metrics = m.expect(admin, "GET", "/metrics", None, 200)?;
    let metrics = metrics.as_str().context("metrics are text")?;
    for line in [
        "sfera_mgmtd_vms{state=\"paused\",driver=\"qemu\"} 1",
        "sfera_mgmtd_api_requests_total{method=\"GET\",route=\"/api/v1/vms/{vm}\",status=\"200\"}",
        "sfera_mgmtd_api_requests_total{method=\"POST\",route=\"/api/v1/vms/{vm}/power/{action}\",status=\"400\"} 1",
        "sfera_mgmtd_tasks{kind=\"vm.pause\",state=\"success\"} 1",
        "sfera_mgmtd_daemon_restarts_total{daemon=\"sfera-blockd\"} 0",
        "sfera_mgmtd_sampler_rounds_total",
    ] {
        ensure!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    Ok(())
}

/// mgmtd crashes; the VM runs on (paused); the next mgmtd adopts it and
/// the daemons, still knows the token, and resumes the guest.
fn the_next_mgmtd_adopts_the_vm_after_a_crash(
    s: &mut EndToEnd,
    tiny: &Tiny,
    running: &Value,
) -> Result<()> {
    s.m.crash()?;
    ensure!(
        Path::new(&format!("/proc/{}", tiny.qemu_pid)).exists(),
        "QEMU died with mgmtd"
    );
    let db = s.site.data().join("mgmt.db");
    a_vm_of_before_the_cluster_is_left_in_sqlite(&db)?;
    s.m = Mgmtd::start(&s.site, true, 2)?;
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    the_next_mgmtd_moved_it_into_the_cluster(m, admin, &db)?;
    let again = m.expect(admin, "GET", "/api/v1/vms/tiny", None, 200)?;
    ensure!(
        again["state"] == "paused" && again["pid"] == running["pid"],
        "not adopted as paused: {again}"
    );
    m.power(&s.token, "tiny", "resume")?;
    ensure!(m.vm_state(&s.token, "tiny")? == "running");
    let daemons = m.expect(admin, "GET", "/api/v1/daemons", None, 200)?;
    ensure!(
        daemons["items"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|d| d["adopted"] == true)),
        "daemons (blockd, vswitchd, etcd) not adopted: {daemons}"
    );
    // The new mgmtd holds the host's lease again on the adopted member.
    let hosts = m.expect(admin, "GET", "/api/v1/hosts", None, 200)?;
    ensure!(hosts["items"][0]["state"] == "connected", "{hosts}");
    console_wait(
        &tiny.console,
        Some("echo hello-$((6*7))"),
        "hello-42",
        Duration::from_secs(60),
    )?;
    let events = m.expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?;
    ensure!(events.to_string().contains("vm.adopted"), "{events}");
    Ok(())
}

/// SQL that an older mgmtd's inventory holds a stopped VM in: the
/// upgrade from before the cluster.
const LEGACY_VM: &str = "INSERT INTO vms (id, name, vcpus, memory_mib, boot, driver, state, \
     pid, created_at, updated_at, driver_reason) VALUES ('vm-legacy00001', 'legacy', 1, 64, \
     '{\"kind\":\"disk\"}', 'qemu', 'stopped', NULL, 1, 1, 'made before the cluster')";

fn sqlite(db: &Path, sql: &str) -> Result<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             r=c.execute(sys.argv[2]).fetchall(); c.commit(); print(r)",
        ])
        .arg(db)
        .arg(sql)
        .output()?;
    ensure!(
        out.status.success(),
        "python3 sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A user of an older mgmtd, and an API token of theirs whose secret is
/// `legacy-secret-1` (the row holds its SHA-256, as mgmtd stores it).
const LEGACY_USER: &str = "INSERT INTO users (name, password_hash, role, created_at) \
     VALUES ('legacy-ops', 'not-a-hash-anyone-logs-in-with', 'read-only', 1)";
const LEGACY_TOKEN: &str = "INSERT INTO api_tokens (name, user, token_hash, created_at) \
     VALUES ('old-cli', 'legacy-ops', \
     '833f32629160a551ae6a9b1cd5d5b84d24f0f1b335c2c66df6a7f8fb4eacb0f6', 1)";

fn a_vm_of_before_the_cluster_is_left_in_sqlite(db: &Path) -> Result<()> {
    sqlite(db, LEGACY_VM)?;
    ensure!(sqlite(db, "SELECT name FROM vms")? == "[('legacy',)]");
    sqlite(db, LEGACY_USER)?;
    sqlite(db, LEGACY_TOKEN)?;
    Ok(())
}

/// The VM is the cluster's now, on this host, and gone from SQLite; it
/// is deleted through the API like any other.
fn the_next_mgmtd_moved_it_into_the_cluster(m: &Mgmtd, admin: Cred<'_>, db: &Path) -> Result<()> {
    let legacy = m.expect(admin, "GET", "/api/v1/vms/legacy", None, 200)?;
    let here = m.expect(admin, "GET", "/api/v1/host", None, 200)?;
    ensure!(
        legacy["state"] == "stopped"
            && legacy["host"].as_str().is_some_and(|h| !h.is_empty())
            && legacy["resource_version"].as_i64().is_some_and(|v| v > 0)
            && legacy["driver_reason"] == "made before the cluster",
        "not moved as it was: {legacy} (host {here})"
    );
    ensure!(sqlite(db, "SELECT COUNT(*) FROM vms")? == "[(0,)]");
    // The users and tokens too: the old token opens the API as its user.
    let me = m.expect(
        Cred::Bearer("legacy-secret-1"),
        "GET",
        "/api/v1/session",
        None,
        200,
    )?;
    ensure!(
        me["user"] == "legacy-ops" && me["role"] == "read-only",
        "{me}"
    );
    ensure!(sqlite(db, "SELECT COUNT(*) FROM users")? == "[(0,)]");
    ensure!(sqlite(db, "SELECT COUNT(*) FROM api_tokens")? == "[(0,)]");
    let events = m.expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?;
    ensure!(
        events.to_string().contains("inventory.upgraded"),
        "{events}"
    );
    let Cred::Bearer(token) = admin else {
        bail!("the admin's token is needed")
    };
    let task = m.expect(admin, "DELETE", "/api/v1/vms/legacy", None, 202)?;
    m.wait_task(token, &task, Duration::from_secs(30))?;
    m.expect(admin, "GET", "/api/v1/vms/legacy", None, 404)?;
    Ok(())
}

/// kill -9 sfera-blockd: mgmtd restarts it, the export comes back, and
/// the guest's disk writes go through again.
fn a_killed_blockd_is_restarted_and_the_disk_works(s: &EndToEnd, tiny: &Tiny) -> Result<()> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    let daemons = m.expect(admin, "GET", "/api/v1/daemons", None, 200)?;
    let blockd_pid = daemons["items"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == "sfera-blockd"))
        .and_then(|d| d["pid"].as_i64())
        .context("no blockd pid")?;
    // SAFETY: kill(2) on the blockd this test's mgmtd started; no memory
    // is involved.
    unsafe {
        libc::kill(blockd_pid as libc::pid_t, libc::SIGKILL);
    }
    poll(
        "sfera-blockd to be restarted",
        Duration::from_secs(60),
        || {
            let d = m.expect(admin, "GET", "/api/v1/daemons", None, 200)?;
            Ok(d["items"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "sfera-blockd"))
                .filter(|x| x["state"] == "running" && x["restarts"] == 1 && x["pid"] != blockd_pid)
                .cloned())
        },
    )?;
    console_wait(
        &tiny.console,
        Some(
            "dd if=/dev/urandom of=/dev/vda bs=4k count=64 conv=fsync 2>/dev/null && echo io-$((1+1))-ok",
        ),
        "io-2-ok",
        Duration::from_secs(90),
    )?;
    let metrics = m.expect(admin, "GET", "/metrics", None, 200)?;
    ensure!(
        metrics.as_str().is_some_and(
            |t| t.contains("sfera_mgmtd_daemon_restarts_total{daemon=\"sfera-blockd\"} 1")
        ),
        "{metrics}"
    );
    Ok(())
}

/// Power off and delete, disks included: QEMU, the VM, its port and its
/// volume go, the switch process is the same from the first mgmtd on,
/// and the events tell the VM's whole life.
fn power_off_and_delete_leave_nothing(s: &EndToEnd, tiny: &Tiny) -> Result<()> {
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    let qemu_pid = tiny.qemu_pid;
    let task = m.expect(admin, "POST", "/api/v1/vms/tiny/power/off", None, 202)?;
    m.wait_task(&s.token, &task, Duration::from_secs(60))?;
    ensure!(
        !Path::new(&format!("/proc/{qemu_pid}/cmdline")).exists()
            || !std::fs::read(format!("/proc/{qemu_pid}/cmdline"))?
                .windows(4)
                .any(|w| w == b"qemu"),
        "QEMU still runs"
    );
    let task = m.expect(admin, "DELETE", "/api/v1/vms/tiny?disks=true", None, 202)?;
    m.wait_task(&s.token, &task, Duration::from_secs(60))?;
    m.expect(admin, "GET", "/api/v1/vms/tiny", None, 404)?;
    ensure!(
        port_stats(m, admin, &tiny.nic_port)?.is_none(),
        "port {} still on the switch",
        tiny.nic_port
    );
    vswitchd_unrestarted(m, admin, Some(tiny.vswitchd_pid))?;
    let volumes = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
    ensure!(volumes["total"] == 0, "{volumes}");
    let events = m
        .expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?
        .to_string();
    for kind in [
        "vm.created",
        "vm.powered_on",
        "vm.paused",
        "vm.resumed",
        "vm.powered_off",
        "vm.deleted",
    ] {
        ensure!(events.contains(kind), "no {kind} event");
    }
    Ok(())
}

/// An import cut short by mgmtd's end leaves its marker and a volume
/// (made here on sfera-blockd directly, as a crash would leave it): the
/// next mgmtd removes the volume and the marker.
fn the_next_mgmtd_removes_an_import_cut_short(s: &mut EndToEnd) -> Result<()> {
    let data = s.m.data.clone();
    let made = harness::http::call(
        &data.join("run/blockd.sock"),
        "POST",
        "/v1/datastores/local/volumes",
        Some(r#"{"name":"imports/cut","size":1048576}"#),
    )?;
    ensure!(made.status / 100 == 2, "{made:?}");
    std::fs::create_dir_all(data.join("imports"))?;
    std::fs::write(
        data.join("imports/local@imports%2Fcut.json"),
        json!({ "datastore": "local", "volume": "imports/cut" }).to_string(),
    )?;
    s.m.crash()?;
    s.m = Mgmtd::start(&s.site, true, 3)?;
    let (m, admin) = (&s.m, Cred::Bearer(&s.token));
    poll(
        "the abandoned import's volume to go",
        Duration::from_secs(60),
        || {
            let v = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
            Ok((!v.to_string().contains("imports/cut")).then_some(()))
        },
    )?;
    let events = m.expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?;
    ensure!(
        events.to_string().contains("volume.import_abandoned"),
        "{events}"
    );
    ensure!(
        !data.join("imports/local@imports%2Fcut.json").exists(),
        "the marker stays"
    );
    Ok(())
}

/// The sfera-vmm driver end to end on this machine's KVM: sfera-vmm's test
/// guest (it runs at CPL3, natively even on PVM) as a VM asked to run
/// under sfera-vmm, with a disk from sfera-blockd and a NIC from
/// sfera-vswitchd; its console through mgmtd's WebSocket, pause, a crash
/// of mgmtd while it is paused (the next mgmtd adopts it, still paused),
/// resume, the guest's report, and a power-off through mgmtd.
#[test]
fn mgmt_runs_a_vm_under_sfera_vmm() -> Result<()> {
    let elf = harness::testguest::elf()?;
    // No Tiny Linux here: the VM boots the test guest.
    let site = Site::without_guest_image("mgmt-vmm")?;
    let m = Mgmtd::start(&site, false, 1)?;
    let token = m.admin_token(&site.dir.join("cookies"))?;
    let host = m.expect(Cred::Bearer(&token), "GET", "/api/v1/host", None, 200)?;
    ensure!(host["sfera_vmm_available"] == true, "{host}");
    // A kernel boots only from mgmtd's boot directories (its import
    // directory here).
    let imported = m.data.join("import/testguest.elf");
    std::fs::copy(&elf, &imported)?;
    let mut s = EndToEnd { site, m, token };
    case("a_vm_asks_for_sfera_vmm_and_gets_it", || {
        sfera_vmm::a_vm_asks_for_sfera_vmm_and_gets_it(&s, &imported)
    })?;
    let running = case("it_runs_with_a_console_and_no_display", || {
        sfera_vmm::it_runs_with_a_console_and_no_display(&s)
    })?;
    case("paused_through_the_cli_it_outlives_mgmtd", || {
        sfera_vmm::paused_through_the_cli_it_outlives_mgmtd(&mut s, &running)
    })?;
    case("its_report_shows_on_the_console_and_in_the_cli", || {
        sfera_vmm::its_report_shows_on_the_console_and_in_the_cli(&s)
    })?;
    case("running_it_is_adopted_and_powered_off", || {
        sfera_vmm::running_it_is_adopted_and_powered_off(&mut s)
    })
}
