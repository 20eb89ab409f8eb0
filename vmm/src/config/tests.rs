use std::os::unix::net::UnixListener;

use super::*;

const HOST: HostLimits = HostLimits {
    max_vcpus: 8,
    memory_mib: 4096,
};

struct Fixture {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    _listener: UnixListener,
    sock: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, vec![0u8; 4096]).unwrap();
    let sock = dir.path().join("blk.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    Fixture {
        dir,
        kernel,
        _listener: listener,
        sock,
    }
}

fn config(f: &Fixture) -> VmConfig {
    serde_json::from_value(serde_json::json!({
        "vcpus": 2,
        "memory_mib": 256,
        "kernel": f.kernel,
        "cmdline": "console=ttyS0",
        "disks": [{"socket": f.sock, "mode": "connect"}],
        "nets": [{"socket": f.dir.path().join("net.sock"), "mode": "listen",
                  "mac": "52:54:00:12:34:56"}],
        "rng": true
    }))
    .unwrap()
}

#[test]
fn a_good_config_passes_and_defaults_apply() {
    let f = fixture();
    let c = config(&f);
    c.validate(&HOST).unwrap();
    assert_eq!(c.nets[0].mtu, 1500);
    assert!(c.console.stdout);
    assert!(!c.disks[0].read_only);
    // Round trip through JSON.
    let back: VmConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn vcpu_counts_are_bounded_by_the_vmm_and_the_host() {
    let f = fixture();
    for n in [0, 9, 65] {
        let mut c = config(&f);
        c.vcpus = n;
        assert!(
            matches!(c.validate(&HOST), Err(ConfigError::Vcpus { .. })),
            "{n}"
        );
    }
    let mut c = config(&f);
    c.vcpus = 64;
    let big = HostLimits {
        max_vcpus: 1024,
        memory_mib: 4096,
    };
    c.validate(&big).unwrap();
}

#[test]
fn memory_too_small_too_large_or_odd_with_hugepages() {
    let f = fixture();
    let mut c = config(&f);
    c.memory_mib = 8;
    assert!(matches!(c.validate(&HOST), Err(ConfigError::Memory { .. })));
    c.memory_mib = 8192;
    assert!(matches!(
        c.validate(&HOST),
        Err(ConfigError::MemoryOverHost { .. })
    ));
    c.memory_mib = 17;
    c.hugepages = true;
    assert_eq!(c.validate(&HOST), Err(ConfigError::HugepageMultiple(17)));
}

#[test]
fn kernel_and_initrd_must_exist_and_fit() {
    let f = fixture();
    let mut c = config(&f);
    c.kernel = f.dir.path().join("missing");
    assert!(matches!(
        c.validate(&HOST),
        Err(ConfigError::Unreadable { what: "kernel", .. })
    ));
    let big = f.dir.path().join("initrd");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(20 << 20).unwrap();
    let mut c = config(&f);
    c.memory_mib = 16;
    c.initrd = Some(big);
    assert!(matches!(
        c.validate(&HOST),
        Err(ConfigError::DoesNotFit { .. })
    ));
}

#[test]
fn sockets_must_be_reachable_and_distinct() {
    let f = fixture();
    let mut c = config(&f);
    c.disks[0].socket = f.dir.path().join("nobody.sock");
    assert!(matches!(c.validate(&HOST), Err(ConfigError::Socket { .. })));
    let mut c = config(&f);
    c.disks[0].socket = f.kernel.clone();
    let e = c.validate(&HOST).unwrap_err();
    assert!(e.to_string().contains("not a Unix socket"), "{e}");
    let mut c = config(&f);
    c.nets[0].socket = f.dir.path().join("no/such/dir.sock");
    assert!(matches!(c.validate(&HOST), Err(ConfigError::Socket { .. })));
    let mut c = config(&f);
    c.nets[0].socket = f.sock.clone();
    assert_eq!(
        c.validate(&HOST),
        Err(ConfigError::DuplicateSocket(f.sock.clone()))
    );
}

#[test]
fn macs_and_mtus_are_checked() {
    assert_eq!(
        parse_mac("52:54:00:ab:cd:ef"),
        Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
    );
    for bad in [
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "52-54-00-ab-cd-ef",
        "zz:54:00:ab:cd:ef",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
    let f = fixture();
    let mut c = config(&f);
    c.nets[0].mac = "01:00:5e:00:00:01".into();
    assert!(matches!(c.validate(&HOST), Err(ConfigError::Mac { .. })));
    let mut c = config(&f);
    c.nets[0].mtu = 10;
    assert!(matches!(c.validate(&HOST), Err(ConfigError::Mtu { .. })));
}

#[test]
fn unknown_fields_are_refused() {
    let r: Result<VmConfig, _> =
        serde_json::from_str(r#"{"memory_mib": 64, "kernel": "/k", "vcpu": 2}"#);
    assert!(r.is_err());
}

#[test]
fn a_history_header_gives_its_length_and_nothing_else_passes_for_one() {
    assert_eq!(history_header(65536), "sfera-console history 65536\n");
    assert_eq!(
        parse_history_header(b"sfera-console history 65536"),
        Some(65536)
    );
    assert_eq!(parse_history_header(b"sfera-console history 0"), Some(0));
    for bad in [
        &b"sfera-console history "[..],
        b"sfera-console history 12x",
        b"sfera-console history -1",
        b"sfera-console history 99999999999999999999999",
        b"login: ",
    ] {
        assert_eq!(parse_history_header(bad), None, "{bad:?}");
    }
    assert!(history_header(usize::MAX).len() <= HISTORY_HEADER_MAX);
    let console: ConsoleConfig = serde_json::from_str(r#"{"history": "framed"}"#).unwrap();
    assert_eq!(console.history, ConsoleHistory::Framed);
    let console: ConsoleConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(console.history, ConsoleHistory::Replay);
}
