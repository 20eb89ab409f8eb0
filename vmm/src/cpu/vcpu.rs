//! One thread per vCPU: set-up (CPUID, MSRs, FPU, LAPIC, the boot vCPU's
//! entry state) and the run loop that dispatches exits to the buses and
//! turns power-off, reset and faults into a [`VmEvent`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{CpuId, kvm_lapic_state};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use super::cpuid;
use super::regs::{self, EntryState};
use crate::bus::Bus;
use crate::memory::GuestMemory;
use crate::timings::{self, Step};
use crate::vm::Vm;

/// Errors setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {id}: {what}")]
    Ioctl {
        id: u32,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: KVM accepted {set} of {total} boot MSRs (refused: {first_refused:#x})")]
    Msrs {
        id: u32,
        set: usize,
        total: usize,
        first_refused: u32,
    },
    #[error("vCPU {id}: cannot write boot structures")]
    Setup {
        id: u32,
        #[source]
        source: regs::SetupError,
    },
    #[error("Cannot start the thread of vCPU {id}")]
    Thread {
        id: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// Why a VM stopped, as reported by the vCPU that saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest asked for power-off or reset: a clean end.
    PowerOff { reason: String },
    /// The guest or KVM failed: an error end.
    Fault { cpu: u32, reason: String },
}

/// Exit counts of all vCPUs, by kind.
#[derive(Debug, Default)]
pub struct ExitCounters {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    pub unhandled_io: AtomicU64,
    pub unhandled_mmio: AtomicU64,
    pub interrupted: AtomicU64,
    pub other: AtomicU64,
}

impl ExitCounters {
    /// The counts by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        [
            ("io_in", &self.io_in),
            ("io_out", &self.io_out),
            ("mmio_read", &self.mmio_read),
            ("mmio_write", &self.mmio_write),
            ("unhandled_io", &self.unhandled_io),
            ("unhandled_mmio", &self.unhandled_mmio),
            ("interrupted", &self.interrupted),
            ("other", &self.other),
        ]
        .into_iter()
        .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
        .collect()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Pause,
    Stop,
}

#[derive(Debug)]
struct ControlState {
    want: Want,
    paused: usize,
    running: usize,
}

/// Pauses, resumes and stops the vCPU threads.
#[derive(Debug)]
pub struct RunControl {
    state: Mutex<ControlState>,
    cond: Condvar,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            state: Mutex::new(ControlState {
                want: Want::Run,
                paused: 0,
                running: 0,
            }),
            cond: Condvar::new(),
        }
    }
}

