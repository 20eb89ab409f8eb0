//! Prometheus text exposition (format 0.0.4) of the switch's counters,
//! written with [`control::prometheus`].

use std::collections::BTreeMap;

use control::prometheus::{Exposition, Kind};

use super::types::{PortStats, Stats, UplinkStats};
use crate::dataplane::frame::DropReason;

/// Every drop reason with its count: the known reasons always (0 when not
/// counted), then any other the dataplane reports.
fn drop_counts(drops: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut all: Vec<(&str, u64)> = DropReason::ALL
        .iter()
        .map(|r| (r.label(), drops.get(r.label()).copied().unwrap_or(0)))
        .collect();
    for (reason, n) in drops {
        if !all.iter().any(|(r, _)| r == reason) {
            all.push((reason, *n));
        }
    }
    all
}

type PortField = fn(&PortStats) -> u64;
type UplinkField = fn(&UplinkStats) -> u64;

const TRAFFIC: [(&str, &str); 4] = [
    ("rx_packets", "Frames"),
    ("rx_bytes", "Bytes"),
    ("tx_packets", "Frames"),
    ("tx_bytes", "Bytes"),
];

const PORT_FIELDS: [PortField; 4] = [
    |p| p.rx_packets,
    |p| p.rx_bytes,
    |p| p.tx_packets,
    |p| p.tx_bytes,
];

const UPLINK_FIELDS: [UplinkField; 4] = [
    |u| u.rx_packets,
    |u| u.rx_bytes,
    |u| u.tx_packets,
    |u| u.tx_bytes,
];

/// Renders `stats` and the number of entries in each switch's MAC table.
pub fn render(stats: &Stats, mac_table_entries: &[(String, usize)]) -> String {
    let mut page = Exposition::new();
    ports(&mut page, &stats.ports);
    uplinks(&mut page, &stats.uplinks);
    worker(&mut page, stats);
    let mut entries = page.family(
        "sfera_vswitch_mac_table_entries",
        Kind::Gauge,
        "Addresses in a switch's MAC table.",
    );
    for (switch, n) in mac_table_entries {
        entries.sample(&[("switch", switch)], n);
    }
    page.into_text()
}

