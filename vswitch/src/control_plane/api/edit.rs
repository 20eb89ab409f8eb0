//! The configuration changes the API offers, as pure functions: [`change`]
//! takes the configuration in force and returns the edited copy, validated,
//! or the reason it is refused. Nothing here touches the running switch or
//! the state file, so a refused change cannot have changed anything.
//!
//! Refusals: a missing object (in the path, or named by the body) is 404;
//! a duplicate name, interface or socket, or removing something still in
//! use, is 409; anything else [`SwitchConfig::validate`] refuses is 400.

use crate::control_plane::config::{
    PortConfig, SwitchConfig, Teaming, UplinkConfig, VSwitchConfig,
};

use super::request::{ApiError, Change, PortGroupSettings, PortSettings, SwitchSettings, invalid};

/// The configuration `current` with `change` made, validated.
pub fn change(current: &SwitchConfig, change: Change) -> Result<SwitchConfig, ApiError> {
    let mut new = current.clone();
    match change {
        Change::ReplaceConfig(config) => new = config,
        Change::AddSwitch(switch) => add_switch(&mut new, switch)?,
        Change::SetSwitch { name, body } => set_switch(&mut new, &name, body)?,
        Change::RemoveSwitch { name } => remove_switch(&mut new, &name)?,
        Change::AddUplink { switch, body } => add_uplink(&mut new, &switch, body)?,
        Change::RemoveUplink { switch, name } => remove_uplink(&mut new, &switch, &name)?,
        Change::AddPortGroup(group) => {
            if new.port_groups.iter().any(|g| g.name == group.name) {
                return Err(ApiError::conflict(format!(
                    "Port group {:?} exists",
                    group.name
                )));
            }
            if new.switch(&group.switch).is_none() {
                return Err(no_switch(&group.switch));
            }
            check_teaming(&new, &group.name, &group.switch, &group.teaming)?;
            new.port_groups.push(group);
        }
        Change::SetPortGroup { name, body } => set_port_group(&mut new, &name, body)?,
        Change::RemovePortGroup { name } => {
            let i = port_group_index(&new, &name)?;
            let users = names(new.ports.iter().filter(|p| p.port_group == name), |p| {
                &p.name
            });
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "Port group {name:?} has ports {users}; remove them or move them first"
                )));
            }
            new.port_groups.remove(i);
        }
        Change::AddPort(port) => add_port(&mut new, port)?,
        Change::SetPort { name, body } => set_port(&mut new, &name, body)?,
        Change::RemovePort { name } => {
            let i = port_index(&new, &name)?;
            new.ports.remove(i);
        }
    }
    new.validate()?;
    Ok(new)
}

fn no_switch(name: &str) -> ApiError {
    ApiError::not_found(format!("No switch {name:?}"))
}

fn no_port_group(name: &str) -> ApiError {
    ApiError::not_found(format!("No port group {name:?}"))
}

/// `"a", "b"`: the names of `items`, for messages; empty when there are none.
fn names<'a, T: 'a>(items: impl Iterator<Item = &'a T>, name: impl Fn(&T) -> &String) -> String {
    items
        .map(|x| format!("{:?}", name(x)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn switch_index(c: &SwitchConfig, name: &str) -> Result<usize, ApiError> {
    c.switches
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| no_switch(name))
}

fn port_group_index(c: &SwitchConfig, name: &str) -> Result<usize, ApiError> {
    c.port_groups
        .iter()
        .position(|g| g.name == name)
        .ok_or_else(|| no_port_group(name))
}

fn port_index(c: &SwitchConfig, name: &str) -> Result<usize, ApiError> {
    c.ports
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("No port {name:?}")))
}

/// Refuses `body`'s identity field when it is given and differs from the
/// object's.
fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    given: Option<&T>,
    current: &T,
    how: &str,
) -> Result<(), ApiError> {
    match given {
        Some(v) if v != current => Err(invalid(format!(
            "{what} cannot change from {current:?} to {v:?}; {how}"
        ))),
        _ => Ok(()),
    }
}

