//! Sfera's test harness: the pieces every cross-component test and benchmark
//! uses to run real guests and real clients against real daemons.
//!
//! - [`guest`]: boots the test guest (Debian's cloud kernel, busybox initramfs)
//!   under QEMU TCG with guest RAM in a shared memfd, disks as
//!   `vhost-user-blk-pci` and NICs as vhost-user `virtio-net-pci`.
//! - [`console`]: drives a serial console or any line-oriented program: wait
//!   for a line with a deadline, run a command, capture its output and status.
//! - [`cpus`]: the CPUs this process may run on; tests and benchmarks pin
//!   to the n-th of them, never to a CPU number they assume.
//! - [`process`]: external processes that are always stopped, on every exit
//!   path including panics.
//! - [`testdir`]: a private directory per test, so tests run in parallel.
//! - [`netns`]: network namespaces, veth pairs and TAP devices, always removed.
//! - [`cluster_net`]: cluster hosts as namespaces routed through a core
//!   namespace, with partitions of one host and their healing.
//! - [`ns_runtime`]: a tokio runtime whose tasks run in one namespace (their
//!   sockets and child processes are the namespace's).
//! - [`hugepages`]: a hugepage reservation and a private hugetlbfs mount for
//!   DPDK tools; the previous page count is put back.
//! - [`io_throttle`]: a loop device whose writes a cgroup holds back, so a
//!   backend keeps requests in flight long enough to crash in the middle.
//! - [`peers`]: the references Sfera is measured against:
//!   `qemu-storage-daemon`, `dpdk-testpmd` and Open vSwitch with DPDK.
//! - [`blkio_client`]: libblkio as an independent vhost-user-blk client.
//! - [`flush_campaign`]: writes, flushes and a crash, then a check of what
//!   survived, for crash and power-loss tests.
//! - [`daemons`]: Sfera's own daemons, from the workspace's build output.
//! - [`http`]: every HTTP call the tests make (daemons' Unix-socket APIs,
//!   mgmtd and the appliance over TCP), through curl.
//! - [`mgmtd`]: sfera-mgmtd on a free port with its data in the test's
//!   directory, and the cleanup of what it leaves running.
//! - [`raw_frontend`]: a raw vhost-user frontend that writes any
//!   descriptors it likes, for protocol and bad-guest tests.
//! - [`raw_nic`]: a virtio-net NIC on a raw frontend, for byte-exact frames.
//! - [`scenario`]: the named cases one heavy set-up (a booted guest) runs
//!   in order, each failure naming its case.
//! - [`frames`]: Ethernet, 802.1Q, ARP and ICMP echo frames byte by byte.
//! - [`qemu_kvm`]: how QEMU runs on this host's KVM (the `-cpu` model the
//!   KVM accepts), probed once; every QEMU started with `-accel kvm` uses it.
//! - [`testguest`]: sfera-vmm's CPL3 test guest under sfera-vmm or QEMU on
//!   KVM, its console report and its disk pattern.
//! - [`boot_sector`]: a disk image whose boot sector prints a line, for
//!   firmware boots of imported disks.
//! - [`powerloss_fs`]: a FUSE datastore that loses unsynced data on a
//!   simulated power cut, for crash tests that must tell a real FLUSH from
//!   none.
//! - [`vm_config`]: sfera-vmm's typed VM configuration with test defaults.
//! - [`backend`]: one argument chooses which block or switch backend a test
//!   runs against.

pub mod backend;
pub mod blkio_client;
pub mod boot_sector;
pub mod cluster_net;
pub mod console;
pub mod cpus;
pub mod daemons;
pub mod error;
pub mod flush_campaign;
pub mod frames;
pub mod guest;
pub mod http;
pub mod hugepages;
pub mod io_throttle;
pub mod mgmtd;
pub mod netns;
pub mod ns_runtime;
pub mod peers;
pub mod powerloss_fs;
pub mod process;
pub mod qemu_kvm;
pub mod raw_frontend;
pub mod raw_nic;
pub mod scenario;
pub mod small_fs;
pub mod testdir;
pub mod testguest;
pub mod tools;
pub mod vm_config;
pub mod wait;

pub use error::{Error, Result};
