//! vhost-user-net: the control protocol ([`backend`], with the
//! [`qemu_compat`] relay in front), guest memory ([`mem`]), split rings
//! ([`ring`]) and frames in guest memory ([`frames`]). The socket of each
//! port and its connections are in [`port`].

pub mod backend;
pub mod frames;
pub mod mem;
pub mod port;
pub(crate) mod qemu_compat;
pub mod ring;