/// Refuses an uplink whose name or interface another switch's uplink (or,
/// unless it is `except`, this switch's) already has.
fn check_uplink_free(
    c: &SwitchConfig,
    uplink: &UplinkConfig,
    except: Option<&str>,
) -> Result<(), ApiError> {
    for s in c
        .switches
        .iter()
        .filter(|s| Some(s.name.as_str()) != except)
    {
        for u in &s.uplinks {
            if u.name == uplink.name {
                return Err(ApiError::conflict(format!(
                    "Uplink {:?} exists on switch {:?}",
                    u.name, s.name
                )));
            }
            if u.interface == uplink.interface {
                return Err(ApiError::conflict(format!(
                    "Interface {:?} is already uplink {:?} of switch {:?}",
                    u.interface, u.name, s.name
                )));
            }
        }
    }
    Ok(())
}

/// Refuses teaming that names an uplink the switch does not have.
fn check_teaming(
    c: &SwitchConfig,
    group: &str,
    switch: &str,
    teaming: &Teaming,
) -> Result<(), ApiError> {
    let Some(s) = c.switch(switch) else {
        return Err(no_switch(switch));
    };
    for u in teaming.active.iter().chain(&teaming.standby) {
        if !s.uplinks.iter().any(|x| &x.name == u) {
            return Err(ApiError::not_found(format!(
                "Port group {group:?}: teaming names uplink {u:?}, which switch {switch:?} does not have"
            )));
        }
    }
    Ok(())
}

/// Port groups whose teaming names uplink `uplink` of switch `switch`.
fn teaming_users(c: &SwitchConfig, switch: &str, uplink: &str) -> String {
    names(
        c.port_groups.iter().filter(|g| {
            g.switch == switch
                && g.teaming
                    .active
                    .iter()
                    .chain(&g.teaming.standby)
                    .any(|u| u == uplink)
        }),
        |g| &g.name,
    )
}

fn add_switch(c: &mut SwitchConfig, switch: VSwitchConfig) -> Result<(), ApiError> {
    if c.switch(&switch.name).is_some() {
        return Err(ApiError::conflict(format!(
            "Switch {:?} exists",
            switch.name
        )));
    }
    for u in &switch.uplinks {
        check_uplink_free(c, u, None)?;
    }
    c.switches.push(switch);
    Ok(())
}

fn set_switch(c: &mut SwitchConfig, name: &str, body: SwitchSettings) -> Result<(), ApiError> {
    let i = switch_index(c, name)?;
    same(
        "A switch's name",
        body.name.as_ref(),
        &c.switches[i].name,
        "create a new switch instead",
    )?;
    if let Some(uplinks) = body.uplinks {
        for u in &uplinks {
            check_uplink_free(c, u, Some(name))?;
        }
        for old in &c.switches[i].uplinks {
            if uplinks.iter().any(|u| u.name == old.name) {
                continue;
            }
            let users = teaming_users(c, name, &old.name);
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "Uplink {:?} is in the teaming of port groups {users}; change their teaming first",
                    old.name
                )));
            }
        }
        c.switches[i].uplinks = uplinks;
    }
    c.switches[i].mac_ageing_s = body.mac_ageing_s;
    Ok(())
}

fn remove_switch(c: &mut SwitchConfig, name: &str) -> Result<(), ApiError> {
    let i = switch_index(c, name)?;
    let groups = names(c.port_groups.iter().filter(|g| g.switch == name), |g| {
        &g.name
    });
    if !groups.is_empty() {
        return Err(ApiError::conflict(format!(
            "Switch {name:?} has port groups {groups}; remove them first"
        )));
    }
    c.switches.remove(i);
    Ok(())
}

fn add_uplink(c: &mut SwitchConfig, switch: &str, uplink: UplinkConfig) -> Result<(), ApiError> {
    let i = switch_index(c, switch)?;
    check_uplink_free(c, &uplink, None)?;
    c.switches[i].uplinks.push(uplink);
    Ok(())
}

fn remove_uplink(c: &mut SwitchConfig, switch: &str, name: &str) -> Result<(), ApiError> {
    let i = switch_index(c, switch)?;
    let Some(j) = c.switches[i].uplinks.iter().position(|u| u.name == name) else {
        return Err(ApiError::not_found(format!(
            "Switch {switch:?} has no uplink {name:?}"
        )));
    };
    let users = teaming_users(c, switch, name);
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "Uplink {name:?} is in the teaming of port groups {users}; change their teaming first"
        )));
    }
    c.switches[i].uplinks.remove(j);
    Ok(())
}

