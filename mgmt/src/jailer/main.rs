//! `sfera-jailer`: starts one VM process (sfera-vmm or QEMU) in its own
//! sandbox; mgmtd runs it as root for every VM it starts
//! (docs/sandbox.md, [`mgmt::jail`]). It prints nothing on success and
//! exits 0 once the VM process has exec'd, its pid in `--pidfile`.
//!
//! `sfera-jailer rebind PID SOCKET` shows the jail of VM process PID the
//! socket its daemon has made anew ([`mgmt::jail::setup::rebind`]).

use std::path::Path;

use clap::Parser;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("rebind") => match (args.get(2).and_then(|p| p.parse().ok()), args.get(3)) {
            (Some(pid), Some(path)) if args.len() == 4 => {
                mgmt::jail::setup::rebind(pid, Path::new(path))
            }
            _ => {
                eprintln!("usage: sfera-jailer rebind PID SOCKET");
                std::process::exit(2);
            }
        },
        _ => mgmt::jail::setup::run(&mgmt::jail::Jail::parse()).map(drop),
    };
    if let Err(e) = result {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("sfera-jailer: {msg}");
        std::process::exit(1);
    }
}
