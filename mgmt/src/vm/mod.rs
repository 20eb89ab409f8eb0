//! VMs: what a client may ask for, and the operations that make, run and
//! remove them.

pub mod controller;
pub mod edit;
pub mod no_space;
pub mod ops;
pub mod request;
pub mod service;
pub mod shutdown;
