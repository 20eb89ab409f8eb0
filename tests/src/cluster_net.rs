//! A network of cluster hosts on one machine: each host is a network
//! namespace, and a "core" namespace routes between them, so a test can
//! cut one host off (a partition) and put it back.
//!
//! Host `i` of a network with subnet base `k` has one veth pair to the
//! core: `10.<k>.<i>.2/24` on its side, `10.<k>.<i>.1/24` on the core's,
//! and its default route through the core. Only the core forwards. No
//! address is in the test's own namespace, so traffic between hosts stays
//! inside the namespaces this network made; they are deleted when it is
//! dropped.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{NetNs, Veth};
use crate::{Error, Result, tools};

/// Networks made by this process so far: each gets its own subnet base.
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// The most hosts a network has: host `i` is the third byte of its address.
pub const MAX_HOSTS: usize = 256;

/// The IPv4 forwarding switch of the namespace of the thread that opens it.
const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

/// Host namespaces routed through a core namespace.
#[derive(Debug)]
pub struct ClusterNet {
    // Dropped in this order: the links, then the namespaces they join.
    links: Vec<Veth>,
    hosts: Vec<NetNs>,
    core: NetNs,
    base: u8,
}

impl ClusterNet {
    /// Makes `n` host namespaces (1 to [`MAX_HOSTS`]) and the core that
    /// routes between them. Fails with [`Error::MissingTool`] before making
    /// anything when `ip` (iproute2) is not installed.
    pub fn new(n: usize) -> Result<Self> {
        assert!(
            (1..=MAX_HOSTS).contains(&n),
            "a cluster network has 1 to {MAX_HOSTS} hosts, not {n}"
        );
        tools::require("ip", "iproute2")?;
        let base = subnet_base(std::process::id(), NETWORKS.fetch_add(1, Ordering::Relaxed));
        let core = NetNs::new()?;
        // Forwarding is a setting of each namespace: only the core routes.
        core.run_in(|| std::fs::write(FORWARDING, "1"))?
            .map_err(|e| {
                Error::io(
                    format!("Cannot turn on forwarding in {}", core.name()),
                    FORWARDING,
                    e,
                )
            })?;
        let mut net = ClusterNet {
            links: Vec::with_capacity(n),
            hosts: Vec::with_capacity(n),
            core,
            base,
        };
        for i in 0..n {
            net.add_host(i)?;
        }
        Ok(net)
    }

    /// Host `i`'s namespace and its veth pair to the core, addressed and up.
    fn add_host(&mut self, i: usize) -> Result<()> {
        let host = NetNs::new()?;
        let mut link = Veth::new()?;
        link.move_a_to(&host)?;
        link.move_b_to(&self.core)?;
        let (host_addr, core_addr) = (host_addr(self.base, i), core_addr(self.base, i));
        ip_in(&host, &format!("addr add {host_addr}/24 dev {}", link.a))?;
        ip_in(&host, &format!("link set {} up", link.a))?;
        ip_in(&host, &format!("route add default via {core_addr}"))?;
        ip_in(
            &self.core,
            &format!("addr add {core_addr}/24 dev {}", link.b),
        )?;
        ip_in(&self.core, &format!("link set {} up", link.b))?;
        self.hosts.push(host);
        self.links.push(link);
        Ok(())
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the network has no host (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> &NetNs {
        &self.hosts[i]
    }

    /// Host `i`'s address, which every other host reaches through the core.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.hosts.len(), "no host {i}");
        host_addr(self.base, i)
    }

    /// Cuts host `i` off: the core's end of its link goes down, so nothing
    /// passes between host `i` and the others until it is healed (the
    /// core answers "unreachable" for it; established connections are not
    /// reset, they time out), while host `i` still reaches itself.
    pub fn partition(&self, i: usize) -> Result<()> {
        self.set_core_link(i, "down")
    }

    /// Undoes [`ClusterNet::partition`]: host `i` is routed again.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.set_core_link(i, "up")
    }

    fn set_core_link(&self, i: usize, state: &str) -> Result<()> {
        let link = &self.links[i].b;
        ip_in(&self.core, &format!("link set {link} {state}"))?;
        if state == "up" {
            // Taking a link down drops the routes through it; up puts the
            // connected route back, but say so if it did not.
            let routes = ip_in(&self.core, &format!("route show dev {link}"))?;
            let subnet = format!("10.{}.{i}.0/24", self.base);
            if !routes.contains(&subnet) {
                return Err(Error::Parse {
                    what: format!("the core's route to {subnet} after healing host {i}"),
                    text: routes,
                });
            }
        }
        Ok(())
    }
}

/// Runs `ip <command>` in `ns`, the command's words split at spaces.
fn ip_in(ns: &NetNs, command: &str) -> Result<String> {
    let mut argv = vec!["ip"];
    argv.extend(command.split_whitespace());
    ns.exec_ok(&argv)
}

/// The second byte of a network's addresses (1 to 255): the n-th network
/// of a process gets the next one after the process's own start, so the
/// networks of one process differ, and those of concurrent processes
/// usually do. Two that share a base could not disturb each other either:
/// no link joins their namespaces; distinct bases keep addresses in logs
/// unambiguous.
fn subnet_base(pid: u32, nth: u32) -> u8 {
    let spread = pid.wrapping_mul(37).wrapping_add(nth) % 255;
    u8::try_from(spread + 1).expect("1 to 255 fits a byte")
}

fn host_addr(base: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, base, host_byte(i), 2)
}

fn core_addr(base: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, base, host_byte(i), 1)
}

fn host_byte(i: usize) -> u8 {
    u8::try_from(i).expect("at most MAX_HOSTS hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_one_process_get_distinct_bases_in_ten_slash_eight() {
        let pid = 4242;
        let bases: std::collections::HashSet<u8> = (0..255).map(|n| subnet_base(pid, n)).collect();
        assert_eq!(bases.len(), 255);
        assert!(!bases.contains(&0));
    }

    #[test]
    fn concurrent_processes_start_apart() {
        assert_ne!(subnet_base(1000, 0), subnet_base(1001, 0));
        assert_ne!(subnet_base(u32::MAX, 0), subnet_base(0, 0));
    }

    #[test]
    fn each_host_has_its_own_subnet_with_the_core_at_one() {
        assert_eq!(host_addr(7, 0), Ipv4Addr::new(10, 7, 0, 2));
        assert_eq!(core_addr(7, 0), Ipv4Addr::new(10, 7, 0, 1));
        assert_eq!(host_addr(7, 255), Ipv4Addr::new(10, 7, 255, 2));
        assert_ne!(host_addr(7, 1), host_addr(7, 2));
    }

    #[test]
    #[should_panic(expected = "1 to 256 hosts")]
    fn a_network_has_at_least_one_host() {
        let _ = ClusterNet::new(0);
    }
}
