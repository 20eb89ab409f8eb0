//! CPUID for each vCPU: what KVM supports, with the topology and identity
//! fixed up (APIC ids, logical processor counts, the hypervisor bit).

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// CPUID.1:ECX bit 31: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28: HTT (the logical processor count field is valid).
const EDX_HTT: u32 = 1 << 28;

/// Number of bits needed to number `n` items (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Fixes up one entry for vCPU `id` of `count` (one core per vCPU, one
/// thread per core, one socket).
pub(super) fn fix_entry(entry: &mut kvm_cpuid_entry2, id: u32, count: u32) {
    match entry.function {
        1 => {
            // EBX: [31:24] initial APIC id, [23:16] logical processors,
            // [15:8] CLFLUSH line size (keep), [7:0] brand index.
            entry.ebx = (entry.ebx & 0x0000_ff00) | (id << 24) | (count.min(255) << 16);
            entry.ecx |= ECX_HYPERVISOR;
            entry.edx |= EDX_HTT;
        }
        4 => {
            // EAX[31:26]: cores per package - 1; keep the cache description.
            let cores = count.next_power_of_two().min(64);
            entry.eax = (entry.eax & 0x03ff_ffff) | ((cores - 1) << 26);
        }
        0xb | 0x1f => {
            // Extended topology: level 0 = SMT (1 thread), level 1 = core.
            entry.edx = id;
            match entry.index {
                0 => {
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = 1 << 8; // level type SMT, level number 0
                }
                1 => {
                    entry.eax = bits_for(count);
                    entry.ebx = count;
                    entry.ecx = (2 << 8) | 1; // level type core, level number 1
                }
                n => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = n & 0xff; // invalid level
                }
            }
        }
        // Architectural performance monitoring: none.
        0xa => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        _ => {}
    }
}

/// The CPUID for vCPU `id` of `count`, from KVM's supported set.
pub(super) fn for_vcpu(supported: &CpuId, id: u32, count: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        fix_entry(entry, id, count);
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0000_0800,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = entry(1, 0);
        fix_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xff00, 0x0800);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn extended_topology_names_the_x2apic_id() {
        let mut smt = entry(0xb, 0);
        let mut core = entry(0xb, 1);
        fix_entry(&mut smt, 5, 6);
        fix_entry(&mut core, 5, 6);
        assert_eq!((smt.edx, core.edx), (5, 5));
        assert_eq!((core.eax, core.ebx), (3, 6));
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(64), 6);
    }
}
