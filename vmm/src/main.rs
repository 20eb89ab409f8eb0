//! `sfera-vmm`: runs one VM.

fn main() {}
