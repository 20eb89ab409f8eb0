//! The HTTP client of the mgmtd tests (mgmt_api, mgmt_edit): curl with a
//! bearer token or a cookie jar, answers as status, headers and JSON, and
//! the calls the tests share (log in, wait for a task, run the CLI).

#![allow(dead_code)] // Each test crate uses its own part of it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::mgmtd;
use harness::process::{Process, run};
use harness::testdir::TestDir;
use harness::tools;
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

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: Value,
}

pub(crate) struct Mgmtd {
    pub(crate) base: String,
    pub(crate) data: PathBuf,
    pub(crate) process: Option<Process>,
}

impl Mgmtd {
    pub(crate) fn start(
        dir: &TestDir,
        port: u16,
        guest_dir: &Path,
        stop_on_exit: bool,
        n: u32,
    ) -> Result<Self> {
        Self::start_with(dir, port, guest_dir, stop_on_exit, n, &[])
    }

    /// [`Mgmtd::start`] with more options on mgmtd's command line.
    pub(crate) fn start_with(
        dir: &TestDir,
        port: u16,
        guest_dir: &Path,
        stop_on_exit: bool,
        n: u32,
        more: &[&str],
    ) -> Result<Self> {
        let mut extra: Vec<OsString> = more.iter().map(OsString::from).collect();
        if stop_on_exit {
            extra.push("--stop-on-exit".into());
        }
        let process = mgmtd::start(dir, port, guest_dir, n, &extra)?;
        Ok(Mgmtd {
            base: format!("http://127.0.0.1:{port}"),
            data: dir.join("data"),
            process: Some(process),
        })
    }

    pub(crate) fn call(
        &self,
        cred: Cred<'_>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer> {
        let mut cmd = Command::new(tools::require("curl", "curl")?);
        cmd.args([
            "--silent",
            "--show-error",
            "--include",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        match cred {
            Cred::None => {}
            Cred::Bearer(t) => {
                cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
            }
            Cred::Cookies(jar) => {
                cmd.arg("-b").arg(jar).arg("-c").arg(jar);
                cmd.arg("-H").arg(format!("Origin: {}", self.base));
            }
            Cred::CookiesFrom(jar, header) => {
                cmd.arg("-b").arg(jar).arg("-c").arg(jar);
                if let Some(h) = header {
                    cmd.arg("-H").arg(h);
                }
            }
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        cmd.arg(format!("{}{path}", self.base));
        let out = run(cmd)?;
        let (rest, status) = out.rsplit_once('\n').context("no status from curl")?;
        let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        Ok(Answer {
            status: status.trim().parse()?,
            headers: headers.to_owned(),
            body: if body.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
            },
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
        ensure!(t["state"] == "success", "task failed: {t}");
        Ok(t["result"].clone())
    }

    /// Logs in as admin with the generated password (cookies in `jar`).
    pub(crate) fn login_admin(&self, jar: &Path) -> Result<Answer> {
        let password = std::fs::read_to_string(self.data.join("admin-password"))?
            .trim()
            .to_owned();
        self.call(
            Cred::Cookies(jar),
            "POST",
            "/api/v1/session",
            Some(&json!({ "username": "admin", "password": password })),
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

/// Reads the VM's serial console socket until `needle` shows up.
pub(crate) fn console_wait(
    socket: &Path,
    send: Option<&str>,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("console {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    if let Some(line) = send {
        s.write_all(format!("{line}\n").as_bytes())?;
    }
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => bail!(
                "the console closed; it said: {}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if text.lines().any(|l| l.contains(needle)) {
                    return Ok(text.into_owned());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    bail!(
        "no {needle:?} on the console within {timeout:?}; it said: {}",
        String::from_utf8_lossy(&seen)
    )
}
