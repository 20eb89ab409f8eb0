//! sfera-mgmtd's changes to what exists, end to end against a running
//! mgmtd with its own sfera-blockd and sfera-vswitchd: editing a VM
//! (`PATCH /api/v1/vms/{vm}`), switches and port groups, volumes and
//! datastores. Every endpoint is tried with bad input and by a read-only
//! user, and each refusal, and an edit that fails half-way on the switch,
//! is checked to leave the inventory, the datastores and the switch as
//! they were (read back from mgmtd and from the daemons' own APIs).
//!
//! Switch uplinks are not created here (a TAP or AF_PACKET uplink would
//! touch the host's network): vswitchd's own net_uplink tests cover them;
//! here an AF_PACKET uplink on an interface that does not exist is refused.

mod mgmt_client;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::guest::GuestImage;
use harness::mgmtd::{self, Leftovers};
use harness::process::run;
use harness::testdir::TestDir;
use harness::tools;
use mgmt_client::{Cred, Mgmtd, poll};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// A call to a daemon's own API on its Unix socket.
fn daemon(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let mut cmd = Command::new(tools::require("curl", "curl")?);
    cmd.args(["--silent", "--show-error", "--fail-with-body", "-X", method])
        .arg("--unix-socket")
        .arg(socket);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    cmd.arg(format!("http://daemon{path}"));
    let out = run(cmd)?;
    Ok(serde_json::from_str(&out).unwrap_or(Value::Null))
}

/// What a change must leave as it was when it fails: the VMs as mgmtd
/// shows them, the volumes of every datastore (names and sizes), blockd's
/// exports, and the switch's configuration (switches, port groups, ports).
fn snapshot(m: &Mgmtd, cred: Cred<'_>) -> Result<Value> {
    let run = m.data.join("run");
    let vms = m.expect(cred, "GET", "/api/v1/vms", None, 200)?["items"].clone();
    let stores = m.expect(cred, "GET", "/api/v1/datastores", None, 200)?;
    let mut volumes = Vec::new();
    for d in stores["items"].as_array().context("datastores")? {
        let name = d["name"].as_str().context("datastore name")?;
        let list = m.expect(
            cred,
            "GET",
            &format!("/api/v1/datastores/{name}/volumes?limit=500"),
            None,
            200,
        )?;
        for v in list["items"].as_array().context("volumes")? {
            volumes.push(json!([name, v["name"], v["size"]]));
        }
    }
    let mut exports: Vec<Value> = daemon(&run.join("blockd.sock"), "GET", "/v1/exports", None)?
        .as_array()
        .context("exports")?
        .iter()
        .map(|e| json!([e["id"], e["datastore"], e["volume"]]))
        .collect();
    exports.sort_by_key(Value::to_string);
    let switch = daemon(&run.join("vswitchd.sock"), "GET", "/v1/config", None)?;
    Ok(json!({ "vms": vms, "volumes": volumes, "exports": exports, "switch": switch }))
}

/// A refusal with `status` whose message contains `word`.
fn refused(
    m: &Mgmtd,
    cred: Cred<'_>,
    method: &str,
    path: &str,
    body: &Value,
    status: u16,
    word: &str,
) -> Result<()> {
    let a = m.call(cred, method, path, Some(body))?;
    let message = a.body["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        a.status == status && message.contains(word),
        "{method} {path} {body}: HTTP {} {} (wanted {status} with {word:?})",
        a.status,
        a.body
    );
    Ok(())
}

/// PATCHes a VM and waits for the edit's task; its result.
fn edit(m: &Mgmtd, token: &str, vm: &str, body: &Value) -> Result<Value> {
    let task = m.expect(
        Cred::Bearer(token),
        "PATCH",
        &format!("/api/v1/vms/{vm}"),
        Some(body),
        202,
    )?;
    m.wait_task(token, &task, Duration::from_secs(60))
}

fn vm(m: &Mgmtd, cred: Cred<'_>, name: &str) -> Result<Value> {
    m.expect(cred, "GET", &format!("/api/v1/vms/{name}"), None, 200)
}

