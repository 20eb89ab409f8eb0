//! The `sfera-vmm` binary on this machine's KVM: `--config` runs a VM to
//! its end and exits with its status; bad configs are refused with a JSON
//! error before anything starts; the REST API drives a VM through its life.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm::testing;

const VMM: &str = env!("CARGO_BIN_EXE_sfera-vmm");

/// Kills the VMM if a test fails before it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_kernel(dir: &Path, name: &str, code: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, testing::pvh_elf(code)).unwrap();
    path
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("vm.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn run_with_deadline(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(limit);
        // The test has failed by now; make sure the VMM does not linger.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(killer);
    out
}

#[test]
fn config_file_boots_prints_and_exits_zero_on_reset() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_kernel(
        dir.path(),
        "hello.elf",
        &testing::hello_then_reset(b"from pvh\n"),
    );
    let config = write_config(
        dir.path(),
        &json!({"vcpus": 2, "memory_mib": 64, "kernel": kernel, "cmdline": "x"}),
    );
    let mut cmd = Command::new(VMM);
    cmd.arg("--config")
        .arg(&config)
        .args(["--console", "stdout"]);
    let out = run_with_deadline(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout, "from pvh\n");
    assert!(stderr.contains("i8042"), "{stderr}");
}

#[test]
fn guest_fault_exits_one_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_kernel(dir.path(), "fault.elf", &testing::hello_then_fault(b""));
    let config = write_config(dir.path(), &json!({"memory_mib": 32, "kernel": kernel}));
    let mut cmd = Command::new(VMM);
    cmd.arg("--config").arg(&config).args(["--console", "none"]);
    let out = run_with_deadline(cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("triple fault"), "{stderr}");
    assert!(stderr.contains("rip="), "{stderr}");
}

#[test]
fn invalid_configs_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_kernel(dir.path(), "k.elf", &testing::spin());
    let console = dir.path().join("console.sock");
    let cases = [
        (
            json!({"vcpus": 0, "memory_mib": 64, "kernel": kernel}),
            "vcpus",
        ),
        (
            json!({"vcpus": 65, "memory_mib": 64, "kernel": kernel}),
            "vcpus",
        ),
        (json!({"memory_mib": 4, "kernel": kernel}), "memory_mib"),
        (
            json!({"memory_mib": 64, "kernel": dir.path().join("nope")}),
            "kernel",
        ),
        (
            json!({"memory_mib": 64, "kernel": kernel,
                   "disks": [{"socket": dir.path().join("missing.sock")}]}),
            "disks[0]",
        ),
        (
            json!({"memory_mib": 64, "kernel": kernel, "bogus": 1}),
            "bogus",
        ),
    ];
    for (config, needle) in cases {
        let mut config = config;
        config["console"] = json!({"socket": console});
        let path = write_config(dir.path(), &config);
        let mut cmd = Command::new(VMM);
        cmd.arg("--config").arg(&path);
        let out = run_with_deadline(cmd, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_default();
        let error: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{config}: {stderr}"
        );
        assert!(!console.exists(), "nothing may be left behind");
    }
}

/// One HTTP/1.1 request over the API socket.
fn call(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = UnixStream::connect(sock).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: vmm\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let json = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .filter(|b| !b.is_empty())
        .map_or(Value::Null, |b| serde_json::from_str(b).unwrap());
    (status, json)
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn api_drives_a_vm_through_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_kernel(dir.path(), "spin.elf", &testing::spin());
    let sock = dir.path().join("api.sock");
    let child = Command::new(VMM)
        .arg("--api-sock")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vmm = Running(child);
    wait_for(&sock);

    assert_eq!(call(&sock, "GET", "/v1/vm", None).1["state"], "not_created");
    let (status, err) = call(&sock, "PUT", "/v1/vm/boot", None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let bad = json!({"vcpus": 0, "memory_mib": 64, "kernel": kernel});
    let (status, err) = call(&sock, "PUT", "/v1/vm", Some(&bad));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_config");

    let config = json!({"vcpus": 2, "memory_mib": 64, "kernel": kernel,
                        "console": {"stdout": false}});
    assert_eq!(call(&sock, "PUT", "/v1/vm", Some(&config)).0, 204);
    assert_eq!(call(&sock, "GET", "/v1/vm", None).1["state"], "created");
    assert_eq!(call(&sock, "PUT", "/v1/vm/boot", None).0, 204);
    let info = call(&sock, "GET", "/v1/vm", None).1;
    assert_eq!(info["state"], "running");
    assert_eq!(info["config"]["vcpus"], 2);
    assert_eq!(call(&sock, "PUT", "/v1/vm/pause", None).0, 204);
    assert_eq!(call(&sock, "GET", "/v1/vm", None).1["state"], "paused");
    assert_eq!(call(&sock, "PUT", "/v1/vm/resume", None).0, 204);
    assert_eq!(call(&sock, "GET", "/v1/vm", None).1["state"], "running");
    let (status, counters) = call(&sock, "GET", "/v1/vm/counters", None);
    assert_eq!(status, 200);
    // Whether a pause interrupts KVM_RUN (or finds a vCPU between runs)
    // is timing: the count exists, its value is not asserted.
    assert!(counters["exits"]["interrupted"].is_u64(), "{counters}");
    assert!(counters["devices"].is_array());
    assert_eq!(call(&sock, "PUT", "/v1/vm/shutdown", None).0, 204);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = vmm.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the VMM did not exit after shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists());
}

#[test]
fn a_second_vmm_cannot_take_a_live_vmms_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let first = Command::new(VMM)
        .arg("--api-sock")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _first = Running(first);
    wait_for(&sock);

    // Before the lock, a second VMM replaced the socket and ran on.
    let mut cmd = Command::new(VMM);
    cmd.arg("--api-sock").arg(&sock);
    let second = run_with_deadline(cmd, Duration::from_secs(10));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(call(&sock, "GET", "/v1/vm", None).1["state"], "not_created");
}
