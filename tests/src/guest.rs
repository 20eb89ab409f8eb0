//! Real Linux guests under QEMU TCG, attached to vhost-user backends.
//!
//! The guest is the image `tests/guest/build.sh` makes (Debian's cloud kernel
//! and a busybox initramfs with fio and iperf3). Its RAM is a shared memfd so
//! that vhost-user backends can map it; disks are `vhost-user-blk-pci` and
//! NICs are `virtio-net-pci` on a vhost-user netdev, so the guest's own Linux
//! virtio drivers are the backends' clients.
//!
//! A guest must be started from the thread that drops it: its QEMU process
//! dies with that thread (see [`crate::process`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::console::{CommandOutput, Console};
use crate::process::Process;
use crate::testdir::TestDir;
use crate::{Error, Result, tools};

/// The line the guest's `/init` prints when its devices are up.
pub const READY_LINE: &str = "SFERA-GUEST-READY";

/// How long a boot may take by default. Booting takes about 10 s under TCG on
/// an idle machine; tests share two cores with the daemons they exercise.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The kernel and initramfs of the test guest.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The image built by `make guest-image`, in `$SFERA_GUEST_DIR` or the
    /// workspace's `target/guest`.
    pub fn locate() -> Result<Self> {
        let dir = std::env::var_os("SFERA_GUEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest"));
        let image = GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
        };
        if image.kernel.is_file() && image.initrd.is_file() {
            Ok(image)
        } else {
            Err(Error::MissingGuestImage { dir })
        }
    }
}

/// Which side of a vhost-user socket QEMU takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRole {
    /// QEMU connects to a backend that listens.
    Client,
    /// QEMU listens and the backend connects (OVS's `dpdkvhostuserclient`).
    /// QEMU does not start the guest until the backend has connected.
    Server,
}

/// A disk served by a vhost-user-blk backend.
#[derive(Debug, Clone)]
pub struct Disk {
    pub socket: PathBuf,
    pub num_queues: u16,
    /// QEMU reconnects (every second) when the backend goes away.
    pub reconnect: bool,
}

impl Disk {
    /// A single-queue disk on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Disk {
            socket: socket.into(),
            num_queues: 1,
            reconnect: false,
        }
    }

    /// Makes QEMU reconnect when the backend restarts.
    #[must_use]
    pub fn reconnecting(mut self) -> Self {
        self.reconnect = true;
        self
    }

    /// Sets the number of request queues.
    #[must_use]
    pub fn queues(mut self, num_queues: u16) -> Self {
        self.num_queues = num_queues;
        self
    }
}

/// A NIC on a vhost-user-net backend.
#[derive(Debug, Clone)]
pub struct Nic {
    pub socket: PathBuf,
    pub role: SocketRole,
    pub mac: String,
    /// `ADDR/PREFIX` the guest gives this NIC, if any.
    pub address: Option<String>,
    pub queue_pairs: u16,
}

impl Nic {
    /// A NIC on `socket` with a MAC address derived from `id`.
    pub fn new(socket: impl Into<PathBuf>, role: SocketRole, id: u8) -> Self {
        Nic {
            socket: socket.into(),
            role,
            mac: format!("52:54:00:5f:e4:{id:02x}"),
            address: None,
            queue_pairs: 1,
        }
    }

    /// Gives the NIC an IPv4 address in the guest (`"10.0.0.1/24"`).
    #[must_use]
    pub fn address(mut self, address: &str) -> Self {
        self.address = Some(address.to_owned());
        self
    }
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// QEMU's stdin and stdout, driven by a [`Console`].
    Piped,
    /// The terminal QEMU runs in, multiplexed with QEMU's monitor
    /// (Ctrl-A C switches, Ctrl-A X quits).
    Terminal,
}

/// What a guest is made of.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    pub name: String,
    pub console: ConsoleMode,
    pub memory_mib: u32,
    pub vcpus: u8,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub extra_cmdline: Vec<String>,
}

