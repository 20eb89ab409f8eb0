//! Volumes, datastores and host files through mgmtd, the storage cases
//! of `mgmt_edit_vms_networks_datastores`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use harness::process::run;
use harness::testdir::TestDir;
use harness::tools;
use serde_json::json;

use super::{Edit, MIB, daemon, edit, refused, snapshot, vm};
use crate::mgmt_client::{Cred, Mgmtd};

/// Host files the API names stay in their directories: an image imported
/// from the import directory arrives whole; a qcow2 whose backing file is
/// a host file, one outside the import directory (or a symlink out of it)
/// and a datastore at /etc are refused with a 400 that names the problem,
/// and nothing is made.
pub(super) fn host_files_come_from_their_directories(
    m: &Mgmtd,
    token: &str,
    dir: &TestDir,
) -> Result<()> {
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

/// Volumes and datastores (a new one under <data-dir>/datastores, the
/// default datastore root): bad creates, resizes and deletes are refused
/// and change nothing; a good resize grows the volume.
pub(super) fn bad_volume_changes_are_refused_and_change_nothing(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
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
        m,
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
    let before = snapshot(m, admin)?;
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
        refused(m, admin, "POST", vols, &body, status, word)?;
    }
    refused(
        m,
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
        refused(m, admin, "PATCH", &v1, &body, status, word)?;
    }
    refused(
        m,
        admin,
        "PATCH",
        &format!("{vols}/no-such"),
        &json!({ "size_bytes": 128 * MIB }),
        404,
        "no volume",
    )?;
    refused(
        m,
        admin,
        "DELETE",
        &format!("{vols}/no-such"),
        &json!({}),
        404,
        "no volume",
    )?;
    ensure!(
        snapshot(m, admin)? == before,
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
    Ok(())
}

/// As a disk of a VM, a volume and its datastore stay; grown as a stopped
/// VM's disk it is re-exported and the VM's record follows; taken off
/// without delete_volume it stays, then goes with its datastore.
pub(super) fn a_volume_in_use_stays_and_grows_with_its_vm(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let vols = "/api/v1/datastores/ds2/volumes";
    let v1 = format!("{vols}/v1");
    edit(
        m,
        token,
        "ed2",
        &json!({ "add_disks": [{ "datastore": "ds2", "volume": "v1" }] }),
    )?;
    let before = snapshot(m, admin)?;
    refused(m, admin, "DELETE", &v1, &json!({}), 409, "ed2")?;
    refused(
        m,
        admin,
        "DELETE",
        "/api/v1/datastores/ds2",
        &json!({}),
        409,
        "ed2",
    )?;
    ensure!(
        snapshot(m, admin)? == before,
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
    let v = vm(m, admin, "ed2")?;
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
        m,
        token,
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
        m,
        admin,
        "DELETE",
        "/api/v1/datastores/ds2",
        &json!({}),
        404,
        "ds2",
    )?;
    Ok(())
}
