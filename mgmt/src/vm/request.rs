//! What a client may ask for a new VM, checked field by field before
//! anything is made, and the templates a VM can start from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::db::Boot;
use crate::driver::Driver;
use crate::host_paths::Roots;

/// Body of `POST /api/v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VmCreate)]
pub struct CreateVm {
    #[schema(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub name: String,
    /// Start from a template (its boot source, vCPUs and memory, unless
    /// given here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::template)]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::new_vcpus)]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::new_memory)]
    pub memory_mib: Option<u32>,
    /// Required without a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::boot_or_null)]
    pub boot: Option<Boot>,
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::new_disks)]
    pub disks: Vec<DiskRequest>,
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::new_nics)]
    pub nics: Vec<NicRequest>,
    /// Power the VM on once created.
    #[serde(default)]
    pub power_on: bool,
    /// The hypervisor driver; default (or null): sfera-vmm for a kernel
    /// boot on hardware virtualization, QEMU otherwise. sfera-vmm needs
    /// /dev/kvm
    // Written as `null` when not chosen, as the sfera CLI always sent it.
    #[serde(default)]
    pub driver: Option<Driver>,
}

/// A disk: a new thin volume of `size_bytes`, or an existing `volume`
/// of the datastore (an imported image, say) that no other VM has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskRequest {
    #[schema(schema_with = crate::api::schema::object_name)]
    pub datastore: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::disk_size_or_null)]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::schema::volume_or_null)]
    pub volume: Option<String>,
}

/// A new NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    #[schema(schema_with = crate::api::schema::object_name)]
    pub port_group: String,
    /// Unicast; generated (52:54:00:xx:xx:xx) when left out or null
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    pub mac: Option<String>,
}

/// A checked VM, ready to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub boot: Boot,
    pub disks: Vec<DiskRequest>,
    pub nics: Vec<(String, String)>,
    pub power_on: bool,
    /// Asked for; checked against the host when the VM is reserved.
    pub driver: Option<Driver>,
}

/// A template as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The files it boots from are there.
    pub available: bool,
    pub kernel: String,
    pub initrd: String,
}

pub const TINY_LINUX: &str = "tiny-linux";
pub const MAX_DISKS: usize = 8;
pub const MAX_NICS: usize = 8;
pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEMORY_MIB: u32 = 128;
pub const MIN_DISK_BYTES: u64 = 1 << 20;
pub const MAX_DISK_BYTES: u64 = 64 << 40;

/// The templates: Tiny Linux, the project's test guest (Debian's cloud
/// kernel and a busybox initramfs, built by `make guest-image`).
pub fn templates(guest_dir: &Path) -> Vec<Template> {
    let kernel = guest_dir.join("vmlinuz");
    let initrd = guest_dir.join("initrd.img");
    vec![Template {
        name: TINY_LINUX.to_owned(),
        description: "Tiny Linux: Debian's cloud kernel and a busybox initramfs with fio and iperf3; prints SFERA-GUEST-READY on its serial console when up".to_owned(),
        vcpus: 1,
        memory_mib: 512,
        available: kernel.is_file() && initrd.is_file(),
        kernel: kernel.display().to_string(),
        initrd: initrd.display().to_string(),
    }]
}

/// Checks a VM name: it becomes a folder on datastores and a hostname.
pub fn check_vm_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "name {name:?} must be 1 to 63 letters, digits or '-', not starting or ending with '-'"
        )))
    }
}

/// Parses and checks a MAC address: six hex octets, unicast, not zero.
pub fn check_mac(mac: &str) -> Result<String, Error> {
    let bad = || {
        Error::Invalid(format!(
            "MAC address {mac:?} must be six hex octets like 52:54:00:12:34:56"
        ))
    };
    let octets: Vec<u8> = mac
        .split(':')
        .map(|o| {
            if o.len() == 2 {
                u8::from_str_radix(o, 16).map_err(|_| bad())
            } else {
                Err(bad())
            }
        })
        .collect::<Result<_, _>>()?;
    if octets.len() != 6 {
        return Err(bad());
    }
    if octets[0] & 1 == 1 || octets.iter().all(|o| *o == 0) {
        return Err(Error::Invalid(format!(
            "MAC address {mac} is not a unicast address"
        )));
    }
    Ok(octets
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A random locally administered MAC in QEMU's 52:54:00 range.
pub fn random_mac() -> Result<String, Error> {
    let id = crate::auth::new_secret().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(format!(
        "52:54:00:{}:{}:{}",
        &id[0..2],
        &id[2..4],
        &id[4..6]
    ))
}

/// Checks a boot source: its host files (an ISO, a kernel, an initrd) are
/// regular files inside `dirs` (the import directories, datastore roots
/// and the Tiny Linux image's directory: a kernel or initrd is loaded into
/// guest memory, so `/etc/shadow` as an initrd would hand a host secret to
/// the guest), its command line is one line, a firmware boot from disk has
/// a disk. The boot source to keep: its paths resolved (symlinks followed).
pub fn check_boot(boot: &Boot, has_disks: bool, dirs: &Roots) -> Result<Boot, Error> {
    match boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let kernel = dirs.file("boot.kernel", kernel)?;
            let initrd = match initrd {
                Some(i) => Some(dirs.file("boot.initrd", i)?),
                None => None,
            };
            if cmdline.chars().count() > 2048 || cmdline.contains('\n') {
                return Err(Error::Invalid(
                    "boot.cmdline must be one line of at most 2048 characters".into(),
                ));
            }
            return Ok(Boot::Kernel {
                kernel: kernel.display().to_string(),
                initrd: initrd.map(|i| i.display().to_string()),
                cmdline: cmdline.clone(),
            });
        }
        Boot::Disk if !has_disks => {
            return Err(Error::Invalid(
                "boot.kind disk boots the first disk: give disks[0]".into(),
            ));
        }
        Boot::Disk => {}
        Boot::Iso { iso } => {
            let iso = dirs.file("boot.iso", iso)?;
            return Ok(Boot::Iso {
                iso: iso.display().to_string(),
            });
        }
    }
    Ok(boot.clone())
}

