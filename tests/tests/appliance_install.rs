//! The appliance ISO installs unattended and the installed disk boots to the console (QEMU, curl).
//!
//! The appliance ISO end to end under QEMU TCG, as an operator uses it: boot
//! the ISO (`make iso` builds it into target/appliance/sfera.iso) on a
//! machine with an empty disk and a second small disk labelled
//! SFERA-ANSWER, let the installer run unattended, then boot the machine
//! from its disk alone and reach the web console and the API's health
//! endpoint from the host, through QEMU's user-mode network and a port
//! forward on 127.0.0.1. On SeaBIOS and on OVMF (UEFI). A wrong answer file
//! stops the installer with its reasons before anything is written.
//!
//! QEMU runs with `-no-reboot`, so the installer's reboot ends the first
//! QEMU; the second boots the disk without the ISO, as a machine whose CD
//! was ejected.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::console::Console;
use harness::http::Request;
use harness::mgmtd;
use harness::process::{Process, run};
use harness::testdir::TestDir;
use harness::tools;
use harness::wait::wait_until;

/// The installed disk: sparse, so it costs only what the install writes.
/// 20 GiB: the data partition (the rest after 8 GiB of root) is then
/// about 11.7 GiB, told apart from the root file system by its size.
const DISK_BYTES: u64 = 20 << 30;
/// The admin password the answer file sets.
const PASSWORD: &str = "sfera-appliance-test";
/// From the ISO's boot menu to "installation complete", under TCG.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// From power on to the console banner of the installed system.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Firmware {
    Bios,
    Uefi,
}

fn iso() -> Result<PathBuf> {
    let path = std::env::var_os("SFERA_ISO").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/appliance/sfera.iso"),
        PathBuf::from,
    );
    ensure!(
        path.is_file(),
        "{} is missing: build it with `make iso`",
        path.display()
    );
    Ok(path)
}

/// A small ext4 disk labelled SFERA-ANSWER holding `answer.toml`.
fn answer_disk(dir: &TestDir, answer: &str) -> Result<PathBuf> {
    let content = dir.subdir("answer")?;
    std::fs::write(content.join("answer.toml"), answer)?;
    let image = dir.join("answer.img");
    let mut mke2fs = Command::new(tools::require("mke2fs", "e2fsprogs")?);
    mke2fs
        .args(["-q", "-t", "ext4", "-L", "SFERA-ANSWER", "-d"])
        .arg(&content)
        .arg(&image)
        .arg("16M");
    run(mke2fs)?;
    Ok(image)
}

fn answer(disk: &str, network: &str) -> String {
    format!(
        "[install]\ndisk = \"{disk}\"\nhostname = \"sfera-test\"\n\n[network]\n{network}\n\n[admin]\npassword = \"{PASSWORD}\"\n"
    )
}

/// One QEMU machine with its serial console.
struct Machine {
    console: Console,
    process: Process,
    started: Instant,
}

struct Drives<'a> {
    disk: &'a Path,
    iso: Option<&'a Path>,
    answer: Option<&'a Path>,
}

impl Machine {
    fn start(
        dir: &TestDir,
        name: &str,
        firmware: Firmware,
        drives: &Drives<'_>,
        port: u16,
    ) -> Result<Self> {
        let qemu = tools::require("qemu-system-x86_64", "qemu-system-x86")?;
        let mut cmd = Command::new(qemu);
        cmd.args([
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-m",
            "2048",
            "-smp",
            "2",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ]);
        if firmware == Firmware::Uefi {
            let code = Path::new("/usr/share/OVMF/OVMF_CODE.fd");
            let vars_template = Path::new("/usr/share/OVMF/OVMF_VARS.fd");
            ensure!(
                code.is_file() && vars_template.is_file(),
                "OVMF is missing: install Debian's ovmf (make test-appliance does)"
            );
            // The machine's own NVRAM, kept across its two boots.
            let vars = dir.join("OVMF_VARS.fd");
            if !vars.exists() {
                std::fs::copy(vars_template, &vars)?;
            }
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    code.display()
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        cmd.arg("-drive")
            .arg(format!(
                "if=none,id=disk,format=raw,cache=unsafe,file={}",
                drives.disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=disk,bootindex=1"]);
        if let Some(iso) = drives.iso {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=cd,media=cdrom,readonly=on,file={}",
                    iso.display()
                ))
                .args(["-device", "ide-cd,drive=cd,bootindex=2"]);
        }
        if let Some(answer) = drives.answer {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=answer,format=raw,readonly=on,file={}",
                    answer.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=answer"]);
        }
        // Loopback only; `restrict` keeps the guest from reaching anything
        // but the forward.
        cmd.arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:8443"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .current_dir(dir.path());
        let (process, pipes) = Process::spawn_interactive(
            &format!("QEMU {name}"),
            cmd,
            &dir.join(format!("{name}.qemu.log")),
        )?;
        let console = Console::new(
            name,
            pipes.stdout,
            pipes.stdin,
            &dir.join(format!("{name}.console.log")),
        )?;
        Ok(Machine {
            console,
            process,
            started: Instant::now(),
        })
    }

    /// Waits for a console line; says how long it took since power on.
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let line = self
            .console
            .wait_for_line(needle, timeout)
            .or_else(|e| {
                self.process.ensure_running()?;
                Err(e)
            })
            .with_context(|| format!("waiting for {needle:?}"))?;
        eprintln!(
            "[{:6.1} s] {}",
            self.started.elapsed().as_secs_f64(),
            line.trim()
        );
        Ok(line)
    }

