//! sfera-mgmtd's edits apply, and refused edits change nothing anywhere (curl, the `sfera` CLI).
//!
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
#[path = "mgmt_edit/network.rs"]
mod network;
#[path = "mgmt_edit/storage.rs"]
mod storage;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::http;
use harness::mgmtd::Site;
use harness::scenario::case;
use mgmt_client::{Cred, Mgmtd, poll};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// A call to a daemon's own API on its Unix socket, which must succeed;
/// the answer's JSON.
fn daemon(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let body = body.map(Value::to_string);
    let answer = http::call(socket, method, path, body.as_deref())?;
    Ok(answer.success(&format!("{method} {path}"))?.value())
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

/// The scenario's state: one mgmtd, the admin's token and the id of the
/// VM `ed` every case edits (renamed `ed2`, then `ed3`, on the way).
struct Edit {
    site: Site,
    m: Mgmtd,
    token: String,
    id: String,
}

#[test]
fn mgmt_edit_vms_networks_datastores() -> Result<()> {
    let site = Site::new("mgmt-edit")?;
    let m = Mgmtd::start(&site, true, 1)?;
    let token = m.admin_token(&site.dir.join("cookies"))?;
    let id = case("a_stopped_vm_is_made_with_a_disk_and_a_nic", || {
        a_stopped_vm_is_made_with_a_disk_and_a_nic(&m, &token)
    })?;
    let s = Edit { site, m, token, id };
    case("a_read_only_user_changes_nothing", || {
        a_read_only_user_changes_nothing(&s)
    })?;
    case("bad_edits_are_refused_and_change_nothing", || {
        bad_edits_are_refused_and_change_nothing(&s)
    })?;
    case("an_edit_failing_on_the_switch_undoes_its_disk", || {
        an_edit_failing_on_the_switch_undoes_its_disk(&s)
    })?;
    let new_port = case("a_good_edit_renames_and_adds_a_disk_and_a_nic", || {
        a_good_edit_renames_and_adds_a_disk_and_a_nic(&s)
    })?;
    case("disks_and_nics_come_off_again", || {
        disks_and_nics_come_off_again(&s, &new_port)
    })?;
    case("concurrent_edits_one_wins_and_the_other_is_refused", || {
        concurrent_edits_one_wins_and_the_other_is_refused(&s)
    })?;
    case("switches_are_made_and_bad_ones_refused", || {
        network::switches_are_made_and_bad_ones_refused(&s)
    })?;
    case("port_group_edits_merge_and_bad_ones_change_nothing", || {
        network::port_group_edits_merge_and_bad_ones_change_nothing(&s)
    })?;
    case("port_groups_and_switches_in_use_stay", || {
        network::port_groups_and_switches_in_use_stay(&s)
    })?;
    case("bad_volume_changes_are_refused_and_change_nothing", || {
        storage::bad_volume_changes_are_refused_and_change_nothing(&s)
    })?;
    case("a_volume_in_use_stays_and_grows_with_its_vm", || {
        storage::a_volume_in_use_stays_and_grows_with_its_vm(&s)
    })?;
    case("host_files_come_from_their_directories", || {
        storage::host_files_come_from_their_directories(&s.m, &s.token, &s.site.dir)
    })?;
    case("the_cli_edits_through_the_same_api", || {
        the_cli_edits_through_the_same_api(&s)
    })?;
    case("a_running_vm_is_renamed_but_not_changed", || {
        a_running_vm_is_renamed_but_not_changed(&s)
    })?;
    Ok(())
}

/// A stopped VM `ed` with a disk and a NIC; its id.
fn a_stopped_vm_is_made_with_a_disk_and_a_nic(m: &Mgmtd, token: &str) -> Result<String> {
    let task = m.expect(
        Cred::Bearer(token),
        "POST",
        "/api/v1/vms",
        Some(
            &json!({ "name": "ed", "template": "tiny-linux", "memory_mib": 256,
                      "disks": [{ "datastore": "local", "size_bytes": 64 * MIB }],
                      "nics": [{ "port_group": "vm-network", "mac": "52:54:00:00:e0:01" }] }),
        ),
        202,
    )?;
    Ok(m.wait_task(token, &task, Duration::from_secs(60))?["id"]
        .as_str()
        .context("vm id")?
        .to_owned())
}

/// A read-only user changes nothing: every change it tries is refused
/// (403) and the inventory, datastores and switch stay as they were.
fn a_read_only_user_changes_nothing(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let vjar = s.site.dir.join("viewer-cookies");
    m.add_viewer(admin, &vjar)?;
    let viewer = Cred::Cookies(&vjar);
    let before = snapshot(m, admin)?;
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
        snapshot(m, admin)? == before,
        "a read-only user changed something"
    );
    Ok(())
}

