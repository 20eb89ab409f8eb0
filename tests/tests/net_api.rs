//! sfera-vswitchd's API manages switches, port groups and ports, and survives a crash (curl).
//!
//! sfera-vswitchd's control API end to end, with curl as the HTTP client:
//! a switch with a TAP uplink (in a network namespace of the test's own),
//! port groups, ports, their stats, metrics and the MAC table; bad requests
//! that change nothing, neither the running configuration nor the state
//! file; the CLI; a crash (SIGKILL) after which the saved configuration
//! comes back; a clean stop on SIGTERM; and a damaged state file, which
//! stops the start with a clear message instead of being replaced.

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::daemons::vswitchd::VswitchdDaemon;
use harness::http::{Answer, call};
use harness::netns::NetNs;
use harness::scenario::case;
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::{Value, json};

fn api(d: &VswitchdDaemon, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
    Ok(call(d.api(), method, path, body)?)
}

/// [`Answer::expect`], for anyhow.
fn expect(answer: &Answer, status: u16, what: &str) -> Result<Value> {
    Ok(answer.expect(status, what)?)
}

/// [`Answer::expect_error`], for anyhow.
fn expect_error(answer: &Answer, status: u16, code: &str, what: &str) -> Result<()> {
    Ok(answer.expect_error(status, code, what)?)
}

fn get(d: &VswitchdDaemon, path: &str) -> Result<Value> {
    expect(&api(d, "GET", path, None)?, 200, path)
}

fn post(d: &VswitchdDaemon, path: &str, body: &Value) -> Result<Value> {
    expect(
        &api(d, "POST", path, Some(&body.to_string()))?,
        201,
        &format!("POST {path} {body}"),
    )
}

fn put(d: &VswitchdDaemon, path: &str, body: &Value) -> Result<Value> {
    expect(
        &api(d, "PUT", path, Some(&body.to_string()))?,
        200,
        &format!("PUT {path} {body}"),
    )
}

fn delete(d: &VswitchdDaemon, path: &str) -> Result<()> {
    let answer = api(d, "DELETE", path, None)?;
    ensure!(
        answer.status == 204,
        "DELETE {path}: HTTP {}: {}",
        answer.status,
        answer.body
    );
    Ok(())
}

fn has_link(ns: &NetNs, name: &str) -> bool {
    ns.exec_ok(&["ip", "link", "show", name]).is_ok()
}

/// The scenario's set-up: one daemon with a TAP uplink in a namespace of
/// the test's own; each case builds on what the cases before it made.
struct Site {
    dir: TestDir,
    // Declared before the daemon, so it outlives it.
    ns: NetNs,
    d: VswitchdDaemon,
}

impl Site {
    fn socket(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.sock"))
    }
}

#[test]
fn switches_port_groups_and_ports_through_the_api() -> Result<()> {
    let dir = TestDir::new("net-api")?;
    let ns = NetNs::new()?;
    let d = VswitchdDaemon::start(&dir, Some(&ns))?;
    let mut site = Site { dir, ns, d };
    case("a_fresh_daemon_runs_the_default", || {
        a_fresh_daemon_runs_the_default(&site)
    })?;
    case("a_switch_gets_a_tap_uplink", || {
        a_switch_gets_a_tap_uplink(&site)
    })?;
    let vm1 = case("port_groups_and_ports_get_their_defaults", || {
        port_groups_and_ports_get_their_defaults(&site)
    })?;
    case("get_shows_and_put_changes", || {
        get_shows_and_put_changes(&site)
    })?;
    case("counters_metrics_and_the_mac_table", || {
        counters_metrics_and_the_mac_table(&site)
    })?;
    case("bad_requests_are_refused_and_change_nothing", || {
        bad_requests_are_refused_and_change_nothing(&site, &vm1)
    })?;
    case("the_cli_lists_sets_and_shows_refusals", || {
        the_cli_lists_sets_and_shows_refusals(&site)
    })?;
    case("a_crash_brings_the_saved_configuration_back", || {
        a_crash_brings_the_saved_configuration_back(&mut site)
    })?;
    case("everything_is_undone_in_order", || {
        everything_is_undone_in_order(&site)
    })?;
    case("sigterm_stops_it_cleanly", || {
        let status = site.d.stop()?;
        ensure!(
            status.is_some_and(|s| s.success()),
            "exit on SIGTERM: {status:?}\n{}",
            site.d.log()
        );
        Ok(())
    })
}

