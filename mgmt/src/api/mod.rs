//! The `/api/v1` REST API: routes (one table), the OpenAPI document made
//! from it, authentication, the HTTP(S) server, and one module of
//! handlers per resource, reached through [`dispatch`].

pub mod auth;
pub mod cluster;
pub mod console_ws;
pub mod datastores;
pub mod dispatch;
pub mod display_ws;
pub mod error;
// Built for the unit tests and for fuzzing (`--cfg fuzzing`) only.
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod hosts;
pub mod login_limit;
pub mod meta;
pub mod networks;
pub mod openapi;
pub mod origin;
pub mod page;
pub mod reply;
pub mod request;
pub mod roles;
pub mod routes;
pub mod rules;
pub mod schema;
pub mod server;
pub mod tasks;
pub mod vms;
