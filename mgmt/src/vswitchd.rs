//! What mgmtd asks of sfera-vswitchd: its switches and port groups, and a
//! port per VM NIC.
//!
//! A vswitchd with `serve` is driven over its REST API (`/v1/config`,
//! `/v1/port-groups`, `/v1/ports`, `/v1/stats`, `/metrics`). A vswitchd
//! that only takes `--config FILE` (before its API lands) is driven through
//! that file: mgmtd keeps the configuration, writes it, and restarts the
//! daemon to apply a change (NICs reconnect: QEMU's chardevs have
//! `reconnect=1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::blockd::encode_segment;
use crate::supervisor::{Readiness, Supervisor};
use crate::unix_client::DaemonCallError;

/// How the daemon is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchMode {
    /// Over its API (`sfera-vswitchd --api SOCK serve --data-dir DIR`).
    Api,
    /// Through a configuration file (`sfera-vswitchd --config FILE`).
    File(PathBuf),
}

/// Errors changing the switch.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error(transparent)]
    Call(#[from] DaemonCallError),
    #[error("{0}")]
    Invalid(String),
    #[error("Cannot write the switch configuration {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The switch did not come back with the new configuration: {0}")]
    Restart(String),
}

/// The port group mgmtd creates when the switch has none.
pub const DEFAULT_PORT_GROUP: &str = "vm-network";

/// sfera-vswitchd.
#[derive(Debug)]
pub struct Vswitchd {
    pub mode: SwitchMode,
    pub supervisor: Arc<Supervisor>,
    /// The configuration in force, in file mode.
    config: Mutex<Value>,
}

/// Does this vswitchd binary have the `serve` command (and its API)?
pub fn binary_has_api(binary: &Path) -> bool {
    std::process::Command::new(binary)
        .arg("--help")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().any(|l| l.trim_start().starts_with("serve "))
        })
        .unwrap_or(false)
}

/// The configuration a file-mode switch starts with: one switch and the
/// default port group.
pub fn initial_file_config() -> Value {
    json!({
        "switches": [{ "name": "vSwitch0", "uplinks": [] }],
        "port_groups": [{ "name": DEFAULT_PORT_GROUP, "switch": "vSwitch0", "vlan": { "mode": "none" } }],
        "ports": []
    })
}

