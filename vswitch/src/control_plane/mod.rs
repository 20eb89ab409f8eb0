//! The control plane: what the switch is configured to be, kept across
//! restarts, changed through the API and applied to the dataplane.

pub mod api;
pub mod config;
pub mod daemon;
pub mod persist;
pub mod service;
