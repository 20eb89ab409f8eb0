//! The API's control object: it carries out [`Request`]s against the
//! running switch and keeps the state file in step with it.
//!
//! Every change goes the same way: take the configuration in force, make
//! the edited copy ([`edit::change`], which validates it), have the switch
//! apply it, and only then save it. A refused change touches neither the
//! switch nor the state file; a change whose saving fails is undone.

#![forbid(unsafe_code)]

use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::control_plane::api::edit;
use crate::control_plane::api::metrics_text;
use control::error_chain;
use control::server::{PROMETHEUS_TEXT, Reply};

use crate::control_plane::api::request::{ApiError, Change, Query, Request};
use crate::control_plane::api::types::{MacEntry, PortStats, Stats};
use crate::control_plane::config::SwitchConfig;
use crate::control_plane::daemon::{Daemon, DaemonError};
use crate::control_plane::persist::StateFile;

/// What the API needs of the running switch: the [`Daemon`], or a stand-in
/// in tests.
pub trait Control: Send + Sync + 'static {
    /// The configuration in force.
    fn config(&self) -> SwitchConfig;
    /// Replaces the configuration; on error nothing changed.
    fn apply(&self, new: SwitchConfig) -> Result<(), DaemonError>;
    /// Counters of every port and uplink.
    fn stats(&self) -> Stats;
    /// The MAC table of a switch; `None` when there is no such switch.
    fn mac_table(&self, switch: &str) -> Option<Vec<MacEntry>>;
}

impl Control for Daemon {
    fn config(&self) -> SwitchConfig {
        Daemon::config(self)
    }

    fn apply(&self, new: SwitchConfig) -> Result<(), DaemonError> {
        Daemon::apply(self, new)
    }

    fn stats(&self) -> Stats {
        Daemon::stats(self)
    }

    fn mac_table(&self, switch: &str) -> Option<Vec<MacEntry>> {
        Daemon::mac_table(self, switch)
    }
}

/// sfera-vswitchd's API control object.
pub struct Vswitchd<D> {
    daemon: D,
    /// Where changes are saved; `None` when they are not (`--config` only).
    state: Option<StateFile>,
    /// Held from reading the configuration to saving its change, so two
    /// changes cannot both start from the same configuration.
    changes: Mutex<()>,
}

impl<D> std::fmt::Debug for Vswitchd<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vswitchd")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// What a change answers with, decided before the change is consumed.
enum Outcome {
    Config,
    Switch { name: String, created: bool },
    Uplink { switch: String, name: String },
    PortGroup { name: String, created: bool },
    Port { name: String, created: bool },
    Removed,
}

impl Outcome {
    fn of(change: &Change) -> Outcome {
        match change {
            Change::ReplaceConfig(_) => Outcome::Config,
            Change::AddSwitch(s) => Outcome::Switch {
                name: s.name.clone(),
                created: true,
            },
            Change::SetSwitch { name, .. } => Outcome::Switch {
                name: name.clone(),
                created: false,
            },
            Change::AddUplink { switch, body } => Outcome::Uplink {
                switch: switch.clone(),
                name: body.name.clone(),
            },
            Change::AddPortGroup(g) => Outcome::PortGroup {
                name: g.name.clone(),
                created: true,
            },
            Change::SetPortGroup { name, .. } => Outcome::PortGroup {
                name: name.clone(),
                created: false,
            },
            Change::AddPort(p) => Outcome::Port {
                name: p.name.clone(),
                created: true,
            },
            Change::SetPort { name, .. } => Outcome::Port {
                name: name.clone(),
                created: false,
            },
            Change::RemoveSwitch { .. }
            | Change::RemoveUplink { .. }
            | Change::RemovePortGroup { .. }
            | Change::RemovePort { .. } => Outcome::Removed,
        }
    }

    fn answer(self, c: &SwitchConfig) -> Result<Reply, ApiError> {
        match self {
            Outcome::Config => json(false, c),
            Outcome::Switch { name, created } => json(created, find_switch(c, &name)?),
            Outcome::Uplink { switch, name } => json(true, find_uplink(c, &switch, &name)?),
            Outcome::PortGroup { name, created } => json(created, find_port_group(c, &name)?),
            Outcome::Port { name, created } => json(created, find_port(c, &name)?),
            Outcome::Removed => Ok(Reply::Empty),
        }
    }
}

