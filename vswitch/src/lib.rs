//! sfera-vswitchd: vSphere's standard switch over vhost-user-net.
//!
//! Two planes, as in every switch:
//!
//! - the [`control_plane`]: the configuration ([`control_plane::config`])
//!   and its state file ([`control_plane::persist`]), the API
//!   ([`control_plane::api`], its contract in [`control_plane::api::types`])
//!   and the control object behind it ([`control_plane::service`]), and the
//!   [`control_plane::daemon`] that applies the configuration to the
//!   dataplane;
//! - the [`dataplane`]: the forwarding worker ([`dataplane::worker`]), one
//!   poll-mode thread that owns every port's rings ([`dataplane::vhost`])
//!   and uplink ([`dataplane::uplink`]) and forwards frames
//!   ([`dataplane::forward`]) by the switching model: MAC tables
//!   ([`dataplane::fdb`]), port group policy ([`dataplane::policy`],
//!   [`dataplane::shaping`], [`dataplane::teaming`]) and frame edits
//!   ([`dataplane::frame`]).
//!
//! The [`cli`] is the API's client, for the `sfera-vswitchd` commands.

pub mod cli;
pub mod control_plane;
pub mod dataplane;
// Built for the unit tests and for cargo-fuzz (`--cfg fuzzing`) only.
#[cfg(any(test, fuzzing))]
pub mod fuzz;

// The paths other crates use (the tests' uplink and teaming cases, the
// appliance's check of the state file it renders).
pub use control_plane::{config, persist};
pub use dataplane::uplink;
