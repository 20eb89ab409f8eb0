//! Network namespaces, veth pairs and TAP devices that a test creates and
//! that are always removed when dropped. Test traffic stays inside them.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::run;
use crate::{Result, tools};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `<prefix><pid><n>`, at most
/// 15 bytes as interface names must be.
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    name.chars().take(15).collect()
}

fn ip(args: &[&str]) -> Result<String> {
    let mut command = Command::new(tools::require("ip", "iproute2")?);
    command.args(args);
    run(command)
}

/// A network namespace, deleted when dropped (with every interface in it).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name and brings its loopback up.
    pub fn new() -> Result<Self> {
        let name = unique_name("sfns");
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Result<Command> {
        let mut command = Command::new(tools::require("ip", "iproute2")?);
        command.args(["netns", "exec", &self.name, program]);
        Ok(command)
    }

    /// Runs `argv` inside the namespace to completion and returns its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv.split_first().expect("argv names a program");
        let mut command = self.command(program)?;
        command.args(args);
        run(command)
    }

    /// Runs `body` on a new thread that has entered the namespace
    /// (`setns`) and returns what it returns. Sockets and devices it opens
    /// belong to the namespace, and stay usable from any thread afterwards.
    pub fn run_in<T: Send>(&self, body: impl FnOnce() -> T + Send) -> Result<T> {
        let (file, path) = self.open()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&file, &path)?;
                Ok(body())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts a thread named `name` that enters the namespace and runs
    /// `body`, for work that outlives one call (a runtime whose tasks open
    /// the namespace's sockets and start its processes: both belong to the
    /// namespace of the thread that makes them). The thread returns an
    /// error instead of running `body` if it cannot enter.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        name: &str,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let (file, path) = self.open()?;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                enter(&file, &path)?;
                Ok(body())
            })
            .map_err(|source| crate::Error::Spawn {
                name: format!("thread {name}"),
                source,
            })
    }

    /// The namespace's file, which setns(2) takes.
    fn open(&self) -> Result<(std::fs::File, std::path::PathBuf)> {
        let path = std::path::Path::new("/run/netns").join(&self.name);
        let file = std::fs::File::open(&path)
            .map_err(|e| crate::Error::io("Cannot open the namespace", &path, e))?;
        Ok((file, path))
    }
}

/// Moves the calling thread into the namespace open as `file` (at `path`).
/// setns(2) changes only this thread's network namespace; callers call it
/// only on threads they made for the namespace.
fn enter(file: &std::fs::File, path: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is an open namespace file, borrowed for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(crate::Error::io(
            "Cannot enter the namespace",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete network namespace {}: {e}", self.name);
        }
    }
}

/// A veth pair; deleting one end deletes both.
#[derive(Debug)]
pub struct Veth {
    pub a: String,
    pub b: String,
    a_ns: Option<String>,
    b_ns: Option<String>,
}

impl Veth {
    /// Creates a pair with unique names in the current namespace.
    pub fn new() -> Result<Self> {
        let a = unique_name("sfva");
        let b = unique_name("sfvb");
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        Ok(Veth {
            a,
            b,
            a_ns: None,
            b_ns: None,
        })
    }

    /// Moves end `a` into `ns`.
    pub fn move_a_to(&mut self, ns: &NetNs) -> Result<()> {
        ip(&["link", "set", &self.a, "netns", ns.name()])?;
        self.a_ns = Some(ns.name().to_owned());
        Ok(())
    }

    /// Moves end `b` into `ns`.
    pub fn move_b_to(&mut self, ns: &NetNs) -> Result<()> {
        ip(&["link", "set", &self.b, "netns", ns.name()])?;
        self.b_ns = Some(ns.name().to_owned());
        Ok(())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting either end deletes the pair; an end whose namespace was
        // deleted first is already gone, and took its peer with it.
        delete_link(&self.a, self.a_ns.as_deref());
    }
}

/// A TAP device, in the current namespace or in a test's namespace.
#[derive(Debug)]
pub struct Tap {
    name: String,
    ns: Option<String>,
}

impl Tap {
    /// Creates a TAP device with a unique name, in `ns` if given.
    pub fn new(ns: Option<&NetNs>) -> Result<Self> {
        let name = unique_name("sftap");
        let mut argv = Vec::new();
        if let Some(ns) = ns {
            argv.extend(["-n", ns.name()]);
        }
        argv.extend(["tuntap", "add", "dev", &name, "mode", "tap"]);
        ip(&argv)?;
        Ok(Tap {
            name,
            ns: ns.map(|n| n.name().to_owned()),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        delete_link(&self.name, self.ns.as_deref());
    }
}

/// Deletes a link unless it (or its namespace) is already gone.
fn delete_link(name: &str, ns: Option<&str>) {
    let in_ns = |args: &[&str]| {
        let mut argv = Vec::new();
        if let Some(ns) = ns {
            argv.extend(["-n", ns]);
        }
        argv.extend_from_slice(args);
        ip(&argv)
    };
    if in_ns(&["link", "del", name]).is_err() && in_ns(&["link", "show", name]).is_ok() {
        eprintln!("cannot delete network interface {name}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_differ() {
        let a = unique_name("sftap");
        let b = unique_name("sftap");
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
    }
}