impl GuestConfig {
    /// One vCPU and 512 MiB (the initramfs with fio's libraries needs ~200).
    pub fn new(name: &str) -> Self {
        GuestConfig {
            name: name.to_owned(),
            console: ConsoleMode::Piped,
            memory_mib: 512,
            vcpus: 1,
            disks: Vec::new(),
            nics: Vec::new(),
            extra_cmdline: Vec::new(),
        }
    }

    #[must_use]
    pub fn console(mut self, console: ConsoleMode) -> Self {
        self.console = console;
        self
    }

    #[must_use]
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    #[must_use]
    pub fn vcpus(mut self, vcpus: u8) -> Self {
        self.vcpus = vcpus;
        self
    }

    #[must_use]
    pub fn disk(mut self, disk: Disk) -> Self {
        self.disks.push(disk);
        self
    }

    #[must_use]
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// The kernel command line: serial console, no reboot on panic, and the
    /// NIC settings `/init` reads.
    pub fn cmdline(&self) -> String {
        let mut words = vec![
            "console=ttyS0".to_owned(),
            "panic=-1".to_owned(),
            "quiet".to_owned(),
            format!("sfera.hostname={}", self.name),
        ];
        for (i, nic) in self.nics.iter().enumerate() {
            if let Some(address) = &nic.address {
                words.push(format!("sfera.net=eth{i}:{address}"));
            }
        }
        words.extend(self.extra_cmdline.iter().cloned());
        words.join(" ")
    }

    /// QEMU's arguments for this guest.
    pub fn qemu_args(&self, image: &GuestImage) -> Vec<String> {
        let mem = format!("{}M", self.memory_mib);
        let mut args: Vec<String> = [
            "-name",
            &self.name,
            "-accel",
            "tcg",
            "-machine",
            "pc,memory-backend=mem",
            "-m",
            &mem,
            "-smp",
            &self.vcpus.to_string(),
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            &image.kernel.to_string_lossy(),
            "-initrd",
            &image.initrd.to_string_lossy(),
            "-append",
            &self.cmdline(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let console: &[&str] = match self.console {
            ConsoleMode::Piped => &[
                "-chardev",
                "stdio,id=con,signal=off",
                "-serial",
                "chardev:con",
            ],
            ConsoleMode::Terminal => &[
                "-chardev",
                "stdio,id=con,mux=on,signal=off",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con",
            ],
        };
        args.extend(console.iter().map(|s| (*s).to_owned()));
        for (i, disk) in self.disks.iter().enumerate() {
            args.push("-chardev".into());
            let reconnect = if disk.reconnect { ",reconnect=1" } else { "" };
            args.push(format!(
                "socket,id=blk{i},path={}{reconnect}",
                disk.socket.display()
            ));
            args.push("-device".into());
            args.push(format!(
                "vhost-user-blk-pci,chardev=blk{i},num-queues={}",
                disk.num_queues
            ));
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let server = match nic.role {
                SocketRole::Client => "",
                SocketRole::Server => ",server=on",
            };
            args.push("-chardev".into());
            args.push(format!(
                "socket,id=net{i},path={}{server}",
                nic.socket.display()
            ));
            args.push("-netdev".into());
            args.push(format!(
                "vhost-user,id=net{i},chardev=net{i},queues={}",
                nic.queue_pairs
            ));
            // QEMU 7.2 under TCG crashes in its MSI-X path when a vhost-user
            // NIC starts with MSI-X (see shared/DESIGN.md): use INTx.
            let mq = if nic.queue_pairs > 1 { ",mq=on" } else { "" };
            args.push("-device".into());
            args.push(format!(
                "virtio-net-pci,netdev=net{i},mac={},vectors=0{mq}",
                nic.mac
            ));
        }
        args
    }
}

/// A running guest.
#[derive(Debug)]
pub struct Guest {
    name: String,
    // The console is declared first so it is dropped (its input closed)
    // before the process is stopped.
    console: Console,
    process: Process,
    started: Instant,
}

impl Guest {
    /// Starts QEMU for `config` without waiting for the guest to boot; see
    /// [`Guest::wait_ready`]. Logs go to `<name>.qemu.log` and
    /// `<name>.console.log` in `dir`.
    pub fn start(dir: &TestDir, image: &GuestImage, config: &GuestConfig) -> Result<Self> {
        let qemu = tools::require("qemu-system-x86_64", "qemu-system-x86")?;
        let mut command = Command::new(qemu);
        command
            .args(config.qemu_args(image))
            .current_dir(dir.path());
        let log = dir.join(format!("{}.qemu.log", config.name));
        let (process, pipes) =
            Process::spawn_interactive(&format!("QEMU guest {}", config.name), command, &log)?;
        let console = Console::new(
            &config.name,
            pipes.stdout,
            pipes.stdin,
            &dir.join(format!("{}.console.log", config.name)),
        )?;
        Ok(Guest {
            name: config.name.clone(),
            console,
            process,
            started: Instant::now(),
        })
    }

    /// Starts the guest and waits for its readiness line.
    pub fn boot(dir: &TestDir, image: &GuestImage, config: &GuestConfig) -> Result<Self> {
        let mut guest = Self::start(dir, image, config)?;
        guest.wait_ready(DEFAULT_BOOT_TIMEOUT)?;
        Ok(guest)
    }

    /// Waits for the readiness line `/init` prints once its devices are up;
    /// returns how long the boot took since QEMU started.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        match self.console.wait_for_line(READY_LINE, timeout) {
            Ok(_) => {
                let took = self.started.elapsed();
                eprintln!(
                    "guest {} ready {:.1} s after QEMU started",
                    self.name,
                    took.as_secs_f64()
                );
                Ok(took)
            }
            Err(e) => {
                // If QEMU died, its own log says why better than the console.
                self.process.wait_timeout(Duration::from_millis(200))?;
                self.process.ensure_running()?;
                Err(e)
            }
        }
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The serial console.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// Runs a shell command in the guest; see [`Console::run`].
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<CommandOutput> {
        self.console.run(command, timeout)
    }

    /// Runs a shell command in the guest and fails unless it exits 0.
    pub fn run_ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        self.console.run_ok(command, timeout)
    }

