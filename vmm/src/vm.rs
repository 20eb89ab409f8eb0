//! The KVM virtual machine: in-kernel irqchip and PIT, guest RAM slots,
//! interrupt routes (IOAPIC pins and MSI) and the eventfds bound to them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_PIT_SPEAKER_DUMMY, KvmIrqRouting,
    kvm_irq_routing_entry, kvm_pit_config, kvm_userspace_memory_region,
};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;
use crate::timings::{self, Step};

/// IOAPIC pins, hence the first GSIs, that are legacy interrupt lines.
pub const IOAPIC_PINS: u32 = 24;
/// GSIs handed out for MSI routes stay below this.
const MAX_GSI: u32 = 1024;

/// Errors setting up or driving the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    #[error("Cannot create the KVM VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM: {what}")]
    Ioctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("No GSI left for MSI routes")]
    GsiExhausted,
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl { what, source }
}

/// An MSI message as the guest programs it in an MSI-X table entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
}

/// The VM and its interrupt routing table.
#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    routes: Mutex<Routes>,
}

#[derive(Debug)]
struct Routes {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
    max_gsi: u32,
}

impl Vm {
    /// Opens KVM and makes a VM with the in-kernel PIC, IOAPIC and PIT.
    pub fn new() -> Result<Vm, VmError> {
        let vm = Vm::bare()?;
        vm.add_chips()?;
        Ok(vm)
    }

    /// Like [`Vm::new`], with `memory` registered as the VM's memory slots
    /// first. The order is for start-up time: every memory slot change
    /// waits for an SRCU grace period of the VM (`kvm_swap_active_memslots`),
    /// which is quick on a VM whose SRCU has not run one yet, and takes a
    /// timer tick or more (3-12 ms measured on this host) right after the
    /// grace periods the irqchip's I/O bus devices start.
    pub fn with_memory(memory: &GuestMemory) -> Result<Vm, VmError> {
        let vm = Vm::bare()?;
        vm.register_memory(memory)?;
        timings::mark(Step::MemorySlots);
        vm.add_chips()?;
        timings::mark(Step::Kvm);
        Ok(vm)
    }

    /// Opens KVM and makes an empty VM.
    fn bare() -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::ApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Vm {
            kvm,
            fd,
            routes: Mutex::new(Routes {
                msi: BTreeMap::new(),
                next_gsi: IOAPIC_PINS,
                max_gsi: MAX_GSI,
            }),
        })
    }

    /// The TSS area, the in-kernel PIC and IOAPIC, and the PIT. The
    /// interrupt routes are KVM_CREATE_IRQCHIP's own default table, which
    /// is what [`Vm::apply_routes`] writes while there is no MSI route
    /// (the IOAPIC's 24 pins, the first 16 also to the PIC); writing it
    /// again would cost one more SRCU grace period at start-up.
    fn add_chips(&self) -> Result<(), VmError> {
        // The TSS needs three pages below 4 GiB outside RAM, on VMX hosts.
        self.fd
            .set_tss_address(0xFFFB_D000)
            .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        self.fd
            .create_irq_chip()
            .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Registers every region of `memory` as a KVM memory slot.
    pub fn register_memory(&self, memory: &GuestMemory) -> Result<(), VmError> {
        for (slot, region) in memory.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::Ioctl {
                    what: "guest memory has no host mapping",
                    source: kvm_ioctls::Error::new(libc::EINVAL),
                })?;
            let slot = kvm_userspace_memory_region {
                slot: u32::try_from(slot).expect("a handful of regions"),
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // The VMM keeps the GuestMemory (and so this mapping) for the
            // VM's whole life: vCPUs and devices hold clones of it.
            // SAFETY: KVM never sees the region unmapped while the VM runs.
            unsafe { self.fd.set_user_memory_region(slot) }
                .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Allocates a GSI for an MSI route (programmed later).
    pub fn allocate_msi_gsi(&self) -> Result<u32, VmError> {
        let mut routes = self.lock_routes();
        if routes.next_gsi >= routes.max_gsi {
            return Err(VmError::GsiExhausted);
        }
        let gsi = routes.next_gsi;
        routes.next_gsi += 1;
        Ok(gsi)
    }

    /// Forgets every MSI route and GSI allocation, so that one VM serves
    /// many short-lived devices (fuzzing: a VM costs milliseconds to make).
    #[cfg(any(test, fuzzing))]
    pub fn forget_msi_routes(&self) -> Result<(), VmError> {
        let had_routes = {
            let mut routes = self.lock_routes();
            routes.next_gsi = IOAPIC_PINS;
            let had = !routes.msi.is_empty();
            routes.msi.clear();
            had
        };
        // KVM_SET_GSI_ROUTING waits for an SRCU grace period: only when needed.
        if had_routes {
            self.apply_routes()
        } else {
            Ok(())
        }
    }

    /// Points `gsi` at `msg` (or removes its route) and reprograms KVM.
    pub fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> Result<(), VmError> {
        {
            let mut routes = self.lock_routes();
            match msg {
                Some(m) => routes.msi.insert(gsi, m),
                None => routes.msi.remove(&gsi),
            };
        }
        self.apply_routes()
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the whole routing table: the 24 IOAPIC pins (and the PIC for
    /// the first 16, as KVM's default table has it), then the MSI routes.
    fn apply_routes(&self) -> Result<(), VmError> {
        let routes = self.lock_routes();
        let mut entries = Vec::new();
        for gsi in 0..IOAPIC_PINS {
            if gsi < 16 {
                let mut e = kvm_irq_routing_entry {
                    gsi,
                    type_: KVM_IRQ_ROUTING_IRQCHIP,
                    ..Default::default()
                };
                e.u.irqchip.irqchip = if gsi < 8 { 0 } else { 1 };
                e.u.irqchip.pin = gsi % 8;
                entries.push(e);
            }
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = 2; // KVM_IRQCHIP_IOAPIC
            e.u.irqchip.pin = gsi;
            entries.push(e);
        }
        for (&gsi, msg) in &routes.msi {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = msg.addr_lo;
            e.u.msi.address_hi = msg.addr_hi;
            e.u.msi.data = msg.data;
            entries.push(e);
        }
        let table = KvmIrqRouting::from_entries(&entries).map_err(|_| VmError::Ioctl {
            what: "routing table too large",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        self.fd
            .set_gsi_routing(&table)
            .map_err(ioctl("KVM_SET_GSI_ROUTING"))
    }

    /// Binds `evt` to `gsi`: each write to it raises the interrupt in KVM.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd.register_irqfd(evt, gsi).map_err(ioctl("KVM_IRQFD"))
    }

    /// Unbinds `evt` from `gsi`.
    pub fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .unregister_irqfd(evt, gsi)
            .map_err(ioctl("KVM_IRQFD deassign"))
    }

    /// Makes guest writes to the MMIO address `addr` signal `evt` in the
    /// kernel, with no exit to the VMM.
    pub fn register_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(ioctl("KVM_IOEVENTFD"))
    }

    /// Undoes [`Vm::register_ioevent`].
    pub fn unregister_ioevent(&self, evt: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .unregister_ioevent(evt, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(ioctl("KVM_IOEVENTFD deassign"))
    }

    /// How many vCPUs this host's KVM allows (the recommended count).
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_nr_vcpus()
    }
}

/// How many vCPUs this host's KVM allows, without making a VM.
pub fn host_max_vcpus() -> Result<usize, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    Ok(kvm.get_nr_vcpus())
}

impl Vm {}
