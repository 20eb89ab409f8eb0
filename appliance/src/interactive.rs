//! The interactive installer: the answer file's questions asked on the
//! console, each answer checked as it is given, then a summary to confirm.
//! Plain prompts rather than a dialog library, so it works the same on a
//! screen and on a serial console.

use std::io::{BufRead, Write};

use anyhow::{Result, bail};

use crate::answer::{
    self, Admin, Answer, Install, NetMode, Network, Plan, check_hostname, human_bytes, parse_cidr,
};
use crate::inventory::{Disk, Inventory};
use crate::password;

/// A console to ask questions on.
pub struct Prompter<R, W> {
    input: R,
    output: W,
    /// Whether typed passwords can be hidden (a terminal).
    tty: bool,
}

impl<R, W> std::fmt::Debug for Prompter<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompter").field("tty", &self.tty).finish()
    }
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    pub fn new(input: R, output: W, tty: bool) -> Self {
        Prompter { input, output, tty }
    }

    fn say(&mut self, text: &str) -> Result<()> {
        writeln!(self.output, "{text}")?;
        Ok(self.output.flush()?)
    }

    fn ask(&mut self, question: &str, default: Option<&str>) -> Result<String> {
        match default {
            Some(d) => write!(self.output, "{question} [{d}]: ")?,
            None => write!(self.output, "{question}: ")?,
        }
        self.output.flush()?;
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            bail!("The console closed: installation cancelled");
        }
        let line = line.trim().to_owned();
        Ok(match (line.is_empty(), default) {
            (true, Some(d)) => d.to_owned(),
            _ => line,
        })
    }

    fn ask_secret(&mut self, question: &str) -> Result<String> {
        let _echo = self.tty.then(EchoOff::new);
        let answer = self.ask(question, None);
        if self.tty {
            writeln!(self.output)?;
        }
        answer
    }

    /// Asks until `check` accepts the answer.
    fn ask_valid<T>(
        &mut self,
        question: &str,
        default: Option<&str>,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T> {
        loop {
            let a = self.ask(question, default)?;
            match check(&a) {
                Ok(v) => return Ok(v),
                Err(e) => self.say(&format!("  {e}"))?,
            }
        }
    }

    /// Asks every question; returns the plan once the operator confirms,
    /// or `None` if they decline.
    pub fn run(&mut self, inv: &Inventory) -> Result<Option<Plan>> {
        self.say("\nSfera installer\n===============\n")?;
        let disk = self.ask_disk(inv)?;
        let hostname = self.ask_valid("Host name", Some("sfera"), |a| {
            check_hostname(a).map(|()| a.to_owned())
        })?;
        let network = self.ask_network(inv)?;
        let admin_password = self.ask_new_password()?;
        let answer = Answer {
            install: Install {
                disk: format!("/dev/{}", disk.name),
                hostname,
                wipe: true,
            },
            network,
            admin: Admin {
                password: Some(admin_password),
                password_hash: None,
            },
        };
        let plan = match answer::validate(&answer, inv) {
            Ok(p) => p,
            Err(problems) => {
                self.say(&format!("The answers do not fit this machine:\n{problems}"))?;
                return Ok(None);
            }
        };
        self.confirm(plan)
    }

    /// Lists the disks that can take the appliance and asks which.
    fn ask_disk(&mut self, inv: &Inventory) -> Result<Disk> {
        self.say("Disks:")?;
        let usable: Vec<_> = inv
            .disks
            .iter()
            .filter(|d| answer::check_disk(&format!("/dev/{}", d.name), true, inv).is_ok())
            .collect();
        if usable.is_empty() {
            bail!(
                "No disk can take the appliance (it needs {} at least, not the boot medium)",
                human_bytes(answer::MIN_DISK_BYTES)
            );
        }
        for (i, d) in usable.iter().enumerate() {
            let state = if d.partitions.is_empty() {
                "empty".to_owned()
            } else {
                format!("has {} partitions", d.partitions.len())
            };
            self.say(&format!(
                "  {}) /dev/{}  {}  {}  ({state})",
                i + 1,
                d.name,
                human_bytes(d.size_bytes),
                d.model
            ))?;
        }
        let count = usable.len();
        self.ask_valid("Install on disk number", Some("1"), |a| {
            a.parse::<usize>()
                .ok()
                .filter(|n| (1..=count).contains(n))
                .map(|n| usable[n - 1].clone())
                .ok_or_else(|| format!("Give a number from 1 to {count}"))
        })
    }

    /// Lists the NICs and asks which manages the host, and how it gets
    /// its address.
    fn ask_network(&mut self, inv: &Inventory) -> Result<Network> {
        self.say("Network interfaces:")?;
        for (i, n) in inv.nics.iter().enumerate() {
            let link = if n.carrier { "link up" } else { "no link" };
            self.say(&format!("  {}) {}  {}  ({link})", i + 1, n.name, n.mac))?;
        }
        if inv.nics.is_empty() {
            bail!("This machine has no network interface");
        }
        let default_nic = answer::pick_nic("auto", inv).map_err(anyhow::Error::msg)?;
        let default_index = inv.nics.iter().position(|n| n == default_nic).unwrap_or(0) + 1;
        let nic_count = inv.nics.len();
        let nic = self.ask_valid(
            "Management interface number",
            Some(&default_index.to_string()),
            |a| {
                a.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=nic_count).contains(n))
                    .map(|n| inv.nics[n - 1].name.clone())
                    .ok_or_else(|| format!("Give a number from 1 to {nic_count}"))
            },
        )?;
        let mode = self.ask_valid("Addressing: dhcp or static", Some("dhcp"), |a| match a {
            "dhcp" => Ok(NetMode::Dhcp),
            "static" => Ok(NetMode::Static),
            _ => Err("Type dhcp or static".into()),
        })?;
        let mut network = Network {
            interface: nic,
            mode,
            address: None,
            gateway: None,
            dns: Vec::new(),
        };
        if mode == NetMode::Static {
            self.ask_static_address(&mut network)?;
        }
        Ok(network)
    }

    /// Asks for the address, the gateway and the DNS servers.
    fn ask_static_address(&mut self, network: &mut Network) -> Result<()> {
        let address = self.ask_valid("Address with prefix length (192.0.2.10/24)", None, |a| {
            parse_cidr(a).map(|_| a.to_owned())
        })?;
        network.address = Some(address);
        let gw = self.ask("Gateway (empty for none)", Some(""))?;
        network.gateway = (!gw.is_empty()).then_some(gw);
        let dns = self.ask(
            "DNS servers, separated by spaces (empty for none)",
            Some(""),
        )?;
        network.dns = dns.split_whitespace().map(str::to_owned).collect();
        Ok(())
    }

    /// Asks for the administrator's password, twice, until it is strong
    /// enough and both match.
    fn ask_new_password(&mut self) -> Result<String> {
        loop {
            let p = self.ask_secret("Password of the web console's admin (and root)")?;
            if let Err(e) = password::check_strength(&p) {
                self.say(&format!("  The password {e}"))?;
                continue;
            }
            if self.ask_secret("The same password again")? != p {
                self.say("  The two passwords differ")?;
                continue;
            }
            return Ok(p);
        }
    }

    /// Says what will be installed where; the plan if the operator types
    /// ERASE.
    fn confirm(&mut self, plan: Plan) -> Result<Option<Plan>> {
        self.say(&format!(
            "\nSfera will be installed on /dev/{} ({}), host {}, management NIC {}.",
            plan.disk.name,
            human_bytes(plan.disk.size_bytes),
            plan.hostname,
            plan.nic.name
        ))?;
        let confirm = self.ask(
            &format!(
                "Everything on /dev/{} will be erased. Type ERASE to go on",
                plan.disk.name
            ),
            None,
        )?;
        Ok((confirm == "ERASE").then_some(plan))
    }
}

