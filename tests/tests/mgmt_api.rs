//! sfera-mgmtd end to end, with curl as the HTTP client: it starts its own
//! sfera-blockd and sfera-vswitchd, refuses callers without credentials
//! (401, nothing more) and read-only users' changes (403), and takes a
//! Tiny Linux VM with a disk and a NIC from creation to deletion, through a
//! crash of mgmtd itself: the VM keeps running, the next mgmtd adopts it
//! and its daemons, and the inventory, users and tokens are still there.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::guest::{GuestImage, READY_LINE};
use harness::mgmtd::{self, Leftovers};
use harness::process::run;
use harness::testdir::TestDir;
use harness::tools;
use serde_json::{Value, json};

mod mgmt_client;

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

#[test]
fn mgmt_api_end_to_end() -> Result<()> {
    let image = GuestImage::locate()?;
    let guest_dir = image.kernel.parent().context("kernel path")?.to_owned();
    let dir = TestDir::new("mgmt-api")?;
    let port = mgmtd::free_port()?;
    let _leftovers = Leftovers(dir.join("data"));
    let cap = LOG_CAP.to_string();
    let mut m = Mgmtd::start_with(
        &dir,
        port,
        &guest_dir,
        false,
        1,
        &["--log-max-size", &cap, "--log-keep", "2"],
    )?;

    // Without credentials: 401 and nothing else, known path or not.
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

    // Log in with the generated password: an HttpOnly cookie.
    let jar = dir.join("cookies");
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
    let token = m.new_token(&jar)?;
    let admin = Cred::Bearer(&token);

    // The inventory: host, datastores, networks.
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

    // Every parameterless GET of the OpenAPI document answers 200.
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

    // A read-only user reads and changes nothing.
    let vjar = dir.join("viewer-cookies");
    m.add_viewer(admin, &vjar)?;
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

    // Bad input is refused with a message and leaves nothing behind.
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

    // sfera-vswitchd runs with its API; NIC changes go to the running
    // switch (POST/DELETE /v1/ports), never through a restart.
    let vswitchd_pid = vswitchd_unrestarted(&m, admin, None)?;

    // Create the Tiny Linux VM with a disk and a NIC, and power it on.
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
    m.wait_task(&token, &task, Duration::from_secs(120))?;
    let vm = m.expect(admin, "GET", "/api/v1/vms/tiny", None, 200)?;
    ensure!(
        vm["state"] == "stopped"
            && vm["disks"].as_array().map(Vec::len) == Some(1)
            && vm["nics"].as_array().map(Vec::len) == Some(1),
        "{vm}"
    );
    let volumes = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
    ensure!(volumes["items"][0]["name"] == "tiny/disk0", "{volumes}");
    // The host's default driver, and the host page says why.
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
        port_stats(&m, admin, &nic_port)?.is_some(),
        "port {nic_port} not on the switch"
    );
    vswitchd_unrestarted(&m, admin, Some(vswitchd_pid))?;
    m.expect(admin, "POST", "/api/v1/vms/tiny", None, 405)?;
    // Without credentials a wrong method is a 401 (the path stays secret),
    // except on a public path, whose methods are no secret.
    m.expect(Cred::None, "POST", "/api/v1/vms/tiny", None, 401)?;
    m.expect(Cred::None, "DELETE", "/api/v1/health", None, 405)?;
    m.expect(Cred::None, "GET", "/api/v1/health", None, 200)?;
    let task = m.expect(admin, "POST", "/api/v1/vms/tiny/power/on", None, 202)?;
    m.wait_task(&token, &task, Duration::from_secs(120))?;
    let console = PathBuf::from(vm["console_socket"].as_str().context("no console socket")?);
    let started = Instant::now();
    console_wait(&console, None, READY_LINE, Duration::from_secs(180))?;
    eprintln!(
        "guest ready {:.1} s after power-on",
        started.elapsed().as_secs_f64()
    );
    console_flood_is_capped(&console, &vm)?;
    let running = m.expect(admin, "GET", "/api/v1/vms/tiny", None, 200)?;
    ensure!(running["state"] == "running", "{running}");
    poll("QEMU on the NIC's port", Duration::from_secs(30), || {
        Ok(port_stats(&m, admin, &nic_port)?.filter(|p| p["connected"] == true))
    })?;
    m.expect(admin, "DELETE", "/api/v1/vms/tiny", None, 409)?;

    // Pause: QEMU stops the vCPUs (QMP stop); power-on and delete are
    // refused while paused.
    m.power(&token, "tiny", "pause")?;
    ensure!(m.vm_state(&token, "tiny")? == "paused");
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

    // mgmtd crashes; the VM runs on (paused); the next mgmtd adopts it
    // and the daemons, and still knows the token.
    m.crash()?;
    let qemu_pid = running["pid"].as_u64().context("no pid")?;
    ensure!(
        Path::new(&format!("/proc/{qemu_pid}")).exists(),
        "QEMU died with mgmtd"
    );
    let mut m = Mgmtd::start(&dir, port, &guest_dir, true, 2)?;
    let again = m.expect(admin, "GET", "/api/v1/vms/tiny", None, 200)?;
    ensure!(
        again["state"] == "paused" && again["pid"] == running["pid"],
        "not adopted as paused: {again}"
    );
    m.power(&token, "tiny", "resume")?;
    ensure!(m.vm_state(&token, "tiny")? == "running");
    let daemons = m.expect(admin, "GET", "/api/v1/daemons", None, 200)?;
    ensure!(
        daemons["items"]
            .as_array()
            .is_some_and(|a| a.iter().all(|d| d["adopted"] == true)),
        "daemons not adopted: {daemons}"
    );
    console_wait(
        &console,
        Some("echo hello-$((6*7))"),
        "hello-42",
        Duration::from_secs(60),
    )?;
    let events = m.expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?;
    ensure!(events.to_string().contains("vm.adopted"), "{events}");

    // kill -9 sfera-blockd: mgmtd restarts it, the export comes back, and
    // the guest's disk writes go through again.
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
        &console,
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

    // Power off and delete, disks included.
    let task = m.expect(admin, "POST", "/api/v1/vms/tiny/power/off", None, 202)?;
    m.wait_task(&token, &task, Duration::from_secs(60))?;
    ensure!(
        !Path::new(&format!("/proc/{qemu_pid}/cmdline")).exists()
            || !std::fs::read(format!("/proc/{qemu_pid}/cmdline"))?
                .windows(4)
                .any(|w| w == b"qemu"),
        "QEMU still runs"
    );
    let task = m.expect(admin, "DELETE", "/api/v1/vms/tiny?disks=true", None, 202)?;
    m.wait_task(&token, &task, Duration::from_secs(60))?;
    m.expect(admin, "GET", "/api/v1/vms/tiny", None, 404)?;
    ensure!(
        port_stats(&m, admin, &nic_port)?.is_none(),
        "port {nic_port} still on the switch"
    );
    // The same switch process from the first mgmtd to here.
    vswitchd_unrestarted(&m, admin, Some(vswitchd_pid))?;
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
    import_images(&m, &token)?;
    boot_an_imported_disk(&m, &token, &dir)?;
    boot_an_iso(&m, &token, &dir)?;

    // An import cut short by mgmtd's end leaves its marker and a volume
    // (made here on sfera-blockd directly, as a crash would leave it): the
    // next mgmtd removes the volume.
    let blockd = m.data.join("run/blockd.sock");
    let made = harness::http::call(
        &blockd,
        "POST",
        "/v1/datastores/local/volumes",
        Some(r#"{"name":"imports/cut","size":1048576}"#),
    )?;
    ensure!(made.status / 100 == 2, "{made:?}");
    std::fs::create_dir_all(m.data.join("imports"))?;
    std::fs::write(
        m.data.join("imports/local@imports%2Fcut.json"),
        json!({ "datastore": "local", "volume": "imports/cut" }).to_string(),
    )?;
    m.crash()?;
    let m = Mgmtd::start(&dir, port, &guest_dir, true, 3)?;
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
        !m.data.join("imports/local@imports%2Fcut.json").exists(),
        "the marker stays"
    );
    Ok(())
}

