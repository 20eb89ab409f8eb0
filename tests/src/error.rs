//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Result of harness operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while setting up or driving a test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool the test needs is not installed.
    #[error(
        "Required tool `{tool}` not found: install Debian package `{package}` (`make test` does)"
    )]
    MissingTool { tool: String, package: String },

    /// The guest image has not been built.
    #[error("Guest image not found at {}: build it with `make guest-image`", dir.display())]
    MissingGuestImage { dir: PathBuf },

    /// sfera-vmm's test guest has not been built.
    #[error("Test guest not found at {}: build it with `make testguest` (or `make -C vmm/testguest`)", path.display())]
    MissingTestGuest { path: PathBuf },

    /// A mutant build a test must catch has not been built.
    #[error("Mutant build not found at {}: build it with `make mutant-blockd`", path.display())]
    MissingMutant { path: PathBuf },

    /// An I/O operation on a path failed.
    #[error("{what} ({})", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A process could not be started.
    #[error("Cannot start {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },

    /// A helper command ran and failed.
    #[error("Command `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },

    /// A process that should still run has exited.
    #[error("{name} exited unexpectedly ({status}); last output:\n{log_tail}")]
    Exited {
        name: String,
        status: String,
        log_tail: String,
    },

    /// Something awaited did not happen in time.
    #[error(
        "Timed out after {timeout:?} waiting for {what}{}",
        context_suffix(context)
    )]
    Timeout {
        what: String,
        timeout: Duration,
        context: String,
    },

    /// The console's reader reached end of file.
    #[error("Console of {name} closed while waiting for {what}; last output:\n{tail}")]
    ConsoleClosed {
        name: String,
        what: String,
        tail: String,
    },

    /// A command run in a guest or tool exited non-zero.
    #[error("`{command}` on {name} exited with status {status}; output:\n{output}")]
    GuestCommand {
        name: String,
        command: String,
        status: i32,
        output: String,
    },

    /// Reserving hugepages failed.
    #[error("Cannot reserve {wanted} hugepages of 2 MiB: only {got} could be allocated")]
    Hugepages { wanted: u64, got: u64 },

    /// QEMU starts on this host's KVM with none of the CPU models tried.
    #[error("QEMU cannot run guests on this KVM with any CPU model tried: {tried}")]
    QemuCpu { tried: String },

    /// Data read back is not what was written (or what a crash may leave).
    #[error("Data integrity check failed: {what}")]
    Integrity { what: String },

    /// An HTTP answer with another status than the one wanted.
    #[error("{what}: HTTP {status} (wanted {wanted}): {body}")]
    Http {
        what: String,
        status: u16,
        wanted: String,
        body: String,
    },

    /// A value read from a tool or file could not be parsed.
    #[error("Cannot parse {what}: {text:?}")]
    Parse { what: String, text: String },
}

fn context_suffix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{context}")
    }
}

impl Error {
    /// Wraps an I/O error with what was being done and on which path.
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}
