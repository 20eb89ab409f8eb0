//! sfera-vswitchd: vSphere's standard switch over vhost-user-net.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fdb;
pub mod frame;
pub mod persist;
pub mod policy;
pub mod service;
