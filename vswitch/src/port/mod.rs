//! A VM NIC's port: a vhost-user-net device on its own socket.

pub mod device;
mod qemu_compat;
pub(crate) mod rx;
pub(crate) mod tx;

pub use device::{NetPort, PortError, SocketMode};
