//! The harness's namespaces, veths, TAPs and hugepages clean up after themselves (ip, sysfs).
//!
//! The harness's host-side pieces do what they promise and clean up:
//! namespaces, veth pairs and TAP devices disappear; the hugepage pool
//! returns to its previous size.

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::hugepages::Hugepages;
use harness::netns::{NetNs, Tap, Veth};
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
