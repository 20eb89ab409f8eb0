//! sfera-vmm: one KVM virtual machine per process on the rust-vmm crates.
//!
//! The machine model is in `vmm/README.md`: RAM below 3 GiB and above
//! 4 GiB from a shared memfd, PVH or bzImage direct boot, an MP table, the
//! 8250 console, the i8042 reset line, and PCI with virtio-pci devices
//! (virtio-rng in the VMM, virtio-blk and virtio-net over vhost-user).

pub mod api;
pub mod boot;
pub mod bus;
pub mod config;
pub mod cpu;
pub mod devices;
// Built for the unit tests and for fuzzing (`--cfg fuzzing`) only.
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod layout;
pub mod machine;
pub mod memory;
pub mod pci;
pub mod seccomp;
pub mod timings;
// Tiny guests and a PCI driver for tests; not in a shipped build.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod virtio;
pub mod vm;
