//! `sfera-vswitchd`'s client commands: what each sends to a running
//! daemon's API and how the answer is shown (`--json`: the API's JSON as
//! is; otherwise tables, or the object as indented JSON).
//!
//! Bodies are the API's own types ([`crate::control_plane::api::types`]).
//! `set` commands read the object, change what their flags name, and put
//! it back; the daemon checks every value, and its message is the error
//! (a MAC address is read here, as the body's type holds one).

#![forbid(unsafe_code)]

pub mod policy_flags;
pub mod show;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use control::client::{CallError, UnixApi};
use control::path::encode_segment as seg;

use crate::control_plane::api::request::{DEFAULT_MAC_AGEING_S, DEFAULT_MTU};
use crate::control_plane::api::types::{
    MacAddr, PortConfig, PortGroupConfig, PortGroupSettings, PortSettings, SocketMode,
    SwitchSettings, UplinkConfig, UplinkType, VSwitchConfig,
};
use crate::control_plane::config::DEFAULT_SWITCH;

pub use policy_flags::PolicyFlags;

/// Errors of a client command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("Cannot reach sfera-vswitchd on {} (is it running with this --api?)", api.display())]
    Connect {
        api: PathBuf,
        #[source]
        source: Box<CallError>,
    },
    /// The daemon refused: its message.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("Unexpected answer from sfera-vswitchd")]
    Answer(#[source] serde_json::Error),
    #[error("Cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot write the output")]
    Output(#[source] std::io::Error),
}

/// Which side of a port's socket the switch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The switch listens, the VMM connects.
    Server,
    /// The VMM listens, the switch connects.
    Client,
}

/// How an uplink reaches the host network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UplinkKind {
    /// A TAP device the switch creates (or opens).
    Tap,
    /// An AF_PACKET socket on an existing host interface.
    AfPacket,
}

/// Commands that talk to a running daemon over `--api`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Virtual switches.
    #[command(subcommand)]
    Switch(SwitchCmd),
    /// A switch's uplinks (host NICs).
    #[command(subcommand)]
    Uplink(UplinkCmd),
    /// Port groups: VLAN, security, shaping and teaming policy.
    #[command(subcommand, name = "portgroup")]
    PortGroup(PortGroupCmd),
    /// VM ports (vhost-user-net sockets).
    #[command(subcommand)]
    Port(PortCmd),
    /// The addresses a switch has learned.
    MacTable { switch: String },
    /// Counters of every port and uplink, or of one port.
    Stats { port: Option<String> },
    /// Prometheus metrics.
    Metrics,
    /// The whole configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Debug, Subcommand)]
