//! Where the installer's messages go: every console the kernel was given
//! (`console=tty0 console=ttyS0,115200`: the screen and the serial port), so
//! an operator sees them whichever one they watch, and a test reads them on
//! the serial port. Run by hand, it prints to stdout.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes lines to the operator.
#[derive(Debug)]
pub struct Say {
    consoles: Vec<File>,
}

impl Say {
    /// Every active kernel console (and stderr, the journal) when stdout is
    /// `/dev/console`, else stdout alone.
    pub fn new() -> Self {
        let on_console =
            std::fs::read_link("/proc/self/fd/1").is_ok_and(|p| p == Path::new("/dev/console"));
        let mut consoles = Vec::new();
        if on_console {
            let active =
                std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
            for name in active.split_whitespace() {
                // Non-blocking: a serial port with nothing attached must not
                // hold the installer up.
                if let Ok(f) = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                    .open(Path::new("/dev").join(name))
                {
                    consoles.push(f);
                }
            }
        }
        Say { consoles }
    }

    /// Prints one line (or several) everywhere.
    pub fn line(&mut self, text: &str) {
        if self.consoles.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
            return;
        }
        // Under systemd, stderr is the journal: the record of what happened.
        eprintln!("{text}");
        for c in &mut self.consoles {
            // A console that cannot take the line loses it; the others and
            // the journal still have it.
            let _ = writeln!(c, "{text}");
        }
    }
}

impl Default for Say {
    fn default() -> Self {
        Self::new()
    }
}
