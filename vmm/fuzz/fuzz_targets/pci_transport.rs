//! Fuzzes bus 0 as a guest driver sees it: conf1 configuration space
//! accesses and MMIO reads and writes of a virtio-pci device's BAR
//! (common configuration, ISR, device configuration, doorbells, MSI-X),
//! on a real KVM VM.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmm::fuzz::pci_transport(data);
});