fn a_fresh_daemon_runs_the_default(site: &Site) -> Result<()> {
    let d = &site.d;
    let config = get(d, "/v1/config")?;
    ensure!(
        config["switches"][0]["name"] == "vSwitch0" && config["ports"] == json!([]),
        "a fresh daemon runs the default: {config}"
    );

    Ok(())
}

fn a_switch_gets_a_tap_uplink(site: &Site) -> Result<()> {
    let d = &site.d;
    let sw = post(
        d,
        "/v1/switches",
        &json!({ "name": "sw1", "mac_ageing_s": 120 }),
    )?;
    ensure!(sw["uplinks"] == json!([]), "{sw}");
    let up = post(
        d,
        "/v1/switches/sw1/uplinks",
        &json!({ "name": "up0", "type": "tap", "interface": "sfapi0" }),
    )?;
    ensure!(up["interface"] == "sfapi0", "{up}");
    wait_until("the uplink's TAP", Duration::from_secs(10), || {
        Ok(has_link(&site.ns, "sfapi0").then_some(()))
    })?;

    Ok(())
}

/// Makes the port groups web and trunk and the ports vm1 and vm2; vm1 as
/// POST answered it.
fn port_groups_and_ports_get_their_defaults(site: &Site) -> Result<Value> {
    let d = &site.d;
    let socket = |name: &str| site.socket(name);
    let web = post(
        d,
        "/v1/port-groups",
        &json!({ "name": "web", "switch": "sw1", "vlan": { "mode": "access", "id": 10 },
                 "teaming": { "policy": "failover_order", "active": ["up0"] } }),
    )?;
    ensure!(
        web["security"]
            == json!({ "promiscuous": false, "mac_changes": false, "forged_transmits": false }),
        "security defaults to reject: {web}"
    );
    post(
        d,
        "/v1/port-groups",
        &json!({ "name": "trunk", "switch": "sw1",
                 "vlan": { "mode": "trunk", "allowed": [10, 20] } }),
    )?;
    let vm1 = post(
        d,
        "/v1/ports",
        &json!({ "name": "vm1", "socket": socket("vm1"), "mac": "52:54:00:12:34:01",
                 "port_group": "web" }),
    )?;
    ensure!(
        vm1["mtu"] == 1500 && vm1["queues"] == 1 && vm1["mode"] == "server",
        "port defaults: {vm1}"
    );
    post(
        d,
        "/v1/ports",
        &json!({ "name": "vm2", "socket": socket("vm2"), "mac": "52:54:00:12:34:02",
                 "port_group": "trunk", "queues": 2 }),
    )?;
    wait_until("the ports' sockets", Duration::from_secs(10), || {
        Ok((socket("vm1").exists() && socket("vm2").exists()).then_some(()))
    })?;

    Ok(vm1)
}

fn get_shows_and_put_changes(site: &Site) -> Result<()> {
    let d = &site.d;
    let sw = get(d, "/v1/switches/sw1")?;
    ensure!(
        sw["mac_ageing_s"] == 120 && sw["uplinks"][0]["name"] == "up0",
        "{sw}"
    );
    let up = get(d, "/v1/switches/sw1/uplinks/up0")?;
    ensure!(
        up == json!({ "name": "up0", "type": "tap", "interface": "sfapi0" }),
        "{up}"
    );
    let mut vm2 = get(d, "/v1/ports/vm2")?;
    ensure!(vm2["queues"] == 2 && vm2["port_group"] == "trunk", "{vm2}");
    vm2["port_group"] = "web".into();
    vm2["mtu"] = 9000.into();
    let vm2 = put(d, "/v1/ports/vm2", &vm2)?;
    ensure!(
        vm2["port_group"] == "web" && vm2["mtu"] == 9000 && vm2["queues"] == 2,
        "{vm2}"
    );
    let trunk = put(
        d,
        "/v1/port-groups/trunk",
        &json!({ "vlan": { "mode": "trunk", "allowed": [10, 20, 30], "native": 1 },
                 "shaping": { "egress": { "average_bps": 100_000_000,
                     "peak_bps": 200_000_000, "burst_bytes": 102_400 } } }),
    )?;
    ensure!(
        trunk["vlan"]["native"] == 1 && trunk["switch"] == "sw1",
        "{trunk}"
    );
    let ports = get(d, "/v1/ports")?;
    ensure!(ports.as_array().map(Vec::len) == Some(2), "{ports}");

    Ok(())
}