    /// Waits for QEMU to exit by itself (the guest rebooted or powered off).
    fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        match self.process.wait_timeout(timeout)? {
            Some(_) => Ok(()),
            None => bail!(
                "QEMU did not exit within {timeout:?}; console:\n{}",
                self.console.tail(20)
            ),
        }
    }
}

/// The journal of the installed system's boot, read from its disk image
/// once its QEMU is gone (a read-only loop device and mount): its warnings
/// and errors, and its last lines. Never fails: a journal that cannot be
/// read is said in the text.
fn journal_from_disk(disk: &Path, dir: &TestDir) -> String {
    match read_journal(disk, dir) {
        Ok(text) => format!("the installed system's journal:\n{text}"),
        Err(e) => format!("the installed system's journal could not be read: {e:#}"),
    }
}

/// GPT's type of an x86-64 root partition, which the installer gives the
/// installed system's root.
const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

fn read_journal(disk: &Path, dir: &TestDir) -> Result<String> {
    let mut partx = Command::new("partx");
    partx
        .args([
            "--show",
            "--noheadings",
            "--bytes",
            "-o",
            "START,SECTORS,TYPE",
        ])
        .arg(disk);
    let table = run(partx)?;
    let (start, sectors) = table
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == ROOT_TYPE)
                .then(|| Some((f[0].parse::<u64>().ok()?, f[1].parse::<u64>().ok()?)))
                .flatten()
        })
        .with_context(|| format!("no x86-64 root partition in:\n{table}"))?;
    let mut losetup = Command::new("losetup");
    losetup
        .args(["--find", "--show", "--read-only"])
        .arg(format!("--offset={}", start * 512))
        .arg(format!("--sizelimit={}", sectors * 512))
        .arg(disk);
    let dev = run(losetup)?.trim().to_owned();
    let mnt = dir.subdir("installed-root")?;
    let mut mount = Command::new("mount");
    mount.args(["-o", "ro,noload", &dev]).arg(&mnt);
    let text = run(mount).map_err(anyhow::Error::from).map(|_| {
        let journal = mnt.join("var/log/journal");
        let query = |more: &[&str]| {
            let mut c = Command::new("journalctl");
            c.arg("-D")
                .arg(&journal)
                .args(["-b", "--no-pager", "-o", "short-monotonic"])
                .args(more);
            run(c).unwrap_or_else(|e| e.to_string())
        };
        let text = format!(
            "-- warnings and errors --\n{}\n-- the last lines --\n{}",
            query(&["-p", "warning"]),
            query(&["-n", "60"])
        );
        let mut umount = Command::new("umount");
        umount.arg(&mnt);
        let _ = run(umount);
        text
    });
    let mut detach = Command::new("losetup");
    detach.args(["-d", &dev]);
    let _ = run(detach);
    text
}

/// `method path` to the appliance's console on the forwarded port (its
/// certificate is self-signed).
fn https(port: u16, method: &str, path: &str) -> Request {
    Request::url(&format!("https://127.0.0.1:{port}"), method, path).insecure()
}

/// `GET path` on the forwarded port: (status, body), status 0 when nothing
/// answered. With `cookies`, the session cookie jar that [`login`] filled.
fn https_get(port: u16, path: &str, cookies: Option<&Path>) -> Result<(u16, String)> {
    let mut request = https(port, "GET", path).max_time(20);
    if let Some(jar) = cookies {
        request = request.cookies(jar);
    }
    Ok(request
        .try_send()?
        .map_or((0, String::new()), |a| (a.status, a.body)))
}