/// Disk images made by qemu-img (raw, qcow2, vmdk) are imported as volumes
/// holding the same bytes; bad requests are refused, and an image that
/// fails half-way through the conversion leaves no volume behind.
fn import_images(m: &Mgmtd, token: &str) -> Result<()> {
    let admin = Cred::Bearer(token);
    let qemu_img = tools::require("qemu-img", "qemu-utils")?;
    const SIZE: usize = 4 << 20;
    let mut data = vec![0u8; SIZE];
    for (i, b) in data.iter_mut().enumerate() {
        if !((1 << 20)..SIZE - (64 << 10)).contains(&i) {
            *b = (i * 7 % 251) as u8 + 1;
        }
    }
    // Imports come from the import directory.
    let import = m.data.join("import");
    let raw = import.join("image.raw");
    std::fs::write(&raw, &data)?;
    let convert = |fmt: &str| -> Result<PathBuf> {
        let out = import.join(format!("image.{fmt}"));
        let mut c = Command::new(&qemu_img);
        c.args(["convert", "-f", "raw", "-O", fmt])
            .arg(&raw)
            .arg(&out);
        run(c)?;
        Ok(out)
    };
    let images = [
        ("raw", raw.clone()),
        ("qcow2", convert("qcow2")?),
        ("vmdk", convert("vmdk")?),
    ];
    let store = m.data.join("datastores/local");
    // The CLI imports too.
    let out = m.cli(
        token,
        &[
            "--json",
            "datastore",
            "import",
            "local",
            "imports/cli",
            &raw.display().to_string(),
            "--format",
            "raw",
        ],
    )?;
    let out: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    ensure!(out["size_bytes"] == SIZE as u64, "{out}");
    ensure!(std::fs::read(store.join("imports/cli.img"))? == data);
    for (fmt, path) in &images {
        let volume = format!("imports/from-{fmt}");
        let task = m.expect(
            admin,
            "POST",
            "/api/v1/datastores/local/import",
            Some(&json!({ "volume": volume, "source": path, "format": fmt })),
            202,
        )?;
        ensure!(task["kind"] == "volume.import", "{task}");
        let result = m.wait_task(token, &task, Duration::from_secs(120))?;
        ensure!(
            result["size_bytes"] == SIZE as u64 && result["format"] == *fmt,
            "{result}"
        );
        let copy = std::fs::read(store.join(format!("{volume}.img")))?;
        ensure!(
            copy == data,
            "{fmt}: the volume does not hold the image's bytes"
        );
    }
    let volumes = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
    ensure!(volumes["total"] == 4, "{volumes}");

    // Refused before anything is made.
    let qcow2 = images[1].1.display().to_string();
    for (ds, body, status, word) in [
        (
            "local",
            json!({ "volume": "v", "source": qcow2, "format": "vmdk" }),
            400,
            "vmdk",
        ),
        (
            "local",
            json!({ "volume": "v", "source": "image.raw", "format": "raw" }),
            400,
            "absolute",
        ),
        (
            "local",
            json!({ "volume": "v", "source": "/no/such.img", "format": "raw" }),
            400,
            "not a file",
        ),
        (
            "local",
            json!({ "volume": "a/b/c", "source": qcow2, "format": "qcow2" }),
            400,
            "FOLDER/NAME",
        ),
        (
            "local",
            json!({ "volume": "v", "source": qcow2, "format": "vdi" }),
            400,
            "qcow2",
        ),
        (
            "local",
            json!({ "volume": "v", "source": qcow2 }),
            400,
            "format",
        ),
        (
            "local",
            json!({ "volume": "imports/from-raw", "source": qcow2, "format": "qcow2" }),
            409,
            "already",
        ),
        (
            "nope",
            json!({ "volume": "v", "source": qcow2, "format": "qcow2" }),
            404,
            "nope",
        ),
    ] {
        let e = m.expect(
            admin,
            "POST",
            &format!("/api/v1/datastores/{ds}/import"),
            Some(&body),
            status,
        )?;
        ensure!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|s| s.contains(word)),
            "{body}: {e}"
        );
    }

    // A qcow2 whose first data cluster's L2 entry is corrupt (unaligned):
    // qemu-img info reads its header fine, the conversion fails on the
    // data, and the volume made for it is removed.
    let mut bad = std::fs::read(&images[1].1)?;
    let be = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let l1 = usize::try_from(be(&bad, 40))?;
    let l2 = usize::try_from(be(&bad, l1) & 0x00ff_ffff_ffff_fe00)?;
    let entry = be(&bad, l2);
    ensure!(entry != 0, "cluster 0 of the qcow2 image is not allocated");
    bad[l2..l2 + 8].copy_from_slice(&(entry + 512).to_be_bytes());
    let corrupt = import.join("corrupt.qcow2");
    std::fs::write(&corrupt, &bad)?;
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/datastores/local/import",
        Some(&json!({ "volume": "imports/corrupt", "source": corrupt, "format": "qcow2" })),
        202,
    )?;
    let id = task["id"].as_i64().context("no task id")?;
    let failed = poll("the failed import", Duration::from_secs(60), || {
        let t = m.expect(admin, "GET", &format!("/api/v1/tasks/{id}"), None, 200)?;
        Ok(matches!(t["state"].as_str(), Some("error") | Some("success")).then_some(t))
    })?;
    ensure!(
        failed["state"] == "error"
            && failed["error"]
                .as_str()
                .is_some_and(|e| e.contains("qemu-img")),
        "{failed}"
    );
    let volumes = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
    ensure!(
        volumes["total"] == 4,
        "the failed import left a volume: {volumes}"
    );
    ensure!(
        !store.join("imports/corrupt.img").exists(),
        "the failed import left its file"
    );
    let events = m.expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?;
    ensure!(
        events.to_string().contains("volume.import_failed"),
        "{events}"
    );
    Ok(())
}