/// A change in a few words, for the log.
fn describe(change: &Change) -> String {
    match change {
        Change::ReplaceConfig(_) => "replace the whole configuration".to_owned(),
        Change::AddSwitch(s) => format!("add switch {:?}", s.name),
        Change::SetSwitch { name, .. } => format!("set switch {name:?}"),
        Change::RemoveSwitch { name } => format!("remove switch {name:?}"),
        Change::AddUplink { switch, body } => {
            format!("add uplink {:?} to switch {switch:?}", body.name)
        }
        Change::RemoveUplink { switch, name } => {
            format!("remove uplink {name:?} from switch {switch:?}")
        }
        Change::AddPortGroup(g) => format!("add port group {:?}", g.name),
        Change::SetPortGroup { name, .. } => format!("set port group {name:?}"),
        Change::RemovePortGroup { name } => format!("remove port group {name:?}"),
        Change::AddPort(p) => format!("add port {:?}", p.name),
        Change::SetPort { name, .. } => format!("set port {name:?}"),
        Change::RemovePort { name } => format!("remove port {name:?}"),
    }
}

fn json<T: Serialize + ?Sized>(created: bool, value: &T) -> Result<Reply, ApiError> {
    let body = serde_json::to_value(value)
        .map_err(|e| ApiError::internal(format!("Cannot encode the answer: {e}")))?;
    Ok(if created {
        Reply::Created(body)
    } else {
        Reply::Json(body)
    })
}

fn find_switch<'a>(
    c: &'a SwitchConfig,
    name: &str,
) -> Result<&'a crate::control_plane::config::VSwitchConfig, ApiError> {
    c.switch(name)
        .ok_or_else(|| ApiError::not_found(format!("No switch {name:?}")))
}

fn find_uplink<'a>(
    c: &'a SwitchConfig,
    switch: &str,
    name: &str,
) -> Result<&'a crate::control_plane::config::UplinkConfig, ApiError> {
    find_switch(c, switch)?
        .uplinks
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Switch {switch:?} has no uplink {name:?}")))
}

fn find_port_group<'a>(
    c: &'a SwitchConfig,
    name: &str,
) -> Result<&'a crate::control_plane::config::PortGroupConfig, ApiError> {
    c.port_groups
        .iter()
        .find(|g| g.name == name)
        .ok_or_else(|| ApiError::not_found(format!("No port group {name:?}")))
}

fn find_port<'a>(
    c: &'a SwitchConfig,
    name: &str,
) -> Result<&'a crate::control_plane::config::PortConfig, ApiError> {
    c.ports
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("No port {name:?}")))
}

impl<D: Control> Vswitchd<D> {
    /// The control object of `daemon`, saving changes to `state` if given.
    pub fn new(daemon: D, state: Option<StateFile>) -> Self {
        Vswitchd {
            daemon,
            state,
            changes: Mutex::new(()),
        }
    }

    /// The running switch.
    pub fn daemon(&self) -> &D {
        &self.daemon
    }

    /// Gives the running switch back (to shut it down).
    pub fn into_daemon(self) -> D {
        self.daemon
    }

