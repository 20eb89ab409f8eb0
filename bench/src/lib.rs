//! Sfera's benchmarks: each runs Sfera and its peer in the same run on the
//! same machine, with the same client, and reports the ratio.

pub mod blk_load;
pub mod cpu;
pub mod net_counters;
pub mod report;
