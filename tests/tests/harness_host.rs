//! The harness's namespaces, veths, TAPs, cluster networks and hugepages do what they promise and clean up after themselves (ip, sysfs).
//!
//! The harness's host-side pieces do what they promise and clean up:
//! namespaces, veth pairs and TAP devices disappear; a cluster network
//! routes between its hosts, cuts one off and puts it back; the hugepage
//! pool returns to its previous size.

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::cluster_net::ClusterNet;
use harness::hugepages::Hugepages;
use harness::netns::{NetNs, Tap, Veth};
use harness::ns_runtime::NsRuntime;
use harness::testdir::TestDir;

fn ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip").args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn namespaces_veth_and_tap_carry_traffic_and_are_removed() -> Result<()> {
    let (ns_names, veth_name, tap_name);
    {
        let left = NetNs::new()?;
        let right = NetNs::new()?;
        let mut veth = Veth::new()?;
        veth.move_a_to(&left)?;
        veth.move_b_to(&right)?;
        left.exec_ok(&["ip", "addr", "add", "10.99.0.1/24", "dev", &veth.a])?;
        left.exec_ok(&["ip", "link", "set", &veth.a, "up"])?;
        right.exec_ok(&["ip", "addr", "add", "10.99.0.2/24", "dev", &veth.b])?;
        right.exec_ok(&["ip", "link", "set", &veth.b, "up"])?;
        // Traffic stays between the two namespaces this test made.
        let out = left.exec_ok(&["ping", "-c", "2", "-W", "5", "10.99.0.2"])?;
        ensure!(
            out.contains("2 received") || out.contains("2 packets received"),
            "{out}"
        );

        let tap = Tap::new(Some(&left))?;
        let links = left.exec_ok(&["ip", "link", "show", tap.name()])?;
        ensure!(links.contains(tap.name()), "{links}");
        ns_names = [left.name().to_owned(), right.name().to_owned()];
        veth_name = veth.a.clone();
        tap_name = tap.name().to_owned();
    }
    let namespaces = ip(&["netns", "list"])?;
    for name in &ns_names {
        ensure!(
            !namespaces.contains(name.as_str()),
            "namespace {name} left behind"
        );
    }
    let links = ip(&["link", "show"])?;
    ensure!(
        !links.contains(&veth_name) && !links.contains(&tap_name),
        "links left behind"
    );

    // A TAP device in the test's own namespace is removed too.
    let tap = Tap::new(None)?;
    let name = tap.name().to_owned();
    ensure!(ip(&["link", "show", &name])?.contains(&name));
    drop(tap);
    ensure!(
        !ip(&["link", "show"])?.contains(&name),
        "TAP {name} left behind"
    );
    Ok(())
}

/// Whether host `from` of `net` gets an answer to one ping of host `to`.
fn reaches(net: &ClusterNet, from: usize, to: usize) -> Result<bool> {
    let status = net
        .host(from)
        .command("ping")?
        .args(["-c", "1", "-W", "2", &net.addr(to).to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    Ok(status.success())
}

#[test]
fn a_cluster_net_routes_partitions_heals_and_is_removed() -> Result<()> {
    let names: Vec<String>;
    {
        let net = ClusterNet::new(3)?;
        for (from, to) in [(0, 1), (1, 2), (2, 0)] {
            ensure!(reaches(&net, from, to)?, "host {from} reaches host {to}");
        }
        // The addresses are the hosts' alone: not in the test's namespace.
        ensure!(std::net::TcpListener::bind((net.addr(0), 0)).is_err());

        net.partition(2)?;
        for (from, to) in [(0, 2), (2, 1)] {
            ensure!(!reaches(&net, from, to)?, "partitioned: {from} -> {to}");
        }
        ensure!(reaches(&net, 0, 1)?, "the others still reach each other");
        net.heal(2)?;
        for (from, to) in [(0, 2), (2, 1)] {
            ensure!(reaches(&net, from, to)?, "healed: {from} -> {to}");
        }

        // A runtime's tasks open their sockets in its namespace, and their
        // panics reach the caller.
        let runtime = NsRuntime::start(net.host(1), "host1")?;
        let addr = net.addr(1);
        let bound = runtime.run(async move { tokio::net::TcpListener::bind((addr, 0)).await });
        ensure!(bound.is_ok(), "{bound:?}");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.run(async { panic!("in the task") })
        }));
        ensure!(panicked.is_err(), "the panic reached the caller");
        drop(runtime);
        names = (0..net.len())
            .map(|i| net.host(i).name().to_owned())
            .collect();
    }
    let namespaces = ip(&["netns", "list"])?;
    for name in &names {
        ensure!(
            !namespaces.contains(name.as_str()),
            "namespace {name} left behind"
        );
    }
    Ok(())
}

fn nr_hugepages() -> Result<u64> {
    let path = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}

#[test]
fn hugepage_reservations_are_given_back() -> Result<()> {
    let dir = TestDir::new("hugepages")?;
    let before = nr_hugepages()?;
    let mount;
    {
        let pages = Hugepages::reserve(&dir, 8)?;
        ensure!(nr_hugepages()? >= before + 8, "pool did not grow");
        mount = pages.dir().to_path_buf();
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        ensure!(
            mounts.contains(&format!("{} hugetlbfs", mount.display())),
            "no hugetlbfs at {}",
            mount.display()
        );
        // The mount is usable: a file there is backed by hugepages.
        std::fs::File::create(mount.join("probe"))?;
    }
    harness::wait::wait_until("the pool to shrink back", Duration::from_secs(10), || {
        Ok((nr_hugepages().map_err(|e| harness::Error::Parse {
            what: "nr_hugepages".into(),
            text: e.to_string(),
        })? <= before)
            .then_some(()))
    })?;
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    ensure!(
        !mounts.contains(&mount.display().to_string()),
        "hugetlbfs left mounted"
    );
    Ok(())
}
