//! `sfera-blockd serve` ends cleanly on SIGTERM (what mgmtd and systemd
//! send), as on SIGINT, and removes its API socket.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BLOCKD: &str = env!("CARGO_BIN_EXE_sfera-blockd");

/// Kills the daemon if a test fails before it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Running {
    let child = Command::new(BLOCKD)
        .arg("--api")
        .arg(dir.join("blockd.sock"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("blockd.sock").exists() {
        assert!(Instant::now() < deadline, "the API socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

fn exit_after(daemon: &mut Running, signal: libc::c_int) -> std::process::ExitStatus {
    let pid = libc::pid_t::try_from(daemon.0.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not
    // reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "blockd ignored signal {signal}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_stop_it_and_remove_the_socket() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut blockd = serve(dir.path());
        let status = exit_after(&mut blockd, signal);
        assert!(status.success(), "signal {signal}: {status:?}");
        assert!(!dir.path().join("blockd.sock").exists());
    }
}
