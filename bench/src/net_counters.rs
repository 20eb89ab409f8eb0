//! Reading the counters of the network benchmark's programs from their
//! text output: Open vSwitch's PMD statistics, interface statistics and
//! MAC table, and testpmd's forwarding statistics.

use std::collections::BTreeMap;

/// OVS's "avg processing cycles per packet: 487.53 (...)" of
/// `ovs-appctl dpif-netdev/pmd-stats-show`.
pub fn ovs_cycles_per_packet(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split("avg processing cycles per packet:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// An OVSDB map of integers as `ovs-vsctl get` prints it:
/// `{rx_dropped=0, tx_packets=12}` (quoted keys are unquoted).
pub fn ovs_int_map(text: &str) -> BTreeMap<String, u64> {
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let v = v.trim().trim_matches('"').parse().ok()?;
            Some((k.trim().trim_matches('"').to_owned(), v))
        })
        .collect()
}

/// The OpenFlow port numbers `ovs-appctl fdb/show` lists `mac` on:
/// ```text
///  port  VLAN  MAC                Age
///     1     0  02:00:00:00:00:01    0
/// ```
pub fn ovs_fdb_ports(text: &str, mac: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [port, _vlan, m, ..] if m.eq_ignore_ascii_case(mac) => port.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// Frames ports named in `ports` dropped, received and sent summed, from
/// `ovs-appctl dpctl/show -s` (read from the ports themselves, live; the
/// database's `statistics` are refreshed every 5 s only):
/// ```text
///   port 2: pmd0 (dpdkvhostuserclient: configured_rx_queues=1, ...)
///     RX packets:1000 errors:0 dropped:0 overruns:0 frame:0
///     TX packets:990 errors:0 dropped:10 aborted:0 carrier:0
/// ```
pub fn ovs_dpctl_drops(text: &str, ports: &[&str]) -> u64 {
    let mut current = false;
    let mut drops = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("port ") {
            let name = rest.split_once(": ").map(|(_, r)| r).unwrap_or_default();
            let name = name.split_whitespace().next().unwrap_or_default();
            current = ports.contains(&name);
        } else if current && (line.starts_with("RX packets:") || line.starts_with("TX packets:")) {
            drops += line
                .split("dropped:")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    drops
}

/// Frames testpmd received and dropped, summed over its ports, from the
/// "Accumulated forward statistics for all ports" block of
/// `show fwd stats all`: (RX-dropped, TX-dropped). TX-dropped are frames
/// its ports could not hand to the switch (the switch's ring was full).
pub fn testpmd_fwd_drops(text: &str) -> Option<(u64, u64)> {
    let block = text.split("Accumulated forward statistics").nth(1)?;
    let field = |name: &str| -> Option<u64> {
        block
            .split(name)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("RX-dropped:")?, field("TX-dropped:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ovs_cycles() {
        let text = "pmd thread numa_id 0 core_id 1:\n  packets received: 10\n  \
                    avg processing cycles per packet: 487.53 (4875/10)\n";
        assert_eq!(ovs_cycles_per_packet(text), Some(487.53));
        assert_eq!(ovs_cycles_per_packet("nothing"), None);
    }

    #[test]
    fn reads_ovs_interface_statistics() {
        let text = "{ovs_tx_failure_drops=3, rx_dropped=0, \"rx_q0_good_packets\"=7, tx_dropped=5, tx_retries=40}\n";
        let map = ovs_int_map(text);
        assert_eq!(map["tx_dropped"], 5);
        assert_eq!(map["tx_retries"], 40);
        assert_eq!(map["rx_q0_good_packets"], 7);
        assert!(ovs_int_map("{}").is_empty());
    }

    #[test]
    fn finds_macs_in_the_ovs_fdb() {
        let text = " port  VLAN  MAC                Age\n    1     0  02:00:00:00:00:01    0\n    2     0  02:00:00:00:00:00    1\n";
        assert_eq!(ovs_fdb_ports(text, "02:00:00:00:00:01"), vec![1]);
        assert_eq!(ovs_fdb_ports(text, "02:00:00:00:00:00"), vec![2]);
        assert!(ovs_fdb_ports(text, "02:00:00:00:00:02").is_empty());
    }

    #[test]
    fn sums_the_drops_of_named_ovs_ports() {
        let text = "netdev@ovs-netdev:
  lookups: hit:10 missed:2 lost:0
  port 0: ovs-netdev (tap)
    RX packets:0 errors:0 dropped:7 overruns:0 frame:0
    TX packets:0 errors:0 dropped:7 aborted:0 carrier:0
  port 2: pmd0 (dpdkvhostuserclient: configured_rx_queues=1)
    RX packets:1000 errors:0 dropped:1 overruns:0 frame:0
    TX packets:990 errors:0 dropped:10 aborted:0 carrier:0
    collisions:0
  port 3: pmd1 (dpdkvhostuserclient: configured_rx_queues=1)
    RX packets:1000 errors:0 dropped:0 overruns:0 frame:0
    TX packets:990 errors:0 dropped:100 aborted:0 carrier:0
";
        assert_eq!(ovs_dpctl_drops(text, &["pmd0", "pmd1"]), 111);
        assert_eq!(ovs_dpctl_drops(text, &["none"]), 0);
    }

    #[test]
    fn reads_testpmd_forward_drops() {
        let text = "
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 100            RX-dropped: 0             RX-total: 100
  TX-packets: 90             TX-dropped: 10            TX-total: 100
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 200            RX-dropped: 1             RX-total: 201
  TX-packets: 180            TX-dropped: 20            TX-total: 200
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
";
        assert_eq!(testpmd_fwd_drops(text), Some((1, 20)));
        assert_eq!(testpmd_fwd_drops("Done."), None);
    }
}
