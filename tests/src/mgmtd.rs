//! sfera-mgmtd as the tests run it: its data directory inside the test's
//! directory, plain HTTP on a free local port, sfera-blockd and
//! sfera-vswitchd from this build, the guest image as its Tiny Linux
//! template, and QEMU TCG. [`Leftovers`] kills whatever it left running.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemons::binary;
use crate::process::Process;
use crate::testdir::TestDir;
use crate::wait::wait_until;
use crate::{Error, Result};

/// Where a test runs its mgmtd: its own directory (mgmtd's data in
/// `data/`), a free port, the guest image's directory for the Tiny Linux
/// template, and [`Leftovers`], which kills what mgmtd leaves running.
/// Fields drop in order: the leftovers are killed before the directory
/// goes.
#[derive(Debug)]
pub struct Site {
    pub leftovers: Leftovers,
    pub dir: TestDir,
    pub port: u16,
    pub guest_dir: PathBuf,
}

impl Site {
    /// A site named `name` with the guest image (`make guest-image`).
    pub fn new(name: &str) -> Result<Self> {
        let image = crate::guest::GuestImage::locate()?;
        let guest_dir =
            image
                .kernel
                .parent()
                .map(Path::to_owned)
                .ok_or_else(|| Error::MissingGuestImage {
                    dir: image.kernel.clone(),
                })?;
        Self::with_guest_dir(name, |_| guest_dir)
    }

    /// A site named `name` whose VMs boot no Tiny Linux (its guest
    /// directory does not exist).
    pub fn without_guest_image(name: &str) -> Result<Self> {
        Self::with_guest_dir(name, |dir| dir.join("no-guest-image"))
    }

    fn with_guest_dir(name: &str, guest_dir: impl FnOnce(&TestDir) -> PathBuf) -> Result<Self> {
        let dir = TestDir::new(name)?;
        Ok(Site {
            leftovers: Leftovers(dir.join("data")),
            guest_dir: guest_dir(&dir),
            port: free_port()?,
            dir,
        })
    }

    /// mgmtd's data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:<port>`, for a mgmtd started with
    /// [`Site::start_https`].
    pub fn base_https(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Starts mgmtd #`n` here ([`start`]).
    pub fn start(&self, n: u32, extra: &[OsString]) -> Result<Process> {
        start(&self.dir, self.port, &self.guest_dir, n, extra)
    }

    /// Starts mgmtd #`n` here serving HTTPS with its self-signed
    /// certificate (`<data>/tls/cert.pem`), as a host does.
    pub fn start_https(&self, n: u32, extra: &[OsString]) -> Result<Process> {
        let mut process = Process::spawn(
            &format!("sfera-mgmtd #{n}"),
            command(&self.dir, self.port, &self.guest_dir, false, extra)?,
            &self.dir.join(format!("mgmtd-{n}.log")),
        )?;
        let probe = crate::http::Request::url(&self.base_https(), "GET", "/api/v1/host").insecure();
        wait_until("sfera-mgmtd's API", Duration::from_secs(60), || {
            process.ensure_running()?;
            Ok(probe.try_send()?.filter(|a| a.status == 401))
        })?;
        Ok(process)
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("Cannot find a free port", "127.0.0.1:0", e))
}

/// The HTTP status of `GET path` on `127.0.0.1:port`, if it answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts sfera-mgmtd on `port` with its data in `<dir>/data` and waits
/// for its API (which answers 401 to a caller without credentials).
/// `extra` goes on its command line; `n` numbers its log when a test
/// starts more than one.
pub fn start(
    dir: &TestDir,
    port: u16,
    guest_dir: &Path,
    n: u32,
    extra: &[OsString],
) -> Result<Process> {
    let mut process = Process::spawn(
        &format!("sfera-mgmtd #{n}"),
        command(dir, port, guest_dir, true, extra)?,
        &dir.join(format!("mgmtd-{n}.log")),
    )?;
    wait_until("sfera-mgmtd's API", Duration::from_secs(60), || {
        process.ensure_running()?;
        Ok(http_status(port, "/api/v1/host").filter(|s| *s == 401))
    })?;
    Ok(process)
}

/// sfera-mgmtd's command line for a test: its data in `<dir>/data`, the
/// daemons and tools from this build, plain HTTP or HTTPS.
fn command(
    dir: &TestDir,
    port: u16,
    guest_dir: &Path,
    http: bool,
    extra: &[OsString],
) -> Result<Command> {
    // mgmtd runs sfera-blockd and sfera-vswitchd as users of their own,
    // which must pass through the test's directory (made 0700) to their
    // state in it, as they pass through /var/lib on a host.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).map_err(|e| {
        Error::io(
            "Cannot open the test directory to the daemons' users",
            dir.path(),
            e,
        )
    })?;
    let mut cmd = Command::new(binary("sfera-mgmtd")?);
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    if http {
        cmd.arg("--http");
    }
    cmd.arg("--blockd")
        .arg(binary("sfera-blockd")?)
        .arg("--vswitchd")
        .arg(binary("sfera-vswitchd")?)
        .arg("--vmm")
        .arg(binary("sfera-vmm")?)
        .arg("--qemu-img")
        .arg(crate::tools::require("qemu-img", "qemu-utils")?)
        .arg("--guest-dir")
        .arg(guest_dir)
        .arg("--accel")
        .arg("tcg")
        .args(extra)
        .env("RUST_LOG", "info");
    Ok(cmd)
}

