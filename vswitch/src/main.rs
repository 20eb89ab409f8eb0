//! `sfera-vswitchd`: the virtual switch daemon (being rewritten: see daemon.rs).

fn main() {}