/// Logs in as admin through the API: the status (0 when nothing
/// answered), and the session cookie kept in `jar`.
fn login(port: u16, password: &str, jar: &Path) -> Result<u16> {
    let body = serde_json::json!({ "username": "admin", "password": password });
    Ok(https(port, "POST", "/api/v1/session")
        .max_time(30)
        .cookies(jar)
        .json(&body.to_string())
        .try_send()?
        .map_or(0, |a| a.status))
}

/// An error of a step inside [`wait_until`]'s closure.
fn step_failed(what: &str, e: &anyhow::Error) -> harness::Error {
    harness::Error::CommandFailed {
        command: what.into(),
        status: String::new(),
        stderr: format!("{e:#}"),
    }
}

/// Waits for `GET /api/v1/health` to answer 200 `{"status":"ok"}`.
fn wait_health(m: &mut Machine, port: u16) -> Result<()> {
    let health = wait_until("the API's health endpoint", BOOT_TIMEOUT, || {
        m.process.ensure_running()?;
        let (status, body) = https_get(port, "/api/v1/health", None)
            .map_err(|e| step_failed("GET /api/v1/health", &e))?;
        Ok((status == 200).then_some(body))
    })?;
    eprintln!(
        "[{:6.1} s] GET /api/v1/health: {health}",
        m.started.elapsed().as_secs_f64()
    );
    ensure!(health.contains("\"ok\""), "health: {health}");
    Ok(())
}

/// The web console's login page: `/` is the single-page app, and its
/// script holds the login form.
fn check_login_page(port: u16) -> Result<()> {
    let (status, page) = https_get(port, "/", None)?;
    ensure!(
        status == 200 && page.contains("<title>Sfera</title>"),
        "the web console's page: {status} {page}"
    );
    let script = page
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|s| s.ends_with(".js"))
        .with_context(|| format!("no script in the console's page: {page}"))?;
    let (status, js) = https_get(port, script, None)?;
    ensure!(
        status == 200 && js.contains("Log in to manage this host"),
        "the console's script {script}: {status}, {} bytes, without the login form",
        js.len()
    );
    Ok(())
}

/// `GET path` as the logged-in admin, as JSON.
fn api_json(port: u16, path: &str, jar: &Path) -> Result<serde_json::Value> {
    let (status, body) = https_get(port, path, Some(jar))?;
    ensure!(status == 200, "GET {path}: {status} {body}");
    serde_json::from_str(&body).with_context(|| format!("GET {path}: {body}"))
}

/// The machine's empty disk: a sparse file, not one block allocated.
fn empty_disk(dir: &TestDir) -> Result<PathBuf> {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(DISK_BYTES)?;
    Ok(disk)
}

/// On the installed system's serial console, as root (the answer file's
/// password): every unit started (nothing failed), the data partition on
/// `/var/lib/sfera`, hugepages on demand, the TUN module, mgmtd running.
fn check_host_setup(m: &mut Machine) -> Result<()> {
    m.console.wait_for_text("login: ", BOOT_TIMEOUT)?;
    m.console.send_line("root")?;
    m.console.wait_for_text("Password: ", BOOT_TIMEOUT)?;
    m.console.send_line(PASSWORD)?;
    m.console.wait_for_text("# ", BOOT_TIMEOUT)?;
    let state = m
        .console
        .run("systemctl is-system-running --wait", BOOT_TIMEOUT)?;
    if state.output.trim() != "running" {
        let failed = m
            .console
            .run("systemctl --failed --no-legend --plain", BOOT_TIMEOUT)?;
        bail!(
            "the installed system is {:?}; failed units:\n{}",
            state.output.trim(),
            failed.output
        );
    }
    let facts = m.console.run_ok(
        "findmnt -n -o SOURCE /var/lib/sfera; cat /proc/sys/vm/nr_overcommit_hugepages; \
         findmnt -n -o FSTYPE /dev/hugepages; test -d /sys/module/tun && echo tun; \
         systemctl is-active sfera-mgmtd; systemctl is-enabled sfera-installer || true",
        BOOT_TIMEOUT,
    )?;
    let facts: Vec<&str> = facts.lines().map(str::trim).collect();
    ensure!(
        facts
            == [
                "/dev/vda4",
                "32768",
                "hugetlbfs",
                "tun",
                "active",
                "disabled"
            ],
        "the host's set-up: {facts:?} (expected the data partition /dev/vda4 on \
         /var/lib/sfera, 32768 hugepages on demand, hugetlbfs, tun, mgmtd active, \
         the installer not enabled)"
    );
    eprintln!("host set-up: {facts:?}");
    Ok(())
}

