//! Installing a validated [`Plan`]: partitions, file systems, the root
//! file system copied from the boot medium's squashfs, the configuration,
//! and GRUB for BIOS and UEFI.
//!
//! The disk (GPT):
//!
//! | # | size | type | what |
//! |---|---|---|---|
//! | 1 | 1 MiB | BIOS boot (EF02) | GRUB's core image for BIOS |
//! | 2 | 256 MiB | EFI system (EF00) | `EFI/BOOT/BOOTX64.EFI` |
//! | 3 | 8 GiB | Linux root x86-64 (8304) | the appliance, ext4 |
//! | 4 | the rest | Linux (8300) | `/var/lib/sfera`: mgmtd's state and the default datastore, ext4 |

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::answer::{AdminPassword, Plan};
use crate::console::Say;
use crate::password;
use crate::render::{self, Uuids};

/// Where the new root file system is mounted during the install.
pub const TARGET: &str = "/run/sfera-install/target";
/// The root partition's size.
pub const ROOT_SIZE: &str = "+8G";

/// What the installer copies and how it ends.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root file system image (the live medium's squashfs).
    pub squashfs: PathBuf,
    pub version: String,
}

/// Installs `plan`. The disk is erased first: call this only after
/// [`crate::answer::validate`] accepted the answer.
pub fn install(plan: &Plan, o: &Options, say: &mut Say) -> Result<()> {
    let start = Instant::now();
    if !o.squashfs.is_file() {
        bail!(
            "The root file system image {} is missing (is this the Sfera ISO?)",
            o.squashfs.display()
        );
    }
    let disk = plan.disk.dev();
    let d = disk.to_string_lossy().into_owned();
    let uuids = Uuids {
        root: uuid_v4()?,
        data: uuid_v4()?,
        esp: {
            let id = uuid_v4()?.replace('-', "").to_uppercase();
            format!("{}-{}", &id[..4], &id[4..8])
        },
    };

    say.line(&format!(
        "[1/6] Partitioning {d} (GPT: BIOS boot, EFI system, root, data)"
    ));
    run("wipefs", &["--all", "--quiet", &d])?;
    run(
        "sgdisk",
        &[
            "--clear",
            "--new=1:0:+1M",
            "--typecode=1:EF02",
            "--change-name=1:BIOS boot",
            "--new=2:0:+256M",
            "--typecode=2:EF00",
            "--change-name=2:EFI system",
            &format!("--new=3:0:{ROOT_SIZE}"),
            "--typecode=3:8304",
            "--change-name=3:sfera-root",
            "--new=4:0:0",
            "--typecode=4:8300",
            "--change-name=4:sfera-data",
            &d,
        ],
    )?;
    run("partprobe", &[&d])?;
    let _ = run("udevadm", &["settle", "--timeout=30"]);
    let part = |n: u32| Path::new("/dev").join(plan.disk.partition_name(n));
    for n in 1..=4 {
        wait_for(&part(n), Duration::from_secs(30))?;
    }
    let (esp, root, data) = (part(2), part(3), part(4));

    say.line("[2/6] Making file systems");
    let esp_id = uuids.esp.replace('-', "");
    run_os(
        "mkfs.vfat",
        &["-F", "32", "-n", "SFERA-EFI", "-i", &esp_id],
        &esp,
    )?;
    run_os(
        "mkfs.ext4",
        &["-q", "-F", "-L", "sfera-root", "-U", &uuids.root],
        &root,
    )?;
    run_os(
        "mkfs.ext4",
        &["-q", "-F", "-m", "0", "-L", "sfera-data", "-U", &uuids.data],
        &data,
    )?;

    let target = Path::new(TARGET);
    std::fs::create_dir_all(target).with_context(|| format!("Cannot create {TARGET}"))?;
    mount(&root, target)?;
    let devices = Devices {
        disk: &disk,
        esp: &esp,
        data: &data,
    };
    let result = populate(plan, o, say, target, &devices, &uuids);
    let _ = run("sync", &[]);
    let unmounted = unmount_all(target);
    result?;
    unmounted?;
    say.line(&format!(
        "sfera-install: installation complete on {d} in {} s",
        start.elapsed().as_secs()
    ));
    Ok(())
}

/// The disk being installed and its partitions that `populate` mounts.
#[derive(Clone, Copy)]
struct Devices<'a> {
    disk: &'a Path,
    esp: &'a Path,
    data: &'a Path,
}

