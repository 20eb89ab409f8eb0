//! Disk images and ISOs through mgmtd: imports from qemu-img's formats,
//! and firmware boots of an imported disk and of an ISO, under QEMU.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::process::run;
use harness::testdir::TestDir;
use harness::tools;
use serde_json::{Value, json};

use crate::mgmt_client::{Cred, Mgmtd, WsConsole, poll};

/// Disk images made by qemu-img (raw, qcow2, vmdk), through the API and
/// the CLI, are imported as volumes holding the same bytes.
pub(crate) fn import_images(m: &Mgmtd, token: &str) -> Result<()> {
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

    Ok(())
}

/// Bad import requests are refused before anything is made (after
/// [`import_images`], whose volume and qcow2 image they reuse).
pub(crate) fn bad_imports_are_refused(m: &Mgmtd, token: &str) -> Result<()> {
    let admin = Cred::Bearer(token);
    let qcow2 = m.data.join("import/image.qcow2").display().to_string();
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

    Ok(())
}

/// A qcow2 whose first data cluster's L2 entry is corrupt (unaligned):
/// qemu-img info reads its header fine, the conversion fails on the data,
/// and the volume made for it is removed (after [`import_images`]: four
/// volumes stay).
pub(crate) fn a_failed_import_leaves_no_volume(m: &Mgmtd, token: &str) -> Result<()> {
    let admin = Cred::Bearer(token);
    let import = m.data.join("import");
    let store = m.data.join("datastores/local");
    let mut bad = std::fs::read(import.join("image.qcow2"))?;
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
pub(crate) fn boot_an_imported_disk(m: &Mgmtd, token: &str, dir: &TestDir) -> Result<()> {
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
    let mut console = WsConsole::open(m.port()?, "fw", token)?;
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
pub(crate) fn boot_an_iso(m: &Mgmtd, token: &str, dir: &TestDir) -> Result<()> {
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
    let mut console = WsConsole::open(m.port()?, "installer", token)?;
    console.wait(harness::boot_sector::MESSAGE, Duration::from_secs(120))?;
    drop(console);
    m.power(token, "installer", "off")?;
    let task = m.expect(admin, "DELETE", "/api/v1/vms/installer", None, 202)?;
    m.wait_task(token, &task, Duration::from_secs(60))?;
    Ok(())
}
