//! sfera-mgmtd's answers match its own OpenAPI document (schemathesis, curl).
//!
//! sfera-mgmtd's answers against its own OpenAPI document, checked by
//! schemathesis (PyPI; `make schemathesis` installs it into a venv under
//! target/). The document is fetched with a token, as every caller must,
//! and schemathesis authenticates with that token through the document's
//! `bearer` scheme (so its check that requests without valid credentials
//! are refused works too). Every check runs:
//!
//! - every GET, with valid and with invalid input;
//! - every change with invalid input (negative mode): refused with a 4xx,
//!   never a 5xx, never accepted;
//! - the changes that stay inside mgmtd and its daemons (users, tokens,
//!   port groups, volumes, power, edit and delete of VMs that mostly do
//!   not exist) with valid input too.
//!
//! Left out: the serial and graphical consoles (WebSockets, which OpenAPI
//! cannot describe: mgmt_web covers them); revoking tokens and logging out (they would end
//! the run's own credentials); and valid creates of VMs, datastores and
//! switches and valid disk imports (they would boot guests of any size,
//! register any host directory, bind uplinks to any host interface and
//! copy any host file: mgmt_api and mgmt_edit cover them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::guest::GuestImage;
use harness::mgmtd::{self, Leftovers};
use harness::process::{Process, describe, run, tail_of_file};
use harness::testdir::TestDir;
use harness::tools;
use serde_json::{Value, json};

/// How long one schemathesis run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn schemathesis() -> Result<PathBuf> {
    let st = std::env::var_os("SFERA_SCHEMATHESIS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis/bin/st"),
        PathBuf::from,
    );
    ensure!(
        st.is_file(),
        "schemathesis is not installed at {}: run `make schemathesis` (`make test` does)",
        st.display()
    );
    Ok(st)
}

/// One JSON call with curl; returns the body.
fn call(
    base: &str,
    auth: &[&str],
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let mut cmd = Command::new(tools::require("curl", "curl")?);
    cmd.args(["--silent", "--show-error", "--fail-with-body", "-X", method])
        .args(auth);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    cmd.arg(format!("{base}{path}"));
    let out = run(cmd)?;
    Ok(serde_json::from_str(&out).unwrap_or(Value::Null))
}

