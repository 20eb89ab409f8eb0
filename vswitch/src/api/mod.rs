//! The control API: typed requests ([`request`]), the configuration edits
//! they make ([`edit`]), the HTTP/JSON layer on a Unix socket ([`http`]),
//! the Prometheus text ([`metrics_text`]) and a client for the CLI
//! ([`client`]).

#![forbid(unsafe_code)]

pub mod client;
pub mod edit;
pub mod http;
pub mod metrics_text;
pub mod request;
