//! Performance charts' data: every sampling interval (20 s by default)
//! mgmtd reads sfera-blockd's and sfera-vswitchd's Prometheus metrics, the
//! host's `/proc` and each running VM's QEMU process, turns counters into
//! rates, and stores one point per object and metric (see
//! [`crate::db::metrics`] for how long they are kept and rolled up).
//!
//! Objects and their metrics:
//!
//! | kind | object | metrics |
//! |---|---|---|
//! | `host` | the host name | `cpu_percent`, `memory_used_bytes`, `disk_{read,write}_bytes_per_s`, `net_{rx,tx}_bytes_per_s` |
//! | `vm` | the VM's id | `cpu_percent` (its QEMU), `disk_{read,write}_{bytes,ops}_per_s`, `net_{rx,tx}_{bytes,packets}_per_s` |
//! | `volume` | `datastore/volume` | `{read,write}_{bytes,ops}_per_s` |
//! | `port` | the port's name | `{rx,tx}_{bytes,packets}_per_s`, `drops_per_s` |
//!
//! `rx` is what a port delivered to its VM, `tx` what the VM sent.

pub mod own;
pub mod prometheus;
pub mod sampler;

/// Kinds of sampled objects.
pub const KINDS: &[&str] = &["host", "vm", "volume", "port"];
