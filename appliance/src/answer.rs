//! The answer file (TOML) and its validation into a [`Plan`].
//!
//! Everything is checked before any disk is touched, and every problem is
//! reported at once, so an operator fixes the file in one go:
//!
//! ```toml
//! [install]
//! disk = "/dev/sda"          # a whole disk, or /dev/disk/by-id/...
//! hostname = "sfera-01"
//! wipe = false               # true: overwrite a disk that has partitions
//!
//! [network]
//! interface = "auto"         # "auto", a name (enp1s0) or a MAC address
//! mode = "static"            # "dhcp" or "static"
//! address = "192.0.2.10/24"  # static only
//! gateway = "192.0.2.1"      # static only, optional
//! dns = ["192.0.2.53"]       # static only, optional
//!
//! [admin]
//! password = "..."           # or password_hash = "$argon2id$..."
//! ```

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::inventory::{Disk, Inventory, Nic};
use crate::password;

/// The smallest disk the installer accepts: the root partition, the ESP
/// and some room for the default datastore.
pub const MIN_DISK_BYTES: u64 = 12 << 30;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub install: Install,
    pub network: Network,
    pub admin: Admin,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub disk: String,
    pub hostname: String,
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    Dhcp,
    Static,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "auto")]
    pub interface: String,
    pub mode: NetMode,
    pub address: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

fn auto() -> String {
    "auto".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub password: Option<String>,
    pub password_hash: Option<String>,
}

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How the management NIC gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    Dhcp,
    Static {
        address: Cidr,
        gateway: Option<IpAddr>,
        dns: Vec<IpAddr>,
    },
}

/// The administrator's password, as given.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminPassword {
    /// In clear: hashed by the installer, and also root's console password.
    Plain(String),
    /// An argon2 hash: the console's root login stays locked.
    Hash(String),
}

impl fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminPassword::Plain(_) => f.write_str("Plain(..)"),
            AdminPassword::Hash(h) => write!(f, "Hash({h})"),
        }
    }
}

/// A validated answer, resolved against this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub disk: Disk,
    pub wipe: bool,
    pub hostname: String,
    pub nic: Nic,
    pub net: NetConfig,
    pub admin: AdminPassword,
}

/// Everything wrong with an answer file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Parses an answer file; syntax errors, unknown keys and missing keys are
/// reported with their place in the file.
pub fn parse(text: &str) -> Result<Answer, Problems> {
    toml::from_str(text).map_err(|e| Problems(vec![e.to_string().trim_end().to_owned()]))
}