#[test]
fn mgmt_openapi_schemathesis() -> Result<()> {
    let st = schemathesis()?;
    let image = GuestImage::locate()?;
    let guest_dir = image.kernel.parent().context("kernel path")?.to_owned();
    let dir = TestDir::new("mgmt-openapi")?;
    let port = mgmtd::free_port()?;
    let _leftovers = Leftovers(dir.join("data"));
    let mut mgmtd = mgmtd::start(&dir, port, &guest_dir, 1, &["--stop-on-exit".into()])?;
    let base = format!("http://127.0.0.1:{port}");

    // A token, and a stopped VM with a disk and a NIC so that the lists
    // have a VM in them.
    let password = std::fs::read_to_string(dir.join("data/admin-password"))?;
    let jar = dir.join("cookies");
    let jar = jar.to_str().context("path")?;
    call(
        &base,
        &["-c", jar],
        "POST",
        "/api/v1/session",
        Some(&json!({ "username": "admin", "password": password.trim() })),
    )?;
    let origin = format!("Origin: {base}");
    let token = call(
        &base,
        &["-b", jar, "-H", &origin],
        "POST",
        "/api/v1/tokens",
        Some(&json!({ "name": "schemathesis" })),
    )?;
    let token = token["token"].as_str().context("no token")?.to_owned();
    let bearer = format!("Authorization: Bearer {token}");
    let auth = ["-H", bearer.as_str()];
    let mut ready = false;
    for _ in 0..120 {
        let n = call(&base, &auth, "GET", "/api/v1/networks", None)?;
        let d = call(&base, &auth, "GET", "/api/v1/datastores", None)?;
        if n["port_groups"].as_array().is_some_and(|a| !a.is_empty())
            && d["items"].as_array().is_some_and(|a| !a.is_empty())
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(ready, "no default datastore and port group");
    call(
        &base,
        &auth,
        "POST",
        "/api/v1/vms",
        Some(&json!({ "name": "tiny", "template": "tiny-linux",
                      "disks": [{ "datastore": "local", "size_bytes": 1u64 << 30 }],
                      "nics": [{ "port_group": "vm-network" }] })),
    )?;
    let doc = dir.join("openapi.json");
    std::fs::write(
        &doc,
        call(&base, &auth, "GET", "/api/v1/openapi.json", None)?.to_string(),
    )?;
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        "[auth.openapi.bearer]\nbearer = \"${SFERA_TOKEN}\"\n\
         # Rules JSON Schema cannot state: a port group's shaping needs\n\
         # peak_bps >= average_bps, and a volume's size must fit in one file\n\
         # of its datastore's filesystem (ext4: 16 TiB). A schema-valid\n\
         # request may be refused (400) for them, so 400 is expected there.\n\
         [[operations]]\n\
         include-operation-id = [\"EditPortGroup\", \"CreateVolume\", \"ResizeVolume\"]\n\
         checks.positive_data_acceptance.expected-statuses = \
         [\"2xx\", \"400\", \"401\", \"403\", \"404\", \"409\"]\n",
    )?;

    let runs: [(&str, &[&str]); 3] = [
        (
            "reads",
            &[
                "--include-method",
                "GET",
                "--exclude-path",
                "/api/v1/vms/{vm}/console",
                "--exclude-path",
                "/api/v1/vms/{vm}/display",
            ],
        ),
        (
            "changes with invalid input",
            &[
                "--exclude-method",
                "GET",
                "--exclude-path",
                "/api/v1/tokens/{id}",
                "--exclude-path",
                "/api/v1/session",
                // A body can be valid while another part of the request is
                // made invalid: registering any host directory (even "/") as
                // a datastore or binding uplinks to host interfaces must not
                // happen here either.
                "--exclude-operation-id",
                "AddDatastore",
                "--exclude-operation-id",
                "AddSwitch",
                "--mode",
                "negative",
            ],
        ),
        (
            "changes inside mgmtd",
            &[
                "--exclude-method",
                "GET",
                "--exclude-path",
                "/api/v1/tokens/{id}",
                "--exclude-path",
                "/api/v1/datastores",
                "--exclude-path",
                "/api/v1/vms",
                "--exclude-path",
                "/api/v1/datastores/{datastore}/import",
                "--exclude-path",
                "/api/v1/switches",
                "--exclude-by",
                "method == \"DELETE\" and path == \"/api/v1/session\"",
                "--mode",
                "positive",
            ],
        ),
    ];
    for (i, (what, args)) in runs.iter().enumerate() {
        let log = dir.join(format!("schemathesis-{i}.log"));
        let mut cmd = Command::new(&st);
        cmd.arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&doc)
            .args([
                "--url",
                &base,
                "--checks",
                "all",
                "--max-examples",
                "20",
                "--workers",
                "1",
            ])
            .args(["--request-timeout", "30"])
            .args(*args)
            .current_dir(dir.path())
            .env("SFERA_TOKEN", &token)
            .env("NO_COLOR", "1");
        let mut p = Process::spawn(&format!("schemathesis ({what})"), cmd, &log)?;
        let status = p.wait_timeout(RUN_TIMEOUT)?;
        let out = tail_of_file(&log, 400);
        match status {
            Some(s) if s.success() => {
                let summary = out
                    .lines()
                    .rev()
                    .find(|l| l.contains("generated"))
                    .unwrap_or_default();
                eprintln!("schemathesis, {what}: {}", summary.trim());
            }
            Some(s) => bail!("schemathesis, {what}: {}\n{out}", describe(s)),
            None => bail!("schemathesis, {what}: not done within {RUN_TIMEOUT:?}\n{out}"),
        }
    }
    mgmtd.ensure_running()?;
    Ok(())
}