/// Kills, whatever happens to the test, the daemons, QEMU and sfera-vmm processes
/// mgmtd left running in this data directory (their pidfiles name them;
/// a pid counts only if its command line names the directory), and
/// removes the cgroups of the VMs it killed.
#[derive(Debug)]
pub struct Leftovers(pub PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let run_dir = self.0.join("run");
        let mut pidfiles = vec![
            run_dir.join("blockd.pid"),
            run_dir.join("vswitchd.pid"),
            run_dir.join("etcd.pid"),
        ];
        if let Ok(vms) = std::fs::read_dir(run_dir.join("vms")) {
            for vm in vms.flatten() {
                pidfiles.push(vm.path().join("qemu.pid"));
                pidfiles.push(vm.path().join("vmm.pid"));
            }
        }
        let mark = self.0.to_string_lossy().into_owned();
        let mut killed = false;
        for f in pidfiles {
            let Some(pid) = std::fs::read_to_string(&f)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&mark))
                .unwrap_or(false);
            if ours && pid > 0 {
                killed = true;
                // SAFETY: kill(2) on a process of this test (its command
                // line names the test's data directory); no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if killed && let Ok(vms) = std::fs::read_dir(run_dir.join("vms")) {
            for vm in vms.flatten() {
                remove_vm_cgroups(&vm.file_name().to_string_lossy());
            }
        }
    }
}

/// Removes a VM's cgroup directories (`sfera-vms/<id>` at the top of each
/// cgroup hierarchy or under this process's own cgroup in it, as
/// mgmt/src/jail/cgroup.rs places them), waiting up to two seconds for
/// killed processes to leave them.
fn remove_vm_cgroups(vm_id: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut dirs = Vec::new();
    for m in mounts.lines() {
        let Some((left, right)) = m.split_once(" - ") else {
            continue;
        };
        if !right.starts_with("cgroup") {
            continue;
        }
        let Some(mount) = left.split_whitespace().nth(4) else {
            continue;
        };
        for path in own.lines().filter_map(|l| l.splitn(3, ':').nth(2)) {
            for base in [
                Path::new(mount).to_owned(),
                Path::new(mount).join(path.trim_start_matches('/')),
            ] {
                let dir = base.join("sfera-vms").join(vm_id);
                if dir.is_dir() && !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    for _ in 0..20 {
        dirs.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
        if dirs.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
