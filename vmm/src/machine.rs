//! One virtual machine put together from a [`VmConfig`]: KVM, guest RAM,
//! the legacy devices, PCI with the virtio devices, the loaded kernel and
//! the vCPUs; and its life: start, pause, resume, stop.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use serde::Serialize;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::api::types::{DeviceCounters, SerialCounters};
use crate::boot::{self, BootError, BootSpec};
use crate::bus::{Bus, BusError};
use crate::config::VmConfig;
use crate::cpu::regs::interrupt_gate;
use crate::cpu::{
    EntryState, ExitCounters, RunControl, Vcpu, VcpuContext, VcpuError, VcpuThread, VmEvent,
    install_kick_handler,
};
use crate::devices::console::{ConsoleOut, ConsoleSocket};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{COM1_BASE, COM1_IRQ, COM1_LEN, SerialDevice, SerialInput};
use crate::layout;
use crate::memory::{self, GuestRam, MemoryError};
use crate::pci::{PciError, PciSetup};
use crate::timings::{self, Step};
use crate::vm::{Vm, VmError};

/// Errors building or running a machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Pci(#[from] PciError),
    #[error("Cannot map a device")]
    Bus(#[from] BusError),
    #[error("Cannot set up the serial interrupt")]
    SerialIrq(#[source] std::io::Error),
    #[error("Cannot listen on the console socket {path}")]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("KVM: cannot read the supported CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("Cannot write the raw image to guest memory")]
    RawImage(#[source] vm_memory::GuestMemoryError),
}

/// What the boot vCPU runs.
#[derive(Debug, Clone)]
pub enum BootSource {
    /// The kernel, initrd and command line of the configuration.
    Kernel,
    /// Bring-up and test hook: `image` copied to `load_addr`, the boot
    /// vCPU started in `entry` (for example at CPL3 on this project's
    /// paravirtual KVM, see `shared/PVM.md`), with interrupt gates
    /// `(vector, handler)` in the IDT of a [`EntryState::User64`] entry.
    Raw {
        image: Vec<u8>,
        load_addr: u64,
        entry: EntryState,
        interrupt_gates: Vec<(u8, u64)>,
    },
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Created,
    Running,
    Paused,
    Stopped,
}

/// A VM with everything it needs, started or not.
#[derive(Debug)]
pub struct Machine {
    vm: Arc<Vm>,
    ram: GuestRam,
    vcpus: Vec<Vcpu>,
    vcpu_threads: Vec<VcpuThread>,
    threads: Vec<JoinHandle<()>>,
    context: Arc<VcpuContext>,
    events: Option<Receiver<VmEvent>>,
    _console_socket: Option<ConsoleSocket>,
    console_out: ConsoleOut,
    pci: PciSetup,
    state: MachineState,
}

/// Puts what boots into guest memory (a Linux kernel with its initrd and
/// command line, or a raw image); where the first vCPU starts.
fn load_boot_image(
    config: &VmConfig,
    source: &BootSource,
    memory: &memory::GuestMemory,
) -> Result<EntryState, MachineError> {
    match source {
        BootSource::Kernel => {
            let booted = boot::load(
                memory,
                &BootSpec {
                    kernel: &config.kernel,
                    initrd: config.initrd.as_deref(),
                    cmdline: &config.cmdline,
                    mem_size: config.mem_size(),
                },
            )?;
            Ok(booted.entry)
        }
        BootSource::Raw {
            image,
            load_addr,
            entry,
            ..
        } => {
            memory
                .write_slice(image, GuestAddress(*load_addr))
                .map_err(MachineError::RawImage)?;
            Ok(*entry)
        }
    }
}

impl Machine {
    /// Builds the machine; nothing runs until [`Machine::start`]. On error
    /// everything made so far is dropped again.
    pub fn build(config: &VmConfig, source: BootSource) -> Result<Machine, MachineError> {
        install_kick_handler()?;
        let vcpu_threads = (0..config.vcpus)
            .map(VcpuThread::spawn)
            .collect::<Result<Vec<_>, _>>()?;
        let ram = memory::create(config.mem_size(), config.hugepages)?;
        timings::mark(Step::Memory);
        let vm = Arc::new(Vm::with_memory(&ram.memory)?);

        let io = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let (tx, events) = channel();

        let console_out = ConsoleOut::new(config.console.stdout);
        let serial_irq =
            Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(MachineError::SerialIrq)?);
        vm.register_irqfd(&serial_irq, COM1_IRQ)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            serial_irq,
            console_out.clone(),
        )));
        io.insert(serial.clone(), COM1_BASE, COM1_LEN)?;
        io.insert(
            Arc::new(Mutex::new(I8042::new(tx.clone()))),
            I8042_BASE,
            I8042_LEN,
        )?;
        let console_socket = match &config.console.socket {
            Some(path) => Some(
                ConsoleSocket::listen(
                    path,
                    console_out.clone(),
                    Arc::new(SerialInput(serial)),
                    config.console.history,
                )
                .map_err(|source| MachineError::ConsoleSocket {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };

        let pci = PciSetup::build(config, &vm, &ram, &io, &mmio)?;
        timings::mark(Step::Devices);

        let entry = load_boot_image(config, &source, &ram.memory)?;
        let cpus = u8::try_from(config.vcpus).unwrap_or(u8::MAX);
        boot::write_mptable(&ram.memory, cpus, &pci.irqs())?;
        timings::mark(Step::BootLoader);

        let supported = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(MachineError::Cpuid)?;
        let mut vcpus = Vec::new();
        for id in 0..config.vcpus {
            let entry = (id == 0).then_some(&entry);
            vcpus.push(Vcpu::new(
                &vm,
                &supported,
                id,
                config.vcpus,
                entry,
                &ram.memory,
            )?);
        }
        if let BootSource::Raw {
            interrupt_gates, ..
        } = &source
        {
            for (vector, handler) in interrupt_gates {
                let at = layout::BOOT_IDT + u64::from(*vector) * 16;
                ram.memory
                    .write_slice(&interrupt_gate(*handler), GuestAddress(at))
                    .map_err(MachineError::RawImage)?;
            }
        }
        timings::mark(Step::Vcpus);

        let context = Arc::new(VcpuContext {
            io,
            mmio,
            control: Arc::new(RunControl::default()),
            counters: Arc::new(ExitCounters::default()),
            events: Mutex::new(tx),
        });
        Ok(Machine {
            vm,
            ram,
            vcpus,
            vcpu_threads,
            threads: Vec::new(),
            context,
            events: Some(events),
            _console_socket: console_socket,
            console_out,
            pci,
            state: MachineState::Created,
        })
    }

    /// Starts the vCPUs on their threads (made in [`Machine::build`]).
    pub fn start(&mut self) -> Result<(), MachineError> {
        for (vcpu, thread) in self.vcpus.drain(..).zip(self.vcpu_threads.drain(..)) {
            let handle = thread.start(vcpu, Arc::clone(&self.context));
            self.threads.push(handle);
        }
        self.state = MachineState::Running;
        Ok(())
    }

    /// Parks every vCPU.
    pub fn pause(&mut self) {
        if self.state == MachineState::Running {
            self.context.control.pause(&self.threads);
            self.state = MachineState::Paused;
        }
    }

    /// Lets the vCPUs run again.
    pub fn resume(&mut self) {
        if self.state == MachineState::Paused {
            self.context.control.resume();
            self.state = MachineState::Running;
        }
    }

    /// Stops the vCPUs and the devices' workers.
    pub fn stop(&mut self) {
        if self.state == MachineState::Stopped {
            return;
        }
        self.context.control.stop(&self.threads);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.pci.stop();
        self.state = MachineState::Stopped;
    }

    /// Waits up to `timeout` for the guest to power off or fail.
    pub fn wait_event(&self, timeout: Duration) -> Option<VmEvent> {
        self.events.as_ref()?.recv_timeout(timeout).ok()
    }

    /// Hands the guest's power-off and fault events to the caller (who
    /// then waits on them instead of [`Machine::wait_event`]).
    pub fn take_events(&mut self) -> Option<Receiver<VmEvent>> {
        self.events.take()
    }

    pub fn state(&self) -> MachineState {
        self.state
    }

    /// Guest RAM (for tests and devices).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The port-I/O bus (tests drive devices through it as a guest would).
    pub fn io_bus(&self) -> &Arc<Bus> {
        &self.context.io
    }

    /// The MMIO bus.
    pub fn mmio_bus(&self) -> &Arc<Bus> {
        &self.context.mmio
    }

    /// The KVM VM.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// Exit counts by kind.
    pub fn exit_counters(&self) -> &ExitCounters {
        &self.context.counters
    }

    /// Per-device counters as their JSON (what `GET /v1/vm/counters`
    /// answers under `devices`).
    pub fn device_counters(&self) -> serde_json::Value {
        serde_json::to_value(self.device_counter_list()).expect("counters are plain data")
    }

    /// Per-device counters: the PCI devices', then the serial console's.
    pub fn device_counter_list(&self) -> Vec<DeviceCounters> {
        let mut devices: Vec<DeviceCounters> = self
            .pci
            .counters()
            .into_iter()
            .map(DeviceCounters::Virtio)
            .collect();
        devices.push(DeviceCounters::Serial(SerialCounters {
            device: "serial".to_owned(),
            output_bytes_dropped: self.console_out.dropped(),
        }));
        devices
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}