fn counters_metrics_and_the_mac_table(site: &Site) -> Result<()> {
    let d = &site.d;
    let ns = &site.ns;
    let stats = get(d, "/v1/stats")?;
    let names: Vec<&str> = stats["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(names.contains(&"vm1") && names.contains(&"vm2"), "{stats}");
    ensure!(stats["worker_packets"].is_u64(), "{stats}");
    ensure!(
        stats["uplinks"][0]["interface"] == "sfapi0",
        "the uplink's counters: {stats}"
    );
    let vm1_stats = get(d, "/v1/ports/vm1/stats")?;
    ensure!(
        vm1_stats["name"] == "vm1"
            && vm1_stats["switch"] == "sw1"
            && vm1_stats["connected"] == false,
        "{vm1_stats}"
    );
    let metrics = api(d, "GET", "/metrics", None)?;
    ensure!(metrics.status == 200, "metrics: HTTP {}", metrics.status);
    for line in [
        r#"sfera_vswitch_port_rx_packets_total{port="vm1",port_group="web",switch="sw1"}"#,
        r#"sfera_vswitch_port_tx_bytes_total{port="vm2",port_group="web",switch="sw1"}"#,
        r#"sfera_vswitch_port_connected{port="vm1",port_group="web",switch="sw1"} 0"#,
        r#"sfera_vswitch_port_drops_total{port="vm2",reason="forged_source"}"#,
        r#"sfera_vswitch_uplink_link_up{uplink="up0",switch="sw1",interface="sfapi0"}"#,
        r#"sfera_vswitch_mac_table_entries{switch="sw1"} "#,
        "# TYPE sfera_vswitch_worker_busy_cycles_total counter",
    ] {
        ensure!(
            metrics.body.contains(line),
            "no {line} in:\n{}",
            metrics.body
        );
    }
    // No VM has sent anything; the only traffic is what the host's kernel
    // sends on its side of the TAP (IPv6 router solicitations, MLD reports),
    // so anything learned must be the TAP's own address on the uplink.
    let tap_mac = ns
        .exec_ok(&["cat", "/sys/class/net/sfapi0/address"])?
        .trim()
        .to_string();
    let table = get(d, "/v1/switches/sw1/mac-table")?;
    let entries = table.as_array().cloned().unwrap_or_default();
    ensure!(
        table.is_array()
            && entries
                .iter()
                .all(|e| e["port"] == "up0" && e["mac"] == tap_mac.as_str()),
        "no VM traffic, so only the host's TAP address ({tap_mac}) on up0: {table}"
    );
    expect_error(
        &api(d, "GET", "/v1/switches/nope/mac-table", None)?,
        404,
        "not_found",
        "MAC table of a missing switch",
    )?;

    Ok(())
}

fn bad_requests_are_refused_and_change_nothing(site: &Site, vm1: &Value) -> Result<()> {
    let d = &site.d;
    let socket = |name: &str| site.socket(name);
    let config = get(d, "/v1/config")?;
    let saved = std::fs::read(d.state_file())?;
    ensure!(
        serde_json::from_slice::<Value>(&saved)? == config,
        "the state file holds the configuration in force"
    );
    let bad = [
        bad_port_requests(site, vm1),
        bad_switch_requests(),
        bad_port_group_and_route_requests(),
    ]
    .concat();
    for (method, path, body, status, code) in &bad {
        expect_error(
            &api(d, method, path, body.as_deref())?,
            *status,
            code,
            &format!("{method} {path} {}", body.as_deref().unwrap_or("")),
        )?;
    }
    ensure!(
        get(d, "/v1/config")? == config,
        "refused requests changed the configuration"
    );
    ensure!(
        std::fs::read(d.state_file())? == saved,
        "refused requests changed the state file"
    );
    ensure!(!socket("vm3").exists(), "a refused port left a socket");

    Ok(())
}

fn the_cli_lists_sets_and_shows_refusals(site: &Site) -> Result<()> {
    let d = &site.d;
    let listed = d.cli(&["port", "list"])?;
    ensure!(
        listed.starts_with("NAME")
            && listed.contains("vm1")
            && listed.contains("52:54:00:12:34:02"),
        "{listed}"
    );
    let groups: Value = serde_json::from_str(&d.cli(&["--json", "portgroup", "list"])?)?;
    ensure!(groups[0]["name"] == "web", "{groups}");
    d.cli(&["portgroup", "set", "trunk", "--forged-transmits", "accept"])?;
    let trunk = get(d, "/v1/port-groups/trunk")?;
    ensure!(
        trunk["security"]["forged_transmits"] == true && trunk["vlan"]["native"] == 1,
        "set changes only what its flags name: {trunk}"
    );
    let err = d
        .cli(&["portgroup", "remove", "web"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("has ports"), "CLI error: {err:?}");
    ensure!(
        d.cli(&["metrics"])?
            .contains("sfera_vswitch_port_connected")
    );

    Ok(())
}

fn a_crash_brings_the_saved_configuration_back(site: &mut Site) -> Result<()> {
    let config = get(&site.d, "/v1/config")?;
    site.d.kill();
    site.d.restart()?;
    ensure!(
        get(&site.d, "/v1/config")? == config,
        "the configuration after a crash differs"
    );
    wait_until(
        "the ports and the TAP after a restart",
        Duration::from_secs(10),
        || {
            Ok((site.socket("vm1").exists()
                && site.socket("vm2").exists()
                && has_link(&site.ns, "sfapi0"))
            .then_some(()))
        },
    )?;

    Ok(())
}

fn everything_is_undone_in_order(site: &Site) -> Result<()> {
    let d = &site.d;
    for path in [
        "/v1/ports/vm1",
        "/v1/ports/vm2",
        "/v1/port-groups/web",
        "/v1/port-groups/trunk",
        "/v1/switches/sw1/uplinks/up0",
        "/v1/switches/sw1",
    ] {
        delete(d, path)?;
    }
    let config = get(d, "/v1/config")?;
    ensure!(
        config["switches"].as_array().map(Vec::len) == Some(1)
            && config["port_groups"] == json!([]),
        "{config}"
    );
    wait_until("the TAP to go", Duration::from_secs(10), || {
        Ok((!has_link(&site.ns, "sfapi0")).then_some(()))
    })?;

    Ok(())
}

/// A refused request: method, path, body, status and error code.
type Refused = (
    &'static str,
    &'static str,
    Option<String>,
    u16,
    &'static str,
);

fn with(mut base: Value, extra: Value) -> String {
    if let (Some(p), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    base.to_string()
}

/// Refused port requests: a new port vm3 with one thing wrong, and vm1
/// (`vm1`, as created) changed wrongly.
fn bad_port_requests(site: &Site, vm1: &Value) -> Vec<Refused> {
    let vm3 = |extra: Value| {
        with(
            json!({ "name": "vm3", "socket": site.socket("vm3"),
                    "mac": "52:54:00:12:34:03", "port_group": "web" }),
            extra,
        )
    };
    let same_vm1 = |extra: Value| with(vm1.clone(), extra);
    vec![
        ("POST", "/v1/ports", Some("{oops".into()), 400, "invalid"),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "colour": "red" }))),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "mac": "01:00:5e:00:00:01" }))),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "mtu": 9001 }))),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "socket": "relative.sock" }))),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "name": "vm1" }))),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "socket": site.socket("vm1") }))),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/ports",
            Some(vm3(json!({ "port_group": "nope" }))),
            404,
            "not_found",
        ),
        (
            "PUT",
            "/v1/ports/vm1",
            Some(same_vm1(json!({ "queues": 4 }))),
            400,
            "invalid",
        ),
        (
            "PUT",
            "/v1/ports/vm1",
            Some(same_vm1(json!({ "port_group": "nope" }))),
            404,
            "not_found",
        ),
        (
            "PUT",
            "/v1/ports/nope",
            Some(same_vm1(json!({ "name": "nope" }))),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/ports/vm1",
            Some("{}".into()),
            405,
            "method_not_allowed",
        ),
        ("DELETE", "/v1/ports/nope", None, 404, "not_found"),
    ]
}

