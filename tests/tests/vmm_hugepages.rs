//! sfera-vmm's guest RAM comes from hugepages, or the boot fails cleanly (a CPL3 guest program).
//!
//! sfera-vmm's guest RAM on 2 MiB hugepages: the memfd is hugetlb-backed,
//! the whole guest RAM is reserved from the pool up front (so a pool that
//! is too small fails the boot cleanly instead of killing the VMM later),
//! and a guest runs on it.

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::hugepages::Hugepages;
use harness::testdir::TestDir;
use harness::vm_config::VmConfigBuilder;
use vmm::config::VmConfig;
use vmm::cpu::VmEvent;
use vmm::machine::{BootSource, Machine};
use vmm::testing;

fn meminfo(field: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/meminfo"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Pages allocated or promised from the pool (pool growth by tests running
/// in parallel changes neither).
fn pool_in_use() -> Result<u64> {
    Ok(meminfo("HugePages_Total:")? - meminfo("HugePages_Free:")? + meminfo("HugePages_Rsvd:")?)
}

fn config(dir: &TestDir, memory_mib: u64) -> Result<VmConfig> {
    Ok(VmConfigBuilder::unbooted(dir)?
        .memory_mib(memory_mib)
        .hugepages()
        .build())
}

fn source() -> BootSource {
    testing::cpl3(testing::hello_then_reset(b"on hugepages\n"))
}

#[test]
fn guest_ram_comes_from_the_hugepage_pool() -> Result<()> {
    let dir = TestDir::new("vmm-hugepages")?;
    let _pool = Hugepages::reserve(&dir, 40)?;
    let reserved_before = pool_in_use()?;
    let mut machine = Machine::build(&config(&dir, 64)?, source())?;
    ensure!(machine.ram().hugepages);
    let reserved_after = pool_in_use()?;
    ensure!(
        reserved_after >= reserved_before + 32,
        "64 MiB of guest RAM took {} pages from the pool",
        reserved_after.saturating_sub(reserved_before)
    );
    // The mapping is hugetlb: the kernel reports 2 MiB pages for it.
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let page_size = smaps.find("sfera-guest-ram").and_then(|at| {
        smaps[at..]
            .lines()
            .find(|l| l.starts_with("KernelPageSize:"))
    });
    ensure!(
        page_size.is_some_and(|l| l.contains("2048 kB")),
        "guest RAM mapping's page size: {page_size:?}"
    );
    machine.start()?;
    let event = machine.wait_event(Duration::from_secs(60));
    ensure!(
        matches!(event, Some(VmEvent::PowerOff { .. })),
        "guest on hugepages: {event:?}"
    );
    Ok(())
}

#[test]
fn too_small_a_pool_fails_the_build_cleanly() -> Result<()> {
    let dir = TestDir::new("vmm-hugepages-short")?;
    let _pool = Hugepages::reserve(&dir, 8)?;
    // Far more than the pool (and whatever other tests hold) can give.
    let free = meminfo("HugePages_Free:")?;
    let want = (free + 64) * 2;
    match Machine::build(&config(&dir, want)?, source()) {
        Ok(_) => anyhow::bail!("{want} MiB on hugepages built with {free} pages free"),
        Err(e) => ensure!(
            e.to_string().contains("Cannot map guest memory"),
            "unexpected error: {e}"
        ),
    }
    Ok(())
}