/// Checks an answer against the machine. Nothing is written here.
pub fn validate(answer: &Answer, inv: &Inventory) -> Result<Plan, Problems> {
    let mut problems = Vec::new();
    let disk = match check_disk(&answer.install.disk, answer.install.wipe, inv) {
        Ok(d) => Some(d.clone()),
        Err(e) => {
            problems.push(format!("install.disk: {} {e}", answer.install.disk));
            None
        }
    };
    if let Err(e) = check_hostname(&answer.install.hostname) {
        problems.push(format!("install.hostname: {e}"));
    }
    let nic = match pick_nic(&answer.network.interface, inv) {
        Ok(n) => Some(n.clone()),
        Err(e) => {
            problems.push(format!("network.interface: {e}"));
            None
        }
    };
    let net = check_network(&answer.network, &mut problems);
    let admin = match (&answer.admin.password, &answer.admin.password_hash) {
        (Some(p), None) => match password::check_strength(p) {
            Ok(()) => Some(AdminPassword::Plain(p.clone())),
            Err(e) => {
                problems.push(format!("admin.password: {e}"));
                None
            }
        },
        (None, Some(h)) => match password::check_hash(h) {
            Ok(()) => Some(AdminPassword::Hash(h.clone())),
            Err(e) => {
                problems.push(format!("admin.password_hash: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            problems.push("admin: give password or password_hash, not both".into());
            None
        }
        (None, None) => {
            problems.push("admin: password or password_hash is required".into());
            None
        }
    };
    match (disk, nic, net, admin) {
        (Some(disk), Some(nic), Some(net), Some(admin)) if problems.is_empty() => Ok(Plan {
            disk,
            wipe: answer.install.wipe,
            hostname: answer.install.hostname.clone(),
            nic,
            net,
            admin,
        }),
        _ => Err(Problems(problems)),
    }
}

/// The disk to install on, if the installer may use it.
pub fn check_disk<'a>(path: &str, wipe: bool, inv: &'a Inventory) -> Result<&'a Disk, String> {
    let disk = inv.resolve_disk(path)?;
    if let Some((_, why)) = inv.protected.iter().find(|(name, _)| *name == disk.name) {
        return Err(format!("cannot be used: {why}"));
    }
    if disk.read_only {
        return Err("is read-only".into());
    }
    if disk.size_bytes < MIN_DISK_BYTES {
        return Err(format!(
            "is too small: {}, the appliance needs {} at least",
            human_bytes(disk.size_bytes),
            human_bytes(MIN_DISK_BYTES)
        ));
    }
    if !disk.mounts.is_empty() {
        return Err(format!("is in use (mounted on {})", disk.mounts.join(", ")));
    }
    if !disk.partitions.is_empty() && !wipe {
        return Err(format!(
            "already has partitions ({}): set install.wipe = true to erase it",
            disk.partitions.join(", ")
        ));
    }
    Ok(disk)
}

/// A host name: labels of letters, digits and hyphens, 1 to 63 long, not
/// starting or ending with a hyphen; 253 characters in all.
pub fn check_hostname(name: &str) -> Result<(), String> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Err(format!(
            "{name:?} is not a host name (letters, digits and hyphens, dot-separated labels of 1 to 63)"
        ));
    }
    Ok(())
}

/// The management NIC: `auto` picks the first NIC with a link (by name),
/// else the first NIC; a name or a MAC address picks that NIC.
pub fn pick_nic<'a>(wanted: &str, inv: &'a Inventory) -> Result<&'a Nic, String> {
    if inv.nics.is_empty() {
        return Err("this machine has no network interface".into());
    }
    if wanted == "auto" {
        return Ok(inv.nics.iter().find(|n| n.carrier).unwrap_or(&inv.nics[0]));
    }
    inv.nics
        .iter()
        .find(|n| n.name == wanted || n.mac.eq_ignore_ascii_case(wanted))
        .ok_or_else(|| {
            let names: Vec<String> = inv
                .nics
                .iter()
                .map(|n| format!("{} ({})", n.name, n.mac))
                .collect();
            format!(
                "{wanted} is not a NIC of this machine: {}",
                names.join(", ")
            )
        })
}

fn check_network(n: &Network, problems: &mut Vec<String>) -> Option<NetConfig> {
    match n.mode {
        NetMode::Dhcp => {
            let extra: Vec<&str> = [
                ("address", n.address.is_some()),
                ("gateway", n.gateway.is_some()),
                ("dns", !n.dns.is_empty()),
            ]
            .iter()
            .filter(|(_, given)| *given)
            .map(|(k, _)| *k)
            .collect();
            if extra.is_empty() {
                Some(NetConfig::Dhcp)
            } else {
                problems.push(format!(
                    "network: {} only go with mode = \"static\"",
                    extra.join(", ")
                ));
                None
            }
        }
        NetMode::Static => {
            let before = problems.len();
            let address = match &n.address {
                None => {
                    problems.push("network.address is required with mode = \"static\"".into());
                    None
                }
                Some(a) => match parse_cidr(a) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        problems.push(format!("network.address: {e}"));
                        None
                    }
                },
            };
            let gateway = match &n.gateway {
                None => None,
                Some(g) => match check_gateway(g, address) {
                    Ok(ip) => Some(ip),
                    Err(e) => {
                        problems.push(format!("network.gateway: {e}"));
                        None
                    }
                },
            };
            let mut dns = Vec::new();
            for d in &n.dns {
                match d.parse::<IpAddr>() {
                    Ok(ip) if is_unicast(ip) => dns.push(ip),
                    _ => problems.push(format!("network.dns: {d:?} is not a unicast IP address")),
                }
            }
            match address {
                Some(address) if problems.len() == before => Some(NetConfig::Static {
                    address,
                    gateway,
                    dns,
                }),
                _ => None,
            }
        }
    }
}

