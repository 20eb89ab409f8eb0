//! The control API: typed requests ([`request`]), the service that carries
//! them out ([`service`]), its answers ([`types`]) and the HTTP layer on
//! `control`'s server ([`http`]).

pub mod http;
pub mod request;
pub mod service;
pub mod types;