pub fn check_vcpus(vcpus: u32) -> Result<(), Error> {
    if (1..=MAX_VCPUS).contains(&vcpus) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("vcpus must be 1 to {MAX_VCPUS}")))
    }
}

pub fn check_memory(memory_mib: u32, host_memory_mib: u64) -> Result<(), Error> {
    let max_mem = u32::try_from(host_memory_mib)
        .unwrap_or(u32::MAX)
        .max(MIN_MEMORY_MIB);
    if (MIN_MEMORY_MIB..=max_mem).contains(&memory_mib) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "memory_mib must be {MIN_MEMORY_MIB} to {max_mem} (the host's memory)"
        )))
    }
}

/// Checks `list[i]`, a disk request; `before` are the list's earlier ones.
pub fn check_disk(
    list: &str,
    i: usize,
    d: &DiskRequest,
    before: &[DiskRequest],
) -> Result<(), Error> {
    check_disk_datastore(list, i, &d.datastore)?;
    match (d.size_bytes, &d.volume) {
        (Some(size), None) => {
            if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&size) || size % 512 != 0 {
                return Err(Error::Invalid(format!(
                    "{list}[{i}].size_bytes must be a multiple of 512 from 1 MiB to 64 TiB"
                )));
            }
        }
        (None, Some(v)) => {
            control::names::check_volume("volume", v)
                .map_err(|e| Error::Invalid(format!("{list}[{i}].{e}")))?;
            if before
                .iter()
                .any(|x| x.datastore == d.datastore && x.volume.as_ref() == Some(v))
            {
                return Err(Error::Invalid(format!(
                    "{list}[{i}]: volume {v} is given twice"
                )));
            }
        }
        _ => {
            return Err(Error::Invalid(format!(
                "{list}[{i}]: give size_bytes for a new disk or volume for an existing one (one of them)"
            )));
        }
    }
    Ok(())
}

fn check_disk_datastore(list: &str, i: usize, ds: &str) -> Result<(), Error> {
    if ds.is_empty() {
        return Err(Error::Invalid(format!("{list}[{i}].datastore is empty")));
    }
    Ok(())
}

/// Checks `list[i]`, a NIC request, against the MACs already taken;
/// returns its MAC (generated when not given).
pub fn check_nic<'a>(
    list: &str,
    i: usize,
    n: &NicRequest,
    mut taken: impl Iterator<Item = &'a str>,
) -> Result<String, Error> {
    if n.port_group.is_empty() {
        return Err(Error::Invalid(format!("{list}[{i}].port_group is empty")));
    }
    let mac = match &n.mac {
        Some(m) => check_mac(m).map_err(|e| Error::Invalid(format!("{list}[{i}]: {e}")))?,
        None => random_mac()?,
    };
    if taken.any(|m| m == mac) {
        return Err(Error::Invalid(format!(
            "{list}[{i}]: MAC {mac} is used twice"
        )));
    }
    Ok(mac)
}

