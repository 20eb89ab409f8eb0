//! The files the installer writes on the installed system, as text: pure
//! functions of the [`Plan`] and the new file systems' UUIDs.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::answer::{AdminPassword, NetConfig, Plan};

/// Where the installed system's state lives: the data partition, mounted
/// as sfera-mgmtd's data directory, holds the database, the certificate and
/// the default datastore.
pub const DATA_MOUNT: &str = "/var/lib/sfera";
/// The administrator's password hash, read by sfera-mgmtd on first start.
pub const ADMIN_HASH_FILE: &str = "/etc/sfera/admin-password.hash";
/// The port of the web console and the API.
pub const CONSOLE_PORT: u16 = 8443;

/// The file systems' identities, chosen by the installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uuids {
    pub root: String,
    pub data: String,
    /// The ESP's FAT volume ID, `ABCD-EF01`.
    pub esp: String,
}

pub fn hostname(plan: &Plan) -> String {
    format!("{}\n", plan.hostname)
}

pub fn hosts(plan: &Plan) -> String {
    let short = plan.hostname.split('.').next().unwrap_or(&plan.hostname);
    let names = if short == plan.hostname {
        plan.hostname.clone()
    } else {
        format!("{} {short}", plan.hostname)
    };
    format!("127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

pub fn fstab(u: &Uuids) -> String {
    format!(
        "# Written by sfera-install.\n\
         UUID={root}\t/\text4\terrors=remount-ro\t0 1\n\
         UUID={esp}\t/boot/efi\tvfat\tumask=0077\t0 2\n\
         UUID={data}\t{DATA_MOUNT}\text4\tdefaults\t0 2\n",
        root = u.root,
        esp = u.esp,
        data = u.data,
    )
}

/// The management NIC's name on the installed system, whatever its slot:
/// the banner and the network file name it (as ESXi names vmk0).
pub const MGMT_NIC: &str = "mgmt0";

/// udev's naming of the management NIC, by MAC address: the name it had
/// under the installer can change when a disk or a card is removed.
pub fn link(plan: &Plan) -> String {
    format!(
        "# The management NIC, written by sfera-install.\n[Match]\nMACAddress={}\n\n[Link]\nName={MGMT_NIC}\n",
        plan.nic.mac
    )
}

/// systemd-networkd's file for the management NIC.
pub fn network(plan: &Plan) -> String {
    let mut s = format!(
        "# The management network, written by sfera-install.\n[Match]\nMACAddress={}\n\n[Network]\n",
        plan.nic.mac
    );
    match &plan.net {
        NetConfig::Dhcp => s.push_str("DHCP=yes\n\n[DHCPv4]\nClientIdentifier=mac\n"),
        NetConfig::Static {
            address,
            gateway,
            dns,
        } => {
            let _ = writeln!(s, "Address={address}");
            if let Some(g) = gateway {
                let _ = writeln!(s, "Gateway={g}");
            }
            for d in dns {
                let _ = writeln!(s, "DNS={d}");
            }
        }
    }
    s
}

/// sfera-mgmtd's settings: the administrator's password hash on first start.
pub fn mgmtd_env() -> String {
    format!(
        "# Written by sfera-install; read by sfera-mgmtd.service.\n\
         SFERA_MGMTD_ARGS=--admin-password-hash-file {ADMIN_HASH_FILE}\n"
    )
}

/// The console banner (agetty's `/etc/issue`): where the web console is and
/// which password opens it.
pub fn issue(plan: &Plan) -> String {
    let url_host = match &plan.net {
        NetConfig::Static { address, .. } => match address.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        },
        // agetty puts the NIC's current IPv4 address in place of \4.
        NetConfig::Dhcp => format!("\\4{{{MGMT_NIC}}}"),
    };
    let password = match plan.admin {
        AdminPassword::Plain(_) => {
            "Log in as admin with the password chosen at installation\n  (also root's password on this console)."
        }
        AdminPassword::Hash(_) => {
            "Log in as admin with the password whose hash the answer file gave\n  (in /etc/sfera/admin-password.hash; root's console login is locked)."
        }
    };
    format!(
        "\nSfera hypervisor \\n  (Debian \\r)\n\n  Web console:  https://{url_host}:{CONSOLE_PORT}/\n  {password}\n\n"
    )
}

/// GRUB's configuration on the installed disk, for both firmware types.
/// The kernel and initramfs are Debian's `/vmlinuz` and `/initrd.img`
/// links, which follow kernel upgrades.
pub fn grub_cfg(u: &Uuids) -> String {
    format!(
        "# Written by sfera-install.\n\
         set default=0\n\
         set timeout=3\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         insmod part_gpt\n\
         insmod ext2\n\
         search --no-floppy --fs-uuid --set=root {root}\n\
         menuentry \"Sfera\" {{\n\
         \tlinux /vmlinuz root=UUID={root} ro console=ttyS0,115200 console=tty0\n\
         \tinitrd /initrd.img\n\
         }}\n",
        root = u.root
    )
}

/// Where sfera-vswitchd keeps its configuration under the data partition
/// (sfera-mgmtd runs it with `--data-dir /var/lib/sfera/vswitchd`).
pub const VSWITCH_STATE: &str = "/var/lib/sfera/vswitchd/vswitch-state.json";
/// The default switch and its uplink, as ESXi's vSwitch0 on vmnic0.
pub const DEFAULT_SWITCH: &str = "vSwitch0";
pub const DEFAULT_UPLINK: &str = "vmnic0";
/// The port group sfera-mgmtd would otherwise make on first start.
pub const DEFAULT_PORT_GROUP: &str = "vm-network";

/// sfera-vswitchd's first configuration: the default switch with its
/// uplink on the management NIC (AF_PACKET: the host keeps its own address
/// on the NIC and VMs on `vm-network` reach the same network), and the
/// port group `vm-network` on it.
pub fn vswitch_state() -> String {
    format!(
        "{{\"switches\":[{{\"name\":\"{DEFAULT_SWITCH}\",\"uplinks\":[\
         {{\"name\":\"{DEFAULT_UPLINK}\",\"type\":\"af_packet\",\"interface\":\"{MGMT_NIC}\"}}]}}],\
         \"port_groups\":[{{\"name\":\"{DEFAULT_PORT_GROUP}\",\"switch\":\"{DEFAULT_SWITCH}\",\"vlan\":{{\"mode\":\"none\"}}}}],\
         \"ports\":[]}}\n"
    )
}

/// What was installed, for the record (no password).
pub fn install_record(plan: &Plan, version: &str) -> String {
    let net = match &plan.net {
        NetConfig::Dhcp => "mode = \"dhcp\"\n".to_owned(),
        NetConfig::Static {
            address,
            gateway,
            dns,
        } => {
            let mut s = format!("mode = \"static\"\naddress = \"{address}\"\n");
            if let Some(g) = gateway {
                let _ = writeln!(s, "gateway = \"{g}\"");
            }
            let dns: Vec<String> = dns.iter().map(|d| format!("\"{d}\"")).collect();
            let _ = writeln!(s, "dns = [{}]", dns.join(", "));
            s
        }
    };
    format!(
        "# How this machine was installed (sfera-install {version}).\n\
         [install]\ndisk = \"/dev/{disk}\"\nhostname = \"{host}\"\n\n\
         [network]\ninterface = \"{nic}\"\n{net}",
        disk = plan.disk.name,
        host = plan.hostname,
        nic = plan.nic.name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::parse_cidr;
    use crate::inventory::{Disk, Nic};

    fn plan(net: NetConfig) -> Plan {
        Plan {
            disk: Disk {
                name: "vda".into(),
                size_bytes: 16 << 30,
                model: String::new(),
                read_only: false,
                partitions: vec![],
                mounts: vec![],
            },
            wipe: false,
            hostname: "sfera-01.example.org".into(),
            nic: Nic {
                name: "ens3".into(),
                mac: "52:54:00:12:34:56".into(),
                carrier: true,
            },
            net,
            admin: AdminPassword::Plain("x".into()),
        }
    }

    fn uuids() -> Uuids {
        Uuids {
            root: "11111111-2222-4333-8444-555555555555".into(),
            data: "66666666-7777-4888-8999-aaaaaaaaaaaa".into(),
            esp: "ABCD-EF01".into(),
        }
    }

    #[test]
    fn network_files() {
        let dhcp = network(&plan(NetConfig::Dhcp));
        assert!(dhcp.contains("MACAddress=52:54:00:12:34:56\n"), "{dhcp}");
        assert!(dhcp.contains("DHCP=yes\n"), "{dhcp}");
        let fixed = network(&plan(NetConfig::Static {
            address: parse_cidr("192.0.2.10/24").unwrap(),
            gateway: Some("192.0.2.1".parse().unwrap()),
            dns: vec!["192.0.2.53".parse().unwrap()],
        }));
        assert!(
            fixed
                .ends_with("[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n"),
            "{fixed}"
        );
    }

    #[test]
    fn banner_names_the_console_url() {
        let dhcp = issue(&plan(NetConfig::Dhcp));
        assert!(dhcp.contains("https://\\4{mgmt0}:8443/"), "{dhcp}");
        assert!(
            link(&plan(NetConfig::Dhcp))
                .ends_with("MACAddress=52:54:00:12:34:56\n\n[Link]\nName=mgmt0\n")
        );
        let v6 = issue(&plan(NetConfig::Static {
            address: parse_cidr("2001:db8::10/64").unwrap(),
            gateway: None,
            dns: vec![],
        }));
        assert!(v6.contains("https://[2001:db8::10]:8443/"), "{v6}");
    }

    #[test]
    fn boot_files_name_the_file_systems() {
        let f = fstab(&uuids());
        assert!(f.contains("UUID=11111111-2222-4333-8444-555555555555\t/\text4"));
        assert!(f.contains("UUID=ABCD-EF01\t/boot/efi\tvfat"));
        assert!(f.contains("UUID=66666666-7777-4888-8999-aaaaaaaaaaaa\t/var/lib/sfera\text4"));
        let g = grub_cfg(&uuids());
        assert!(g.contains("search --no-floppy --fs-uuid --set=root 11111111-"));
        assert!(g.contains("linux /vmlinuz root=UUID=11111111-2222-4333-8444-555555555555 ro"));
        assert_eq!(
            hosts(&plan(NetConfig::Dhcp)).lines().nth(1),
            Some("127.0.1.1\tsfera-01.example.org sfera-01")
        );
    }

    #[test]
    fn the_switch_state_is_one_sfera_vswitchd_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vswitch-state.json");
        std::fs::write(&path, vswitch_state()).unwrap();
        let config = vswitch::persist::read_config(&path).unwrap();
        let switch = config.switch(DEFAULT_SWITCH).expect("vSwitch0");
        assert_eq!(switch.uplinks.len(), 1);
        assert_eq!(switch.uplinks[0].interface, MGMT_NIC);
        assert_eq!(config.port_groups[0].name, DEFAULT_PORT_GROUP);
        assert_eq!(config.port_groups[0].switch, DEFAULT_SWITCH);
    }

    #[test]
    fn the_record_holds_no_password() {
        let r = install_record(&plan(NetConfig::Dhcp), "0.1.0");
        assert!(!r.contains("password"), "{r}");
        assert!(r.contains("disk = \"/dev/vda\""), "{r}");
    }
}
