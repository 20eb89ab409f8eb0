//! sfera-blockd: datastores and volumes, served to VMs as vhost-user-blk
//! targets from io_uring.

pub mod api;
pub mod backing;
pub mod datastore;
pub mod service;
pub mod vhost_blk;
pub mod volume_lock;