    /// Carries out one request.
    pub fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        match request {
            Request::Query(q) => self.query(q),
            Request::Change(c) => self.change(c),
        }
    }

    fn change(&self, change: Change) -> Result<Reply, ApiError> {
        let _changing = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.daemon.config();
        let outcome = Outcome::of(&change);
        let what = describe(&change);
        let new = edit::change(&current, change)?;
        if new != current {
            self.daemon.apply(new.clone()).inspect_err(|e| {
                tracing::warn!("Cannot {what}: {}", error_chain(e));
            })?;
            if let Some(state) = &self.state
                && let Err(e) = state.save(&new)
            {
                let undone = match self.daemon.apply(current) {
                    Ok(()) => "the change was undone".to_owned(),
                    Err(u) => format!(
                        "undoing the change failed too ({}): the switch runs the new configuration until restarted",
                        error_chain(&u)
                    ),
                };
                let message = format!("{}; {undone}", error_chain(&e));
                tracing::error!("Cannot {what}: {message}");
                return Err(ApiError::internal(message));
            }
            tracing::info!("Configuration changed: {what}");
        }
        outcome.answer(&new)
    }

    fn query(&self, query: Query) -> Result<Reply, ApiError> {
        let c = self.daemon.config();
        match query {
            Query::Config => json(false, &c),
            Query::Switches => json(false, &c.switches),
            Query::Switch { name } => json(false, find_switch(&c, &name)?),
            Query::Uplinks { switch } => json(false, &find_switch(&c, &switch)?.uplinks),
            Query::Uplink { switch, name } => json(false, find_uplink(&c, &switch, &name)?),
            Query::PortGroups => json(false, &c.port_groups),
            Query::PortGroup { name } => json(false, find_port_group(&c, &name)?),
            Query::Ports => json(false, &c.ports),
            Query::Port { name } => json(false, find_port(&c, &name)?),
            Query::MacTable { switch } => {
                let table = self
                    .daemon
                    .mac_table(&switch)
                    .ok_or_else(|| ApiError::not_found(format!("No switch {switch:?}")))?;
                json(false, &table)
            }
            Query::Stats => json(false, &self.daemon.stats()),
            Query::PortStats { name } => {
                let port = find_port(&c, &name)?;
                let stats = self
                    .daemon
                    .stats()
                    .ports
                    .into_iter()
                    .find(|p| p.name == name)
                    .unwrap_or_else(|| PortStats {
                        name: port.name.clone(),
                        port_group: port.port_group.clone(),
                        switch: c
                            .group_of(port)
                            .map(|g| g.switch.clone())
                            .unwrap_or_default(),
                        ..PortStats::default()
                    });
                json(false, &stats)
            }
            Query::Metrics => {
                let stats = self.daemon.stats();
                let entries: Vec<(String, usize)> = c
                    .switches
                    .iter()
                    .map(|s| {
                        let n = self.daemon.mac_table(&s.name).map_or(0, |t| t.len());
                        (s.name.clone(), n)
                    })
                    .collect();
                Ok(Reply::Text {
                    content_type: PROMETHEUS_TEXT,
                    body: metrics_text::render(&stats, &entries),
                })
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A stand-in for the running switch: it keeps the configuration,
    //! refuses to apply when told to, and counts applies.

    use super::*;

    #[derive(Debug, Default)]
    pub(crate) struct FakeDaemon {
        pub(crate) config: Mutex<SwitchConfig>,
        /// The next applies fail with this message.
        pub(crate) refuse: Mutex<Option<String>>,
        pub(crate) applies: Mutex<usize>,
        pub(crate) stats: Stats,
    }

    impl Control for FakeDaemon {
        fn config(&self) -> SwitchConfig {
            self.config.lock().unwrap().clone()
        }

        fn apply(&self, new: SwitchConfig) -> Result<(), DaemonError> {
            new.validate()?;
            if let Some(why) = self.refuse.lock().unwrap().clone() {
                return Err(DaemonError::Apply(why));
            }
            *self.applies.lock().unwrap() += 1;
            *self.config.lock().unwrap() = new;
            Ok(())
        }

        fn stats(&self) -> Stats {
            self.stats.clone()
        }

        fn mac_table(&self, switch: &str) -> Option<Vec<MacEntry>> {
            self.config().switch(switch).map(|_| {
                vec![MacEntry {
                    vlan: 0,
                    mac: crate::dataplane::frame::MacAddr([0x52, 0x54, 0, 0, 0, 1]),
                    port: "a".into(),
                    age_s: 3,
                }]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeDaemon;
    use super::*;
    use crate::control_plane::persist::STATE_FILE;

    fn add_group(name: &str) -> Request {
        Request::Change(Change::AddPortGroup(
            serde_json::from_value(serde_json::json!({ "name": name })).unwrap(),
        ))
    }

    fn add_port(name: &str, group: &str) -> Request {
        Request::Change(Change::AddPort(
            serde_json::from_value(serde_json::json!({
                "name": name, "socket": format!("/run/{name}.sock"),
                "mac": "52:54:00:00:00:01", "port_group": group,
            }))
            .unwrap(),
        ))
    }

    fn body(r: Result<Reply, ApiError>) -> (bool, serde_json::Value) {
        match r.unwrap() {
            Reply::Json(body) => (false, body),
            Reply::Created(body) => (true, body),
            other => panic!("not JSON: {other:?}"),
        }
    }

    #[test]
    fn changes_are_applied_then_saved_and_refusals_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        let v = Vswitchd::new(FakeDaemon::default(), Some(state.clone()));

        let (created, group) = body(v.handle(add_group("pg")));
        assert!(created);
        assert_eq!(group["switch"], "vSwitch0");
        assert_eq!(state.load().unwrap(), Some(v.daemon().config()));
        assert_eq!(*v.daemon().applies.lock().unwrap(), 1);
        let saved = std::fs::read(dir.path().join(STATE_FILE)).unwrap();

        for (request, status) in [
            (add_group("pg"), 409),
            (add_port("a", "nope"), 404),
            (add_group("bad name"), 400),
            (
                Request::Change(Change::RemovePortGroup {
                    name: "nope".into(),
                }),
                404,
            ),
        ] {
            let e = v.handle(request).unwrap_err();
            assert_eq!(e.status, status, "{e:?}");
        }
        assert_eq!(*v.daemon().applies.lock().unwrap(), 1);
        assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), saved);

        // A refusal by the host: 409, nothing saved.
        *v.daemon().refuse.lock().unwrap() = Some("socket /run/a.sock is busy".into());
        let e = v.handle(add_port("a", "pg")).unwrap_err();
        assert_eq!((e.status, e.code), (409, "apply_failed"));
        assert!(e.message.contains("busy"), "{}", e.message);
        assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), saved);
        *v.daemon().refuse.lock().unwrap() = None;

        let (_, port) = body(v.handle(add_port("a", "pg")));
        assert_eq!(port["mtu"], 1500);
        assert_eq!(state.load().unwrap().unwrap().ports.len(), 1);
        assert_eq!(
            v.handle(Request::Change(Change::RemovePort { name: "a".into() })),
            Ok(Reply::Empty)
        );
        assert!(state.load().unwrap().unwrap().ports.is_empty());
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(&dir.path().join("missing-dir"));
        let v = Vswitchd::new(FakeDaemon::default(), Some(state));
        let e = v.handle(add_group("pg")).unwrap_err();
        assert_eq!((e.status, e.code), (500, "internal"));
        assert!(e.message.contains("undone"), "{}", e.message);
        assert_eq!(v.daemon().config(), SwitchConfig::default());
    }

    #[test]
    fn a_change_to_the_same_configuration_is_not_applied() {
        let v = Vswitchd::new(FakeDaemon::default(), None);
        body(v.handle(add_group("pg")));
        let same = serde_json::json!({ "vlan": { "mode": "none" } });
        let (created, _) = body(v.handle(Request::Change(Change::SetPortGroup {
            name: "pg".into(),
            body: serde_json::from_value(same).unwrap(),
        })));
        assert!(!created);
        assert_eq!(*v.daemon().applies.lock().unwrap(), 1);
    }

    #[test]
    fn queries() {
        let v = Vswitchd::new(FakeDaemon::default(), None);
        body(v.handle(add_group("pg")));
        body(v.handle(add_port("a", "pg")));
        let q = |q: Query| v.handle(Request::Query(q));
        let (_, c) = body(q(Query::Config));
        assert_eq!(c["ports"][0]["name"], "a");
        let (_, s) = body(q(Query::Switches));
        assert_eq!(s[0]["name"], "vSwitch0");
        let (_, t) = body(q(Query::MacTable {
            switch: "vSwitch0".into(),
        }));
        assert_eq!(t[0]["mac"], "52:54:00:00:00:01");
        // A configured port the dataplane has no counters for yet: zeros.
        let (_, p) = body(q(Query::PortStats { name: "a".into() }));
        assert_eq!(
            (p["switch"].clone(), p["rx_packets"].clone()),
            ("vSwitch0".into(), 0.into())
        );
        for query in [
            Query::Switch { name: "x".into() },
            Query::Uplinks { switch: "x".into() },
            Query::Uplink {
                switch: "vSwitch0".into(),
                name: "x".into(),
            },
            Query::PortGroup { name: "x".into() },
            Query::Port { name: "x".into() },
            Query::MacTable { switch: "x".into() },
            Query::PortStats { name: "x".into() },
        ] {
            let e = q(query.clone()).unwrap_err();
            assert_eq!(e.status, 404, "{query:?}");
        }
        let Ok(Reply::Text { body: text, .. }) = q(Query::Metrics) else {
            panic!("metrics");
        };
        assert!(text.contains("sfera_vswitch_mac_table_entries{switch=\"vSwitch0\"} 1"));
    }
}