fn bad_switch_requests() -> Vec<Refused> {
    vec![
        (
            "POST",
            "/v1/switches",
            Some(r#"{"name":"sw1"}"#.into()),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/switches",
            Some(r#"{"name":"bad/name"}"#.into()),
            400,
            "invalid",
        ),
        ("DELETE", "/v1/switches/sw1", None, 409, "conflict"),
        ("DELETE", "/v1/switches/nope", None, 404, "not_found"),
        (
            "POST",
            "/v1/switches/sw1/uplinks",
            Some(r#"{"name":"up1","type":"tap","interface":"sfapi0"}"#.into()),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/switches/nope/uplinks",
            Some(r#"{"name":"up1","type":"tap","interface":"sfapi1"}"#.into()),
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/v1/switches/sw1/uplinks/up0",
            None,
            409,
            "conflict",
        ),
        (
            "DELETE",
            "/v1/switches/sw1/uplinks/nope",
            None,
            404,
            "not_found",
        ),
    ]
}

fn bad_port_group_and_route_requests() -> Vec<Refused> {
    vec![
        (
            "POST",
            "/v1/port-groups",
            Some(r#"{"name":"web"}"#.into()),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/port-groups",
            Some(r#"{"name":"x","vlan":{"mode":"none","id":10}}"#.into()),
            400,
            "invalid",
        ),
        (
            "PUT",
            "/v1/port-groups/web",
            Some(r#"{"vlan":{"mode":"access","id":5000}}"#.into()),
            400,
            "invalid",
        ),
        (
            "PUT",
            "/v1/port-groups/web",
            Some(r#"{"teaming":{"active":["nope"]}}"#.into()),
            404,
            "not_found",
        ),
        ("DELETE", "/v1/port-groups/web", None, 409, "conflict"),
        (
            "PUT",
            "/v1/config",
            Some(r#"{"ports":[{"name":"x"}]}"#.into()),
            400,
            "invalid",
        ),
        ("DELETE", "/v1/config", None, 405, "method_not_allowed"),
        (
            "POST",
            "/v1/stats",
            Some("{}".into()),
            405,
            "method_not_allowed",
        ),
        ("GET", "/v1/nothing", None, 404, "not_found"),
        ("GET", "/v2/config", None, 404, "not_found"),
    ]
}

#[test]
fn a_damaged_state_file_stops_the_start_and_stays() -> Result<()> {
    let dir = TestDir::new("net-api-state")?;
    let mut d = VswitchdDaemon::start(&dir, None)?;
    post(&d, "/v1/port-groups", &json!({ "name": "pg" }))?;
    let status = d.stop()?;
    ensure!(status.is_some_and(|s| s.success()), "stop: {status:?}");

    for (text, says) in [
        (r#"{"switches": ["#, "EOF"),
        (
            r#"{"port_groups":[{"name":"pg","switch":"nope"}]}"#,
            "does not exist",
        ),
        (r#"{"port_groups":[],"colour":"red"}"#, "unknown field"),
    ] {
        std::fs::write(d.state_file(), text)?;
        let err = match d.restart() {
            Ok(()) => anyhow::bail!("started on a damaged state file ({text})"),
            Err(e) => e.to_string(),
        };
        ensure!(
            err.contains("vswitch-state.json")
                && err.contains("fix or remove")
                && err.contains(says),
            "the start's message for {text}: {err}"
        );
        ensure!(
            std::fs::read_to_string(d.state_file())? == text,
            "the damaged state file was replaced"
        );
        ensure!(!d.api().exists(), "an API socket was left");
    }
    Ok(())
}
