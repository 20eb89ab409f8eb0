//! sfera-vswitchd: vSphere's standard switch over vhost-user-net.

pub mod config;
pub mod daemon;
pub mod fdb;
pub mod frame;
pub mod policy;
pub mod uplink;