impl CreateVm {
    /// Checks every field and fills in what the template gives; an ISO
    /// or kernel must be inside `boot_dirs` (or, for the templates' own
    /// files, `guest_dir`).
    pub fn plan(
        self,
        guest_dir: &Path,
        boot_dirs: &Roots,
        host_memory_mib: u64,
    ) -> Result<VmPlan, Error> {
        check_vm_name(&self.name)?;
        let (mut vcpus, mut memory_mib, mut boot) = (1, 512, None);
        if let Some(t) = &self.template {
            let all = templates(guest_dir);
            let Some(tpl) = all.iter().find(|x| &x.name == t) else {
                return Err(Error::Invalid(format!(
                    "template {t:?} does not exist (templates: {})",
                    all.iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if !tpl.available {
                return Err(Error::Invalid(format!(
                    "template {t:?} needs {} and {} (make guest-image builds them)",
                    tpl.kernel, tpl.initrd
                )));
            }
            vcpus = tpl.vcpus;
            memory_mib = tpl.memory_mib;
            boot = Some(Boot::Kernel {
                kernel: tpl.kernel.clone(),
                initrd: Some(tpl.initrd.clone()),
                cmdline: format!("console=ttyS0 panic=-1 quiet sfera.hostname={}", self.name),
            });
        }
        if let Some(b) = self.boot {
            boot = Some(b);
        }
        let Some(boot) = boot else {
            return Err(Error::Invalid("boot is required without a template".into()));
        };
        // The template's own files are in the guest directory.
        let guest = Roots::new(&[guest_dir.to_path_buf()]).unwrap_or_default();
        let boot = check_boot(&boot, !self.disks.is_empty(), &boot_dirs.union(&guest))?;
        let vcpus = self.vcpus.unwrap_or(vcpus);
        check_vcpus(vcpus)?;
        let memory_mib = self.memory_mib.unwrap_or(memory_mib);
        check_memory(memory_mib, host_memory_mib)?;
        if self.disks.len() > MAX_DISKS {
            return Err(Error::Invalid(format!("at most {MAX_DISKS} disks")));
        }
        for (i, d) in self.disks.iter().enumerate() {
            check_disk("disks", i, d, &self.disks[..i])?;
        }
        if self.nics.len() > MAX_NICS {
            return Err(Error::Invalid(format!("at most {MAX_NICS} NICs")));
        }
        let mut nics = Vec::new();
        for (i, n) in self.nics.iter().enumerate() {
            let mac = check_nic(
                "nics",
                i,
                n,
                nics.iter().map(|(_, m): &(String, String)| m.as_str()),
            )?;
            nics.push((n.port_group.clone(), mac));
        }
        Ok(VmPlan {
            name: self.name,
            vcpus,
            memory_mib,
            boot,
            disks: self.disks,
            nics,
            power_on: self.power_on,
            driver: self.driver,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ApiError;

    fn guest() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vmlinuz"), "k").unwrap();
        std::fs::write(d.path().join("initrd.img"), "i").unwrap();
        d
    }

    fn parse(json: &str) -> CreateVm {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_template_vm_is_planned() {
        let g = guest();
        let plan = parse(
            r#"{"name":"web-1","template":"tiny-linux","disks":[{"datastore":"local","size_bytes":1073741824}],
                "nics":[{"port_group":"vm-network"},{"port_group":"vm-network","mac":"52:54:00:AA:bb:01"}]}"#,
        )
        .plan(g.path(), &Roots::default(), 4096)
        .unwrap();
        assert_eq!((plan.vcpus, plan.memory_mib), (1, 512));
        let Boot::Kernel {
            cmdline, initrd, ..
        } = &plan.boot
        else {
            panic!("not a kernel boot: {:?}", plan.boot)
        };
        assert!(cmdline.contains("sfera.hostname=web-1"));
        assert!(initrd.is_some());
        assert_eq!(plan.nics[1].1, "52:54:00:aa:bb:01");
        assert!(plan.nics[0].1.starts_with("52:54:00:"));
    }

    #[test]
    fn bad_fields_are_refused_with_their_name() {
        let g = guest();
        let cases = [
            (r#"{"name":"bad name","template":"tiny-linux"}"#, "name"),
            (r#"{"name":"a","template":"nope"}"#, "template"),
            (r#"{"name":"a"}"#, "boot"),
            (r#"{"name":"a","template":"tiny-linux","vcpus":0}"#, "vcpus"),
            (
                r#"{"name":"a","template":"tiny-linux","memory_mib":64}"#,
                "memory_mib",
            ),
            (
                r#"{"name":"a","template":"tiny-linux","memory_mib":9000}"#,
                "memory_mib",
            ),
            (
                r#"{"name":"a","template":"tiny-linux","disks":[{"datastore":"l","size_bytes":1000}]}"#,
                "size_bytes",
            ),
            (
                r#"{"name":"a","template":"tiny-linux","nics":[{"port_group":"p","mac":"01:00:00:00:00:01"}]}"#,
                "unicast",
            ),
            (
                r#"{"name":"a","template":"tiny-linux","nics":[{"port_group":"p","mac":"zz"}]}"#,
                "hex",
            ),
            (
                r#"{"name":"a","boot":{"kind":"kernel","kernel":"relative"}}"#,
                "absolute",
            ),
            (
                r#"{"name":"a","boot":{"kind":"kernel","kernel":"/no/such/kernel"}}"#,
                "not a file on the host",
            ),
            (r#"{"name":"a","boot":{"kind":"disk"}}"#, "disks[0]"),
            (
                r#"{"name":"a","boot":{"kind":"iso","iso":"x.iso"}}"#,
                "boot.iso",
            ),
            (
                r#"{"name":"a","boot":{"kind":"iso","iso":"/no/such.iso"}}"#,
                "not a file",
            ),
            (
                r#"{"name":"a","boot":{"kind":"disk"},"disks":[{"datastore":"l"}]}"#,
                "one of them",
            ),
            (
                r#"{"name":"a","boot":{"kind":"disk"},"disks":[{"datastore":"l","volume":"v","size_bytes":1048576}]}"#,
                "one of them",
            ),
            (
                r#"{"name":"a","boot":{"kind":"disk"},"disks":[{"datastore":"l","volume":"a/b/c"}]}"#,
                "disks[0].volume",
            ),
            (
                r#"{"name":"a","boot":{"kind":"disk"},"disks":[{"datastore":"l","volume":"v"},{"datastore":"l","volume":"v"}]}"#,
                "twice",
            ),
        ];
        for (json, word) in cases {
            // Invalid or a path not allowed: the client's, either way.
            let e = ApiError::from(
                parse(json)
                    .plan(g.path(), &Roots::default(), 4096)
                    .unwrap_err(),
            );
            assert_eq!(e.status, 400, "{json}");
            assert!(e.message.contains(word), "{json}: {}", e.message);
        }
        assert!(serde_json::from_str::<CreateVm>(r#"{"name":"a","extra":1}"#).is_err());
        let e = serde_json::from_str::<CreateVm>(r#"{"name":"a","driver":"xen"}"#).unwrap_err();
        assert!(e.to_string().contains("sfera-vmm"), "{e}");
        let plan = parse(r#"{"name":"a","template":"tiny-linux","driver":"sfera-vmm"}"#)
            .plan(g.path(), &Roots::default(), 4096)
            .unwrap();
        assert_eq!(plan.driver, Some(Driver::SferaVmm));
    }

    #[test]
    fn a_missing_image_makes_the_template_unavailable() {
        let empty = tempfile::tempdir().unwrap();
        assert!(!templates(empty.path())[0].available);
        let e = parse(r#"{"name":"a","template":"tiny-linux"}"#)
            .plan(empty.path(), &Roots::default(), 4096)
            .unwrap_err();
        assert!(e.to_string().contains("make guest-image"), "{e}");
    }

    #[test]
    fn an_iso_boots_only_from_an_import_directory() {
        let g = guest();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::write(base.join("installer.iso"), "iso").unwrap();
        std::os::unix::fs::symlink("installer.iso", base.join("link.iso")).unwrap();
        let roots = Roots::new(std::slice::from_ref(&base)).unwrap();
        let iso = |path: &Path| {
            parse(&format!(
                r#"{{"name":"a","boot":{{"kind":"iso","iso":"{}"}}}}"#,
                path.display()
            ))
            .plan(g.path(), &roots, 4096)
        };
        let plan = iso(&base.join("link.iso")).unwrap();
        assert_eq!(
            plan.boot,
            Boot::Iso {
                iso: base.join("installer.iso").display().to_string()
            }
        );
        let e = iso(Path::new("/etc/hostname")).unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
        assert!(e.to_string().contains("boot.iso"), "{e}");
    }

    #[test]
    fn a_kernel_and_initrd_come_only_from_the_boot_directories() {
        let g = guest();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::write(base.join("vmlinuz"), "k").unwrap();
        std::fs::write(base.join("initrd"), "i").unwrap();
        let roots = Roots::new(std::slice::from_ref(&base)).unwrap();
        let boot = |kernel: &Path, initrd: &Path| {
            parse(&format!(
                r#"{{"name":"a","boot":{{"kind":"kernel","kernel":"{}","initrd":"{}"}}}}"#,
                kernel.display(),
                initrd.display()
            ))
            .plan(g.path(), &roots, 4096)
        };
        boot(&base.join("vmlinuz"), &base.join("initrd")).unwrap();
        // The template's own files, from the guest directory.
        boot(&g.path().join("vmlinuz"), &g.path().join("initrd.img")).unwrap();
        // A host secret as the initrd would be loaded into guest memory.
        let e = boot(&base.join("vmlinuz"), Path::new("/etc/shadow")).unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
        assert!(e.to_string().contains("boot.initrd"), "{e}");
        let e = boot(Path::new("/etc/hostname"), &base.join("initrd")).unwrap_err();
        assert!(e.to_string().contains("boot.kernel"), "{e}");
    }
}
