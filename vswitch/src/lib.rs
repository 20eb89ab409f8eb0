//! sfera-vswitchd: vSphere's standard switch over vhost-user-net.
//!
//! The [`daemon`] holds the configuration ([`config`]) and applies it to
//! the [`worker`], one poll-mode thread that owns every port's rings
//! ([`vhost`]) and uplink ([`uplink`]) and forwards frames ([`forward`])
//! by the switching model: MAC tables ([`fdb`]), port group policy
//! ([`policy`], [`shaping`], [`teaming`]) and frame edits ([`frame`]).

pub mod api;
pub mod cli;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod fdb;
pub mod forward;
pub mod frame;
// Built for the unit tests and for cargo-fuzz (`--cfg fuzzing`) only.
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod persist;
pub mod policy;
pub mod service;
pub mod shaping;
pub mod teaming;
pub mod uplink;
pub mod vhost;
pub mod worker;
