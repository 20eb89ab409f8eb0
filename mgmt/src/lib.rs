//! sfera-mgmtd: Sfera's management plane (vCenter's job), and the library of
//! the `sfera` CLI.
//!
//! - [`mgmtd`]: start-up and shutdown.
//! - [`supervisor`]: sfera-blockd and sfera-vswitchd as supervised children,
//!   restarted with backoff, re-adopted across mgmtd restarts;
//!   [`daemon_users`]: the unprivileged users they run as.
//! - [`blockd`], [`vswitchd`]: what mgmtd asks of each daemon, over
//!   `control::client`.
//! - [`db`]: the inventory, tasks, events and users in SQLite, migrated in
//!   order, never rebuilt.
//! - [`host`]: CPUs, memory and the kind of KVM, which picks QEMU's
//!   accelerator; [`host_paths`]: the host directories a client may name
//!   (imports, ISOs, datastores).
//! - [`vm`]: VMs; [`driver`] picks their hypervisor, [`sfera_vmm`] or
//!   [`qemu`], and runs operations on it; [`tasks`] for long operations; [`console`]: serial consoles shared by web viewers.
//! - [`jail`]: the sandbox every VM process runs in (`sfera-jailer`).
//! - [`metrics`]: performance samples from the daemons' metrics, for the
//!   charts.
//! - [`api`]: the `/api/v1` REST API, its OpenAPI document and its server;
//!   [`auth`] and [`tls`] for who may call it. The work behind it fails
//!   with [`Error`], which the API maps to its answers.

#![deny(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod auth;
pub mod blockd;
pub mod client;
pub mod console;
pub mod daemon_users;
pub mod db;
pub mod driver;
pub mod error;
pub mod host;
pub mod host_paths;
pub mod import;
pub mod inventory;
pub mod jail;
pub mod join;
pub mod leave;
pub mod logs;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod mgmtd;
pub mod pid;
pub mod qemu;
pub mod service;
pub mod sfera_vmm;
pub mod supervisor;
pub mod tasks;
pub mod tls;
pub mod vm;
pub mod vswitchd;

pub use error::Error;
