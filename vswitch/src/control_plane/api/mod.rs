//! The control API: its contract, every body sent and answered
//! ([`types`]), typed requests ([`request`]), the configuration edits
//! they make ([`edit`]), their routes ([`http`], served by
//! `control::server`) and the Prometheus text ([`metrics_text`]).

#![forbid(unsafe_code)]

pub mod edit;
pub mod http;
pub mod metrics_text;
pub mod request;
pub mod types;
