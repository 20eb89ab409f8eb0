//! mgmtd's daemons run as their own users with only the rights they need (curl, /proc).
//!
//! sfera-blockd and sfera-vswitchd as sfera-mgmtd runs them, checked from
//! outside: each as a system user of its own with only the capabilities
//! it needs (/proc/<pid>/status), API sockets that only root and the
//! daemon itself may use, vhost-user sockets any user the file mode lets
//! in may use, private state, and state made by root before taken over.
//! Other users' connections come from a forked child that becomes uid
//! 65534. No guest is booted.

use std::collections::BTreeSet;
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::mgmtd::Site;
use harness::netns::{NetNs, unique_name};
use harness::process::{Process, run};
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::{Value, json};

const NOBODY: u32 = 65534;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

/// One of the two daemons, as the tests look at it.
struct Daemon {
    name: &'static str,
    user: &'static str,
    /// Its API socket, under `<data>/run`.
    socket: &'static str,
    /// A GET that answers 200 once it serves.
    probe: &'static str,
    caps: u64,
}

const BLOCKD: Daemon = Daemon {
    name: "blockd",
    user: "sfera-blockd",
    socket: "blockd.sock",
    probe: "/v1/datastores",
    caps: 0,
};
const VSWITCHD: Daemon = Daemon {
    name: "vswitchd",
    user: "sfera-vswitchd",
    socket: "vswitchd.sock",
    probe: "/v1/config",
    caps: CAP_NET_ADMIN | CAP_NET_RAW,
};

/// An mgmtd with its daemons serving.
struct Stack {
    data: PathBuf,
    process: Process,
}

impl Stack {
    /// Starts mgmtd #`n` on `site` with `extra` options.
    fn start(site: &Site, n: u32, extra: &[&str]) -> Result<Stack> {
        let mut args: Vec<OsString> = vec!["--stop-on-exit".into()];
        args.extend(extra.iter().map(OsString::from));
        let process = site.start(n, &args)?;
        let stack = Stack {
            data: site.data(),
            process,
        };
        for d in [&BLOCKD, &VSWITCHD] {
            wait_until(d.name, Duration::from_secs(60), || {
                Ok(stack
                    .call(d, "GET", d.probe, None)
                    .ok()
                    .filter(|(status, _)| *status == 200))
            })?;
        }
        Ok(stack)
    }

    /// A site named `name` and a stack on it with the daemons' default
    /// users.
    fn on_new_site(name: &str) -> Result<(Site, Stack)> {
        let site = Site::new(name)?;
        let stack = Stack::start(&site, 1, &[])?;
        Ok((site, stack))
    }

    fn api(&self, d: &Daemon) -> PathBuf {
        self.data.join("run").join(d.socket)
    }

    fn pid(&self, d: &Daemon) -> Result<u32> {
        let file = self.data.join(format!("run/{}.pid", d.name));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("Cannot read {}", file.display()))?;
        Ok(text.trim().parse()?)
    }

    /// A call to a daemon's API as root, its status and JSON.
    fn call(
        &self,
        d: &Daemon,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        unix_call(&self.api(d), method, path, body)
    }

    /// Waits until mgmtd has made its defaults: the datastore `local` and
    /// the port group `vm-network`.
    fn wait_defaults(&self) -> Result<()> {
        wait_until(
            "the default datastore and port group",
            Duration::from_secs(60),
            || {
                let (Ok((_, ds)), Ok((_, cfg))) = (
                    self.call(&BLOCKD, "GET", "/v1/datastores", None),
                    self.call(&VSWITCHD, "GET", "/v1/config", None),
                ) else {
                    return Ok(None);
                };
                let local = ds
                    .as_array()
                    .is_some_and(|a| a.iter().any(|d| d["name"] == "local"));
                let group = cfg["port_groups"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|g| g["name"] == "vm-network"));
                Ok((local && group).then_some(()))
            },
        )?;
        Ok(())
    }

    fn call_ok(&self, d: &Daemon, method: &str, path: &str, body: &Value) -> Result<Value> {
        let (status, v) = self.call(d, method, path, Some(body))?;
        ensure!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status} {v}"
        );
        Ok(v)
    }
}