fn port_group(m: &Mgmtd, cred: Cred<'_>, name: &str) -> Result<Value> {
    let groups = m.expect(cred, "GET", "/api/v1/port-groups", None, 200)?;
    groups["items"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["name"] == name))
        .cloned()
        .with_context(|| format!("no port group {name}: {groups}"))
}

/// Host files the API names stay in their directories: an image imported
/// from the import directory arrives whole; a qcow2 whose backing file is
/// a host file, one outside the import directory (or a symlink out of it)
/// and a datastore at /etc are refused with a 400 that names the problem,
/// and nothing is made.
fn host_files_come_from_their_directories(m: &Mgmtd, token: &str, dir: &TestDir) -> Result<()> {
    let admin = Cred::Bearer(token);
    let qemu_img = tools::require("qemu-img", "qemu-utils")?;
    let import = m.data.join("import");
    let mut data = vec![0u8; MIB as usize];
    for (i, b) in data.iter_mut().enumerate().take(64 << 10) {
        *b = (i % 251) as u8 + 1;
    }
    let raw = import.join("good.raw");
    std::fs::write(&raw, &data)?;
    let mut c = Command::new(&qemu_img);
    c.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(import.join("good.qcow2"));
    run(c)?;
    let mut c = Command::new(&qemu_img);
    c.args(["create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw"])
        .arg(import.join("evil.qcow2"));
    run(c)?;
    std::os::unix::fs::symlink("/etc/hostname", import.join("link.raw"))?;
    let outside = dir.join("outside.raw");
    std::fs::write(&outside, &data)?;

    let url = "/api/v1/datastores/local/import";
    let before = snapshot(m, admin)?;
    for (source, format, word) in [
        (import.join("evil.qcow2"), "qcow2", "backing file"),
        (import.join("evil.qcow2"), "raw", "is a qcow2 image"),
        (import.join("link.raw"), "raw", "import directory"),
        (outside.clone(), "raw", "import directory"),
        (import.join("../mgmt.db"), "raw", "import directory"),
    ] {
        let body = json!({ "volume": "imports/evil", "source": source, "format": format });
        refused(m, admin, "POST", url, &body, 400, word)?;
    }
    refused(
        m,
        admin,
        "POST",
        "/api/v1/datastores",
        &json!({ "name": "etc", "path": "/etc" }),
        400,
        "datastore root",
    )?;
    ensure!(
        snapshot(m, admin)? == before,
        "a refused import or datastore made something"
    );
    let stores = m.expect(admin, "GET", "/api/v1/datastores", None, 200)?;
    ensure!(!stores.to_string().contains("\"etc\""), "{stores}");

    let store = m.data.join("datastores/local");
    for fmt in ["qcow2", "raw"] {
        let volume = format!("imports/good-{fmt}");
        let task = m.expect(
            admin,
            "POST",
            url,
            Some(&json!({ "volume": volume, "source": import.join(format!("good.{fmt}")), "format": fmt })),
            202,
        )?;
        let result = m.wait_task(token, &task, Duration::from_secs(60))?;
        ensure!(result["size_bytes"] == MIB, "{result}");
        ensure!(
            std::fs::read(store.join(format!("{volume}.img")))? == data,
            "{fmt}: the volume does not hold the image's bytes"
        );
        m.expect(
            admin,
            "DELETE",
            &format!("/api/v1/datastores/local/volumes/imports%2Fgood-{fmt}"),
            None,
            204,
        )?;
    }
    Ok(())
}

