//! Prometheus text exposition (format 0.0.4) of the switch's counters.
//! Written by hand: it is a few lines of text, and a registry crate would
//! keep a second copy of every counter the worker already keeps.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::daemon::{PortStats, Stats, UplinkStats};
use crate::frame::DropReason;

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}`.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Writes one metric family: HELP and TYPE, then `samples` as
/// (labels, value).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Every drop reason with its count: the known reasons always (0 when not
/// counted), then any other the dataplane reports.
fn drop_counts(drops: &BTreeMap<&'static str, u64>) -> Vec<(&'static str, u64)> {
    let mut all: Vec<(&'static str, u64)> = DropReason::ALL
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
    let mut out = String::new();
    let port_labels: Vec<String> = stats
        .ports
        .iter()
        .map(|p| {
            labels(&[
                ("port", &p.name),
                ("port_group", &p.port_group),
                ("switch", &p.switch),
            ])
        })
        .collect();
    for ((field, what), get) in TRAFFIC.iter().zip(PORT_FIELDS) {
        let help = if field.starts_with("rx") {
            format!("{what} delivered to the VM through the port.")
        } else {
            format!("{what} the VM sent through the port that the switch accepted.")
        };
        family(
            &mut out,
            &format!("sfera_vswitch_port_{field}_total"),
            "counter",
            &help,
            stats
                .ports
                .iter()
                .zip(&port_labels)
                .map(|(p, l)| (l.clone(), get(p))),
        );
    }
    family(
        &mut out,
        "sfera_vswitch_port_drops_total",
        "counter",
        "Frames dropped at a VM port, by reason.",
        stats.ports.iter().flat_map(|p| {
            drop_counts(&p.drops)
                .into_iter()
                .map(|(reason, n)| (labels(&[("port", &p.name), ("reason", reason)]), n))
        }),
    );
    family(
        &mut out,
        "sfera_vswitch_port_connected",
        "gauge",
        "1 when a VMM is connected to the port and its queues run.",
        stats
            .ports
            .iter()
            .zip(&port_labels)
            .map(|(p, l)| (l.clone(), u64::from(p.connected))),
    );
    family(
        &mut out,
        "sfera_vswitch_port_queues_enabled",
        "gauge",
        "Queue pairs the guest enabled.",
        stats
            .ports
            .iter()
            .zip(&port_labels)
            .map(|(p, l)| (l.clone(), u64::from(p.queues_enabled))),
    );

    let uplink_labels: Vec<String> = stats
        .uplinks
        .iter()
        .map(|u| {
            labels(&[
                ("uplink", &u.name),
                ("switch", &u.switch),
                ("interface", &u.interface),
            ])
        })
        .collect();
    for ((field, what), get) in TRAFFIC.iter().zip(UPLINK_FIELDS) {
        let help = if field.starts_with("rx") {
            format!("{what} received from the host network through the uplink.")
        } else {
            format!("{what} sent to the host network through the uplink.")
        };
        family(
            &mut out,
            &format!("sfera_vswitch_uplink_{field}_total"),
            "counter",
            &help,
            stats
                .uplinks
                .iter()
                .zip(&uplink_labels)
                .map(|(u, l)| (l.clone(), get(u))),
        );
    }
    family(
        &mut out,
        "sfera_vswitch_uplink_drops_total",
        "counter",
        "Frames dropped at an uplink, by reason.",
        stats.uplinks.iter().flat_map(|u| {
            drop_counts(&u.drops)
                .into_iter()
                .map(|(reason, n)| (labels(&[("uplink", &u.name), ("reason", reason)]), n))
        }),
    );
    family(
        &mut out,
        "sfera_vswitch_uplink_link_up",
        "gauge",
        "1 when the uplink's host interface has link.",
        stats
            .uplinks
            .iter()
            .zip(&uplink_labels)
            .map(|(u, l)| (l.clone(), u64::from(u.link_up))),
    );

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
        family(&mut out, name, "counter", help, [(String::new(), value)]);
    }
    family(
        &mut out,
        "sfera_vswitch_mac_table_entries",
        "gauge",
        "Addresses in a switch's MAC table.",
        mac_table_entries
            .iter()
            .map(|(switch, n)| (labels(&[("switch", switch)]), *n as u64)),
    );
    out
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
                drops: [("forged_source", 3), ("something_new", 1)].into(),
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
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(labels(&[("x", "1"), ("y", "\"")]), r#"{x="1",y="\""}"#);
    }

    #[test]
    fn an_idle_switch_has_families_without_samples() {
        let text = render(&Stats::default(), &[]);
        assert!(text.contains("# TYPE sfera_vswitch_port_rx_packets_total counter"));
        assert!(text.contains("sfera_vswitch_worker_packets_total 0"));
    }
}
