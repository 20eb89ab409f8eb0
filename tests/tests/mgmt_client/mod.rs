//! The HTTP client of the mgmtd tests (mgmt_api, mgmt_edit): curl with a
//! bearer token or a cookie jar, answers as status, headers and JSON, and
//! the calls the tests share (log in, wait for a task, run the CLI).

#![allow(dead_code, unused_imports)] // Each test crate uses its own part of it.

mod console;

pub(crate) use console::{WsConsole, console_wait, ws_upgrade};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::http;
use harness::mgmtd::Site;
use harness::process::{Process, run};
use serde_json::{Value, json};

/// How a request proves who sends it.
#[derive(Clone, Copy)]
pub(crate) enum Cred<'a> {
    None,
    Bearer(&'a str),
    /// The cookie jar, sent as a page of mgmtd's sends it: with mgmtd's
    /// own `Origin`.
    Cookies(&'a Path),
    /// The cookie jar with this `Origin:` or `Referer:` header line
    /// instead (`None`: neither), as a page elsewhere or a non-browser.
    CookiesFrom(&'a Path, Option<&'a str>),
}

/// An answer of mgmtd: the status, the header lines, and the body as JSON
/// (text as a JSON string).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: Value,
}

impl Answer {
    /// The value of header `name` (any case), if the answer has it.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }
}

pub(crate) struct Mgmtd {
    pub(crate) base: String,
    pub(crate) data: PathBuf,
    pub(crate) process: Option<Process>,
}

impl Mgmtd {
    /// Starts mgmtd #`n` on `site`.
    pub(crate) fn start(site: &Site, stop_on_exit: bool, n: u32) -> Result<Self> {
        Self::start_with(site, stop_on_exit, n, &[])
    }

    /// [`Mgmtd::start`] with more options on mgmtd's command line.
    pub(crate) fn start_with(
        site: &Site,
        stop_on_exit: bool,
        n: u32,
        more: &[&str],
    ) -> Result<Self> {
        Self::launch(site, stop_on_exit, n, more, false)
    }

    /// [`Mgmtd::start_with`] serving HTTPS (its self-signed certificate,
    /// which the calls accept and the CLI is given).
    pub(crate) fn start_https(
        site: &Site,
        stop_on_exit: bool,
        n: u32,
        more: &[&str],
    ) -> Result<Self> {
        Self::launch(site, stop_on_exit, n, more, true)
    }

    fn launch(site: &Site, stop_on_exit: bool, n: u32, more: &[&str], https: bool) -> Result<Self> {
        let mut extra: Vec<OsString> = more.iter().map(OsString::from).collect();
        if stop_on_exit {
            extra.push("--stop-on-exit".into());
        }
        let (process, base) = if https {
            (site.start_https(n, &extra)?, site.base_https())
        } else {
            (site.start(n, &extra)?, site.base())
        };
        Ok(Mgmtd {
            base,
            data: site.data(),
            process: Some(process),
        })
    }

    /// Logs in as admin (cookies in `jar`), makes an API token and waits
    /// for the defaults of a new install; the token.
    pub(crate) fn admin_token(&self, jar: &Path) -> Result<String> {
        self.admin_token_with(jar, &self.admin_password()?)
    }

    /// [`Mgmtd::admin_token`] with admin's `password` (a cluster's, made
    /// by its first host: a host that joins makes no admin of its own).
    pub(crate) fn admin_token_with(&self, jar: &Path, password: &str) -> Result<String> {
        let login = self.login(jar, "admin", password)?;
        ensure!(
            login.status == 200,
            "login: {} {}",
            login.status,
            login.body
        );
        let token = self.new_token(jar)?;
        self.wait_defaults(Cred::Bearer(&token))?;
        Ok(token)
    }

    /// The port mgmtd listens on.
    pub(crate) fn port(&self) -> Result<u16> {
        Ok(self.base.rsplit(':').next().context("no port")?.parse()?)
    }

    pub(crate) fn call(
        &self,
        cred: Cred<'_>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let mut request = http::Request::url(&self.base, method, path);
        if self.base.starts_with("https://") {
            request = request.insecure();
        }
        match cred {
            Cred::None => {}
            Cred::Bearer(t) => request = request.header(&format!("Authorization: Bearer {t}")),
            Cred::Cookies(jar) => {
                request = request
                    .cookies(jar)
                    .header(&format!("Origin: {}", self.base));
            }
            Cred::CookiesFrom(jar, header) => {
                request = request.cookies(jar);
                if let Some(h) = header {
                    request = request.header(h);
                }
            }
        }
        if let Some(b) = body {
            request = request.json(&b.to_string());
        }
        let answer = request.send()?;
        Ok(Answer {
            status: answer.status,
            body: answer.value(),
            headers: answer.headers,
        })
    }

    /// Calls and checks the status; returns the body.
    pub(crate) fn expect(
        &self,
        cred: Cred<'_>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        status: u16,
    ) -> Result<Value> {
        let a = self.call(cred, method, path, body)?;
        ensure!(
            a.status == status,
            "{method} {path}: HTTP {} (wanted {status}): {}",
            a.status,
            a.body
        );
        Ok(a.body)
    }

    /// Waits for a task (from a 202 answer) to succeed; returns its result.
    pub(crate) fn wait_task(&self, token: &str, task: &Value, timeout: Duration) -> Result<Value> {
        let t = self.finished_task(token, task, timeout)?;
        ensure!(t["state"] == "success", "task failed: {t}");
        Ok(t["result"].clone())
    }

