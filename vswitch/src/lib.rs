//! sfera-vswitchd: vSphere's standard switch over vhost-user-net.
//!
//! What exists so far is the switching model, complete and tested on its
//! own: frames and tag edits ([`frame`]), the MAC forwarding database
//! ([`fdb`]) and port group policy ([`policy`]). The vhost-user-net ports,
//! the forwarding worker, uplinks and the control API come next (issue #4).

pub mod config;
pub mod fdb;
pub mod frame;
pub mod policy;
pub mod port;
pub mod switch;