fn set_port_group(
    c: &mut SwitchConfig,
    name: &str,
    body: PortGroupSettings,
) -> Result<(), ApiError> {
    let i = port_group_index(c, name)?;
    let group = &c.port_groups[i];
    same(
        "A port group's name",
        body.name.as_ref(),
        &group.name,
        "create a new port group instead",
    )?;
    same(
        "A port group's switch",
        body.switch.as_ref(),
        &group.switch,
        "create a port group on the other switch and move the ports to it",
    )?;
    check_teaming(c, name, &group.switch, &body.teaming)?;
    let group = &mut c.port_groups[i];
    group.vlan = body.vlan;
    group.security = body.security;
    group.shaping = body.shaping;
    group.teaming = body.teaming;
    Ok(())
}

fn add_port(c: &mut SwitchConfig, port: PortConfig) -> Result<(), ApiError> {
    if c.ports.iter().any(|p| p.name == port.name) {
        return Err(ApiError::conflict(format!("Port {:?} exists", port.name)));
    }
    if let Some(other) = c.ports.iter().find(|p| p.socket == port.socket) {
        return Err(ApiError::conflict(format!(
            "Socket {} is port {:?}'s",
            port.socket.display(),
            other.name
        )));
    }
    if !c.port_groups.iter().any(|g| g.name == port.port_group) {
        return Err(no_port_group(&port.port_group));
    }
    c.ports.push(port);
    Ok(())
}