fn is_unicast(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast())
        && ip != IpAddr::from([255, 255, 255, 255])
}

/// `ADDRESS/PREFIX` for a host: IPv4 or IPv6, a prefix that fits, and an
/// address that is neither its subnet's network nor its broadcast address.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let bad =
        || format!("{s:?} is not an address with a prefix length (192.0.2.10/24, 2001:db8::10/64)");
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > max {
        return Err(format!("{s:?}: the prefix length must be 1 to {max}"));
    }
    if !is_unicast(addr) {
        return Err(format!("{s:?} is not a host's unicast address"));
    }
    if let IpAddr::V4(v4) = addr
        && prefix <= 30
    {
        let host_bits = u32::from(v4) & (u32::MAX >> prefix);
        if host_bits == 0 || host_bits == u32::MAX >> prefix {
            return Err(format!(
                "{s:?} is the network or broadcast address of its subnet"
            ));
        }
    }
    Ok(Cidr { addr, prefix })
}

fn check_gateway(g: &str, address: Option<Cidr>) -> Result<IpAddr, String> {
    let ip: IpAddr = g
        .parse()
        .map_err(|_| format!("{g:?} is not an IP address"))?;
    if !is_unicast(ip) {
        return Err(format!("{g:?} is not a unicast address"));
    }
    let Some(address) = address else {
        return Ok(ip);
    };
    match (ip, address.addr) {
        (IpAddr::V4(gw), IpAddr::V4(a)) => {
            let mask = u32::MAX << (32 - u32::from(address.prefix));
            if u32::from(gw) & mask != u32::from(a) & mask {
                return Err(format!("{g} is not in the subnet of {address}"));
            }
            if gw == a {
                return Err(format!("{g} is the host's own address"));
            }
            Ok(ip)
        }
        (IpAddr::V6(_), IpAddr::V6(_)) => Ok(ip),
        _ => Err(format!("{g} is not of the same IP version as {address}")),
    }
}

/// `12.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a rounded figure for people
    let gib = n as f64 / f64::from(1u32 << 30);
    format!("{gib:.1} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        let disk = |name: &str, gib: u64| Disk {
            name: name.into(),
            size_bytes: gib << 30,
            model: "QEMU HARDDISK".into(),
            read_only: false,
            partitions: vec![],
            mounts: vec![],
        };
        let mut used = disk("vdb", 20);
        used.partitions = vec!["vdb1".into()];
        Inventory {
            disks: vec![disk("vda", 16), used, disk("vdc", 4), disk("sdb", 16)],
            nics: vec![
                Nic {
                    name: "ens3".into(),
                    mac: "52:54:00:12:34:56".into(),
                    carrier: false,
                },
                Nic {
                    name: "ens4".into(),
                    mac: "52:54:00:12:34:57".into(),
                    carrier: true,
                },
            ],
            protected: vec![("sdb".into(), "the installer was booted from it")],
        }
    }

    const GOOD: &str = r#"
[install]
disk = "/dev/vda"
hostname = "sfera-01"

[network]
mode = "static"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = ["192.0.2.53", "2001:db8::53"]