impl RunControl {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a vCPU between runs: parks while paused; false once the
    /// VM is stopping.
    fn checkpoint(&self) -> bool {
        let mut st = self.lock();
        if st.want == Want::Pause {
            st.paused += 1;
            self.cond.notify_all();
            while st.want == Want::Pause {
                st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.paused -= 1;
        }
        st.want != Want::Stop
    }

    fn started(&self) {
        self.lock().running += 1;
    }

    fn finished(&self) {
        let mut st = self.lock();
        st.running -= 1;
        self.cond.notify_all();
    }

    /// Asks every vCPU to `want` and kicks them out of KVM_RUN until
    /// `done` holds (a kick that lands just before KVM_RUN is lost, so
    /// kicks repeat).
    fn drive(&self, want: Want, threads: &[JoinHandle<()>], done: impl Fn(&ControlState) -> bool) {
        let mut st = self.lock();
        st.want = want;
        self.cond.notify_all();
        while !done(&st) {
            drop(st);
            for t in threads {
                if !t.is_finished() {
                    // A thread that has just exited is still joinable, so
                    // its pthread handle is valid; ESRCH is harmless.
                    let _ = t.kill(kick_signal());
                }
            }
            st = self.lock();
            st = self
                .cond
                .wait_timeout(st, Duration::from_millis(10))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Parks every vCPU outside KVM_RUN.
    pub fn pause(&self, threads: &[JoinHandle<()>]) {
        self.drive(Want::Pause, threads, |st| st.paused == st.running);
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        let mut st = self.lock();
        if st.want == Want::Pause {
            st.want = Want::Run;
        }
        self.cond.notify_all();
    }

    /// Ends every vCPU thread.
    pub fn stop(&self, threads: &[JoinHandle<()>]) {
        self.drive(Want::Stop, threads, |st| st.running == 0);
    }
}

/// A vCPU's thread, started while the machine is still being built and
/// waiting for its [`Vcpu`]. Made ready early for start-up time: a thread
/// cloned at start is queued behind the thread that made it, which kept
/// the first KVM_RUN waiting for a scheduler tick in about half the
/// starts measured (3.2 ms against 0.2 ms); a thread woken from a wait
/// runs at once (on the idle CPU, or preempting its waker).
#[derive(Debug)]
pub struct VcpuThread {
    handoff: Sender<(Vcpu, Arc<VcpuContext>)>,
    handle: JoinHandle<()>,
}

impl VcpuThread {
    /// Starts the thread of vCPU `id`; it ends without running anything
    /// if the [`VcpuThread`] is dropped unstarted.
    pub fn spawn(id: u32) -> Result<VcpuThread, VcpuError> {
        let (handoff, parcel) = std::sync::mpsc::channel::<(Vcpu, Arc<VcpuContext>)>();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                if let Ok((vcpu, ctx)) = parcel.recv() {
                    vcpu.run(&ctx);
                }
            })
            .map_err(|source| VcpuError::Thread { id, source })?;
        Ok(VcpuThread { handoff, handle })
    }

    /// Hands `vcpu` to the thread, which runs it until the VM stops.
    pub fn start(self, vcpu: Vcpu, ctx: Arc<VcpuContext>) -> JoinHandle<()> {
        ctx.control.started();
        if let Err(std::sync::mpsc::SendError((_, ctx))) = self.handoff.send((vcpu, ctx)) {
            // The thread is gone (it waits for nothing else, so only a
            // panic ends it early): there is no vCPU to stop.
            ctx.control.finished();
        }
        self.handle
    }
}

/// The signal that kicks a vCPU out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler for the kick signal (without SA_RESTART, so
/// KVM_RUN returns EINTR).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick).map_err(VcpuError::Signal);
    });
    result
}

/// What a vCPU thread shares with the rest of the VMM.
#[derive(Debug)]
pub struct VcpuContext {
    pub io: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub control: Arc<RunControl>,
    pub counters: Arc<ExitCounters>,
    pub events: Mutex<Sender<VmEvent>>,
}

/// A configured vCPU, ready for its thread.
#[derive(Debug)]
pub struct Vcpu {
    id: u32,
    fd: VcpuFd,
}

fn lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, f: impl FnOnce(u32) -> u32) {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    let value = f(u32::from_le_bytes(bytes)).to_le_bytes();
    for (i, b) in value.iter().enumerate() {
        lapic.regs[offset + i] = *b as _;
    }
}

