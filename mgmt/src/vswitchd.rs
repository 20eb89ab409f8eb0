//! What mgmtd asks of sfera-vswitchd, over its REST API: its switches and
//! port groups, a port per VM NIC (added and removed on the running switch,
//! which saves its state itself), counters and Prometheus metrics.

use std::path::Path;
use std::sync::Arc;

use hyper::Method;
use vswitch::control_plane::api::request::DEFAULT_MTU;
use vswitch::control_plane::api::types::{
    PortConfig, PortGroupConfig, PortGroupSettings, SocketMode, Stats, SwitchConfig, VSwitchConfig,
};
use vswitch::control_plane::config::DEFAULT_SWITCH;

use crate::blockd::{body, encode_segment};
use crate::supervisor::Supervisor;
use control::client::CallError;

/// Errors changing the switch.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{0:?} is not a MAC address")]
    Mac(String),
}

/// The port group mgmtd creates when the switch has none.
pub const DEFAULT_PORT_GROUP: &str = "vm-network";

/// sfera-vswitchd.
#[derive(Debug)]
pub struct Vswitchd {
    pub supervisor: Arc<Supervisor>,
}

impl Vswitchd {
    pub fn new(supervisor: Arc<Supervisor>) -> Self {
        Vswitchd { supervisor }
    }

    /// The switch's whole configuration.
    pub async fn config(&self) -> Result<SwitchConfig, SwitchError> {
        Ok(self.supervisor.api().get_as("/v1/config").await?)
    }

    /// Makes sure the default port group exists.
    pub async fn ensure_default_port_group(&self) -> Result<(), SwitchError> {
        if !self.config().await?.port_groups.is_empty() {
            return Ok(());
        }
        self.add_port_group(&PortGroupConfig::new(DEFAULT_PORT_GROUP, DEFAULT_SWITCH))
            .await
    }

    pub async fn add_port_group(&self, group: &PortGroupConfig) -> Result<(), SwitchError> {
        self.supervisor
            .api()
            .call(Method::POST, "/v1/port-groups", Some(&body(group)))
            .await?;
        Ok(())
    }

    pub async fn add_switch(&self, switch: &VSwitchConfig) -> Result<(), SwitchError> {
        self.supervisor
            .api()
            .call(Method::POST, "/v1/switches", Some(&body(switch)))
            .await?;
        Ok(())
    }

    pub async fn remove_switch(&self, name: &str) -> Result<(), SwitchError> {
        let path = format!("/v1/switches/{}", encode_segment(name));
        self.supervisor
            .api()
            .call(Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    pub async fn port_group(&self, name: &str) -> Result<PortGroupConfig, SwitchError> {
        let path = format!("/v1/port-groups/{}", encode_segment(name));
        Ok(self.supervisor.api().get_as(&path).await?)
    }

    /// Replaces a port group's policy (VLAN, security, shaping, teaming):
    /// the group as changed.
    pub async fn set_port_group(
        &self,
        name: &str,
        group: &PortGroupSettings,
    ) -> Result<PortGroupConfig, SwitchError> {
        let path = format!("/v1/port-groups/{}", encode_segment(name));
        Ok(self
            .supervisor
            .api()
            .call_as(Method::PUT, &path, Some(&body(group)))
            .await?)
    }

    pub async fn remove_port_group(&self, name: &str) -> Result<(), SwitchError> {
        let path = format!("/v1/port-groups/{}", encode_segment(name));
        self.supervisor
            .api()
            .call(Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    /// Adds a server-mode port to the running switch: it listens on
    /// `socket`, QEMU connects.
    pub async fn add_port(
        &self,
        name: &str,
        socket: &Path,
        mac: &str,
        port_group: &str,
    ) -> Result<(), SwitchError> {
        let port = PortConfig {
            name: name.to_owned(),
            socket: socket.to_owned(),
            mode: SocketMode::default(),
            mac: mac.parse().map_err(|_| SwitchError::Mac(mac.to_owned()))?,
            port_group: port_group.to_owned(),
            mtu: DEFAULT_MTU,
            queues: 1,
        };
        self.supervisor
            .api()
            .call(Method::POST, "/v1/ports", Some(&body(&port)))
            .await?;
        Ok(())
    }

    /// Removes a port from the running switch; a port that is not there is
    /// not an error.
    pub async fn remove_port(&self, name: &str) -> Result<(), SwitchError> {
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

    /// Counters per port and uplink.
    pub async fn stats(&self) -> Result<Stats, SwitchError> {
        Ok(self.supervisor.api().get_as("/v1/stats").await?)
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> Result<String, SwitchError> {
        let (_, body) = self
            .supervisor
            .api()
            .raw(Method::GET, "/metrics", None)
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