[admin]
password = "correct horse battery"
"#;

    #[test]
    fn a_good_answer_becomes_a_plan() {
        let plan = validate(&parse(GOOD).unwrap(), &inventory()).unwrap();
        assert_eq!(plan.disk.name, "vda");
        assert_eq!(plan.hostname, "sfera-01");
        assert_eq!(plan.nic.name, "ens4", "auto picks the NIC with a link");
        assert_eq!(
            plan.net,
            NetConfig::Static {
                address: parse_cidr("192.0.2.10/24").unwrap(),
                gateway: Some("192.0.2.1".parse().unwrap()),
                dns: vec![
                    "192.0.2.53".parse().unwrap(),
                    "2001:db8::53".parse().unwrap()
                ],
            }
        );
        assert_eq!(
            plan.admin,
            AdminPassword::Plain("correct horse battery".into())
        );
    }

    #[test]
    fn dhcp_and_a_hash() {
        let hash = password::hash("correct horse battery").unwrap();
        let text = format!(
            "[install]\ndisk = \"/dev/vda\"\nhostname = \"h\"\n[network]\ninterface = \"52:54:00:12:34:56\"\nmode = \"dhcp\"\n[admin]\npassword_hash = '{hash}'\n"
        );
        let plan = validate(&parse(&text).unwrap(), &inventory()).unwrap();
        assert_eq!(plan.nic.name, "ens3");
        assert_eq!(plan.net, NetConfig::Dhcp);
        assert_eq!(plan.admin, AdminPassword::Hash(hash));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replace("/dev/vda", "/dev/sdz")
            .replace("sfera-01", "-bad-")
            .replace("192.0.2.10/24", "300.1.2.3/24")
            .replace("192.0.2.53\"", "nowhere\"")
            .replace("correct horse battery", "short");
        let problems = validate(&parse(&text).unwrap(), &inventory())
            .unwrap_err()
            .0;
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("install.disk: /dev/sdz does not exist"));
        assert!(problems[1].starts_with("install.hostname"));
        assert!(problems[2].contains("\"300.1.2.3/24\" is not an address"));
        assert!(problems[3].contains("\"nowhere\" is not a unicast IP address"));
        assert!(problems[4].starts_with("admin.password"));
    }

    #[test]
    fn disks_the_installer_refuses() {
        let inv = inventory();
        let err = |p: &str, wipe: bool| check_disk(p, wipe, &inv).unwrap_err();
        assert!(err("/dev/vdb", false).contains("set install.wipe = true"));
        assert!(check_disk("/dev/vdb", true, &inv).is_ok());
        assert!(err("/dev/vdb1", true).contains("partition of /dev/vdb"));
        assert!(err("/dev/vdc", false).contains("too small: 4.0 GiB"));
        assert!(err("/dev/sdb", false).contains("booted from it"));
    }

    #[test]
    fn addresses() {
        assert!(parse_cidr("192.0.2.10/24").is_ok());
        assert!(parse_cidr("2001:db8::10/64").is_ok());
        assert!(parse_cidr("10.0.0.1/32").is_ok());
        for bad in [
            "192.0.2.10",
            "192.0.2.10/33",
            "192.0.2.10/0",
            "192.0.2.0/24",
            "192.0.2.255/24",
            "127.0.0.1/8",
            "224.0.0.1/4",
            "2001:db8::1/129",
            "a.b.c.d/24",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        let a = parse_cidr("192.0.2.10/24").ok();
        assert!(check_gateway("192.0.2.1", a).is_ok());
        assert!(
            check_gateway("198.51.100.1", a)
                .unwrap_err()
                .contains("not in the subnet")
        );
        assert!(
            check_gateway("192.0.2.10", a)
                .unwrap_err()
                .contains("own address")
        );
        assert!(
            check_gateway("2001:db8::1", a)
                .unwrap_err()
                .contains("IP version")
        );
    }

    #[test]
    fn network_modes_do_not_mix() {
        let text = GOOD.replace("\"static\"", "\"dhcp\"");
        let problems = validate(&parse(&text).unwrap(), &inventory())
            .unwrap_err()
            .0;
        assert_eq!(
            problems,
            vec!["network: address, gateway, dns only go with mode = \"static\"".to_owned()]
        );
        let text = GOOD.replace("address = \"192.0.2.10/24\"\n", "");
        let problems = validate(&parse(&text).unwrap(), &inventory())
            .unwrap_err()
            .0;
        assert_eq!(
            problems,
            vec!["network.address is required with mode = \"static\"".to_owned()]
        );
    }

    #[test]
    fn syntax_and_unknown_keys() {
        let e =
            parse("[install]\ndisk = \"/dev/vda\"\nhostname = \"h\"\ncolour = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = parse(&GOOD.replace("\"static\"", "\"dynamic\"")).unwrap_err();
        assert!(e.to_string().contains("dynamic"), "{e}");
        let e = parse("[install\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn hostnames() {
        for good in ["sfera", "sfera-01", "a.example.org", "x1"] {
            assert!(check_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a..b", &"a".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
