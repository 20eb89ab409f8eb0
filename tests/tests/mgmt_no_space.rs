//! A VM on a full datastore pauses and resumes when space is freed (curl, a Linux guest).
//!
//! A VM on a thin datastore that fills up is paused by sfera-mgmtd with a
//! warning event and a reason, and resumes by itself once space is freed;
//! the guest's write, held meanwhile, completes with no I/O error and its
//! data reads back (QEMU's and vSphere's `werror=stop`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::guest::READY_LINE;
use harness::mgmtd::Site;
use harness::small_fs::SmallFs;
use serde_json::{Value, json};

mod mgmt_client;

use mgmt_client::{Cred, Mgmtd, console_wait, poll};

const MIB: u64 = 1 << 20;

#[test]
fn a_vm_paused_for_space_resumes_when_space_is_freed() -> Result<()> {
    // Before the hold, the guest's write failed with an I/O error.
    let site = Site::new("mgmt-no-space")?;
    let m = Mgmtd::start(&site, false, 1)?;
    let token = m.admin_token(&site.dir.join("cookies"))?;
    let admin = Cred::Bearer(&token);

    let fs = SmallFs::mount(m.data.join("datastores/thin"), 32)?;
    let path = fs.path().display().to_string();
    m.expect(
        admin,
        "POST",
        "/api/v1/datastores",
        Some(&json!({ "name": "thin", "path": path })),
        201,
    )?;
    let task = m.expect(
        admin,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "full", "template": "tiny-linux",
                      "disks": [{ "datastore": "thin", "size_bytes": 256 * MIB }] })),
        202,
    )?;
    m.wait_task(&token, &task, Duration::from_secs(120))?;
    let task = m.expect(admin, "POST", "/api/v1/vms/full/power/on", None, 202)?;
    m.wait_task(&token, &task, Duration::from_secs(120))?;
    let vm = m.expect(admin, "GET", "/api/v1/vms/full", None, 200)?;
    ensure!(vm["paused_reason"].is_null(), "{vm}");
    let console = PathBuf::from(vm["console_socket"].as_str().context("no console socket")?);
    console_wait(&console, None, READY_LINE, Duration::from_secs(180))?;
    console_wait(
        &console,
        Some("dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null && echo pat-$((2+2))"),
        "pat-4",
        Duration::from_secs(60),
    )?;

    let filler = fs.fill("filler")?;
    // The guest writes 8 MiB where there is no room: mgmtd pauses the VM;
    // this thread frees the space once it has, and mgmtd resumes it.
    let paused = std::thread::scope(|s| -> Result<Value> {
        let freer = s.spawn(|| -> Result<Value> {
            let vm = poll("the VM paused for space", Duration::from_secs(120), || {
                let vm = m.expect(admin, "GET", "/api/v1/vms/full", None, 200)?;
                Ok((vm["state"] == "paused").then_some(vm))
            })?;
            std::fs::remove_file(&filler)?;
            Ok(vm)
        });
        let written = console_wait(
            &console,
            Some("dd if=/tmp/pat of=/dev/vda bs=1M conv=fsync 2>&1; echo dd-$?-$((1+1))-done"),
            "-2-done",
            Duration::from_secs(180),
        );
        let paused = freer.join().expect("the freeing thread panicked");
        let written = written?;
        ensure!(
            written.contains("dd-0-2-done"),
            "the guest's dd failed: {written}"
        );
        paused
    })?;
    ensure!(
        paused["paused_reason"]
            .as_str()
            .is_some_and(|r| r.contains("datastore thin is out of space")),
        "{paused}"
    );
    let vm = m.expect(admin, "GET", "/api/v1/vms/full", None, 200)?;
    ensure!(
        vm["state"] == "running" && vm["paused_reason"].is_null(),
        "{vm}"
    );
    let events = m.expect(admin, "GET", "/api/v1/events?limit=100", None, 200)?;
    let text = events.to_string();
    ensure!(
        text.contains(
            "VM full paused: datastore thin is out of space; it resumes when space is freed"
        ) && text.contains("vm.resumed_space_freed"),
        "{events}"
    );

    // The data reads back from the disk, and the guest saw no I/O error.
    console_wait(
        &console,
        Some(
            "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=1M count=8 2>/dev/null | cmp - /tmp/pat && echo same-$((3+3))",
        ),
        "same-6",
        Duration::from_secs(120),
    )?;
    let dmesg = console_wait(
        &console,
        Some("echo errors-$(dmesg | grep -ci 'I/O error')-end$((4+4))"),
        "-end8",
        Duration::from_secs(60),
    )?;
    ensure!(
        dmesg.contains("errors-0-end8"),
        "the guest logged errors: {dmesg}"
    );
    Ok(())
}
