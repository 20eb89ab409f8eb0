//! The CLI's human output: the API's JSON answers as aligned tables.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::control_plane::config::{
    PortConfig, PortGroupConfig, ShapingRule, UplinkConfig, VSwitchConfig,
};
use crate::dataplane::policy::VlanMode;

/// Columns padded to their widest cell, separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1,2,3,7` as `1-3,7`.
pub fn vlan_ranges(ids: &BTreeSet<u16>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = ids.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

pub fn vlan_text(vlan: &VlanMode) -> String {
    match vlan {
        VlanMode::None => "none".to_owned(),
        VlanMode::Access { id } => format!("access {id}"),
        VlanMode::Trunk { allowed, native } => {
            let mut text = format!("trunk {}", vlan_ranges(allowed));
            if let Some(n) = native {
                text.push_str(&format!(" native {n}"));
            }
            text
        }
    }
}

/// `n` with a k/M/G suffix (powers of `base`) when it divides evenly.
fn scaled(n: u64, base: u64, suffixes: [&str; 3]) -> String {
    for (i, suffix) in suffixes.iter().enumerate().rev() {
        let unit = base.pow(i as u32 + 1);
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

/// `100M/200M/100K`: average and peak bit/s, burst bytes.
fn shaping_text(rule: Option<&ShapingRule>) -> String {
    match rule {
        None => "-".to_owned(),
        Some(r) => format!(
            "{}/{}/{}",
            scaled(r.average_bps, 1000, ["k", "M", "G"]),
            scaled(r.peak_bps, 1000, ["k", "M", "G"]),
            scaled(r.burst_bytes, 1024, ["K", "M", "G"])
        ),
    }
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn dashed(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// `switch list`.
pub fn switches(list: &[VSwitchConfig]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let uplinks: Vec<String> = s.uplinks.iter().map(|u| u.name.clone()).collect();
            vec![s.name.clone(), dashed(&uplinks), s.mac_ageing_s.to_string()]
        })
        .collect();
    table(&["NAME", "UPLINKS", "MAC AGEING (S)"], &rows)
}

/// `uplink list`.
pub fn uplinks(list: &[UplinkConfig]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                json_text(&serde_json::to_value(u.kind).unwrap_or_default()),
                u.interface.clone(),
            ]
        })
        .collect();
    table(&["NAME", "TYPE", "INTERFACE"], &rows)
}

/// `portgroup list`.
pub fn port_groups(list: &[PortGroupConfig]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|g| {
            let s = g.security;
            let accepted: Vec<String> = [
                (s.promiscuous, "promiscuous"),
                (s.mac_changes, "mac_changes"),
                (s.forged_transmits, "forged_transmits"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| (*name).to_owned())
            .collect();
            let mut teaming =
                json_text(&serde_json::to_value(g.teaming.policy).unwrap_or_default());
            if !g.teaming.active.is_empty() {
                teaming.push_str(&format!(" active {}", g.teaming.active.join(",")));
            }
            if !g.teaming.standby.is_empty() {
                teaming.push_str(&format!(" standby {}", g.teaming.standby.join(",")));
            }
            vec![
                g.name.clone(),
                g.switch.clone(),
                vlan_text(&g.vlan),
                dashed(&accepted),
                shaping_text(g.shaping.ingress.as_ref()),
                shaping_text(g.shaping.egress.as_ref()),
                teaming,
            ]
        })
        .collect();
    table(
        &[
            "NAME", "SWITCH", "VLAN", "ACCEPTS", "INGRESS", "EGRESS", "TEAMING",
        ],
        &rows,
    )
}

/// `port list`.
pub fn ports(list: &[PortConfig]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.port_group.clone(),
                p.mac.to_string(),
                p.mtu.to_string(),
                p.queues.to_string(),
                json_text(&serde_json::to_value(p.mode).unwrap_or_default()),
                p.socket.display().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "PORT GROUP",
            "MAC",
            "MTU",
            "QUEUES",
            "MODE",
            "SOCKET",
        ],
        &rows,
    )
}

/// `mac-table SWITCH` (a list of MAC entries).
pub fn mac_table(entries: &Value) -> String {
    let rows: Vec<Vec<String>> = entries
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            ["vlan", "mac", "port", "age_s"]
                .iter()
                .map(|k| json_text(&e[*k]))
                .collect()
        })
        .collect();
    table(&["VLAN", "MAC", "PORT", "AGE (S)"], &rows)
}

