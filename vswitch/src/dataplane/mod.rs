//! The dataplane: the forwarding worker and everything it runs per frame
//! (rings, uplinks, MAC tables, policy, shaping, teaming, counters).

pub mod counters;
pub mod fdb;
pub mod forward;
pub mod frame;
pub mod policy;
pub mod shaping;
pub mod teaming;
pub mod uplink;
pub mod vhost;
pub mod worker;
