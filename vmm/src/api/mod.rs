//! The control API: typed requests ([`request`]), the service that carries
//! them out ([`service`]) and the HTTP/JSON layer on a Unix socket
//! ([`http`]).

pub mod http;
pub mod request;
pub mod service;
