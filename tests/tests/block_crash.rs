//! Writes acknowledged before a FLUSH survive `kill -9` of sfera-blockd (libblkio).
//!
//! `kill -9` of sfera-blockd during a write workload: after a restart, every
//! write acknowledged before a completed FLUSH is on disk, and no block is
//! torn. The page cache survives `kill -9`, so this cannot catch a FLUSH
//! that does nothing: block_powerloss.rs does.

use std::time::Duration;

use anyhow::Result;
use harness::blkio_client::BlkioClient;
use harness::daemons::blockd::BlockdDaemon;
use harness::flush_campaign::{BLOCK, Campaign, export_volume};
use harness::testdir::TestDir;
use harness::wait::wait_until;

const CAMPAIGN: Campaign = Campaign {
    slots: 256,
    flush_every: 16,
};

#[test]
fn flushed_writes_survive_kill_9() -> Result<()> {
    let dir = TestDir::new("blk-crash")?;
    let store = dir.subdir("store")?;
    let mut d = BlockdDaemon::start(&dir)?;
    let socket = export_volume(&d, &store, CAMPAIGN)?;
    let writer = CAMPAIGN.spawn_writer(socket.clone());
    // Let the workload run, then crash the daemon in the middle of it.
    let pid = d.pid().ok_or_else(|| anyhow::anyhow!("no daemon"))?;
    wait_until("a few hundred writes", Duration::from_secs(30), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let syscw: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok((syscw > 300).then_some(()))
    })?;
    d.kill();
    let written = CAMPAIGN.join(writer)?;

    d.restart()?;
    wait_until("the export's socket", Duration::from_secs(10), || {
        Ok(socket.exists().then_some(()))
    })?;
    let mut client = BlkioClient::vhost_user(&socket, 1, BLOCK)?;
    CAMPAIGN.verify(&mut client, written)?;
    d.ensure_running()?;
    Ok(())
}