/// The sum of a `drops` object's counts.
fn drop_total(drops: &Value) -> u64 {
    drops
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

const TRAFFIC: [&str; 4] = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"];

/// `stats` (the whole of `GET /v1/stats`).
pub fn stats(stats: &Value) -> String {
    let empty = Vec::new();
    let list = |key: &str| stats[key].as_array().unwrap_or(&empty).clone();
    let traffic = |v: &Value| {
        TRAFFIC
            .iter()
            .map(|k| json_text(&v[*k]))
            .collect::<Vec<_>>()
    };
    let ports: Vec<Vec<String>> = list("ports")
        .iter()
        .map(|p| {
            let mut row = vec![
                json_text(&p["name"]),
                json_text(&p["port_group"]),
                json_text(&p["switch"]),
                json_text(&p["connected"]),
            ];
            row.extend(traffic(p));
            row.push(drop_total(&p["drops"]).to_string());
            row
        })
        .collect();
    let uplinks: Vec<Vec<String>> = list("uplinks")
        .iter()
        .map(|u| {
            let mut row = vec![
                json_text(&u["name"]),
                json_text(&u["switch"]),
                json_text(&u["interface"]),
                json_text(&u["link_up"]),
            ];
            row.extend(traffic(u));
            row.push(drop_total(&u["drops"]).to_string());
            row
        })
        .collect();
    let counters = ["RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES", "DROPS"];
    let mut out = table(
        &[
            &["PORT", "PORT GROUP", "SWITCH", "CONNECTED"],
            &counters[..],
        ]
        .concat(),
        &ports,
    );
    if !uplinks.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[&["UPLINK", "SWITCH", "INTERFACE", "LINK"], &counters[..]].concat(),
            &uplinks,
        ));
    }
    let packets = stats["worker_packets"].as_u64().unwrap_or(0);
    let cycles = stats["worker_busy_cycles"].as_u64().unwrap_or(0);
    let mut worker = format!(
        "\nworker: {packets} frames in {} busy rounds, {cycles} busy cycles",
        stats["worker_busy_rounds"].as_u64().unwrap_or(0)
    );
    if let Some(per_frame) = cycles.checked_div(packets) {
        worker.push_str(&format!(" ({per_frame} cycles/frame)"));
    }
    out.push_str(&worker);
    out.push('\n');
    out
}

/// `stats PORT` (one port's counters, drops by reason).
pub fn port_stats(p: &Value) -> String {
    let mut rows: Vec<Vec<String>> = [
        "name",
        "port_group",
        "switch",
        "connected",
        "queues_enabled",
    ]
    .iter()
    .chain(&TRAFFIC)
    .map(|k| vec![format!("{k}:"), json_text(&p[*k])])
    .collect();
    if let Some(drops) = p["drops"].as_object() {
        for (reason, n) in drops {
            rows.push(vec![format!("drops {reason}:"), json_text(n)]);
        }
    }
    let text = table(&["", ""], &rows);
    // No header row for a key: value list.
    text.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "X"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long-name".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME       X\na          1\nlong-name\n");
    }

    #[test]
    fn policy_texts() {
        assert_eq!(vlan_ranges(&[1, 2, 3, 7, 9, 10].into()), "1-3,7,9-10");
        let trunk = VlanMode::Trunk {
            allowed: [10, 11, 20].into(),
            native: Some(1),
        };
        assert_eq!(vlan_text(&trunk), "trunk 10-11,20 native 1");
        assert_eq!(vlan_text(&VlanMode::Access { id: 5 }), "access 5");
        let rule = ShapingRule {
            average_bps: 100_000_000,
            peak_bps: 150_000_000,
            burst_bytes: 102_400,
        };
        assert_eq!(shaping_text(Some(&rule)), "100M/150M/100K");
        assert_eq!(scaled(1500, 1000, ["k", "M", "G"]), "1500");
    }

    #[test]
    fn lists_of_objects() {
        let groups: Vec<PortGroupConfig> = serde_json::from_str(
            r#"[{"name":"pg","vlan":{"mode":"access","id":10},"security":{"forged_transmits":true},
                 "teaming":{"policy":"failover_order","active":["u0"],"standby":["u1"]}}]"#,
        )
        .unwrap();
        let text = port_groups(&groups);
        let row = text.lines().nth(1).unwrap();
        for cell in [
            "pg",
            "vSwitch0",
            "access 10",
            "forged_transmits",
            "failover_order active u0 standby u1",
        ] {
            assert!(row.contains(cell), "{cell}: {text}");
        }
        let ports: Vec<PortConfig> = serde_json::from_str(
            r#"[{"name":"a","socket":"/run/a.sock","mac":"52:54:00:00:00:01","port_group":"pg"}]"#,
        )
        .unwrap();
        let text = super::ports(&ports);
        assert!(
            text.contains("52:54:00:00:00:01  1500  1       server  /run/a.sock"),
            "{text}"
        );
    }

    #[test]
    fn counters() {
        let s = serde_json::json!({
            "ports": [{"name": "a", "port_group": "pg", "switch": "vSwitch0", "connected": true,
                       "queues_enabled": 1, "rx_packets": 3, "rx_bytes": 300, "tx_packets": 4,
                       "tx_bytes": 400, "drops": {"runt": 2, "shaped": 1}}],
            "uplinks": [],
            "worker_busy_rounds": 2, "worker_busy_cycles": 7000, "worker_packets": 7
        });
        let text = stats(&s);
        assert!(
            text.contains("a     pg          vSwitch0  yes        3"),
            "{text}"
        );
        assert!(text.contains("1000 cycles/frame"), "{text}");
        assert!(!text.contains("UPLINK"), "{text}");
        let text = port_stats(&s["ports"][0]);
        assert!(text.starts_with("name:"), "{text}");
        assert!(text.contains("drops runt:"), "{text}");
        let text = mac_table(&serde_json::json!([
            {"vlan": 10, "mac": "52:54:00:00:00:01", "port": "a", "age_s": 4}
        ]));
        assert_eq!(
            text,
            "VLAN  MAC                PORT  AGE (S)\n10    52:54:00:00:00:01  a     4\n"
        );
    }
}