/// Bad edits are refused with the field's name; nothing changes.
fn bad_edits_are_refused_and_change_nothing(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let before = snapshot(m, admin)?;
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
        refused(m, admin, "PATCH", "/api/v1/vms/ed", body, *status, word)?;
    }
    refused(
        m,
        admin,
        "PATCH",
        "/api/v1/vms/no-such-vm",
        &json!({ "memory_mib": 256 }),
        404,
        "No VM",
    )?;
    ensure!(
        snapshot(m, admin)? == before,
        "a refused edit changed something"
    );
    Ok(())
}

/// An edit that fails on the switch after its disk was made: a port with
/// the name the new NIC gets is put on vswitchd behind mgmtd's back (its
/// socket where sfera-vswitchd's user may bind one). The task fails and
/// undoes the disk (volume and export).
fn an_edit_failing_on_the_switch_undoes_its_disk(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let vsw = m.data.join("run/vswitchd.sock");
    daemon(
        &vsw,
        "POST",
        "/v1/ports",
        Some(
            &json!({ "name": format!("{}-nic1", s.id), "socket": m.data.join("run/net/intruder.sock"),
                      "mac": "52:54:00:00:e0:77", "port_group": "vm-network" }),
        ),
    )?;
    let before = snapshot(m, admin)?;
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
        .wait_task(token, &task, Duration::from_secs(60))
        .err()
        .context("the edit succeeded over a taken port name")?;
    ensure!(
        failed.to_string().contains("exists"),
        "the edit failed for another reason: {failed:#}"
    );
    ensure!(
        snapshot(m, admin)? == before,
        "a failed edit left something behind:\nbefore {before}\nafter {}",
        snapshot(m, admin)?
    );
    daemon(&vsw, "DELETE", &format!("/v1/ports/{}-nic1", s.id), None)?;
    Ok(())
}

/// A good edit: rename, vCPUs, memory, a new disk (exported), a new NIC
/// (a port on the switch). The new NIC's port.
fn a_good_edit_renames_and_adds_a_disk_and_a_nic(s: &Edit) -> Result<String> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let vsw = m.data.join("run/vswitchd.sock");
    let result = edit(
        m,
        token,
        "ed",
        &json!({ "name": "ed2", "vcpus": 2, "memory_mib": 384,
                 "add_disks": [{ "datastore": "local", "size_bytes": 32 * MIB }],
                 "add_nics": [{ "port_group": "vm-network", "mac": "52:54:00:00:e0:02" }] }),
    )?;
    ensure!(result["name"] == "ed2", "{result}");
    let v = vm(m, admin, "ed2")?;
    ensure!(
        v["id"] == s.id.as_str() && v["vcpus"] == 2 && v["memory_mib"] == 384,
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
    Ok(new_port)
}

/// The disk and NIC of [`a_good_edit_renames_and_adds_a_disk_and_a_nic`]
/// come off again; the disk's volume goes with it.
fn disks_and_nics_come_off_again(s: &Edit, new_port: &str) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    edit(
        m,
        token,
        "ed2",
        &json!({ "remove_disks": [{ "datastore": "local", "volume": "ed2/disk1", "delete_volume": true }],
                 "remove_nics": [{ "mac": "52:54:00:00:e0:02" }] }),
    )?;
    let v = vm(m, admin, "ed2")?;
    ensure!(
        v["disks"].as_array().map(Vec::len) == Some(1)
            && v["nics"].as_array().map(Vec::len) == Some(1),
        "{v}"
    );
    let snap = snapshot(m, admin)?;
    ensure!(
        !snap["volumes"].to_string().contains("ed2/disk1")
            && !snap["exports"].to_string().contains("ed2/disk1")
            && !snap["switch"]["ports"].to_string().contains(new_port),
        "the disk or NIC taken off is still there: {snap}"
    );
    Ok(())
}

/// Whether an edit landed: its task succeeded (true), or it was refused
/// as made from an older version of the VM, at once (409) or by its task
/// (false). Anything else is an error.
fn edit_outcome(m: &Mgmtd, token: &str, vm: &str, body: &Value) -> Result<bool> {
    let a = m.call(
        Cred::Bearer(token),
        "PATCH",
        &format!("/api/v1/vms/{vm}"),
        Some(body),
    )?;
    let refusal = |text: &str| text.contains("changed by someone else");
    match a.status {
        409 if refusal(&a.body.to_string()) => return Ok(false),
        202 => {}
        other => anyhow::bail!("PATCH {body}: HTTP {other} {}", a.body),
    }
    let t = m.finished_task(token, &a.body, Duration::from_secs(60))?;
    match t["state"].as_str() {
        Some("success") => Ok(true),
        _ if refusal(&t.to_string()) => Ok(false),
        _ => anyhow::bail!("PATCH {body}: the task failed otherwise: {t}"),
    }
}

