//! Switches and port groups through mgmtd, the network cases of
//! `mgmt_edit_vms_networks_datastores`.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::{Edit, daemon, edit, refused, snapshot};
use crate::mgmt_client::{Cred, Mgmtd};

pub(super) fn port_group(m: &Mgmtd, cred: Cred<'_>, name: &str) -> Result<Value> {
    let groups = m.expect(cred, "GET", "/api/v1/port-groups", None, 200)?;
    groups["items"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["name"] == name))
        .cloned()
        .with_context(|| format!("no port group {name}: {groups}"))
}

/// The switch's configuration on sfera-vswitchd's own API.
pub(super) fn switch_config(m: &Mgmtd) -> Result<Value> {
    daemon(&m.data.join("run/vswitchd.sock"), "GET", "/v1/config", None)
}

/// Switches and port groups are made; bad switches are refused and change
/// nothing, a used switch or a missing one is not deleted.
pub(super) fn switches_are_made_and_bad_ones_refused(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let nets = switch_config(m)?;
    for (body, status, word) in [
        (json!({ "name": "bad name" }), 400, "switch name"),
        (json!({ "name": "sw2", "extra": 1 }), 400, "unknown field"),
        (
            json!({ "name": "sw2", "uplinks": [{ "name": "u0", "type": "bogus", "interface": "x0" }] }),
            400,
            "Invalid JSON",
        ),
        (
            json!({ "name": "sw2", "uplinks": [{ "name": "u0", "type": "af_packet", "interface": "sfera-nope0" }] }),
            400,
            "no interface",
        ),
        (
            json!({ "name": "sw2", "uplinks": [{ "name": "u0", "type": "tap", "interface": "a-name-too-long-for-linux" }] }),
            400,
            "1 to 15",
        ),
        (
            json!({ "name": "sw2", "mac_ageing_s": 0 }),
            400,
            "mac_ageing_s",
        ),
        (json!({ "name": "vSwitch0" }), 409, "vSwitch0"),
    ] {
        refused(m, admin, "POST", "/api/v1/switches", &body, status, word)?;
    }
    ensure!(
        switch_config(m)? == nets,
        "a refused switch changed the switch"
    );
    m.expect(
        admin,
        "POST",
        "/api/v1/switches",
        Some(&json!({ "name": "sw-test", "mac_ageing_s": 60 })),
        201,
    )?;
    m.expect(
        admin,
        "POST",
        "/api/v1/port-groups",
        Some(&json!({ "name": "pg-test", "switch": "sw-test", "vlan": { "mode": "access", "id": 10 } })),
        201,
    )?;
    let sws = m.expect(admin, "GET", "/api/v1/switches", None, 200)?;
    ensure!(
        sws["items"].as_array().is_some_and(|a| a
            .iter()
            .any(|s| s["name"] == "sw-test" && s["mac_ageing_s"] == 60)),
        "{sws}"
    );
    refused(
        m,
        admin,
        "DELETE",
        "/api/v1/switches/sw-test",
        &json!({}),
        409,
        "pg-test",
    )?;
    refused(
        m,
        admin,
        "DELETE",
        "/api/v1/switches/no-such-switch",
        &json!({}),
        404,
        "no-such-switch",
    )?;
    Ok(())
}

/// Port group edits: bad ones change nothing, a good one merges, and only
/// the part given changes.
pub(super) fn port_group_edits_merge_and_bad_ones_change_nothing(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    let pg = port_group(m, admin, "pg-test")?;
    for (body, status, word) in [
        (json!({ "vlan": { "mode": "access", "id": 5000 } }), 400, ""),
        (json!({ "vlan": "ten" }), 400, "vlan"),
        (
            json!({ "security": { "promiscuous": "yes" } }),
            400,
            "security.promiscuous",
        ),
        (
            json!({ "security": { "sniff": true } }),
            400,
            "security.sniff",
        ),
        (json!({ "teaming": { "policy": "random" } }), 400, ""),
        (
            json!({ "teaming": { "active": ["no-such-uplink"] } }),
            400,
            "no-such-uplink",
        ),
        (json!({ "colour": "blue" }), 400, "unknown field"),
    ] {
        refused(
            m,
            admin,
            "PATCH",
            "/api/v1/port-groups/pg-test",
            &body,
            status,
            word,
        )?;
    }
    refused(
        m,
        admin,
        "PATCH",
        "/api/v1/port-groups/no-such-group",
        &json!({ "vlan": { "mode": "none" } }),
        404,
        "",
    )?;
    ensure!(
        port_group(m, admin, "pg-test")? == pg,
        "a refused port group edit changed it"
    );
    let shaped = json!({ "average_bps": 1_000_000, "peak_bps": 2_000_000, "burst_bytes": 100_000 });
    let changed = m.expect(
        admin,
        "PATCH",
        "/api/v1/port-groups/pg-test",
        Some(&json!({ "vlan": { "mode": "trunk", "allowed": [10, 20] },
                      "security": { "promiscuous": true },
                      "shaping": { "ingress": shaped },
                      "teaming": { "policy": "failover_order" } })),
        200,
    )?;
    let pg = port_group(m, admin, "pg-test")?;
    ensure!(
        pg["vlan"]["mode"] == "trunk"
            && pg["vlan"]["allowed"] == json!([10, 20])
            && pg["security"]["promiscuous"] == true
            && pg["shaping"]["ingress"] == shaped
            && pg["teaming"]["policy"] == "failover_order"
            && pg["switch"] == "sw-test",
        "answer {changed}, port group {pg}"
    );
    // Only the part given changes: egress shaping stays off, the rest stays.
    m.expect(
        admin,
        "PATCH",
        "/api/v1/port-groups/pg-test",
        Some(&json!({ "security": { "mac_changes": true } })),
        200,
    )?;
    let pg2 = port_group(m, admin, "pg-test")?;
    ensure!(
        pg2["security"]["promiscuous"] == true
            && pg2["security"]["mac_changes"] == true
            && pg2["vlan"] == pg["vlan"]
            && pg2["shaping"] == pg["shaping"],
        "{pg2}"
    );
    Ok(())
}

/// A port group with a VM's NIC on it stays, and so does its switch;
/// without the NIC both go.
pub(super) fn port_groups_and_switches_in_use_stay(s: &Edit) -> Result<()> {
    let (m, token) = (&s.m, s.token.as_str());
    let admin = Cred::Bearer(token);
    edit(
        m,
        token,
        "ed2",
        &json!({ "add_nics": [{ "port_group": "pg-test", "mac": "52:54:00:00:e0:03" }] }),
    )?;
    let before = snapshot(m, admin)?;
    refused(
        m,
        admin,
        "DELETE",
        "/api/v1/port-groups/pg-test",
        &json!({}),
        409,
        "ed2",
    )?;
    refused(
        m,
        admin,
        "DELETE",
        "/api/v1/switches/sw-test",
        &json!({}),
        409,
        "ed2",
    )?;
    ensure!(
        snapshot(m, admin)? == before,
        "a refused delete changed something"
    );
    edit(
        m,
        token,
        "ed2",
        &json!({ "remove_nics": [{ "mac": "52:54:00:00:e0:03" }] }),
    )?;
    m.expect(admin, "DELETE", "/api/v1/port-groups/pg-test", None, 204)?;
    m.expect(admin, "DELETE", "/api/v1/switches/sw-test", None, 204)?;
    let nets = switch_config(m)?;
    ensure!(
        !nets.to_string().contains("pg-test") && !nets.to_string().contains("sw-test"),
        "{nets}"
    );
    Ok(())
}
