//! The control API: its contract ([`types`]: every body in and out),
//! typed requests ([`request`]), the HTTP layer on `control`'s server
//! ([`http`]) and the Prometheus text ([`metrics_text`]).

pub mod http;
pub mod metrics_text;
pub mod request;
pub mod types;