/// An imported qcow2 disk with a boot sector boots through firmware: the
/// VM gets QEMU (sfera-vmm, which has none, is refused), the volume is
/// attached as it is, no second VM may have it, and deleting the VM
/// without its disks leaves it on the datastore.
fn boot_an_imported_disk(m: &Mgmtd, token: &str, dir: &TestDir) -> Result<()> {
    let admin = Cred::Bearer(token);
    let raw = dir.join("mbr.raw");
    std::fs::write(&raw, harness::boot_sector::image())?;
    let qcow2 = m.data.join("import/mbr.qcow2");
    let mut c = Command::new(tools::require("qemu-img", "qemu-utils")?);
    c.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2);
    run(c)?;
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/datastores/local/import",
        Some(&json!({ "volume": "boot/mbr", "source": qcow2, "format": "qcow2" })),
        202,
    )?;
    m.wait_task(token, &task, Duration::from_secs(60))?;

    let disk = json!([{ "datastore": "local", "volume": "boot/mbr" }]);
    let e = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "fw", "boot": { "kind": "disk" }, "disks": disk, "driver": "sfera-vmm" })),
        400,
    )?;
    ensure!(e.to_string().contains("firmware"), "{e}");
    let e = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "fw", "boot": { "kind": "disk" },
                      "disks": [{ "datastore": "local", "volume": "boot/none" }] })),
        400,
    )?;
    ensure!(e.to_string().contains("no volume"), "{e}");
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(
            &json!({ "name": "fw", "boot": { "kind": "disk" }, "disks": disk, "memory_mib": 128 }),
        ),
        202,
    )?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    let vm = m.expect(admin, "GET", "/api/v1/vms/fw", None, 200)?;
    ensure!(
        vm["driver"] == "qemu"
            && vm["driver_reason"]
                .as_str()
                .is_some_and(|r| r.contains("firmware"))
            && vm["disks"][0]["volume"] == "boot/mbr"
            && vm["disks"][0]["size_bytes"] == 1 << 20,
        "{vm}"
    );
    let e = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "fw2", "boot": { "kind": "disk" }, "disks": disk })),
        409,
    )?;
    ensure!(e.to_string().contains("VM fw"), "{e}");

    m.power(token, "fw", "on")?;
    // The boot sector prints before anyone can attach to QEMU's console
    // socket: mgmtd's WebSocket shows it from the console's log.
    let port: u16 = m.base.rsplit(':').next().context("no port")?.parse()?;
    let mut console = WsConsole::open(port, "fw", token)?;
    console.wait(harness::boot_sector::MESSAGE, Duration::from_secs(120))?;
    drop(console);
    m.power(token, "fw", "off")?;
    let task = m.expect(admin, "DELETE", "/api/v1/vms/fw", None, 202)?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    let volumes = m.expect(admin, "GET", "/api/v1/datastores/local/volumes", None, 200)?;
    ensure!(
        volumes["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v["name"] == "boot/mbr")),
        "the attached volume went with its VM: {volumes}"
    );
    Ok(())
}