/// Two edits made from the same version of the VM, sent at once: one
/// lands, the other is refused whole (its change is nowhere), and an edit
/// made from the old version afterwards is refused at once.
fn concurrent_edits_one_wins_and_the_other_is_refused(s: &Edit) -> Result<()> {
    let (m, token, id) = (&s.m, s.token.as_str(), s.id.as_str());
    let admin = Cred::Bearer(token);
    let before = vm(m, admin, id)?;
    let rv = before["resource_version"]
        .as_i64()
        .context("resource_version")?;
    // Values the VM does not have yet, so each edit's mark is its own.
    let new_memory = before["memory_mib"].as_u64().context("memory")? + 64;
    let new_vcpus = before["vcpus"].as_u64().context("vcpus")? % 4 + 1;
    let (memory, vcpus) = (
        json!({ "memory_mib": new_memory, "resource_version": rv }),
        json!({ "vcpus": new_vcpus, "resource_version": rv }),
    );
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| edit_outcome(m, token, id, &memory));
        let b = scope.spawn(|| edit_outcome(m, token, id, &vcpus));
        (a.join(), b.join())
    });
    let (a, b) = (
        a.map_err(|_| anyhow::anyhow!("edit thread panicked"))??,
        b.map_err(|_| anyhow::anyhow!("edit thread panicked"))??,
    );
    ensure!(
        a != b,
        "both edits {}",
        if a { "landed" } else { "were refused" }
    );
    let after = vm(m, admin, id)?;
    let landed = (
        after["memory_mib"] == new_memory,
        after["vcpus"] == new_vcpus,
    );
    ensure!(
        landed == (a, b) && after["resource_version"].as_i64() > Some(rv),
        "edits landed {landed:?}, tasks said {:?}: {after}",
        (a, b)
    );
    ensure!(
        !edit_outcome(m, token, id, &json!({ "vcpus": 2, "resource_version": rv }))?,
        "a stale edit landed"
    );
    ensure!(vm(m, admin, id)? == after, "a refused edit changed the VM");
    Ok(())
}

/// The CLI on the same API: VM edits, switches, port groups and volumes;
/// a bad edit fails with the field's name.
fn the_cli_edits_through_the_same_api(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    m.cli(
        token,
        &["vm", "edit", "ed2", "--memory", "320", "--vcpus", "1"],
    )?;
    let v = vm(m, admin, "ed2")?;
    ensure!(v["memory_mib"] == 320 && v["vcpus"] == 1, "{v}");
    m.cli(token, &["network", "switch", "create", "sw-cli"])?;
    m.cli(
        token,
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
        token,
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
        network::port_group(m, admin, "pg-cli")?["vlan"]["allowed"] == json!([7, 8]),
        "the CLI's port group edit"
    );
    m.cli(token, &["network", "port-group", "delete", "pg-cli"])?;
    m.cli(token, &["network", "switch", "delete", "sw-cli"])?;
    m.cli(
        token,
        &["datastore", "volume", "create", "local", "cli/vol", "4M"],
    )?;
    m.cli(
        token,
        &["datastore", "volume", "resize", "local", "cli/vol", "8M"],
    )?;
    let out = m.cli(token, &["--json", "datastore", "volume", "list", "local"])?;
    ensure!(
        out.contains("\"cli/vol\"") && out.contains(&(8 * MIB).to_string()),
        "{out}"
    );
    m.cli(
        token,
        &["datastore", "volume", "delete", "local", "cli/vol"],
    )?;
    let mut shrink = Command::new(harness::daemons::binary("sfera")?);
    shrink
        .args(["vm", "edit", "ed2", "--memory", "1"])
        .env("SFERA_SERVER", &m.base)
        .env("SFERA_TOKEN", token)
        .env("SFERA_CONFIG", m.data.join("no-cli-config.json"));
    let out = shrink.output()?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("memory_mib"),
        "a bad CLI edit: {out:?}"
    );
    Ok(())
}

/// Running: the name changes, the hardware does not.
fn a_running_vm_is_renamed_but_not_changed(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    m.power(token, "ed2", "on")?;
    let before = snapshot(m, admin)?;
    refused(
        m,
        admin,
        "PATCH",
        "/api/v1/vms/ed2",
        &json!({ "memory_mib": 512 }),
        409,
        "power it off",
    )?;
    refused(
        m,
        admin,
        "PATCH",
        "/api/v1/vms/ed2",
        &json!({ "add_nics": [{ "port_group": "vm-network" }] }),
        409,
        "power it off",
    )?;
    ensure!(
        snapshot(m, admin)?["vms"] == before["vms"],
        "a refused edit of a running VM changed it"
    );
    edit(m, token, "ed2", &json!({ "name": "ed3" }))?;
    ensure!(
        m.vm_state(token, "ed3")? == "running",
        "renamed while running"
    );
    m.power(token, "ed3", "off")?;
    poll("ed3 stopped", Duration::from_secs(30), || {
        Ok((m.vm_state(token, "ed3")? == "stopped").then_some(()))
    })?;
    let task = m.expect(admin, "DELETE", "/api/v1/vms/ed3?disks=true", None, 202)?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    Ok(())
}