/// A call to the API on `socket` as root (curl), its status and JSON.
fn unix_call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let body = body.map(Value::to_string);
    let answer = harness::http::call(socket, method, path, body.as_deref())?;
    Ok((answer.status, answer.json()?))
}

/// `id` of `user`: `-u`, `-g` or `-G`.
fn id(flag: &str, user: &str) -> Result<Vec<u32>> {
    let mut cmd = Command::new("id");
    cmd.arg(flag).arg(user);
    run(cmd)?
        .split_whitespace()
        .map(|n| Ok(n.parse()?))
        .collect()
}

/// The value of `field` in /proc/<pid>/status.
fn proc_status(pid: u32, field: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn mode(path: &Path) -> Result<u32> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("Cannot stat {}", path.display()))?;
    Ok(meta.mode() & 0o7777)
}

fn owner(path: &Path) -> Result<u32> {
    Ok(std::fs::symlink_metadata(path)
        .with_context(|| format!("Cannot stat {}", path.display()))?
        .uid())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("Cannot chmod {}", path.display()))
}

/// What a process running as `uid` gets from the Unix socket `socket`
/// when it sends `request`: the connect error (errno), or what the other
/// end answered until it closed, sent `want` bytes, or went quiet for 5 s.
///
/// A forked child becomes `uid` (the test process is multithreaded, so
/// the child makes only async-signal-safe calls, on buffers made before
/// the fork) and writes to a pipe: `C` and the answer, or `E` and the
/// errno of connect(2), or `U` when it could not become `uid`.
fn as_uid(
    uid: u32,
    socket: &Path,
    request: &[u8],
    want: usize,
) -> Result<std::result::Result<Vec<u8>, i32>> {
    let path = CString::new(socket.as_os_str().as_bytes())?;
    // SAFETY: all-zero bytes are a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    ensure!(bytes.len() <= addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let addr_len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    ensure!(rc == 0, "pipe2 failed");
    // SAFETY: the child runs only async-signal-safe system calls on memory
    // prepared above, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; `fds[1]` is the pipe's write end.
        unsafe { child_connect(uid, fds[1], &addr, addr_len, &timeout, (request, want)) }
    }
    // SAFETY: `fds` are ours; the write end closes so the read below ends
    // when the child exits.
    unsafe { libc::close(fds[1]) };
    ensure!(pid > 0, "fork failed");
    // SAFETY: `fds[0]` is the pipe's read end, owned by this File from now.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut out = Vec::new();
    pipe.read_to_end(&mut out)?;
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    match out.split_first() {
        Some((b'C', answer)) => Ok(Ok(answer.to_vec())),
        Some((b'E', errno)) if errno.len() == 4 => Ok(Err(i32::from_ne_bytes(errno.try_into()?))),
        _ => bail!("the child could not become uid {uid}: {out:?}"),
    }
}

/// The forked child of [`as_uid`].
///
/// # Safety
/// Only in a child just forked; `pipe` is the write end of its pipe.
unsafe fn child_connect(
    uid: u32,
    pipe: libc::c_int,
    addr: &libc::sockaddr_un,
    addr_len: libc::socklen_t,
    timeout: &libc::timeval,
    (request, want): (&[u8], usize),
) -> ! {
    // SAFETY: async-signal-safe system calls on memory the caller prepared
    // before the fork; the child ends with _exit.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(uid) != 0
            || libc::setuid(uid) != 0
        {
            libc::write(pipe, b"U".as_ptr().cast(), 1);
            libc::_exit(2);
        }
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if libc::connect(s, std::ptr::from_ref(addr).cast(), addr_len) != 0 {
            let errno = *libc::__errno_location();
            libc::write(pipe, b"E".as_ptr().cast(), 1);
            libc::write(pipe, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(1);
        }
        libc::write(pipe, b"C".as_ptr().cast(), 1);
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::write(s, request.as_ptr().cast(), request.len());
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < want {
            let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            libc::write(pipe, buf.as_ptr().cast(), n as usize);
            got += n as usize;
        }
        libc::_exit(0);
    }
}

const HTTP_GET: &[u8] = b"GET /v1/config HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n";

/// The answer to GET_FEATURES: a header and the 64-bit features.
const VHOST_REPLY: usize = 20;

