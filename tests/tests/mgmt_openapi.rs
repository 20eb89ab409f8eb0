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

mod mgmt_client;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::mgmtd::Site;
use harness::process::{Process, describe, tail_of_file};
use harness::scenario::case;
use mgmt_client::{Cred, Mgmtd};
use serde_json::json;

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

/// The scenario's set-up: mgmtd with a stopped VM (so that the lists have
/// a VM in them), an API token, and the document and configuration
/// schemathesis runs with.
struct Run {
    site: Site,
    mgmtd: Mgmtd,
    token: String,
    doc: PathBuf,
    config: PathBuf,
}

impl Run {
    fn start() -> Result<Self> {
        let site = Site::new("mgmt-openapi")?;
        let mgmtd = Mgmtd::start(&site, true, 1)?;
        let token = mgmtd.admin_token(&site.dir.join("cookies"))?;
        let auth = Cred::Bearer(&token);
        let vm = mgmtd.call(
            auth,
            "POST",
            "/api/v1/vms",
            Some(&json!({ "name": "tiny", "template": "tiny-linux",
                          "disks": [{ "datastore": "local", "size_bytes": 1u64 << 30 }],
                          "nics": [{ "port_group": "vm-network" }] })),
        )?;
        ensure!(
            vm.status < 400,
            "create a VM: HTTP {}: {}",
            vm.status,
            vm.body
        );
        let openapi = mgmtd.call(auth, "GET", "/api/v1/openapi.json", None)?;
        ensure!(
            openapi.status < 400,
            "the OpenAPI document: HTTP {}: {}",
            openapi.status,
            openapi.body
        );
        let doc = site.dir.join("openapi.json");
        std::fs::write(&doc, openapi.body.to_string())?;
        let config = site.dir.join("schemathesis.toml");
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
         [\"2xx\", \"400\", \"401\", \"403\", \"404\", \"409\"]\n\
         # A VM under sfera-vmm (the host's default driver for Tiny Linux\n\
         # on full KVM) has no ACPI power button: shutdown and reboot are\n\
         # refused for it (409).\n\
         [[operations]]\n\
         include-operation-id = [\"ShutdownVm\", \"RebootVm\"]\n\
         checks.positive_data_acceptance.expected-statuses = \
         [\"2xx\", \"401\", \"403\", \"404\", \"409\"]\n",
        )?;
        Ok(Run {
            site,
            mgmtd,
            token,
            doc,
            config,
        })
    }

    /// Runs schemathesis #`i` (`what`) with `args` and every check.
    fn schemathesis(&self, st: &Path, i: u32, what: &str, args: &[&str]) -> Result<()> {
        let dir = &self.site.dir;
        let base = self.site.base();
        let (config, doc, token) = (&self.config, &self.doc, &self.token);
        let log = dir.join(format!("schemathesis-{i}.log"));
        let mut cmd = Command::new(st);
        cmd.arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(doc)
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
            .args(args)
            .current_dir(dir.path())
            .env("SFERA_TOKEN", token)
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
        Ok(())
    }
}

#[test]
fn mgmt_openapi_schemathesis() -> Result<()> {
    let st = schemathesis()?;
    let mut run = Run::start()?;
    case("reads", || {
        run.schemathesis(
            &st,
            0,
            "reads",
            &[
                "--include-method",
                "GET",
                "--exclude-path",
                "/api/v1/vms/{vm}/console",
                "--exclude-path",
                "/api/v1/vms/{vm}/display",
            ],
        )
    })?;
    case("changes_with_invalid_input", || {
        run.schemathesis(
            &st,
            1,
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
        )
    })?;
    case("changes_inside_mgmtd", || {
        run.schemathesis(
            &st,
            2,
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
                // A valid join adds a member to the cluster's etcd, which
                // is outside mgmtd (cluster_join joins a host for real).
                "--exclude-path",
                "/api/v1/cluster/join",
                "--exclude-by",
                "method == \"DELETE\" and path == \"/api/v1/session\"",
                "--mode",
                "positive",
            ],
        )
    })?;
    run.mgmtd
        .process
        .as_mut()
        .context("mgmtd was stopped")?
        .ensure_running()?;
    Ok(())
}