/// The sockets of a configuration's ports (what a file-mode switch binds).
pub fn port_sockets(config: &Value) -> Vec<PathBuf> {
    config["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["socket"].as_str().map(PathBuf::from))
        .collect()
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

impl Vswitchd {
    /// In file mode, `config` is the configuration the daemon runs on.
    pub fn new(mode: SwitchMode, supervisor: Arc<Supervisor>, config: Value) -> Self {
        Vswitchd {
            mode,
            supervisor,
            config: Mutex::new(config),
        }
    }

    /// `{switches, port_groups, ports}`.
    pub async fn config(&self) -> Result<Value, SwitchError> {
        match &self.mode {
            SwitchMode::Api => Ok(self.supervisor.api().get("/v1/config").await?),
            SwitchMode::File(_) => Ok(self.config.lock().await.clone()),
        }
    }

    /// Applies `edit` to the file-mode configuration: write, restart, and
    /// put the old one back if the daemon does not come up.
    async fn edit_file(
        &self,
        path: &Path,
        edit: impl FnOnce(&mut Value) -> Result<(), SwitchError>,
    ) -> Result<(), SwitchError> {
        let mut config = self.config.lock().await;
        let mut next = config.clone();
        edit(&mut next)?;
        write_config(path, &next)?;
        self.supervisor
            .set_readiness(Readiness::Files(port_sockets(&next)));
        if let Err(e) = self.supervisor.restart_now().await {
            write_config(path, &config)?;
            self.supervisor
                .set_readiness(Readiness::Files(port_sockets(&config)));
            let _ = self.supervisor.restart_now().await;
            return Err(SwitchError::Restart(e));
        }
        *config = next;
        Ok(())
    }

    /// Makes sure the default port group exists.
    pub async fn ensure_default_port_group(&self) -> Result<(), SwitchError> {
        let config = self.config().await?;
        if !list(&config, "port_groups").is_empty() {
            return Ok(());
        }
        self.add_port_group(&json!({ "name": DEFAULT_PORT_GROUP, "vlan": { "mode": "none" } }))
            .await
    }

    pub async fn add_port_group(&self, group: &Value) -> Result<(), SwitchError> {
        match &self.mode {
            SwitchMode::Api => {
                self.supervisor
                    .api()
                    .call(Method::POST, "/v1/port-groups", Some(group))
                    .await?;
                Ok(())
            }
            SwitchMode::File(path) => {
                self.edit_file(path, |c| {
                    let name = group["name"].as_str().unwrap_or_default();
                    if list(c, "port_groups").iter().any(|g| g["name"] == name) {
                        return Err(SwitchError::Invalid(format!("port group {name:?} exists")));
                    }
                    let mut g = group.clone();
                    if g.get("switch").is_none() {
                        g["switch"] = json!("vSwitch0");
                    }
                    if let Some(groups) = c["port_groups"].as_array_mut() {
                        groups.push(g);
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    /// Adds a server-mode port: the switch listens on `socket`, QEMU
    /// connects.
    pub async fn add_port(
        &self,
        name: &str,
        socket: &Path,
        mac: &str,
        port_group: &str,
    ) -> Result<(), SwitchError> {
        let port = json!({ "name": name, "socket": socket, "mac": mac, "port_group": port_group });
        match &self.mode {
            SwitchMode::Api => {
                self.supervisor
                    .api()
                    .call(Method::POST, "/v1/ports", Some(&port))
                    .await?;
                Ok(())
            }
            SwitchMode::File(path) => {
                self.edit_file(path, |c| {
                    if !list(c, "port_groups")
                        .iter()
                        .any(|g| g["name"] == port_group)
                    {
                        return Err(SwitchError::Invalid(format!(
                            "port group {port_group:?} does not exist"
                        )));
                    }
                    if let Some(ports) = c["ports"].as_array_mut() {
                        ports.retain(|p| p["name"] != name);
                        ports.push(port);
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    /// Removes a port; a port that is not there is not an error.
    pub async fn remove_port(&self, name: &str) -> Result<(), SwitchError> {
        match &self.mode {
            SwitchMode::Api => {
                let path = format!("/v1/ports/{}", encode_segment(name));
                match self
                    .supervisor
                    .api()
                    .call(Method::DELETE, &path, None)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.status() == Some(404) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            SwitchMode::File(path) => {
                if !list(&*self.config.lock().await, "ports")
                    .iter()
                    .any(|p| p["name"] == name)
                {
                    return Ok(());
                }
                self.edit_file(path, |c| {
                    if let Some(ports) = c["ports"].as_array_mut() {
                        ports.retain(|p| p["name"] != name);
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    /// Counters per port and uplink (`{}` in file mode, which has no API).
    pub async fn stats(&self) -> Result<Value, SwitchError> {
        match &self.mode {
            SwitchMode::Api => Ok(self.supervisor.api().get("/v1/stats").await?),
            SwitchMode::File(_) => Ok(json!({})),
        }
    }

    /// The Prometheus text (empty in file mode).
    pub async fn metrics(&self) -> Result<String, SwitchError> {
        match &self.mode {
            SwitchMode::Api => {
                let (_, body) = self
                    .supervisor
                    .api()
                    .raw(Method::GET, "/metrics", None)
                    .await?;
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            SwitchMode::File(_) => Ok(String::new()),
        }
    }
}

/// Writes a configuration file atomically (temp file, then rename).
pub fn write_config(path: &Path, config: &Value) -> Result<(), SwitchError> {
    let tmp = path.with_extension("json.tmp");
    let write = |p: &Path| std::fs::write(p, config.to_string());
    write(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| SwitchError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_configuration_has_the_default_group_and_no_sockets() {
        let c = initial_file_config();
        assert_eq!(c["port_groups"][0]["name"], DEFAULT_PORT_GROUP);
        assert!(port_sockets(&c).is_empty());
        let mut c = c;
        c["ports"] = json!([{ "name": "p", "socket": "/s/p.sock" }]);
        assert_eq!(port_sockets(&c), vec![PathBuf::from("/s/p.sock")]);
    }
}