/// VHOST_USER_GET_FEATURES (1), version 1, no payload.
fn vhost_get_features() -> Vec<u8> {
    [1u32, 1, 0].iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn daemons_run_as_their_own_users_with_only_the_capabilities_they_need() -> Result<()> {
    let (_site, stack) = Stack::on_new_site("mgmt-privileges-caps")?;
    for d in [&BLOCKD, &VSWITCHD] {
        let pid = stack.pid(d)?;
        let uid = id("-u", d.user)?[0];
        let gid = id("-g", d.user)?[0];
        ensure!(uid != 0, "{} is root", d.user);
        let ids = |v: u32| format!("{v}\t{v}\t{v}\t{v}");
        ensure!(
            proc_status(pid, "Uid")? == ids(uid),
            "{} Uid: {}",
            d.name,
            proc_status(pid, "Uid")?
        );
        ensure!(
            proc_status(pid, "Gid")? == ids(gid),
            "{} Gid: {}",
            d.name,
            proc_status(pid, "Gid")?
        );
        let groups: BTreeSet<u32> = proc_status(pid, "Groups")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let wanted: BTreeSet<u32> = id("-G", d.user)?.into_iter().collect();
        ensure!(
            groups == wanted,
            "{} Groups {groups:?}, {} has {wanted:?}",
            d.name,
            d.user
        );
        for (field, want) in [
            ("CapEff", d.caps),
            ("CapPrm", d.caps),
            ("CapBnd", d.caps),
            ("CapInh", 0),
            ("CapAmb", 0),
        ] {
            let got = u64::from_str_radix(&proc_status(pid, field)?, 16)?;
            ensure!(
                got == want,
                "{} {field}: {got:#x}, wanted {want:#x}",
                d.name
            );
        }
        ensure!(
            proc_status(pid, "NoNewPrivs")? == "1",
            "{} may gain privileges",
            d.name
        );
    }
    // blockd reaches block-device datastores through the disk group.
    let disk = run({
        let mut c = Command::new("getent");
        c.args(["group", "disk"]);
        c
    })?;
    let disk_gid: u32 = disk.split(':').nth(2).context("disk's gid")?.parse()?;
    ensure!(
        id("-G", BLOCKD.user)?.contains(&disk_gid),
        "sfera-blockd is not in group disk"
    );
    Ok(())
}

#[test]
fn api_sockets_let_in_only_root_and_the_daemon_itself() -> Result<()> {
    let (_site, stack) = Stack::on_new_site("mgmt-privileges-api")?;
    for d in [&BLOCKD, &VSWITCHD] {
        let api = stack.api(d);
        let uid = id("-u", d.user)?[0];
        ensure!(
            mode(&api)? == 0o600,
            "{}: mode {:o}",
            api.display(),
            mode(&api)?
        );
        ensure!(owner(&api)? == uid, "{} is not {}'s", api.display(), d.user);
        // The file mode keeps another user out ...
        let denied = as_uid(NOBODY, &api, HTTP_GET, usize::MAX)?;
        ensure!(
            denied == Err(libc::EACCES),
            "{}: uid {NOBODY} got {denied:?}",
            d.name
        );
        // ... and with the mode loosened by mistake, the peer check does.
        set_mode(&api, 0o666)?;
        let answer = as_uid(NOBODY, &api, HTTP_GET, usize::MAX)?
            .map_err(|e| anyhow::anyhow!("errno {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        ensure!(
            text.starts_with("HTTP/1.1 403")
                && text.contains("\"peer_not_allowed\"")
                && text.contains("uid 65534"),
            "{}: uid {NOBODY} was answered {text:?}",
            d.name
        );
        // Root and the daemon's own user are let in.
        for who in [0, uid] {
            let answer = as_uid(who, &api, HTTP_GET, usize::MAX)?
                .map_err(|e| anyhow::anyhow!("errno {e}"))?;
            let text = String::from_utf8_lossy(&answer);
            ensure!(
                !text.starts_with("HTTP/1.1 403"),
                "{}: uid {who} was refused: {text}",
                d.name
            );
        }
        set_mode(&api, 0o600)?;
        let log = std::fs::read_to_string(stack.data.join(format!("logs/{}.log", d.name)))?;
        ensure!(
            log.contains("API connection refused") && log.contains("uid 65534"),
            "{}'s log does not say it refused uid {NOBODY}",
            d.name
        );
    }
    Ok(())
}

#[test]
fn vhost_user_sockets_are_the_daemons_and_serve_whoever_their_mode_lets_in() -> Result<()> {
    let (_site, stack) = Stack::on_new_site("mgmt-privileges-vhost")?;
    stack.wait_defaults()?;
    stack.call_ok(
        &BLOCKD,
        "POST",
        "/v1/datastores/local/volumes",
        &json!({ "name": "v1", "size": 1 << 20 }),
    )?;
    let export = stack.call_ok(
        &BLOCKD,
        "POST",
        "/v1/exports",
        &json!({ "id": "e1", "datastore": "local", "volume": "v1" }),
    )?;
    let disk = PathBuf::from(export["socket"].as_str().context("export socket")?);
    let nic = stack.data.join("run/net/p1.sock");
    stack.call_ok(
        &VSWITCHD,
        "POST",
        "/v1/ports",
        &json!({ "name": "p1", "socket": nic, "mac": "52:54:00:12:34:56", "port_group": "vm-network" }),
    )?;
    for (socket, d) in [(&disk, &BLOCKD), (&nic, &VSWITCHD)] {
        let uid = id("-u", d.user)?[0];
        ensure!(
            mode(socket)? == 0o600,
            "{}: mode {:o}",
            socket.display(),
            mode(socket)?
        );
        ensure!(
            owner(socket)? == uid,
            "{} is not {}'s",
            socket.display(),
            d.user
        );
        // Mode 0600: a VM process of another uid is kept out until mgmtd
        // gives it the socket ...
        let denied = as_uid(NOBODY, socket, &vhost_get_features(), VHOST_REPLY)?;
        ensure!(
            denied == Err(libc::EACCES),
            "{}: uid {NOBODY} got {denied:?}",
            socket.display()
        );
        // ... and then served: no peer check on vhost-user sockets.
        std::os::unix::fs::lchown(socket, Some(NOBODY), Some(NOBODY))?;
        let reply = as_uid(NOBODY, socket, &vhost_get_features(), VHOST_REPLY)?
            .map_err(|e| anyhow::anyhow!("{}: errno {e}", socket.display()))?;
        ensure!(
            reply.len() >= VHOST_REPLY && reply[..4] == 1u32.to_le_bytes(),
            "{}: GET_FEATURES as uid {NOBODY} answered {reply:?}",
            socket.display()
        );
    }
    Ok(())
}

#[test]
fn state_is_private_and_state_root_made_is_taken_over() -> Result<()> {
    let site = Site::new("mgmt-privileges-state")?;
    let data = site.data();
    // As before this change: the daemons as root make their state, a
    // volume among it, with the umask's modes.
    let mut old = Stack::start(
        &site,
        1,
        &["--blockd-user", "root", "--vswitchd-user", "root"],
    )?;
    ensure!(
        proc_status(old.pid(&BLOCKD)?, "Uid")?.starts_with("0\t"),
        "--blockd-user root"
    );
    old.wait_defaults()?;
    let volume = old.call_ok(
        &BLOCKD,
        "POST",
        "/v1/datastores/local/volumes",
        &json!({ "name": "v1", "size": 1 << 20 }),
    )?;
    let volume = PathBuf::from(volume["path"].as_str().context("volume path")?);
    old.process.stop()?;
    for f in [
        &volume,
        &data.join("blockd/blockd-state.json"),
        &data.join("mgmt.db"),
    ] {
        set_mode(f, 0o644)?;
    }
    set_mode(&data, 0o755)?;

    let stack = Stack::start(&site, 2, &[])?;
    let blockd = id("-u", BLOCKD.user)?[0];
    let vswitchd = id("-u", VSWITCHD.user)?[0];
    for (path, uid) in [
        (data.join("blockd"), blockd),
        (data.join("blockd/blockd-state.json"), blockd),
        (data.join("datastores/local"), blockd),
        (volume.clone(), blockd),
        (data.join("vswitchd"), vswitchd),
        (data.join("vswitchd/vswitch-state.json"), vswitchd),
        (data.join("run/blk"), blockd),
        (data.join("run/net"), vswitchd),
    ] {
        ensure!(
            owner(&path)? == uid,
            "{} is owned by uid {}, not {uid}",
            path.display(),
            owner(&path)?
        );
    }
    // The volume root made is served by the daemon's user.
    stack.call_ok(
        &BLOCKD,
        "POST",
        "/v1/exports",
        &json!({ "id": "e1", "datastore": "local", "volume": "v1" }),
    )?;
    // A new state file is written private.
    stack.call_ok(
        &BLOCKD,
        "POST",
        "/v1/datastores/local/volumes",
        &json!({ "name": "v2", "size": 1 << 20 }),
    )?;
    for (path, want) in [
        (data.clone(), 0o711),
        (data.join("mgmt.db"), 0o600),
        (data.join("mgmt.db-wal"), 0o600),
        (data.join("admin-password"), 0o600),
        (data.join("logs"), 0o700),
        (data.join("logs/blockd.log"), 0o600),
        (data.join("import"), 0o700),
        (data.join("datastores"), 0o711),
        (data.join("datastores/local"), 0o700),
        (data.join("blockd"), 0o700),
        (data.join("blockd/blockd-state.json"), 0o600),
        (data.join("vswitchd"), 0o700),
        (data.join("vswitchd/vswitch-state.json"), 0o600),
        (data.join("run/blk"), 0o711),
        (data.join("run/net"), 0o711),
    ] {
        ensure!(
            mode(&path)? == want,
            "{}: mode {:o}, wanted {want:o}",
            path.display(),
            mode(&path)?
        );
    }
    drop(stack);
    Ok(())
}

#[test]
fn vswitchd_as_its_user_opens_tap_and_af_packet_uplinks() -> Result<()> {
    // In a namespace of the test's, on a veth pair and a TAP made there.
    let ns = NetNs::new()?;
    let (a, b, tap) = (
        unique_name("sfpra"),
        unique_name("sfprb"),
        unique_name("sfprt"),
    );
    ns.exec_ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
    for dev in [&a, &b] {
        ns.exec_ok(&["ip", "link", "set", dev, "up"])?;
    }
    let dir = TestDir::new("mgmt-privileges-uplinks")?;
    set_mode(dir.path(), 0o711)?;
    let api = dir.join("vswitchd.sock");
    let mut cmd = ns.command(
        harness::daemons::binary("sfera-vswitchd")?
            .to_str()
            .context("path")?,
    )?;
    cmd.arg("--api")
        .arg(&api)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("vswitchd"))
        .args(["--user", VSWITCHD.user]);
    let mut daemon = Process::spawn("sfera-vswitchd --user", cmd, &dir.join("vswitchd.log"))?;
    wait_until("sfera-vswitchd's API", Duration::from_secs(30), || {
        daemon.ensure_running()?;
        Ok(unix_call(&api, "GET", "/v1/config", None)
            .ok()
            .filter(|(status, _)| *status == 200))
    })?;
    let pid = daemon.pid();
    let uid = id("-u", VSWITCHD.user)?[0];
    ensure!(
        proc_status(pid, "Uid")?.starts_with(&format!("{uid}\t")),
        "not {}",
        VSWITCHD.user
    );
    let post = |path: &str, body: Value| -> Result<()> {
        let (status, v) = unix_call(&api, "POST", path, Some(&body))?;
        ensure!(
            (200..300).contains(&status),
            "POST {path}: HTTP {status} {v}"
        );
        Ok(())
    };
    post("/v1/switches", json!({ "name": "sw1" }))?;
    // A TAP made and set up: CAP_NET_ADMIN.
    post(
        "/v1/switches/sw1/uplinks",
        json!({ "name": "t0", "type": "tap", "interface": tap }),
    )?;
    let link = ns.exec_ok(&["ip", "link", "show", &tap])?;
    ensure!(link.contains(",UP"), "{tap} is not up: {link}");
    // An AF_PACKET socket on the veth, promiscuous: CAP_NET_RAW.
    post(
        "/v1/switches/sw1/uplinks",
        json!({ "name": "p0", "type": "af_packet", "interface": a }),
    )?;
    let link = ns.exec_ok(&["ip", "-d", "link", "show", &a])?;
    ensure!(
        link.contains("promiscuity 1"),
        "{a} is not promiscuous: {link}"
    );
    daemon.stop()?;
    Ok(())
}