fn populate(
    plan: &Plan,
    o: &Options,
    say: &mut Say,
    target: &Path,
    devices: &Devices<'_>,
    uuids: &Uuids,
) -> Result<()> {
    let Devices { disk, esp, data } = *devices;
    say.line("[3/6] Copying the system (the root file system image)");
    let copy_start = Instant::now();
    let squashfs = o.squashfs.to_string_lossy();
    let t = target.to_string_lossy();
    run(
        "unsquashfs",
        &["-f", "-no-progress", "-quiet", "-d", &t, &squashfs],
    )?;
    say.line(&format!(
        "      copied in {} s",
        copy_start.elapsed().as_secs()
    ));

    say.line("[4/6] Writing the configuration");
    let esp_dir = target.join("boot/efi");
    std::fs::create_dir_all(&esp_dir)?;
    mount(esp, &esp_dir)?;
    let write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = target.join(rel.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text).with_context(|| format!("Cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("Cannot set the mode of {}", path.display()))
    };
    write("/etc/hostname", &render::hostname(plan), 0o644)?;
    write("/etc/hosts", &render::hosts(plan), 0o644)?;
    write("/etc/fstab", &render::fstab(uuids), 0o644)?;
    write(
        "/etc/systemd/network/10-sfera-mgmt.link",
        &render::link(plan),
        0o644,
    )?;
    write(
        "/etc/systemd/network/10-sfera-mgmt.network",
        &render::network(plan),
        0o644,
    )?;
    // The live system's catch-all DHCP is not the installed system's.
    let _ = std::fs::remove_file(target.join("etc/systemd/network/99-sfera-live.network"));
    // Nor is its installer: its condition would keep it from running, but
    // enabled it still pulls systemd-udev-settle into every boot (a wait
    // of up to three minutes for all of udev's events, which nothing on
    // the installed system needs).
    let _ = std::fs::remove_file(
        target.join("etc/systemd/system/multi-user.target.wants/sfera-installer.service"),
    );
    write("/etc/issue", &render::issue(plan), 0o644)?;
    write("/etc/sfera/mgmtd.env", &render::mgmtd_env(), 0o644)?;
    write(
        "/etc/sfera/install.toml",
        &render::install_record(plan, &o.version),
        0o644,
    )?;
    // A fresh identity on first boot.
    write("/etc/machine-id", "", 0o444)?;
    // The data partition: the default switch (vSwitch0, its uplink on the
    // management NIC) for sfera-vswitchd's first start; mgmtd makes the
    // datastore `local` there itself.
    let data_dir = target.join(render::DATA_MOUNT.trim_start_matches('/'));
    std::fs::create_dir_all(&data_dir)?;
    mount(data, &data_dir)?;
    write(render::VSWITCH_STATE, &render::vswitch_state(), 0o644)?;
    let hash = match &plan.admin {
        AdminPassword::Plain(p) => {
            let h = password::hash(p).map_err(anyhow::Error::msg)?;
            set_root_password(target, p, false)?;
            h
        }
        AdminPassword::Hash(h) => {
            // The live system's root has no password; the installed one's
            // is locked ("*" matches no password).
            set_root_password(target, "*", true)?;
            h.clone()
        }
    };
    write(render::ADMIN_HASH_FILE, &format!("{hash}\n"), 0o600)?;

    say.line("[5/6] Installing GRUB for BIOS and UEFI");
    let disk_s = disk.to_string_lossy();
    let boot = format!("--boot-directory={t}/boot");
    run(
        "grub-install",
        &[
            "--target=i386-pc",
            &boot,
            "--modules=part_gpt ext2",
            &disk_s,
        ],
    )?;
    // The removable path (EFI/BOOT/BOOTX64.EFI) boots on any UEFI firmware
    // without an NVRAM entry, which a fresh or replaced board does not have.
    run(
        "grub-install",
        &[
            "--target=x86_64-efi",
            &format!("--efi-directory={}", esp_dir.display()),
            &boot,
            "--removable",
            "--no-nvram",
        ],
    )?;
    write("/boot/grub/grub.cfg", &render::grub_cfg(uuids), 0o644)?;
    say.line("[6/6] Done; the disk holds Sfera");
    Ok(())
}

/// Root's console password: the administrator's, when given in clear, or
/// an already encrypted value (`*`: locked).
fn set_root_password(target: &Path, password: &str, encrypted: bool) -> Result<()> {
    use std::io::Write;
    let mut command = Command::new("chpasswd");
    if encrypted {
        command.arg("--encrypted");
    }
    let mut child = command
        .arg("--root")
        .arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("Cannot run chpasswd")?;
    child
        .stdin
        .take()
        .context("chpasswd has no stdin")?
        .write_all(format!("root:{password}\n").as_bytes())
        .context("Cannot give chpasswd the password")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "chpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn mount(dev: &Path, at: &Path) -> Result<()> {
    run("mount", &[&dev.to_string_lossy(), &at.to_string_lossy()]).map(|_| ())
}

fn unmount_all(target: &Path) -> Result<()> {
    let _ = run("umount", &[&target.join("boot/efi").to_string_lossy()]);
    let data = target.join(render::DATA_MOUNT.trim_start_matches('/'));
    let _ = run("umount", &[&data.to_string_lossy()]);
    run("umount", &[&target.to_string_lossy()]).map(|_| ())
}

fn wait_for(path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Runs a program; its output on success, its stderr in the error.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("Cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_os(program: &str, args: &[&str], last: &Path) -> Result<String> {
    let mut all: Vec<&str> = args.to_vec();
    let last = last.to_string_lossy();
    all.push(&last);
    run(program, &all)
}

/// A random (version 4) UUID.
fn uuid_v4() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("Cannot read /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, uuid_v4().unwrap());
    }
}