#[test]
fn mgmt_edit_vms_networks_datastores() -> Result<()> {
    let image = GuestImage::locate()?;
    let guest_dir = image.kernel.parent().context("kernel path")?.to_owned();
    let dir = TestDir::new("mgmt-edit")?;
    let port = mgmtd::free_port()?;
    let _leftovers = Leftovers(dir.join("data"));
    let m = Mgmtd::start(&dir, port, &guest_dir, true, 1)?;
    let jar = dir.join("cookies");
    ensure!(m.login_admin(&jar)?.status == 200, "login");
    let token = m.new_token(&jar)?;
    let admin = Cred::Bearer(&token);
    m.wait_defaults(admin)?;

    // A stopped VM with a disk and a NIC.
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(
            &json!({ "name": "ed", "template": "tiny-linux", "memory_mib": 256,
                      "disks": [{ "datastore": "local", "size_bytes": 64 * MIB }],
                      "nics": [{ "port_group": "vm-network", "mac": "52:54:00:00:e0:01" }] }),
        ),
        202,
    )?;
    let id = m.wait_task(&token, &task, Duration::from_secs(60))?["id"]
        .as_str()
        .context("vm id")?
        .to_owned();

    // A read-only user changes nothing.
    let vjar = dir.join("viewer-cookies");
    m.add_viewer(admin, &vjar)?;
    let viewer = Cred::Cookies(&vjar);
    let before = snapshot(&m, admin)?;
    for (method, path, body) in [
        ("PATCH", "/api/v1/vms/ed", json!({ "memory_mib": 512 })),
        ("PATCH", "/api/v1/vms/ed", json!({ "name": "renamed" })),
        ("POST", "/api/v1/switches", json!({ "name": "sw-ro" })),
        ("DELETE", "/api/v1/switches/vSwitch0", json!({})),
        (
            "PATCH",
            "/api/v1/port-groups/vm-network",
            json!({ "vlan": { "mode": "access", "id": 5 } }),
        ),
        ("DELETE", "/api/v1/port-groups/vm-network", json!({})),
        ("DELETE", "/api/v1/datastores/local", json!({})),
        (
            "POST",
            "/api/v1/datastores/local/volumes",
            json!({ "name": "ro", "size_bytes": MIB }),
        ),
        (
            "PATCH",
            "/api/v1/datastores/local/volumes/ed%2Fdisk0",
            json!({ "size_bytes": 128 * MIB }),
        ),
        (
            "DELETE",
            "/api/v1/datastores/local/volumes/ed%2Fdisk0",
            json!({}),
        ),
    ] {
        let a = m.call(viewer, method, path, Some(&body))?;
        ensure!(
            a.status == 403 && a.body["error"]["code"] == "forbidden",
            "read-only {method} {path}: {} {}",
            a.status,
            a.body
        );
    }
    ensure!(
        snapshot(&m, admin)? == before,
        "a read-only user changed something"
    );

    // Bad edits: refused with the field's name; nothing changes.
    let bad_edits = [
        (json!({}), 400, "Nothing to change"),
        (json!({ "memory_mib": 64 }), 400, "memory_mib"),
        (json!({ "vcpus": 0 }), 400, "vcpus"),
        (json!({ "name": "bad name" }), 400, "name"),
        (json!({ "state": "running" }), 400, "unknown field"),
        (json!({ "memory_mib": "lots" }), 400, "Invalid JSON"),
        (
            json!({ "add_disks": [{ "datastore": "local", "size_bytes": 1000 }] }),
            400,
            "add_disks[0].size_bytes",
        ),
        (
            json!({ "add_disks": [{ "datastore": "nope", "size_bytes": MIB }] }),
            400,
            "does not exist",
        ),
        (
            json!({ "add_disks": [{ "datastore": "local", "volume": "no-such-volume" }] }),
            400,
            "no volume",
        ),
        (
            json!({ "add_disks": [{ "datastore": "local", "volume": "ed/disk0" }] }),
            409,
            "is a disk of VM ed",
        ),
        (
            json!({ "remove_disks": [{ "datastore": "local", "volume": "ed/disk9" }] }),
            400,
            "has no disk",
        ),
        (
            json!({ "add_nics": [{ "port_group": "nope" }] }),
            400,
            "port group",
        ),
        (
            json!({ "add_nics": [{ "port_group": "vm-network", "mac": "01:00:5e:00:00:01" }] }),
            400,
            "unicast",
        ),
        (
            json!({ "add_nics": [{ "port_group": "vm-network", "mac": "52:54:00:00:e0:01" }] }),
            400,
            "used twice",
        ),
        (
            json!({ "remove_nics": [{ "mac": "52:54:00:00:e0:99" }] }),
            400,
            "has no NIC",
        ),
        (
            json!({ "boot": { "kind": "kernel", "kernel": "/no/such/kernel" } }),
            400,
            "not a file on the host",
        ),
        (
            // A host file outside the boot directories, loaded into guest
            // memory, would hand it to the guest.
            json!({ "boot": { "kind": "kernel", "kernel": "/etc/hostname", "initrd": "/etc/shadow" } }),
            400,
            "not inside an import directory",
        ),
        (
            json!({ "boot": { "kind": "disk" }, "remove_disks": [{ "datastore": "local", "volume": "ed/disk0" }] }),
            400,
            "disks[0]",
        ),
    ];
    for (body, status, word) in &bad_edits {
        refused(&m, admin, "PATCH", "/api/v1/vms/ed", body, *status, word)?;
    }
    refused(
        &m,
        admin,
        "PATCH",
        "/api/v1/vms/no-such-vm",
        &json!({ "memory_mib": 256 }),
        404,
        "No VM",
    )?;
    ensure!(
        snapshot(&m, admin)? == before,
        "a refused edit changed something"
    );

    // An edit that fails on the switch after its disk was made: a port
    // with the name the new NIC gets is put on vswitchd behind mgmtd's
    // back (its socket where sfera-vswitchd's user may bind one). The
    // task fails and undoes the disk (volume and export).
    let vsw = m.data.join("run/vswitchd.sock");
    daemon(
        &vsw,
        "POST",
        "/v1/ports",
        Some(
            &json!({ "name": format!("{id}-nic1"), "socket": m.data.join("run/net/intruder.sock"),
                      "mac": "52:54:00:00:e0:77", "port_group": "vm-network" }),
        ),
    )?;
    let before = snapshot(&m, admin)?;
    let task = m.expect(
        admin,
        "PATCH",
        "/api/v1/vms/ed",
        Some(&json!({ "memory_mib": 384,
                      "add_disks": [{ "datastore": "local", "size_bytes": 32 * MIB }],
                      "add_nics": [{ "port_group": "vm-network" }] })),
        202,
    )?;
    let failed = m
        .wait_task(&token, &task, Duration::from_secs(60))
        .err()
        .context("the edit succeeded over a taken port name")?;
    ensure!(
        failed.to_string().contains("exists"),
        "the edit failed for another reason: {failed:#}"
    );
    ensure!(
        snapshot(&m, admin)? == before,
        "a failed edit left something behind:\nbefore {before}\nafter {}",
        snapshot(&m, admin)?
    );
    daemon(&vsw, "DELETE", &format!("/v1/ports/{id}-nic1"), None)?;

    // A good edit: rename, vCPUs, memory, a new disk, a new NIC.
    let result = edit(
        &m,
        &token,
        "ed",
        &json!({ "name": "ed2", "vcpus": 2, "memory_mib": 384,
                 "add_disks": [{ "datastore": "local", "size_bytes": 32 * MIB }],
                 "add_nics": [{ "port_group": "vm-network", "mac": "52:54:00:00:e0:02" }] }),
    )?;
    ensure!(result["name"] == "ed2", "{result}");
    let v = vm(&m, admin, "ed2")?;
    ensure!(
        v["id"] == id.as_str() && v["vcpus"] == 2 && v["memory_mib"] == 384,
        "{v}"
    );
    let disks = v["disks"].as_array().context("disks")?;
    let nics = v["nics"].as_array().context("nics")?;
    ensure!(
        disks.len() == 2 && disks[1]["volume"] == "ed2/disk1" && disks[1]["size_bytes"] == 32 * MIB,
        "{v}"
    );
    ensure!(
        nics.len() == 2 && nics[1]["mac"] == "52:54:00:00:e0:02",
        "{v}"
    );
    let new_port = nics[1]["port"].as_str().context("port")?.to_owned();
    let config = daemon(&vsw, "GET", "/v1/config", None)?;
    ensure!(
        config["ports"].as_array().is_some_and(|p| p
            .iter()
            .any(|x| x["name"] == new_port.as_str() && x["mac"] == "52:54:00:00:e0:02")),
        "the new NIC has no port on the switch: {config}"
    );
    let exports = daemon(&m.data.join("run/blockd.sock"), "GET", "/v1/exports", None)?;
    ensure!(
        exports
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["volume"] == "ed2/disk1")),
        "the new disk is not exported: {exports}"
    );

    // Take them off again; the disk's volume goes with it.
    edit(
        &m,
        &token,
        "ed2",
        &json!({ "remove_disks": [{ "datastore": "local", "volume": "ed2/disk1", "delete_volume": true }],
                 "remove_nics": [{ "mac": "52:54:00:00:e0:02" }] }),
    )?;
    let v = vm(&m, admin, "ed2")?;
    ensure!(
        v["disks"].as_array().map(Vec::len) == Some(1)
            && v["nics"].as_array().map(Vec::len) == Some(1),
        "{v}"
    );
    let snap = snapshot(&m, admin)?;
    ensure!(
        !snap["volumes"].to_string().contains("ed2/disk1")
            && !snap["exports"].to_string().contains("ed2/disk1")
            && !snap["switch"]["ports"].to_string().contains(&new_port),
        "the disk or NIC taken off is still there: {snap}"
    );

    // Switches and port groups.
    let networks = || daemon(&vsw, "GET", "/v1/config", None);
    let nets = networks()?;
    for (body, status, word) in [
        (json!({ "name": "bad name" }), 400, "switch name"),
        (json!({ "name": "sw2", "extra": 1 }), 400, "unknown field"),
        (
            json!({ "name": "sw2", "uplinks": [{ "name": "u0", "type": "bogus", "interface": "x0" }] }),
            400,
            "Invalid JSON",
        ),
        (
            json!({ "name": "sw2", "uplinks": [{ "name": "u0", "type": "af_packet", "interface": "sfera-nope0" }] }),
            400,
            "no interface",
        ),
        (
            json!({ "name": "sw2", "uplinks": [{ "name": "u0", "type": "tap", "interface": "a-name-too-long-for-linux" }] }),
            400,
            "1 to 15",
        ),
        (
            json!({ "name": "sw2", "mac_ageing_s": 0 }),
            400,
            "mac_ageing_s",
        ),
        (json!({ "name": "vSwitch0" }), 409, "vSwitch0"),
    ] {
        refused(&m, admin, "POST", "/api/v1/switches", &body, status, word)?;
    }
    ensure!(networks()? == nets, "a refused switch changed the switch");
    m.expect(
        admin,
        "POST",
        "/api/v1/switches",
        Some(&json!({ "name": "sw-test", "mac_ageing_s": 60 })),
        201,
    )?;
    m.expect(
        admin,
        "POST",
        "/api/v1/port-groups",
        Some(&json!({ "name": "pg-test", "switch": "sw-test", "vlan": { "mode": "access", "id": 10 } })),
        201,
    )?;
    let sws = m.expect(admin, "GET", "/api/v1/switches", None, 200)?;
    ensure!(
        sws["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|s| s["name"] == "sw-test" && s["mac_ageing_s"] == 60)),
        "{sws}"
    );
    refused(
        &m,
        admin,
        "DELETE",
        "/api/v1/switches/sw-test",
        &json!({}),
        409,
        "pg-test",
    )?;
    refused(
        &m,
        admin,
        "DELETE",
        "/api/v1/switches/no-such-switch",
        &json!({}),
        404,
        "no-such-switch",
    )?;
    // Port group edits: bad ones change nothing, a good one merges.
    let pg = port_group(&m, admin, "pg-test")?;
    for (body, status, word) in [
        (json!({ "vlan": { "mode": "access", "id": 5000 } }), 400, ""),
        (json!({ "vlan": "ten" }), 400, "vlan"),
        (
            json!({ "security": { "promiscuous": "yes" } }),
            400,
            "security.promiscuous",
        ),
        (
            json!({ "security": { "sniff": true } }),
            400,
            "security.sniff",
        ),
        (json!({ "teaming": { "policy": "random" } }), 400, ""),
        (
            json!({ "teaming": { "active": ["no-such-uplink"] } }),
            400,
            "no-such-uplink",
        ),
        (json!({ "colour": "blue" }), 400, "unknown field"),
    ] {
        refused(
            &m,
            admin,
            "PATCH",
            "/api/v1/port-groups/pg-test",
            &body,
            status,
            word,
        )?;
    }
    refused(
        &m,
        admin,
        "PATCH",
        "/api/v1/port-groups/no-such-group",
        &json!({ "vlan": { "mode": "none" } }),
        404,
        "",
    )?;
    ensure!(
        port_group(&m, admin, "pg-test")? == pg,
        "a refused port group edit changed it"
    );
    let shaped = json!({ "average_bps": 1_000_000, "peak_bps": 2_000_000, "burst_bytes": 100_000 });
    let changed = m.expect(
        admin,
        "PATCH",
        "/api/v1/port-groups/pg-test",
        Some(&json!({ "vlan": { "mode": "trunk", "allowed": [10, 20] },
                      "security": { "promiscuous": true },
                      "shaping": { "ingress": shaped },
                      "teaming": { "policy": "failover_order" } })),
        200,
    )?;
    let pg = port_group(&m, admin, "pg-test")?;
    ensure!(
        pg["vlan"]["mode"] == "trunk"
            && pg["vlan"]["allowed"] == json!([10, 20])
            && pg["security"]["promiscuous"] == true
            && pg["shaping"]["ingress"] == shaped
            && pg["teaming"]["policy"] == "failover_order"
            && pg["switch"] == "sw-test",
        "answer {changed}, port group {pg}"
    );
    // Only the part given changes: egress shaping stays off, the rest stays.
    m.expect(
        admin,
        "PATCH",
        "/api/v1/port-groups/pg-test",
        Some(&json!({ "security": { "mac_changes": true } })),
        200,
    )?;
    let pg2 = port_group(&m, admin, "pg-test")?;
    ensure!(
        pg2["security"]["promiscuous"] == true
            && pg2["security"]["mac_changes"] == true
            && pg2["vlan"] == pg["vlan"]
            && pg2["shaping"] == pg["shaping"],
        "{pg2}"
    );
    // A port group with a VM's NIC on it stays.
    edit(
        &m,
        &token,
        "ed2",
        &json!({ "add_nics": [{ "port_group": "pg-test", "mac": "52:54:00:00:e0:03" }] }),
    )?;
    let before = snapshot(&m, admin)?;
    refused(
        &m,
        admin,
        "DELETE",
        "/api/v1/port-groups/pg-test",
        &json!({}),
        409,
        "ed2",
    )?;
    refused(
        &m,
        admin,
        "DELETE",
        "/api/v1/switches/sw-test",
        &json!({}),
        409,
        "ed2",
    )?;
    ensure!(
        snapshot(&m, admin)? == before,
        "a refused delete changed something"
    );
    edit(
        &m,
        &token,
        "ed2",
        &json!({ "remove_nics": [{ "mac": "52:54:00:00:e0:03" }] }),
    )?;
    m.expect(admin, "DELETE", "/api/v1/port-groups/pg-test", None, 204)?;
    m.expect(admin, "DELETE", "/api/v1/switches/sw-test", None, 204)?;
    let nets = networks()?;
    ensure!(
        !nets.to_string().contains("pg-test") && !nets.to_string().contains("sw-test"),
        "{nets}"
    );

    // Volumes and datastores (a new one under <data-dir>/datastores, the
    // default datastore root).
    let ds2 = m.data.join("datastores/ds2");
    std::fs::create_dir_all(&ds2)?;
    m.expect(
        admin,
        "POST",
        "/api/v1/datastores",
        Some(&json!({ "name": "ds2", "path": ds2 })),
        201,
    )?;
    refused(
        &m,
        admin,
        "POST",
        "/api/v1/datastores",
        &json!({ "name": "root", "path": "/" }),
        400,
        "host's root",
    )?;
    let vols = "/api/v1/datastores/ds2/volumes";
    m.expect(
        admin,
        "POST",
        vols,
        Some(&json!({ "name": "v1", "size_bytes": 64 * MIB })),
        201,
    )?;
    let before = snapshot(&m, admin)?;
    for (body, status, word) in [
        (
            json!({ "name": "v2", "size_bytes": 1000 }),
            400,
            "size_bytes",
        ),
        (
            json!({ "name": "v2", "size_bytes": 128 * MIB + 1 }),
            400,
            "size_bytes",
        ),
        (json!({ "name": "a/b/c", "size_bytes": MIB }), 400, "volume"),
        (json!({ "name": "v2" }), 400, "size_bytes"),
        (json!({ "name": "v1", "size_bytes": MIB }), 409, "already"),
    ] {
        refused(&m, admin, "POST", vols, &body, status, word)?;
    }
    refused(
        &m,
        admin,
        "POST",
        "/api/v1/datastores/nope/volumes",
        &json!({ "name": "v2", "size_bytes": MIB }),
        404,
        "nope",
    )?;
    let v1 = format!("{vols}/v1");
    for (body, status, word) in [
        (json!({ "size_bytes": 32 * MIB }), 400, "only grow"),
        (json!({ "size_bytes": 64 * MIB }), 400, "only grow"),
        (json!({ "size_bytes": 513 }), 400, "size_bytes"),
        (json!({ "size": 128 * MIB }), 400, "unknown field"),
    ] {
        refused(&m, admin, "PATCH", &v1, &body, status, word)?;
    }
    refused(
        &m,
        admin,
        "PATCH",
        &format!("{vols}/no-such"),
        &json!({ "size_bytes": 128 * MIB }),
        404,
        "no volume",
    )?;
    refused(
        &m,
        admin,
        "DELETE",
        &format!("{vols}/no-such"),
        &json!({}),
        404,
        "no volume",
    )?;
    ensure!(
        snapshot(&m, admin)? == before,
        "a refused volume change changed something"
    );
    let grown = m.expect(
        admin,
        "PATCH",
        &v1,
        Some(&json!({ "size_bytes": 128 * MIB })),
        200,
    )?;
    ensure!(grown["size"] == 128 * MIB, "{grown}");
    // As a disk of a VM, the volume and its datastore stay.
    edit(
        &m,
        &token,
        "ed2",
        &json!({ "add_disks": [{ "datastore": "ds2", "volume": "v1" }] }),
    )?;
    let before = snapshot(&m, admin)?;
    refused(&m, admin, "DELETE", &v1, &json!({}), 409, "ed2")?;
    refused(
        &m,
        admin,
        "DELETE",
        "/api/v1/datastores/ds2",
        &json!({}),
        409,
        "ed2",
    )?;
    ensure!(
        snapshot(&m, admin)? == before,
        "a refused delete changed something"
    );
    // Grown as a stopped VM's disk: re-exported, the VM's record follows.
    m.expect(
        admin,
        "PATCH",
        &v1,
        Some(&json!({ "size_bytes": 192 * MIB })),
        200,
    )?;
    let v = vm(&m, admin, "ed2")?;
    ensure!(
        v["disks"][1]["volume"] == "v1" && v["disks"][1]["size_bytes"] == 192 * MIB,
        "{v}"
    );
    let exports = daemon(&m.data.join("run/blockd.sock"), "GET", "/v1/exports", None)?;
    ensure!(
        exports.as_array().is_some_and(|e| e
            .iter()
            .any(|x| x["datastore"] == "ds2" && x["volume"] == "v1")),
        "the grown disk is not exported again: {exports}"
    );
    // Taken off without delete_volume: the volume stays, then goes.
    edit(
        &m,
        &token,
        "ed2",
        &json!({ "remove_disks": [{ "datastore": "ds2", "volume": "v1" }] }),
    )?;
    let list = m.expect(admin, "GET", vols, None, 200)?;
    ensure!(list["items"][0]["name"] == "v1", "{list}");
    m.expect(admin, "DELETE", &v1, None, 204)?;
    m.expect(admin, "DELETE", "/api/v1/datastores/ds2", None, 204)?;
    let stores = m.expect(admin, "GET", "/api/v1/datastores", None, 200)?;
    ensure!(!stores.to_string().contains("\"ds2\""), "{stores}");
    refused(
        &m,
        admin,
        "DELETE",
        "/api/v1/datastores/ds2",
        &json!({}),
        404,
        "ds2",
    )?;

    host_files_come_from_their_directories(&m, &token, &dir)?;

    // The CLI on the same API.
    m.cli(
        &token,
        &["vm", "edit", "ed2", "--memory", "320", "--vcpus", "1"],
    )?;
    let v = vm(&m, admin, "ed2")?;
    ensure!(v["memory_mib"] == 320 && v["vcpus"] == 1, "{v}");
    m.cli(&token, &["network", "switch", "create", "sw-cli"])?;
    m.cli(
        &token,
        &[
            "network",
            "port-group",
            "create",
            "pg-cli",
            "--switch",
            "sw-cli",
            "--vlan",
            "7",
        ],
    )?;
    m.cli(
        &token,
        &[
            "network",
            "port-group",
            "edit",
            "pg-cli",
            "--vlan",
            "trunk:7,8",
            "--forged-transmits",
            "false",
        ],
    )?;
    ensure!(
        port_group(&m, admin, "pg-cli")?["vlan"]["allowed"] == json!([7, 8]),
        "the CLI's port group edit"
    );
    m.cli(&token, &["network", "port-group", "delete", "pg-cli"])?;
    m.cli(&token, &["network", "switch", "delete", "sw-cli"])?;
    m.cli(
        &token,
        &["datastore", "volume", "create", "local", "cli/vol", "4M"],
    )?;
    m.cli(
        &token,
        &["datastore", "volume", "resize", "local", "cli/vol", "8M"],
    )?;
    let out = m.cli(&token, &["--json", "datastore", "volume", "list", "local"])?;
    ensure!(
        out.contains("\"cli/vol\"") && out.contains(&(8 * MIB).to_string()),
        "{out}"
    );
    m.cli(
        &token,
        &["datastore", "volume", "delete", "local", "cli/vol"],
    )?;
    let mut shrink = Command::new(harness::daemons::binary("sfera")?);
    shrink
        .args(["vm", "edit", "ed2", "--memory", "1"])
        .env("SFERA_SERVER", &m.base)
        .env("SFERA_TOKEN", &token)
        .env("SFERA_CONFIG", m.data.join("no-cli-config.json"));
    let out = shrink.output()?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("memory_mib"),
        "a bad CLI edit: {out:?}"
    );

    // Running: the name changes, the hardware does not.
    m.power(&token, "ed2", "on")?;
    let before = snapshot(&m, admin)?;
    refused(
        &m,
        admin,
        "PATCH",
        "/api/v1/vms/ed2",
        &json!({ "memory_mib": 512 }),
        409,
        "power it off",
    )?;
    refused(
        &m,
        admin,
        "PATCH",
        "/api/v1/vms/ed2",
        &json!({ "add_nics": [{ "port_group": "vm-network" }] }),
        409,
        "power it off",
    )?;
    ensure!(
        snapshot(&m, admin)?["vms"] == before["vms"],
        "a refused edit of a running VM changed it"
    );
    edit(&m, &token, "ed2", &json!({ "name": "ed3" }))?;
    ensure!(
        m.vm_state(&token, "ed3")? == "running",
        "renamed while running"
    );
    m.power(&token, "ed3", "off")?;
    poll("ed3 stopped", Duration::from_secs(30), || {
        Ok((m.vm_state(&token, "ed3")? == "stopped").then_some(()))
    })?;
    let task = m.expect(admin, "DELETE", "/api/v1/vms/ed3?disks=true", None, 202)?;
    m.wait_task(&token, &task, Duration::from_secs(60))?;
    Ok(())
}