impl Vcpu {
    /// Creates vCPU `id` of `count` with its CPUID, MSRs, FPU and LAPIC;
    /// the boot vCPU also gets `entry`'s registers (its GDT and page
    /// tables are written to `mem`).
    pub fn new(
        vm: &Vm,
        supported: &CpuId,
        id: u32,
        count: u32,
        entry: Option<&EntryState>,
        mem: &GuestMemory,
    ) -> Result<Vcpu, VcpuError> {
        let err = |what| move |source| VcpuError::Ioctl { id, what, source };
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(err("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(&cpuid::for_vcpu(supported, id, count))
            .map_err(err("KVM_SET_CPUID2"))?;
        let msrs = regs::boot_msrs();
        let set = fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if set != msrs.as_slice().len() {
            return Err(VcpuError::Msrs {
                id,
                set,
                total: msrs.as_slice().len(),
                first_refused: regs::boot_msr_index(set),
            });
        }
        fd.set_fpu(&regs::fpu()).map_err(err("KVM_SET_FPU"))?;
        let mut lapic = fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
        // LINT0: ExtINT (the PIC), LINT1: NMI, as the MP table says.
        lapic_reg(&mut lapic, 0x350, |v| (v & !0x700) | (7 << 8));
        lapic_reg(&mut lapic, 0x360, |v| (v & !0x700) | (4 << 8));
        fd.set_lapic(&lapic).map_err(err("KVM_SET_LAPIC"))?;
        if let Some(entry) = entry {
            let base = fd.get_sregs().map_err(err("KVM_GET_SREGS"))?;
            let sregs = regs::setup_memory(mem, entry, base)
                .map_err(|source| VcpuError::Setup { id, source })?;
            fd.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;
            fd.set_regs(&regs::regs(entry))
                .map_err(err("KVM_SET_REGS"))?;
        }
        Ok(Vcpu { id, fd })
    }

    fn run(mut self, ctx: &VcpuContext) {
        let _span = tracing::info_span!("vcpu", id = self.id).entered();
        while ctx.control.checkpoint() {
            timings::mark(Step::FirstRun);
            let result = match self.fd.run() {
                Ok(exit) => {
                    timings::mark(Step::FirstExit);
                    handle_exit(self.id, exit, ctx)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    bump(&ctx.counters.interrupted);
                    None
                }
                Err(e) => Some(VmEvent::Fault {
                    cpu: self.id,
                    reason: format!("KVM_RUN failed: {e}"),
                }),
            };
            if let Some(event) = result {
                let event = self.annotate(event);
                let _ = ctx
                    .events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .send(event);
                break;
            }
        }
        ctx.control.finished();
    }

    /// Adds the guest's instruction pointer to a fault, and KVM's
    /// internal-error detail.
    fn annotate(&mut self, event: VmEvent) -> VmEvent {
        let VmEvent::Fault { cpu, mut reason } = event else {
            return event;
        };
        if reason.starts_with("KVM internal error") {
            let run = self.fd.get_kvm_run();
            if run.exit_reason == kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
                // SAFETY: the exit reason says the `internal` member of the
                // union is the one KVM filled in.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                reason.push_str(&format!(
                    " (suberror {}, data {:x?})",
                    internal.suberror,
                    &internal.data[..n]
                ));
            }
        }
        if let (Ok(r), Ok(s)) = (self.fd.get_regs(), self.fd.get_sregs()) {
            reason.push_str(&format!(
                "; rip={:#x} cs={:#x} cr0={:#x} rsp={:#x}",
                r.rip, s.cs.selector, s.cr0, r.rsp
            ));
        }
        VmEvent::Fault { cpu, reason }
    }
}

/// Handles one exit; `Some` ends the VM.
fn handle_exit(cpu: u32, exit: VcpuExit<'_>, ctx: &VcpuContext) -> Option<VmEvent> {
    let c = &ctx.counters;
    match exit {
        VcpuExit::IoIn(port, data) => {
            bump(&c.io_in);
            if !ctx.io.read(u64::from(port), data) {
                bump(&c.unhandled_io);
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            bump(&c.io_out);
            if !ctx.io.write(u64::from(port), data) {
                bump(&c.unhandled_io);
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            bump(&c.mmio_read);
            if !ctx.mmio.read(addr, data) {
                bump(&c.unhandled_mmio);
                data.fill(0xff);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            bump(&c.mmio_write);
            if !ctx.mmio.write(addr, data) {
                bump(&c.unhandled_mmio);
            }
            None
        }
        VcpuExit::Hlt => Some(VmEvent::PowerOff {
            reason: format!("vCPU {cpu} halted"),
        }),
        VcpuExit::Shutdown => Some(VmEvent::Fault {
            cpu,
            reason: "triple fault: the guest shut the CPU down (KVM_EXIT_SHUTDOWN)".to_owned(),
        }),
        VcpuExit::SystemEvent(kind, _) => match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmEvent::PowerOff {
                reason: "system event: shutdown".to_owned(),
            }),
            kvm_bindings::KVM_SYSTEM_EVENT_RESET => Some(VmEvent::PowerOff {
                reason: "system event: reset".to_owned(),
            }),
            other => Some(VmEvent::Fault {
                cpu,
                reason: format!("system event {other} (crash)"),
            }),
        },
        VcpuExit::InternalError => Some(VmEvent::Fault {
            cpu,
            reason: "KVM internal error".to_owned(),
        }),
        VcpuExit::FailEntry(reason, fail_cpu) => Some(VmEvent::Fault {
            cpu,
            reason: format!("VM entry failed: hardware reason {reason:#x} on CPU {fail_cpu}"),
        }),
        VcpuExit::Intr => {
            bump(&c.interrupted);
            None
        }
        other => {
            bump(&c.other);
            Some(VmEvent::Fault {
                cpu,
                reason: format!("unexpected exit: {other:?}"),
            })
        }
    }
}