/// The families of the VM ports.
fn ports(page: &mut Exposition, ports: &[PortStats]) {
    fn labels(p: &PortStats) -> [(&'static str, &str); 3] {
        [
            ("port", &p.name),
            ("port_group", &p.port_group),
            ("switch", &p.switch),
        ]
    }
    for ((field, what), get) in TRAFFIC.iter().zip(PORT_FIELDS) {
        let help = if field.starts_with("rx") {
            format!("{what} delivered to the VM through the port.")
        } else {
            format!("{what} the VM sent through the port that the switch accepted.")
        };
        let name = format!("sfera_vswitch_port_{field}_total");
        let mut family = page.family(&name, Kind::Counter, &help);
        for p in ports {
            family.sample(&labels(p), get(p));
        }
    }
    let mut drops = page.family(
        "sfera_vswitch_port_drops_total",
        Kind::Counter,
        "Frames dropped at a VM port, by reason.",
    );
    for p in ports {
        for (reason, n) in drop_counts(&p.drops) {
            drops.sample(&[("port", &p.name), ("reason", reason)], n);
        }
    }
    let mut connected = page.family(
        "sfera_vswitch_port_connected",
        Kind::Gauge,
        "1 when a VMM is connected to the port and its queues run.",
    );
    for p in ports {
        connected.sample(&labels(p), u64::from(p.connected));
    }
    let mut queues = page.family(
        "sfera_vswitch_port_queues_enabled",
        Kind::Gauge,
        "Queue pairs the guest enabled.",
    );
    for p in ports {
        queues.sample(&labels(p), p.queues_enabled);
    }
}

/// The families of the uplinks.
fn uplinks(page: &mut Exposition, uplinks: &[UplinkStats]) {
    fn labels(u: &UplinkStats) -> [(&'static str, &str); 3] {
        [
            ("uplink", &u.name),
            ("switch", &u.switch),
            ("interface", &u.interface),
        ]
    }
    for ((field, what), get) in TRAFFIC.iter().zip(UPLINK_FIELDS) {
        let help = if field.starts_with("rx") {
            format!("{what} received from the host network through the uplink.")
        } else {
            format!("{what} sent to the host network through the uplink.")
        };
        let name = format!("sfera_vswitch_uplink_{field}_total");
        let mut family = page.family(&name, Kind::Counter, &help);
        for u in uplinks {
            family.sample(&labels(u), get(u));
        }
    }
    let mut drops = page.family(
        "sfera_vswitch_uplink_drops_total",
        Kind::Counter,
        "Frames dropped at an uplink, by reason.",
    );
    for u in uplinks {
        for (reason, n) in drop_counts(&u.drops) {
            drops.sample(&[("uplink", &u.name), ("reason", reason)], n);
        }
    }
    let mut link_up = page.family(
        "sfera_vswitch_uplink_link_up",
        Kind::Gauge,
        "1 when the uplink's host interface has link.",
    );
    for u in uplinks {
        link_up.sample(&labels(u), u64::from(u.link_up));
    }
}

/// The forwarding worker's counters.
fn worker(page: &mut Exposition, stats: &Stats) {
    for (name, help, value) in [
        (
            "sfera_vswitch_worker_busy_cycles_total",
            "TSC cycles the forwarding worker spent in poll rounds that moved frames.",
            stats.worker_busy_cycles,
        ),
        (
            "sfera_vswitch_worker_busy_rounds_total",
            "Poll rounds of the forwarding worker that moved frames.",
            stats.worker_busy_rounds,
        ),
        (
            "sfera_vswitch_worker_packets_total",
            "Frames the forwarding worker moved.",
            stats.worker_packets,
        ),
    ] {
        page.family(name, Kind::Counter, help).sample(&[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats {
            ports: vec![PortStats {
                name: "vm1-eth0".into(),
                port_group: "pg".into(),
                switch: "vSwitch0".into(),
                connected: true,
                queues_enabled: 2,
                rx_packets: 5,
                rx_bytes: 500,
                tx_packets: 7,
                tx_bytes: 700,
                drops: [("forged_source".into(), 3), ("something_new".into(), 1)].into(),
                ..PortStats::default()
            }],
            uplinks: vec![UplinkStats {
                name: "u0".into(),
                switch: "vSwitch0".into(),
                interface: "we\"ird\\if".into(),
                link_up: true,
                rx_packets: 11,
                ..UplinkStats::default()
            }],
            worker_busy_rounds: 4,
            worker_busy_cycles: 123_456,
            worker_packets: 12,
        }
    }

    /// The whole page, byte for byte: what Prometheus scrapes must not
    /// change when the code writing it does.
    #[test]
    fn renders_the_same_text() {
        let text = render(&stats(), &[("vSwitch0".into(), 2), ("sw\"1".into(), 0)]);
        assert_eq!(text, include_str!("testdata/metrics.txt"));
    }

    #[test]
    fn renders_every_family_with_labels() {
        let text = render(&stats(), &[("vSwitch0".into(), 2)]);
        let port = r#"{port="vm1-eth0",port_group="pg",switch="vSwitch0"}"#;
        for line in [
            format!("sfera_vswitch_port_rx_packets_total{port} 5"),
            format!("sfera_vswitch_port_rx_bytes_total{port} 500"),
            format!("sfera_vswitch_port_tx_packets_total{port} 7"),
            format!("sfera_vswitch_port_tx_bytes_total{port} 700"),
            format!("sfera_vswitch_port_connected{port} 1"),
            format!("sfera_vswitch_port_queues_enabled{port} 2"),
            r#"sfera_vswitch_port_drops_total{port="vm1-eth0",reason="forged_source"} 3"#.into(),
            r#"sfera_vswitch_port_drops_total{port="vm1-eth0",reason="runt"} 0"#.into(),
            r#"sfera_vswitch_port_drops_total{port="vm1-eth0",reason="something_new"} 1"#.into(),
            r#"sfera_vswitch_uplink_rx_packets_total{uplink="u0",switch="vSwitch0",interface="we\"ird\\if"} 11"#.into(),
            r#"sfera_vswitch_uplink_link_up{uplink="u0",switch="vSwitch0",interface="we\"ird\\if"} 1"#.into(),
            r#"sfera_vswitch_uplink_drops_total{uplink="u0",reason="shaped"} 0"#.into(),
            "sfera_vswitch_worker_busy_cycles_total 123456".into(),
            "sfera_vswitch_worker_busy_rounds_total 4".into(),
            "sfera_vswitch_worker_packets_total 12".into(),
            r#"sfera_vswitch_mac_table_entries{switch="vSwitch0"} 2"#.into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn every_sample_follows_its_help_and_type() {
        let text = render(&stats(), &[("vSwitch0".into(), 0)]);
        let mut current: Option<String> = None;
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(rest.len() > name.len() + 1, "help text: {line}");
                current = Some(name);
                families += 1;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                assert_eq!(parts.next(), current.as_deref(), "{line}");
                let kind = parts.next().unwrap();
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert_eq!(
                    kind == "counter",
                    current.as_deref().unwrap().ends_with("_total"),
                    "{line}"
                );
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(name), current.as_deref(), "{line}");
                let value = line.rsplit(' ').next().unwrap();
                value.parse::<u64>().unwrap();
            }
        }
        assert_eq!(families, 17);
    }

    #[test]
    fn an_idle_switch_has_families_without_samples() {
        let text = render(&Stats::default(), &[]);
        assert!(text.contains("# TYPE sfera_vswitch_port_rx_packets_total counter"));
        assert!(text.contains("sfera_vswitch_worker_packets_total 0"));
    }
}
