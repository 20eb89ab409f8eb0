//! The vhost-user-blk target: one socket per exported volume, one worker
//! thread and io_uring per queue.

pub mod broken;
pub mod config;
pub mod device;
pub mod export;
#[cfg(test)]
mod fake_driver;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
mod head_chain;
pub mod inflight;
pub mod metrics;
mod qos;
mod relay;
pub mod request;
mod worker;

pub use device::{BlkDevice, DeviceError, ExportOptions, RESTART_LOCK_WAIT};
pub use export::ExportServer;
