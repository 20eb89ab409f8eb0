//! The `/api/v1` REST API: routes (one table), the OpenAPI document made
//! from it, authentication, the handlers, and the HTTP(S) server.

pub mod changes;
pub mod console_ws;
pub mod display_ws;
pub mod error;
// Built for the unit tests and for fuzzing (`--cfg fuzzing`) only.
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod handlers;
pub mod login_limit;
pub mod openapi;
pub mod origin;
pub mod routes;
pub mod server;