/// Turns the terminal's echo off on stdin while alive (with stty, which
/// works on the terminal it inherits).
struct EchoOff;

impl EchoOff {
    fn new() -> Self {
        let _ = std::process::Command::new("stty").arg("-echo").status();
        EchoOff
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = std::process::Command::new("stty").arg("echo").status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{AdminPassword, NetConfig};
    use crate::inventory::Nic;

    fn inventory() -> Inventory {
        Inventory {
            disks: vec![Disk {
                name: "vda".into(),
                size_bytes: 16 << 30,
                model: "QEMU".into(),
                read_only: false,
                partitions: vec![],
                mounts: vec![],
            }],
            nics: vec![Nic {
                name: "ens3".into(),
                mac: "52:54:00:12:34:56".into(),
                carrier: true,
            }],
            protected: vec![],
        }
    }

    fn session(typed: &str) -> (Result<Option<Plan>>, String) {
        let mut out = Vec::new();
        let r = Prompter::new(typed.as_bytes(), &mut out, false).run(&inventory());
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn static_install_with_retries() {
        let typed = "7\n\nbad_name\nhost1\n\nstatic\n10.0.0.0/24\n10.0.0.5/24\n10.0.0.1\n10.0.0.53\nshort\nlong enough\nlong enough\nERASE\n";
        let (plan, out) = session(typed);
        let plan = plan.unwrap().unwrap();
        assert!(out.contains("Give a number from 1 to 1"), "{out}");
        assert!(out.contains("is not a host name"), "{out}");
        assert!(out.contains("network or broadcast"), "{out}");
        assert!(out.contains("too short"), "{out}");
        assert_eq!(plan.hostname, "host1");
        assert!(matches!(plan.net, NetConfig::Static { .. }));
        assert_eq!(plan.admin, AdminPassword::Plain("long enough".into()));
    }

    #[test]
    fn nothing_happens_without_erase() {
        let (plan, _) = session("\n\n\n\npassword1\npassword1\nno\n");
        assert_eq!(plan.unwrap(), None);
        let (plan, _) = session("\n");
        assert!(plan.is_err(), "end of input cancels");
    }
}
