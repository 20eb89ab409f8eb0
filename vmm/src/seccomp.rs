//! sfera-vmm's seccomp filter: the system calls it makes, nothing else.
//!
//! The list was taken from what sfera-vmm calls (`strace -f` of it in the
//! vmm_testguest and vmm_vhost_user tests: start, boot, vhost-user disks
//! and NICs, a backend restart, the API, the console, shutdown) plus
//! the variants of the same calls glibc may pick (`*at`, vectored, timers).
//! With the filter killing, vmm_hugepages and the mgmt tests that run
//! sfera-vmm (pause, resume, adoption by a new mgmtd) pass too. One filter
//! covers every thread: it is applied in `main` before any thread starts,
//! and threads inherit it. Per-thread filters (Firecracker's vCPU, API
//! and VMM thread kinds) would be narrower; here the API thread, the
//! vhost-user reconnect path and the vCPU threads share helpers whose
//! calls do not split cleanly by thread yet.
//!
//! Arguments are checked where that closes a door a compromised VMM
//! would use: `ioctl` only for KVM's (type 0xAE) and the two terminal and
//! socket ones std makes, `socket`/`socketpair` only for Unix sockets
//! (no network), `clone`/`clone3` are allowed for threads only as far as
//! BPF can see (clone3 passes its flags in memory), and there is no
//! `execve`, `ptrace`, `mount`, `setuid`, `bpf` or `kexec` of any kind.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("Cannot build the seccomp filter")]
    Build(#[source] seccompiler::Error),
    #[error("Cannot build the seccomp filter")]
    Backend(#[source] seccompiler::BackendError),
    #[error("Cannot install the seccomp filter")]
    Apply(#[source] seccompiler::Error),
}

/// What a call outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The process is killed with SIGSYS (the default).
    Kill,
    /// The call is allowed and the kernel logs it (audit): for finding a
    /// call missing from the list.
    Log,
}

/// Calls allowed with any arguments.
const ALLOWED: &[libc::c_long] = &[
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    // Files: the config, the kernel and initrd, the console's and API's
    // sockets in the VM directory.
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_access,
    libc::SYS_faccessat2,
    libc::SYS_readlink,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_getcwd,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    // Unix sockets (the domain of new ones is checked below).
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    // Event loops and waiting.
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_futex,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_sched_yield,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    // Threads and signals (vCPU kicks are tgkill to our own threads).
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_prctl,
    libc::SYS_prlimit64,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// ioctl types and numbers sfera-vmm makes besides KVM's.
const TCGETS: u64 = 0x5401;
const FIONBIO: u64 = 0x5421;
const FIOCLEX: u64 = 0x5451;
/// KVM's ioctl type (`_IO(KVMIO, ...)`, KVMIO = 0xAE): bits 8 to 15.
const KVM_IOCTL_TYPE: u64 = 0xAE << 8;

/// The filter, compiled for this machine.
pub fn filter(mode: Mode) -> Result<BpfProgram, SeccompError> {
    let cond = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .map_err(SeccompError::Backend)
    };
    let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(SeccompError::Backend);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|s| (*s, Vec::new())).collect();
    let mut ioctl = vec![rule(vec![cond(
        1,
        SeccompCmpOp::MaskedEq(0xff00),
        KVM_IOCTL_TYPE,
    )?])?];
    for request in [TCGETS, FIONBIO, FIOCLEX] {
        ioctl.push(rule(vec![cond(1, SeccompCmpOp::Eq, request)?])?);
    }
    rules.insert(libc::SYS_ioctl, ioctl);
    let unix = libc::AF_UNIX as u64;
    for call in [libc::SYS_socket, libc::SYS_socketpair] {
        rules.insert(call, vec![rule(vec![cond(0, SeccompCmpOp::Eq, unix)?])?]);
    }
    let mismatch = match mode {
        Mode::Kill => SeccompAction::KillProcess,
        Mode::Log => SeccompAction::Log,
    };
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(SeccompError::Backend)?;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .map_err(SeccompError::Backend)?;
    filter.try_into().map_err(SeccompError::Backend)
}

/// Installs the filter on the calling thread, and so on every thread it
/// starts from now on. Sets no_new_privs, which seccomp asks of a process
/// without CAP_SYS_ADMIN.
pub fn install(mode: Mode) -> Result<(), SeccompError> {
    let program = filter(mode)?;
    seccompiler::apply_filter(&program).map_err(SeccompError::Apply)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    /// Which call the child under the filter makes (see `child`).
    const CALL: &str = "SFERA_SECCOMP_TEST_CALL";

    /// Runs `child` in a new process of this test binary, which installs
    /// the real filter and then makes `call`.
    fn run_child(call: &str) -> std::process::ExitStatus {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::child",
                "--ignored",
                "--nocapture",
            ])
            .env(CALL, call)
            .status()
            .unwrap()
    }

    #[test]
    fn a_call_outside_the_list_kills_the_process() {
        for call in ["execve", "socket_inet", "ioctl_tun"] {
            let status = run_child(call);
            assert_eq!(status.signal(), Some(libc::SIGSYS), "{call}: {status:?}");
        }
    }

    #[test]
    fn calls_on_the_list_go_through() {
        let status = run_child("allowed");
        assert!(status.success(), "{status:?}");
    }

    /// Not a test by itself: the process the two tests above start.
    #[test]
    #[ignore = "run by the seccomp tests, under the filter"]
    fn child() {
        let call = std::env::var(CALL).expect("started by run_child");
        install(Mode::Kill).unwrap();
        // SAFETY: raw system calls with integer or valid pointer
        // arguments; the ones outside the list never return.
        let ret = unsafe {
            match call.as_str() {
                "execve" => {
                    let path = c"/bin/true";
                    let argv = [path.as_ptr(), std::ptr::null()];
                    libc::execve(path.as_ptr(), argv.as_ptr(), std::ptr::null())
                }
                "socket_inet" => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
                // TUNSETIFF: a network device, not KVM.
                "ioctl_tun" => libc::ioctl(0, 0x400454ca, 0),
                "allowed" => {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    assert!(fd >= 0);
                    libc::close(fd);
                    let kvm = libc::ioctl(-1, 0xAE00, 0); // KVM_GET_API_VERSION on no fd: EBADF
                    assert_eq!(kvm, -1);
                    libc::getpid()
                }
                other => panic!("unknown call {other}"),
            }
        };
        assert!(call == "allowed", "{call} returned {ret}");
    }
}