/// An ISO (made by xorriso, El Torito without emulation, the boot sector
/// as its boot image) boots through firmware as a CD-ROM, under QEMU.
fn boot_an_iso(m: &Mgmtd, token: &str, dir: &TestDir) -> Result<()> {
    let admin = Cred::Bearer(token);
    let root = dir.join("iso-root");
    std::fs::create_dir_all(&root)?;
    std::fs::write(
        root.join("boot.img"),
        &harness::boot_sector::image()[..2048],
    )?;
    // ISOs boot from the import directory.
    let iso = m.data.join("import/installer.iso");
    let mut c = Command::new(tools::require("xorriso", "xorriso")?);
    c.args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&iso)
        .args(["-b", "boot.img", "-no-emul-boot", "-boot-load-size", "4"])
        .arg(&root);
    run(c)?;
    let boot = json!({ "kind": "iso", "iso": iso });
    let e = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "installer", "boot": boot, "driver": "sfera-vmm" })),
        400,
    )?;
    ensure!(e.to_string().contains("firmware"), "{e}");
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "installer", "boot": boot, "memory_mib": 128, "power_on": true })),
        202,
    )?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    let vm = m.expect(admin, "GET", "/api/v1/vms/installer", None, 200)?;
    ensure!(
        vm["state"] == "running" && vm["driver"] == "qemu" && vm["boot"]["kind"] == "iso",
        "{vm}"
    );
    let port: u16 = m.base.rsplit(':').next().context("no port")?.parse()?;
    let mut console = WsConsole::open(port, "installer", token)?;
    console.wait(harness::boot_sector::MESSAGE, Duration::from_secs(120))?;
    drop(console);
    m.power(token, "installer", "off")?;
    let task = m.expect(admin, "DELETE", "/api/v1/vms/installer", None, 202)?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    Ok(())
}

