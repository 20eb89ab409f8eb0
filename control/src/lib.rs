//! The control plane every Sfera daemon shares, so that it exists once:
//!
//! - [`server`]: a REST/JSON API over HTTP/1.1 on a Unix socket (body
//!   limit, handlers off the runtime's thread, one error body), behind
//!   [`socket`]'s bind (a lock file keeps a second daemon off a live
//!   socket) and [`peers`]' check of who connects;
//! - [`client`]: the client of those APIs, async for mgmtd and blocking
//!   for the command-line tools;
//! - [`error`]: the one error answer, `{"error": {"code", "message"}}`;
//! - [`path`]: path segments in and out (percent-encoding);
//! - [`names`]: the rule for object names (datastores, volumes, switches,
//!   port groups, ports, exports);
//! - [`prometheus`]: the text exposition format;
//! - [`files`]: state files replaced atomically;
//! - [`logging`] and [`shutdown`]: a daemon's start and end;
//! - [`size`]: sizes on the command lines (`512K`, `10G`).
//!
//! The dataplane (rings, io_uring, guest memory) is `datapath`'s; nothing
//! here runs per packet or per I/O.

pub mod client;
pub mod error;
pub mod files;
pub mod logging;
pub mod names;
pub mod path;
pub mod peers;
pub mod prometheus;
pub mod server;
pub mod shutdown;
pub mod size;
pub mod socket;

pub use error::{ApiError, error_chain};