    /// Waits for a task (from a 202 answer) to end, well or not; the task.
    pub(crate) fn finished_task(
        &self,
        token: &str,
        task: &Value,
        timeout: Duration,
    ) -> Result<Value> {
        let id = task["id"].as_i64().context("not a task")?;
        let t = poll(&format!("task {id}"), timeout, || {
            let t = self.expect(
                Cred::Bearer(token),
                "GET",
                &format!("/api/v1/tasks/{id}"),
                None,
                200,
            )?;
            Ok(match t["state"].as_str() {
                Some("running") | Some("queued") => None,
                _ => Some(t),
            })
        })?;
        Ok(t)
    }

    /// The password mgmtd made for admin at its first start.
    pub(crate) fn admin_password(&self) -> Result<String> {
        let file = self.data.join("admin-password");
        Ok(std::fs::read_to_string(&file)
            .with_context(|| format!("{}", file.display()))?
            .trim()
            .to_owned())
    }

    /// Logs in as admin with the generated password (cookies in `jar`).
    pub(crate) fn login_admin(&self, jar: &Path) -> Result<Answer> {
        self.login(jar, "admin", &self.admin_password()?)
    }

    /// Logs in as `user` (cookies in `jar`).
    pub(crate) fn login(&self, jar: &Path, user: &str, password: &str) -> Result<Answer> {
        self.call(
            Cred::Cookies(jar),
            "POST",
            "/api/v1/session",
            Some(&json!({ "username": user, "password": password })),
        )
    }

    /// A new API token of the user logged in with `jar`.
    pub(crate) fn new_token(&self, jar: &Path) -> Result<String> {
        let token = self.expect(
            Cred::Cookies(jar),
            "POST",
            "/api/v1/tokens",
            Some(&json!({ "name": "test" })),
            201,
        )?;
        Ok(token["token"].as_str().context("no token")?.to_owned())
    }

    /// Creates the read-only user "viewer" and logs it in (cookies in `jar`).
    pub(crate) fn add_viewer(&self, admin: Cred<'_>, jar: &Path) -> Result<()> {
        self.expect(
            admin,
            "POST",
            "/api/v1/users",
            Some(
                &json!({ "name": "viewer", "password": "viewer-password-1", "role": "read-only" }),
            ),
            201,
        )?;
        self.expect(
            Cred::Cookies(jar),
            "POST",
            "/api/v1/session",
            Some(&json!({ "username": "viewer", "password": "viewer-password-1" })),
            200,
        )?;
        Ok(())
    }

    /// Waits for the default datastore and port group of a new install.
    pub(crate) fn wait_defaults(&self, cred: Cred<'_>) -> Result<()> {
        poll("the default datastore", Duration::from_secs(60), || {
            let d = self.expect(cred, "GET", "/api/v1/datastores", None, 200)?;
            Ok(d["items"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "local"))
                .cloned())
        })?;
        poll("the default port group", Duration::from_secs(60), || {
            let n = self.expect(cred, "GET", "/api/v1/networks", None, 200)?;
            Ok(n["port_groups"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "vm-network"))
                .cloned())
        })?;
        Ok(())
    }

    /// Runs a power action (a task) and waits for it.
    pub(crate) fn power(&self, token: &str, vm: &str, action: &str) -> Result<Value> {
        let task = self.expect(
            Cred::Bearer(token),
            "POST",
            &format!("/api/v1/vms/{vm}/power/{action}"),
            None,
            202,
        )?;
        self.wait_task(token, &task, Duration::from_secs(120))
    }

    /// The VM's state as mgmtd shows it.
    pub(crate) fn vm_state(&self, token: &str, vm: &str) -> Result<String> {
        let v = self.expect(
            Cred::Bearer(token),
            "GET",
            &format!("/api/v1/vms/{vm}"),
            None,
            200,
        )?;
        Ok(v["state"].as_str().context("no state")?.to_owned())
    }

    /// Runs the `sfera` CLI against this mgmtd with `token`; its stdout.
    pub(crate) fn cli(&self, token: &str, args: &[&str]) -> Result<String> {
        Ok(run(self.cli_command(token, args)?)?)
    }

    fn cli_command(&self, token: &str, args: &[&str]) -> Result<Command> {
        let mut c = Command::new(harness::daemons::binary("sfera")?);
        c.args(args)
            .env("SFERA_SERVER", &self.base)
            .env("SFERA_TOKEN", token)
            .env("SFERA_CONFIG", self.data.join("no-cli-config.json"));
        if self.base.starts_with("https://") {
            c.env("SFERA_CA_CERT", self.data.join("tls/cert.pem"));
        }
        Ok(c)
    }

    /// Starts `sfera ARGS` against this mgmtd with `token`, stdin closed
    /// and stdout into `out` (stderr beside it, `.err`).
    pub(crate) fn cli_spawn(
        &self,
        token: &str,
        args: &[&str],
        out: &Path,
    ) -> Result<std::process::Child> {
        let mut c = self.cli_command(token, args)?;
        c.stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(out)?)
            .stderr(std::fs::File::create(out.with_extension("err"))?);
        c.spawn().context("cannot start sfera")
    }

    /// SIGKILL, as a crash: the daemons and VMs it started keep running.
    pub(crate) fn crash(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            // SAFETY: kill(2) on the pid of a child this test started; no
            // memory is involved.
            unsafe {
                libc::kill(p.pid() as libc::pid_t, libc::SIGKILL);
            }
            p.wait_timeout(Duration::from_secs(10))?;
        }
        Ok(())
    }
}

/// Polls with a deadline (harness's `wait_until`, for anyhow errors).
pub(crate) fn poll<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn unauthorized(a: &Answer, what: &str) -> Result<()> {
    ensure!(a.status == 401, "{what}: HTTP {} {}", a.status, a.body);
    ensure!(
        a.body
            == json!({ "error": { "code": "unauthorized", "message": "Authentication required" } }),
        "{what}: a 401 must say nothing more: {}",
        a.body
    );
    Ok(())
}