    /// Powers the guest off from inside and waits for QEMU to exit.
    pub fn poweroff(mut self, timeout: Duration) -> Result<()> {
        self.console.send_line("sync; poweroff -f")?;
        match self.process.wait_timeout(timeout)? {
            Some(_) => Ok(()),
            None => Err(Error::Timeout {
                what: format!("guest {} to power off", self.name),
                timeout,
                context: self.console.tail(10),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> GuestImage {
        GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
        }
    }

    #[test]
    fn memory_is_a_shared_memfd() {
        let args = GuestConfig::new("g").memory_mib(256).qemu_args(&image());
        let joined = args.join(" ");
        assert!(
            joined.contains("memory-backend-memfd,id=mem,size=256M,share=on"),
            "{joined}"
        );
        assert!(
            joined.contains("-machine pc,memory-backend=mem"),
            "{joined}"
        );
        assert!(joined.contains("-accel tcg"), "{joined}");
    }

    #[test]
    fn disks_and_nics_become_vhost_user_devices() {
        let config = GuestConfig::new("g")
            .disk(Disk::new("/s/vda.sock").queues(2))
            .nic(Nic::new("/s/n0.sock", SocketRole::Server, 1).address("10.9.0.1/24"))
            .nic(Nic::new("/s/n1.sock", SocketRole::Client, 2));
        let joined = config.qemu_args(&image()).join(" ");
        assert!(joined.contains("-chardev socket,id=blk0,path=/s/vda.sock -device vhost-user-blk-pci,chardev=blk0,num-queues=2"), "{joined}");
        assert!(
            joined.contains("socket,id=net0,path=/s/n0.sock,server=on"),
            "{joined}"
        );
        assert!(
            joined.contains("socket,id=net1,path=/s/n1.sock -netdev"),
            "{joined}"
        );
        assert!(
            joined.contains("virtio-net-pci,netdev=net0,mac=52:54:00:5f:e4:01,vectors=0"),
            "{joined}"
        );
        assert!(config.cmdline().contains("sfera.net=eth0:10.9.0.1/24"));
        assert!(!config.cmdline().contains("eth1"));
    }
}