/// Asks mgmtd to upgrade `path` to a WebSocket with a bearer `token`: the
/// connection and the answer's head (status line and headers).
fn ws_upgrade(port: u16, path: &str, token: &str) -> Result<(std::net::TcpStream, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Authorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(Instant::now() < deadline, "no WebSocket answer");
        match stream.read(&mut byte) {
            Ok(0) => bail!("closed: {}", String::from_utf8_lossy(&head)),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    Ok((stream, head))
}

/// A VM's serial console through mgmtd's WebSocket
/// (`GET /api/v1/vms/{vm}/console`), as a minimal client: the upgrade, then
/// the server's unmasked binary frames.
struct WsConsole {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
    seen: Vec<u8>,
}

impl WsConsole {
    fn open(port: u16, vm: &str, token: &str) -> Result<Self> {
        let (stream, head) = ws_upgrade(port, &format!("/api/v1/vms/{vm}/console"), token)?;
        ensure!(head.starts_with("HTTP/1.1 101"), "console: {head}");
        Ok(WsConsole {
            stream,
            pending: Vec::new(),
            seen: Vec::new(),
        })
    }

    /// Moves whole frames from `pending` to `seen`; false on a close frame.
    fn frames(&mut self) -> bool {
        loop {
            let p = &self.pending;
            if p.len() < 2 {
                return true;
            }
            let (len, at) = match p[1] & 0x7f {
                126 if p.len() >= 4 => (usize::from(u16::from_be_bytes([p[2], p[3]])), 4),
                127 if p.len() >= 10 => (
                    usize::try_from(u64::from_be_bytes(p[2..10].try_into().expect("8 bytes")))
                        .unwrap_or(usize::MAX),
                    10,
                ),
                126 | 127 => return true,
                n => (usize::from(n), 2),
            };
            if p.len() < at + len {
                return true;
            }
            let opcode = p[0] & 0x0f;
            if opcode == 8 {
                return false;
            }
            if opcode <= 2 {
                let payload = p[at..at + len].to_vec();
                self.seen.extend_from_slice(&payload);
            }
            self.pending.drain(..at + len);
        }
    }

    /// Reads until a whole line (its newline arrived) contains `needle`;
    /// returns all the text so far.
    fn wait(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            let open = self.frames();
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            // Whole lines only: a line still arriving may be cut short.
            if text
                .split_inclusive('\n')
                .any(|l| l.ends_with('\n') && l.contains(needle))
            {
                return Ok(text);
            }
            ensure!(open, "the console closed before {needle:?}: {text}");
            ensure!(
                Instant::now() < deadline,
                "no {needle:?} on the console within {timeout:?}: {text}"
            );
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the console connection ended before {needle:?}: {text}"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
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
    let dir = TestDir::new("mgmt-vmm")?;
    // No Tiny Linux here: the VM boots the test guest.
    let guest_dir = dir.join("no-guest-image");
    let port = mgmtd::free_port()?;
    let _leftovers = Leftovers(dir.join("data"));
    let mut m = Mgmtd::start(&dir, port, &guest_dir, false, 1)?;
    let jar = dir.join("cookies");
    ensure!(m.login_admin(&jar)?.status == 200, "login");
    let token = m.new_token(&jar)?;
    let admin = Cred::Bearer(&token);
    m.wait_defaults(admin)?;
    let host = m.expect(admin, "GET", "/api/v1/host", None, 200)?;
    ensure!(host["sfera_vmm_available"] == true, "{host}");
    // A kernel boots only from mgmtd's boot directories (its import
    // directory here).
    let elf = {
        let imported = m.data.join("import/testguest.elf");
        std::fs::copy(&elf, &imported)?;
        imported
    };

    // The guest benchmarks its disk for 30 s (long enough to pause it and
    // restart mgmtd), then sends frames on its NIC and powers off.
    let cmdline =
        "require=rng,blk,net blk.bench=30000 blk.req=8 blk.depth=4 net.role=send net.count=4";
    let body = json!({ "name": "tg", "driver": "sfera-vmm", "vcpus": 1, "memory_mib": 128,
                       "boot": { "kind": "kernel", "kernel": elf, "cmdline": cmdline },
                       "disks": [{ "datastore": "local", "size_bytes": 64 << 20 }],
                       "nics": [{ "port_group": "vm-network" }] });
    let bad = json!({ "name": "tg", "driver": "vmware", "boot": body["boot"] });
    let e = m.expect(admin, "POST", "/api/v1/vms", Some(&bad), 400)?;
    ensure!(e.to_string().contains("sfera-vmm"), "{e}");
    let task = m.expect(admin, "POST", "/api/v1/vms", Some(&body), 202)?;
    m.wait_task(&token, &task, Duration::from_secs(60))?;
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

    m.power(&token, "tg", "on")?;
    let running = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    let pid = running["pid"].as_u64().context("no pid")?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    ensure!(
        running["state"] == "running" && cmd.windows(9).any(|w| w == b"sfera-vmm"),
        "{running}"
    );
    let mut console = WsConsole::open(port, "tg", &token)?;
    console.wait("SFERA-TESTGUEST blk capacity=", Duration::from_secs(60))?;
    // sfera-vmm has no framebuffer: no graphical console, and it says so.
    let (_, head) = ws_upgrade(port, "/api/v1/vms/tg/display", &token)?;
    ensure!(
        head.starts_with("HTTP/1.1 409"),
        "display of a sfera-vmm VM: {head}"
    );

    // Pause through the CLI.
    m.cli(&token, &["vm", "pause", "tg"])?;
    ensure!(m.vm_state(&token, "tg")? == "paused");
    let list = m.cli(&token, &["vm", "list"])?;
    ensure!(
        list.lines()
            .any(|l| l.contains("tg") && l.contains("paused") && l.contains("sfera-vmm")),
        "{list}"
    );
    drop(console);
    m.crash()?;
    ensure!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "sfera-vmm died with mgmtd"
    );
    let mut m = Mgmtd::start(&dir, port, &guest_dir, false, 2)?;
    let again = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    ensure!(
        again["state"] == "paused" && again["pid"] == running["pid"],
        "not adopted as paused: {again}"
    );
    // The report, through the console WebSocket of the second mgmtd
    // (sfera-vmm's console socket replays what the guest printed), opened
    // before the guest runs on to its end.
    let mut console = WsConsole::open(port, "tg", &token)?;
    // And through `sfera vm console` (the same WebSocket, from the CLI):
    // with stdin closed it shows the console until the VM ends.
    let cli_out = dir.join("cli-console.out");
    let mut cli_console = m.cli_spawn(&token, &["vm", "console", "tg"], &cli_out)?;
    poll(
        "the CLI's console to show the guest",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&cli_out).unwrap_or_default();
            Ok(text.contains("SFERA-TESTGUEST blk capacity=").then_some(()))
        },
    )?;
    m.cli(&token, &["vm", "resume", "tg"])?;
    let text = console.wait("SFERA-TESTGUEST done status=", Duration::from_secs(120))?;
    let report = harness::testguest::Report::parse(&text);
    if let Some(why) = report.failure(&["rng ok", "blk ok bench", "net ok role=send"]) {
        bail!(why);
    }
    ensure!(report.cmdline() == Some(cmdline), "{:?}", report.cmdline());
    // The guest powered itself off: mgmtd notices.
    poll("the VM to be stopped", Duration::from_secs(30), || {
        Ok((m.vm_state(&token, "tg")? == "stopped").then_some(()))
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
    // A stopped VM has no console: the CLI says so.
    let refused = m.cli(&token, &["vm", "console", "tg"]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("power it on first")),
        "{refused:?}"
    );

    // Again, this time powered off through mgmtd while it runs; a second
    // crash of mgmtd in between finds it running.
    m.power(&token, "tg", "on")?;
    let running = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    let pid = running["pid"].as_u64().context("no pid")?;
    let mut console = WsConsole::open(port, "tg", &token)?;
    console.wait("SFERA-TESTGUEST blk capacity=", Duration::from_secs(60))?;
    // sfera-vmm has no framebuffer: no graphical console, and it says so.
    let (_, head) = ws_upgrade(port, "/api/v1/vms/tg/display", &token)?;
    ensure!(
        head.starts_with("HTTP/1.1 409"),
        "display of a sfera-vmm VM: {head}"
    );
    drop(console);
    m.crash()?;
    let m = Mgmtd::start(&dir, port, &guest_dir, true, 3)?;
    let again = m.expect(admin, "GET", "/api/v1/vms/tg", None, 200)?;
    ensure!(
        again["state"] == "running" && again["pid"] == running["pid"],
        "not adopted: {again}"
    );
    m.power(&token, "tg", "off")?;
    ensure!(m.vm_state(&token, "tg")? == "stopped");
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
    m.wait_task(&token, &task, Duration::from_secs(60))?;
    Ok(())
}