pub enum SwitchCmd {
    /// List the switches.
    List,
    /// Show a switch as JSON.
    Show { name: String },
    /// Add a switch.
    Add {
        name: String,
        /// Seconds a learned address lasts without traffic.
        #[arg(long, value_name = "SECONDS")]
        mac_ageing: Option<u32>,
    },
    /// Change a switch's MAC ageing.
    Set {
        name: String,
        #[arg(long, value_name = "SECONDS")]
        mac_ageing: Option<u32>,
    },
    /// Remove a switch (it must have no port groups).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum UplinkCmd {
    /// List a switch's uplinks.
    List { switch: String },
    /// Show an uplink as JSON.
    Show { switch: String, name: String },
    /// Add an uplink to a switch.
    Add {
        switch: String,
        name: String,
        #[arg(long = "type", value_name = "TYPE")]
        kind: UplinkKind,
        /// The host interface (default: the uplink's name).
        #[arg(long, value_name = "IFNAME")]
        interface: Option<String>,
    },
    /// Remove an uplink (no port group's teaming may name it).
    Remove { switch: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum PortGroupCmd {
    /// List the port groups and their policy.
    List,
    /// Show a port group as JSON.
    Show { name: String },
    /// Add a port group; its policy comes from the flags (defaults: no
    /// VLAN, reject all three security items, no shaping, teaming by
    /// originating port over all uplinks).
    Add {
        name: String,
        #[arg(long, default_value = DEFAULT_SWITCH)]
        switch: String,
        #[command(flatten)]
        policy: PolicyFlags,
    },
    /// Change the policy flags given; the rest stays.
    Set {
        name: String,
        #[command(flatten)]
        policy: PolicyFlags,
    },
    /// Remove a port group (it must have no ports).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// List the ports.
    List,
    /// Show a port as JSON.
    Show { name: String },
    /// Add a VM port: a vhost-user-net socket for the VMM.
    Add {
        name: String,
        /// The vhost-user socket.
        #[arg(long)]
        socket: PathBuf,
        /// The guest's MAC address.
        #[arg(long)]
        mac: MacAddr,
        #[arg(long)]
        port_group: String,
        #[arg(long, value_enum, default_value_t = Mode::Server)]
        mode: Mode,
        #[arg(long)]
        mtu: Option<u16>,
        /// Queue pairs (multi-queue virtio-net).
        #[arg(long)]
        queues: Option<u16>,
    },
    /// Move a port to another port group, or change its MAC or MTU.
    Set {
        name: String,
        #[arg(long)]
        port_group: Option<String>,
        #[arg(long)]
        mac: Option<MacAddr>,
        #[arg(long)]
        mtu: Option<u16>,
    },
    /// Remove a port (its VMM is disconnected).
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Show the whole configuration as JSON.
    Show,
    /// Replace the whole configuration with a JSON file's.
    Replace { file: PathBuf },
}

/// What a command shows of its answer.
enum Output {
    /// Indented JSON.
    Object,
    Table(fn(&Value) -> Result<String, CliError>),
    /// The body as is (metrics).
    Text,
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, CliError> {
    serde_json::from_value(v.clone()).map_err(CliError::Answer)
}

fn to_json<T: Serialize>(value: &T) -> Result<Value, CliError> {
    serde_json::to_value(value).map_err(CliError::Answer)
}

/// How long the daemon has to answer (applying a change may create TAPs
/// and sockets, but never takes this long).
const TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one daemon.
struct Api {
    client: UnixApi,
}

impl Api {
    /// Sends a request; a refusal is an error with the daemon's message.
    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<String, CliError> {
        let (status, text) = self
            .client
            .call_blocking(method, path, body)
            .map_err(|source| CliError::Connect {
                api: self.client.socket.clone(),
                source: Box::new(source),
            })?;
        if status >= 400 {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(CliError::Api { status, message });
        }
        Ok(text)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        serde_json::from_str(&self.call(Method::GET, path, None)?).map_err(CliError::Answer)
    }
}

/// Runs a client command against the daemon on `api`, writing what it
/// shows to `out`.
pub fn run(
    api: &Path,
    raw: bool,
    command: ClientCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let api = Api {
        client: UnixApi::new("sfera-vswitchd", api).with_timeout(TIMEOUT),
    };
    let (method, path, body, output) = plan(&api, command)?;
    let text = api.call(method, &path, body.as_ref())?;
    let shown = if text.is_empty() {
        String::new()
    } else if raw || matches!(output, Output::Text) {
        format!("{}\n", text.trim_end())
    } else {
        let value: Value = serde_json::from_str(&text).map_err(CliError::Answer)?;
        match output {
            Output::Table(render) => render(&value)?,
            Output::Object | Output::Text => {
                let pretty = serde_json::to_string_pretty(&value).map_err(CliError::Answer)?;
                format!("{pretty}\n")
            }
        }
    };
    out.write_all(shown.as_bytes()).map_err(CliError::Output)
}

type Plan = (Method, String, Option<Value>, Output);

fn get(path: String, output: Output) -> Plan {
    (Method::GET, path, None, output)
}

fn delete(path: String) -> Plan {
    (Method::DELETE, path, None, Output::Object)
}

/// The request a command makes (after reading the object, for `set`).
fn plan(api: &Api, command: ClientCommand) -> Result<Plan, CliError> {
    Ok(match command {
        ClientCommand::Switch(cmd) => plan_switch(api, cmd)?,
        ClientCommand::Uplink(cmd) => plan_uplink(cmd)?,
        ClientCommand::PortGroup(cmd) => plan_port_group(api, cmd)?,
        ClientCommand::Port(cmd) => plan_port(api, cmd)?,
        ClientCommand::MacTable { switch } => get(
            format!("/v1/switches/{}/mac-table", seg(&switch)),
            Output::Table(|v| Ok(show::mac_table(v))),
        ),
        ClientCommand::Stats { port: None } => {
            get("/v1/stats".into(), Output::Table(|v| Ok(show::stats(v))))
        }
        ClientCommand::Stats { port: Some(port) } => get(
            format!("/v1/ports/{}/stats", seg(&port)),
            Output::Table(|v| Ok(show::port_stats(v))),
        ),
        ClientCommand::Metrics => get("/metrics".into(), Output::Text),
        ClientCommand::Config(ConfigCmd::Show) => get("/v1/config".into(), Output::Object),
        ClientCommand::Config(ConfigCmd::Replace { file }) => {
            let text = std::fs::read_to_string(&file).map_err(|source| CliError::Read {
                path: file.clone(),
                source,
            })?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", file.display())))?;
            (Method::PUT, "/v1/config".into(), Some(body), Output::Object)
        }
    })
}

fn plan_switch(api: &Api, cmd: SwitchCmd) -> Result<Plan, CliError> {
    Ok(match cmd {
        SwitchCmd::List => get(
            "/v1/switches".into(),
            Output::Table(|v| Ok(show::switches(&typed::<Vec<VSwitchConfig>>(v)?))),
        ),
        SwitchCmd::Show { name } => get(format!("/v1/switches/{}", seg(&name)), Output::Object),
        SwitchCmd::Add { name, mac_ageing } => {
            let switch = VSwitchConfig {
                name,
                uplinks: Vec::new(),
                mac_ageing_s: mac_ageing.unwrap_or(DEFAULT_MAC_AGEING_S),
            };
            (
                Method::POST,
                "/v1/switches".into(),
                Some(to_json(&switch)?),
                Output::Object,
            )
        }
        SwitchCmd::Set { name, mac_ageing } => {
            let path = format!("/v1/switches/{}", seg(&name));
            let current: VSwitchConfig = api.get(&path)?;
            let body = SwitchSettings {
                name: None,
                mac_ageing_s: mac_ageing.unwrap_or(current.mac_ageing_s),
                uplinks: None,
            };
            (Method::PUT, path, Some(to_json(&body)?), Output::Object)
        }
        SwitchCmd::Remove { name } => delete(format!("/v1/switches/{}", seg(&name))),
    })
}

fn plan_uplink(cmd: UplinkCmd) -> Result<Plan, CliError> {
    Ok(match cmd {
        UplinkCmd::List { switch } => get(
            format!("/v1/switches/{}/uplinks", seg(&switch)),
            Output::Table(|v| Ok(show::uplinks(&typed::<Vec<_>>(v)?))),
        ),
        UplinkCmd::Show { switch, name } => get(
            format!("/v1/switches/{}/uplinks/{}", seg(&switch), seg(&name)),
            Output::Object,
        ),
        UplinkCmd::Add {
            switch,
            name,
            kind,
            interface,
        } => {
            let uplink = UplinkConfig {
                interface: interface.unwrap_or_else(|| name.clone()),
                name,
                kind: match kind {
                    UplinkKind::Tap => UplinkType::Tap,
                    UplinkKind::AfPacket => UplinkType::AfPacket,
                },
            };
            (
                Method::POST,
                format!("/v1/switches/{}/uplinks", seg(&switch)),
                Some(to_json(&uplink)?),
                Output::Object,
            )
        }
        UplinkCmd::Remove { switch, name } => delete(format!(
            "/v1/switches/{}/uplinks/{}",
            seg(&switch),
            seg(&name)
        )),
    })
}

fn plan_port_group(api: &Api, cmd: PortGroupCmd) -> Result<Plan, CliError> {
    Ok(match cmd {
        PortGroupCmd::List => get(
            "/v1/port-groups".into(),
            Output::Table(|v| Ok(show::port_groups(&typed::<Vec<_>>(v)?))),
        ),
        PortGroupCmd::Show { name } => {
            get(format!("/v1/port-groups/{}", seg(&name)), Output::Object)
        }
        PortGroupCmd::Add {
            name,
            switch,
            policy,
        } => {
            let mut group = PortGroupConfig::new(name, switch);
            policy.apply_to(&mut group)?;
            (
                Method::POST,
                "/v1/port-groups".into(),
                Some(to_json(&group)?),
                Output::Object,
            )
        }
        PortGroupCmd::Set { name, policy } => {
            let path = format!("/v1/port-groups/{}", seg(&name));
            let mut group: PortGroupConfig = api.get(&path)?;
            policy.apply_to(&mut group)?;
            let body = PortGroupSettings::from(group);
            (Method::PUT, path, Some(to_json(&body)?), Output::Object)
        }
        PortGroupCmd::Remove { name } => delete(format!("/v1/port-groups/{}", seg(&name))),
    })
}

fn plan_port(api: &Api, cmd: PortCmd) -> Result<Plan, CliError> {
    Ok(match cmd {
        PortCmd::List => get(
            "/v1/ports".into(),
            Output::Table(|v| Ok(show::ports(&typed::<Vec<_>>(v)?))),
        ),
        PortCmd::Show { name } => get(format!("/v1/ports/{}", seg(&name)), Output::Object),
        PortCmd::Add {
            name,
            socket,
            mac,
            port_group,
            mode,
            mtu,
            queues,
        } => {
            let socket = std::path::absolute(&socket).map_err(|source| CliError::Read {
                path: socket.clone(),
                source,
            })?;
            let port = PortConfig {
                name,
                socket,
                mode: match mode {
                    Mode::Server => SocketMode::Server,
                    Mode::Client => SocketMode::Client,
                },
                mac,
                port_group,
                mtu: mtu.unwrap_or(DEFAULT_MTU),
                queues: queues.unwrap_or(1),
            };
            (
                Method::POST,
                "/v1/ports".into(),
                Some(to_json(&port)?),
                Output::Object,
            )
        }
        PortCmd::Set {
            name,
            port_group,
            mac,
            mtu,
        } => {
            let path = format!("/v1/ports/{}", seg(&name));
            let current: PortConfig = api.get(&path)?;
            let mut body = PortSettings::from(current);
            if let Some(g) = port_group {
                body.port_group = g;
            }
            if let Some(m) = mac {
                body.mac = m;
            }
            if let Some(m) = mtu {
                body.mtu = m;
            }
            (Method::PUT, path, Some(to_json(&body)?), Output::Object)
        }
        PortCmd::Remove { name } => delete(format!("/v1/ports/{}", seg(&name))),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::control_plane::api::http::spawn_test_server;
    use crate::control_plane::service::Control;
    use crate::dataplane::policy::VlanMode;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: ClientCommand,
    }

    /// Runs `args` as the CLI would against the daemon on `api`.
    fn cli(api: &Path, args: &str) -> Result<String, CliError> {
        let parsed = Cli::try_parse_from(std::iter::once("cli").chain(args.split_whitespace()))
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let mut out = Vec::new();
        run(api, parsed.json, parsed.command, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn commands_through_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let (api, vswitchd) = spawn_test_server(dir.path());
        cli(&api, "switch add sw1 --mac-ageing 60").unwrap();
        cli(&api, "switch set sw1 --mac-ageing 90").unwrap();
        cli(&api, "uplink add sw1 u0 --type tap --interface sfcli0").unwrap();
        cli(&api, "uplink add sw1 eth7 --type af-packet").unwrap();
        cli(
            &api,
            "portgroup add pg --switch sw1 --vlan-access 10 --forged-transmits accept \
             --teaming-policy failover-order --active u0 --standby eth7",
        )
        .unwrap();
        cli(
            &api,
            "port add a --socket /run/a.sock --mac 52:54:00:00:00:01 --port-group pg --queues 2",
        )
        .unwrap();
        // `set` changes only what its flags name.
        cli(
            &api,
            "portgroup set pg --egress-average 10M --egress-burst 64K",
        )
        .unwrap();
        cli(&api, "port set a --mtu 9000").unwrap();

        let c = vswitchd.daemon().config();
        let sw = c.switch("sw1").unwrap();
        assert_eq!(sw.mac_ageing_s, 90);
        assert_eq!(sw.uplinks[1].interface, "eth7");
        let g = &c.port_groups[0];
        assert_eq!(g.vlan, VlanMode::Access { id: 10 });
        assert!(g.security.forged_transmits);
        assert_eq!(g.teaming.standby, ["eth7"]);
        assert_eq!(g.shaping.egress.unwrap().peak_bps, 10_000_000);
        let p = &c.ports[0];
        assert_eq!(
            (p.mtu, p.queues, p.mac.to_string().as_str()),
            (9000, 2, "52:54:00:00:00:01")
        );

        let text = cli(&api, "portgroup list").unwrap();
        assert!(text.starts_with("NAME"), "{text}");
        assert!(
            text.contains("access 10") && text.contains("10M/10M/64K"),
            "{text}"
        );
        let text = cli(&api, "port list").unwrap();
        assert!(text.contains("/run/a.sock"), "{text}");
        let listed: Value =
            serde_json::from_str(&cli(&api, "--json switch list").unwrap()).unwrap();
        assert_eq!(listed[1]["name"], "sw1");
        let text = cli(&api, "mac-table sw1").unwrap();
        assert!(text.contains("52:54:00:00:00:01"), "{text}");
        let text = cli(&api, "stats a").unwrap();
        assert!(text.contains("switch:") && text.contains("sw1"), "{text}");
        assert!(cli(&api, "metrics").unwrap().contains("# TYPE"));
        assert!(cli(&api, "stats").unwrap().contains("worker:"));

        // Refusals: the daemon's message, nothing changed.
        let before = vswitchd.daemon().config();
        for (args, says) in [
            ("portgroup remove pg", "has ports"),
            ("uplink remove sw1 u0", "teaming"),
            ("switch remove sw1", "has port groups"),
            ("port set a --port-group nope", "No port group"),
            (
                "port add b --socket /run/a.sock --mac 52:54:00:00:00:02 --port-group pg",
                "Socket",
            ),
            ("portgroup set pg --vlan-access 5000", "outside"),
            ("portgroup set nope --no-vlan", "No port group"),
            ("port show a%b", "No port"),
            ("portgroup set pg --native-vlan 3", "trunks only"),
        ] {
            let e = cli(&api, args).unwrap_err().to_string();
            assert!(e.contains(says), "{args}: {e}");
        }
        assert_eq!(vswitchd.daemon().config(), before);

        cli(&api, "port remove a").unwrap();
        cli(&api, "portgroup remove pg").unwrap();
        assert!(vswitchd.daemon().config().ports.is_empty());
        let e = cli(Path::new("/nonexistent/api.sock"), "switch list").unwrap_err();
        assert!(matches!(e, CliError::Connect { .. }), "{e}");
    }
}