fn set_port(c: &mut SwitchConfig, name: &str, body: PortSettings) -> Result<(), ApiError> {
    let i = port_index(c, name)?;
    let port = &c.ports[i];
    let how = "delete the port and create it again";
    same("A port's name", body.name.as_ref(), &port.name, how)?;
    same("A port's socket", body.socket.as_ref(), &port.socket, how)?;
    same("A port's socket mode", body.mode.as_ref(), &port.mode, how)?;
    same("A port's queues", body.queues.as_ref(), &port.queues, how)?;
    if !c.port_groups.iter().any(|g| g.name == body.port_group) {
        return Err(no_port_group(&body.port_group));
    }
    let port = &mut c.ports[i];
    port.port_group = body.port_group;
    port.mac = body.mac;
    port.mtu = body.mtu;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::config::{LoadBalancing, PortGroupConfig, SocketMode, UplinkType};
    use crate::dataplane::policy::VlanMode;

    /// vSwitch0 with uplinks u0 and u1 (pg teams them), sw1 without uplinks
    /// (pg2); port a in pg, b in pg2.
    fn base() -> SwitchConfig {
        serde_json::from_str(
            r#"{
            "switches": [
                {"name": "vSwitch0", "uplinks": [
                    {"name": "u0", "type": "tap", "interface": "sfapi0"},
                    {"name": "u1", "type": "af_packet", "interface": "eth1"}]},
                {"name": "sw1"}],
            "port_groups": [
                {"name": "pg", "vlan": {"mode": "access", "id": 10},
                 "teaming": {"policy": "failover_order", "active": ["u0"], "standby": ["u1"]}},
                {"name": "pg2", "switch": "sw1"}],
            "ports": [
                {"name": "a", "socket": "/run/a.sock", "mac": "52:54:00:00:00:01", "port_group": "pg"},
                {"name": "b", "socket": "/run/b.sock", "mac": "52:54:00:00:00:02", "port_group": "pg2", "queues": 2}]
        }"#,
        )
        .unwrap()
    }

    fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    /// Applies `c` to the base configuration and checks that it is refused
    /// with `status`, with a message containing `says`, and that the base is
    /// unchanged.
    fn refused(c: Change, status: u16, says: &str) {
        let before = base();
        let current = base();
        let e = change(&current, c.clone()).unwrap_err();
        assert_eq!(e.status, status, "{c:?}: {e:?}");
        assert!(e.message.contains(says), "{c:?}: {:?}", e.message);
        assert_eq!(current, before);
    }

    #[test]
    fn the_base_is_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn switches() {
        let new = change(&base(), Change::AddSwitch(json(r#"{"name":"sw2"}"#))).unwrap();
        assert_eq!(new.switches.len(), 3);
        assert_eq!(new.switch("sw2").unwrap().mac_ageing_s, 300);
        let new = change(
            &base(),
            Change::SetSwitch {
                name: "sw1".into(),
                body: json(r#"{"name":"sw1","mac_ageing_s":60}"#),
            },
        )
        .unwrap();
        assert_eq!(new.switch("sw1").unwrap().mac_ageing_s, 60);
        // Uplinks left out stay; given, they replace the list.
        let new = change(
            &base(),
            Change::SetSwitch {
                name: "vSwitch0".into(),
                body: json(r#"{"mac_ageing_s":30}"#),
            },
        )
        .unwrap();
        assert_eq!(new.switch("vSwitch0").unwrap().uplinks.len(), 2);
        let new = change(
            &base(),
            Change::SetSwitch {
                name: "sw1".into(),
                body: json(r#"{"uplinks":[{"name":"u9","type":"tap","interface":"sf9"}]}"#),
            },
        )
        .unwrap();
        assert_eq!(new.switch("sw1").unwrap().uplinks[0].name, "u9");

        let mut unused = base();
        unused.ports.retain(|p| p.port_group != "pg2");
        unused.port_groups.retain(|g| g.name != "pg2");
        let new = change(&unused, Change::RemoveSwitch { name: "sw1".into() }).unwrap();
        assert!(new.switch("sw1").is_none());
    }

    #[test]
    fn switch_refusals() {
        refused(Change::AddSwitch(json(r#"{"name":"sw1"}"#)), 409, "exists");
        refused(
            Change::AddSwitch(json(
                r#"{"name":"sw2","uplinks":[{"name":"u0","type":"tap","interface":"x"}]}"#,
            )),
            409,
            "exists on switch",
        );
        refused(
            Change::AddSwitch(json(
                r#"{"name":"sw2","uplinks":[{"name":"u5","type":"tap","interface":"eth1"}]}"#,
            )),
            409,
            "already uplink",
        );
        refused(
            Change::AddSwitch(json(r#"{"name":"bad/name"}"#)),
            400,
            "name",
        );
        refused(
            Change::AddSwitch(json(r#"{"name":"sw2","mac_ageing_s":1}"#)),
            400,
            "mac_ageing_s",
        );
        refused(
            Change::SetSwitch {
                name: "nope".into(),
                body: json("{}"),
            },
            404,
            "No switch",
        );
        refused(
            Change::SetSwitch {
                name: "sw1".into(),
                body: json(r#"{"name":"sw9"}"#),
            },
            400,
            "cannot change",
        );
        refused(
            Change::SetSwitch {
                name: "vSwitch0".into(),
                body: json(r#"{"uplinks":[{"name":"u0","type":"tap","interface":"sfapi0"}]}"#),
            },
            409,
            "teaming",
        );
        refused(
            Change::SetSwitch {
                name: "sw1".into(),
                body: json(r#"{"uplinks":[{"name":"u0","type":"tap","interface":"x"}]}"#),
            },
            409,
            "exists on switch",
        );
        refused(
            Change::SetSwitch {
                name: "sw1".into(),
                body: json(r#"{"mac_ageing_s":5}"#),
            },
            400,
            "mac_ageing_s",
        );
        refused(Change::RemoveSwitch { name: "sw1".into() }, 409, "\"pg2\"");
        refused(
            Change::RemoveSwitch {
                name: "nope".into(),
            },
            404,
            "No switch",
        );
    }

    #[test]
    fn uplinks() {
        let new = change(
            &base(),
            Change::AddUplink {
                switch: "sw1".into(),
                body: json(r#"{"name":"u2","type":"tap","interface":"sfapi2"}"#),
            },
        )
        .unwrap();
        assert_eq!(new.switch("sw1").unwrap().uplinks[0].kind, UplinkType::Tap);
        let mut c = base();
        c.port_groups[0].teaming = Teaming::default();
        let new = change(
            &c,
            Change::RemoveUplink {
                switch: "vSwitch0".into(),
                name: "u0".into(),
            },
        )
        .unwrap();
        assert_eq!(new.switch("vSwitch0").unwrap().uplinks.len(), 1);
    }

    #[test]
    fn uplink_refusals() {
        let add = |switch: &str, body: &str| Change::AddUplink {
            switch: switch.into(),
            body: json(body),
        };
        refused(
            add("nope", r#"{"name":"u2","type":"tap","interface":"x"}"#),
            404,
            "No switch",
        );
        refused(
            add("sw1", r#"{"name":"u0","type":"tap","interface":"x"}"#),
            409,
            "exists",
        );
        refused(
            add("sw1", r#"{"name":"u2","type":"tap","interface":"sfapi0"}"#),
            409,
            "already uplink",
        );
        refused(
            add(
                "sw1",
                r#"{"name":"u2","type":"tap","interface":"much-too-long-ifname"}"#,
            ),
            400,
            "interface name",
        );
        let remove = |switch: &str, name: &str| Change::RemoveUplink {
            switch: switch.into(),
            name: name.into(),
        };
        refused(remove("vSwitch0", "u1"), 409, "\"pg\"");
        refused(remove("sw1", "u0"), 404, "no uplink");
        refused(remove("nope", "u0"), 404, "No switch");
    }

    #[test]
    fn port_groups() {
        let new = change(
            &base(),
            Change::AddPortGroup(json(
                r#"{"name":"trunk","vlan":{"mode":"trunk","allowed":[10,20]},
                    "teaming":{"policy":"ip_hash","active":["u1"]}}"#,
            )),
        )
        .unwrap();
        let g = new.port_groups.iter().find(|g| g.name == "trunk").unwrap();
        assert_eq!(g.switch, "vSwitch0");
        assert_eq!(g.teaming.policy, LoadBalancing::IpHash);

        let new = change(
            &base(),
            Change::SetPortGroup {
                name: "pg".into(),
                body: json(
                    r#"{"name":"pg","switch":"vSwitch0","vlan":{"mode":"access","id":20},
                        "security":{"forged_transmits":true},
                        "shaping":{"egress":{"average_bps":1000000,"peak_bps":2000000,"burst_bytes":65536}}}"#,
                ),
            },
        )
        .unwrap();
        let g = &new.port_groups[0];
        assert_eq!(g.vlan, VlanMode::Access { id: 20 });
        assert!(g.security.forged_transmits);
        assert_eq!(g.shaping.egress.unwrap().peak_bps, 2_000_000);
        // Left out: the default (teaming no longer names u0 and u1).
        assert_eq!(g.teaming, Teaming::default());
        assert_eq!(new.ports, base().ports);

        let mut c = base();
        c.ports.retain(|p| p.port_group != "pg2");
        let new = change(&c, Change::RemovePortGroup { name: "pg2".into() }).unwrap();
        assert_eq!(new.port_groups.len(), 1);
    }

    #[test]
    fn port_group_refusals() {
        let add = |body: &str| Change::AddPortGroup(json::<PortGroupConfig>(body));
        refused(add(r#"{"name":"pg"}"#), 409, "exists");
        refused(add(r#"{"name":"x","switch":"nope"}"#), 404, "No switch");
        refused(
            add(r#"{"name":"x","teaming":{"active":["u9"]}}"#),
            404,
            "does not have",
        );
        refused(
            add(r#"{"name":"x","switch":"sw1","teaming":{"active":["u0"]}}"#),
            404,
            "does not have",
        );
        refused(
            add(r#"{"name":"x","vlan":{"mode":"access","id":4095}}"#),
            400,
            "outside",
        );
        refused(
            add(r#"{"name":"x","teaming":{"active":["u0"],"standby":["u0"]}}"#),
            400,
            "twice",
        );
        refused(
            add(
                r#"{"name":"x","shaping":{"ingress":{"average_bps":10000000,"peak_bps":1,"burst_bytes":9000}}}"#,
            ),
            400,
            "below",
        );
        let set = |name: &str, body: &str| Change::SetPortGroup {
            name: name.into(),
            body: json(body),
        };
        refused(set("nope", "{}"), 404, "No port group");
        refused(set("pg", r#"{"name":"pg9"}"#), 400, "cannot change");
        refused(set("pg", r#"{"switch":"sw1"}"#), 400, "cannot change");
        refused(
            set("pg2", r#"{"teaming":{"active":["u0"]}}"#),
            404,
            "does not have",
        );
        refused(
            set("pg", r#"{"vlan":{"mode":"trunk","allowed":[]}}"#),
            400,
            "at least one",
        );
        refused(Change::RemovePortGroup { name: "pg".into() }, 409, "\"a\"");
        refused(
            Change::RemovePortGroup {
                name: "nope".into(),
            },
            404,
            "No port group",
        );
    }

    #[test]
    fn ports() {
        let new = change(
            &base(),
            Change::AddPort(json(
                r#"{"name":"c","socket":"/run/c.sock","mode":"client","mac":"52:54:00:00:00:03","port_group":"pg","queues":4,"mtu":9000}"#,
            )),
        )
        .unwrap();
        let p = new.ports.iter().find(|p| p.name == "c").unwrap();
        assert_eq!((p.mode, p.queues, p.mtu), (SocketMode::Client, 4, 9000));

        // The body as GET shows it, with the group moved: accepted.
        let mut shown = serde_json::to_value(&base().ports[1]).unwrap();
        shown["port_group"] = "pg".into();
        shown["mtu"] = 9000.into();
        let new = change(
            &base(),
            Change::SetPort {
                name: "b".into(),
                body: serde_json::from_value(shown).unwrap(),
            },
        )
        .unwrap();
        let p = &new.ports[1];
        assert_eq!((p.port_group.as_str(), p.mtu, p.queues), ("pg", 9000, 2));

        let new = change(&base(), Change::RemovePort { name: "a".into() }).unwrap();
        assert_eq!(new.ports.len(), 1);
    }

    #[test]
    fn port_refusals() {
        let add = |body: &str| Change::AddPort(json::<PortConfig>(body));
        refused(
            add(
                r#"{"name":"a","socket":"/run/x.sock","mac":"52:54:00:00:00:09","port_group":"pg"}"#,
            ),
            409,
            "exists",
        );
        refused(
            add(
                r#"{"name":"c","socket":"/run/a.sock","mac":"52:54:00:00:00:09","port_group":"pg"}"#,
            ),
            409,
            "\"a\"",
        );
        refused(
            add(
                r#"{"name":"c","socket":"/run/c.sock","mac":"52:54:00:00:00:09","port_group":"nope"}"#,
            ),
            404,
            "No port group",
        );
        refused(
            add(
                r#"{"name":"c","socket":"/run/c.sock","mac":"ff:ff:ff:ff:ff:ff","port_group":"pg"}"#,
            ),
            400,
            "unicast",
        );
        refused(
            add(
                r#"{"name":"c","socket":"run/c.sock","mac":"52:54:00:00:00:09","port_group":"pg"}"#,
            ),
            400,
            "absolute",
        );
        refused(
            add(
                r#"{"name":"c","socket":"/run/c.sock","mac":"52:54:00:00:00:09","port_group":"pg","mtu":20}"#,
            ),
            400,
            "MTU",
        );
        refused(
            add(
                r#"{"name":"c","socket":"/run/c.sock","mac":"52:54:00:00:00:09","port_group":"pg","queues":0}"#,
            ),
            400,
            "queues",
        );
        let set = |name: &str, body: &str| Change::SetPort {
            name: name.into(),
            body: json::<PortSettings>(body),
        };
        let mac = r#""mac":"52:54:00:00:00:01""#;
        refused(
            set("nope", &format!(r#"{{"port_group":"pg",{mac}}}"#)),
            404,
            "No port",
        );
        refused(
            set("a", &format!(r#"{{"port_group":"nope",{mac}}}"#)),
            404,
            "No port group",
        );
        for (field, value) in [
            ("name", r#""z""#),
            ("socket", r#""/run/z.sock""#),
            ("mode", r#""client""#),
            ("queues", "3"),
        ] {
            refused(
                set(
                    "a",
                    &format!(r#"{{"port_group":"pg",{mac},"{field}":{value}}}"#),
                ),
                400,
                "delete the port",
            );
        }
        refused(
            set("a", r#"{"port_group":"pg","mac":"01:00:5e:00:00:01"}"#),
            400,
            "unicast",
        );
        refused(
            set("a", &format!(r#"{{"port_group":"pg",{mac},"mtu":9001}}"#)),
            400,
            "MTU",
        );
        refused(Change::RemovePort { name: "z".into() }, 404, "No port");
    }

    #[test]
    fn replacing_the_whole_configuration() {
        let new = change(&base(), Change::ReplaceConfig(SwitchConfig::default())).unwrap();
        assert_eq!(new, SwitchConfig::default());
        let mut bad = base();
        bad.ports[1].port_group = "nope".into();
        refused(Change::ReplaceConfig(bad), 400, "does not exist");
    }
}