fn install_then_boot(firmware: Firmware) -> Result<()> {
    let iso = iso()?;
    let name = format!("{firmware:?}").to_lowercase();
    let dir = TestDir::new(&format!("appliance-{name}"))?;
    let disk = empty_disk(&dir)?;
    let answer = answer_disk(&dir, &answer("/dev/vda", "mode = \"dhcp\""))?;
    let port = mgmtd::free_port()?;

    let t0 = Instant::now();
    let mut m = Machine::start(
        &dir,
        &format!("{name}-install"),
        firmware,
        &Drives {
            disk: &disk,
            iso: Some(&iso),
            answer: Some(&answer),
        },
        port,
    )?;
    m.wait_line("sfera-install: answer file:", INSTALL_TIMEOUT)?;
    m.wait_line(
        "sfera-install: unattended install on /dev/vda",
        INSTALL_TIMEOUT,
    )?;
    m.wait_line("sfera-install: installation complete", INSTALL_TIMEOUT)?;
    m.wait_exit(Duration::from_secs(180))?;
    drop(m);
    let installed = t0.elapsed();
    let used = std::fs::metadata(&disk)?.blocks() * 512;
    eprintln!(
        "{name}: installed in {:.0} s; the disk holds {} MiB",
        installed.as_secs_f64(),
        used >> 20
    );

    let mut m = Machine::start(
        &dir,
        &format!("{name}-installed"),
        firmware,
        &Drives {
            disk: &disk,
            iso: None,
            answer: None,
        },
        port,
    )?;
    let banner = match m.wait_line("Web console:  https://", BOOT_TIMEOUT) {
        Ok(line) => line,
        Err(e) => {
            // Nothing on the serial console says why (systemd's status
            // goes to the screen): the installed system's journal does.
            drop(m);
            return Err(e.context(journal_from_disk(&disk, &dir)));
        }
    };
    ensure!(
        banner.contains("https://10.0.2.15:8443/"),
        "the banner does not show the DHCP address: {banner}"
    );
    m.wait_line(
        "Log in as admin with the password chosen at installation",
        BOOT_TIMEOUT,
    )?;
    wait_health(&mut m, port)?;
    check_login_page(port)?;
    let jar = dir.join("cookies.txt");
    ensure!(
        login(port, "wrong password", &jar)? == 401,
        "a wrong admin password logs in"
    );
    ensure!(
        login(port, PASSWORD, &jar)? == 200,
        "the answer file's admin password does not log in"
    );
    // First boot made the default datastore on the data partition (not the
    // 8 GiB root: the rest of the 20 GiB disk) and started the default
    // switch with its uplink on the management NIC.
    let stores = wait_until("the default datastore", BOOT_TIMEOUT, || {
        let v = api_json(port, "/api/v1/datastores", &jar)
            .map_err(|e| step_failed("GET /api/v1/datastores", &e))?;
        Ok(v["items"]
            .as_array()
            .and_then(|items| items.iter().find(|d| d["name"] == "local").cloned()))
    })?;
    eprintln!("{name}: datastore {stores}");
    ensure!(
        stores["path"] == "/var/lib/sfera/datastores/local",
        "the default datastore's path: {stores}"
    );
    let capacity = stores["capacity_bytes"].as_u64().unwrap_or(0);
    ensure!(
        (10 << 30..12 << 30).contains(&capacity),
        "the default datastore holds {capacity} bytes: not the data partition's 11.7 GiB"
    );
    let switches = api_json(port, "/api/v1/switches", &jar)?;
    eprintln!("{name}: switches {switches}");
    let uplinks = switches["items"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "vSwitch0"))
        .map(|s| s["uplinks"].clone())
        .with_context(|| format!("no vSwitch0: {switches}"))?;
    ensure!(
        uplinks
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["interface"] == "mgmt0")),
        "vSwitch0 has no uplink on the management NIC mgmt0: {uplinks}"
    );
    let groups = api_json(port, "/api/v1/port-groups", &jar)?;
    ensure!(
        groups["items"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "vm-network")),
        "no port group vm-network: {groups}"
    );
    let console_ready = m.started.elapsed();
    check_host_setup(&mut m)?;
    eprintln!(
        "{name}: install {:.0} s, then console and API {:.0} s after power on; total {:.0} s",
        installed.as_secs_f64(),
        console_ready.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn bios_install_then_boot() -> Result<()> {
    install_then_boot(Firmware::Bios)
}

#[test]
fn uefi_install_then_boot() -> Result<()> {
    install_then_boot(Firmware::Uefi)
}

/// A missing disk and a bad address: the installer lists both and stops;
/// the empty disk is still empty (not one block allocated in its file).
#[test]
fn bad_answer_writes_nothing() -> Result<()> {
    let iso = iso()?;
    let dir = TestDir::new("appliance-bad-answer")?;
    let disk = empty_disk(&dir)?;
    let answer = answer_disk(
        &dir,
        &answer(
            "/dev/sdz",
            "mode = \"static\"\naddress = \"300.1.2.3/24\"\ngateway = \"10.0.2.2\"",
        ),
    )?;
    let mut m = Machine::start(
        &dir,
        "bad-answer",
        Firmware::Bios,
        &Drives {
            disk: &disk,
            iso: Some(&iso),
            answer: Some(&answer),
        },
        mgmtd::free_port()?,
    )?;
    m.wait_line("is not valid", INSTALL_TIMEOUT)?;
    m.wait_line(
        "install.disk: /dev/sdz does not exist",
        Duration::from_secs(30),
    )?;
    m.wait_line(
        "network.address: \"300.1.2.3/24\" is not an address",
        Duration::from_secs(30),
    )?;
    m.wait_line("nothing was written to any disk", Duration::from_secs(30))?;
    drop(m);
    let blocks = std::fs::metadata(&disk)?.blocks();
    ensure!(
        blocks == 0,
        "the disk was written: {blocks} blocks allocated"
    );
    Ok(())
}

/// The live mode: chosen in the ISO's boot menu (key `l`), it runs Sfera
/// from the ISO and writes nothing to the machine's disk; its banner says
/// where the admin password is, and that password opens the console.
#[test]
fn live_boot_serves_the_console() -> Result<()> {
    let iso = iso()?;
    let dir = TestDir::new("appliance-live")?;
    let disk = empty_disk(&dir)?;
    let port = mgmtd::free_port()?;
    let mut m = Machine::start(
        &dir,
        "live",
        Firmware::Bios,
        &Drives {
            disk: &disk,
            iso: Some(&iso),
            answer: None,
        },
        port,
    )?;
    m.console
        .wait_for_text("Try Sfera live", BOOT_TIMEOUT)
        .context("the ISO's boot menu")?;
    m.console.send("l")?;
    m.wait_line("nothing is installed on this machine", BOOT_TIMEOUT)?;
    let banner = m.wait_line("Web console:  https://", BOOT_TIMEOUT)?;
    ensure!(
        banner.contains("https://10.0.2.15:8443/"),
        "the live banner does not show the DHCP address: {banner}"
    );
    m.wait_line("read /var/lib/sfera/admin-password", BOOT_TIMEOUT)?;
    wait_health(&mut m, port)?;
    check_login_page(port)?;
    // Root logs in on the console without a password and reads the
    // admin's, as the banner says.
    m.console.wait_for_text("login: ", BOOT_TIMEOUT)?;
    m.console.send_line("root")?;
    m.console.wait_for_text("# ", BOOT_TIMEOUT)?;
    let password = m
        .console
        .run_ok("cat /var/lib/sfera/admin-password", BOOT_TIMEOUT)?
        .trim()
        .to_owned();
    ensure!(!password.is_empty(), "the live admin password is empty");
    let jar = dir.join("cookies.txt");
    ensure!(
        login(port, &password, &jar)? == 200,
        "the password in /var/lib/sfera/admin-password does not log in"
    );
    let mounts = m
        .console
        .run_ok("findmnt -rn -o SOURCE,TARGET", BOOT_TIMEOUT)?;
    ensure!(
        !mounts.contains("/dev/vda"),
        "the live system mounted the machine's disk:\n{mounts}"
    );
    eprintln!(
        "live: console and API {:.0} s after power on",
        m.started.elapsed().as_secs_f64()
    );
    drop(m);
    let blocks = std::fs::metadata(&disk)?.blocks();
    ensure!(
        blocks == 0,
        "the live system wrote the disk: {blocks} blocks allocated"
    );
    Ok(())
}
