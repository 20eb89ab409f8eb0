//! `kill -9` of sfera-blockd during a write workload: after a restart, every
//! write acknowledged before a completed FLUSH is on disk, and no block is
//! torn.

use std::time::Duration;

use anyhow::{Result, ensure};
use harness::blkio_client::BlkioClient;
use harness::daemons::blockd::BlockdDaemon;
use harness::http::call;
use harness::testdir::TestDir;
use harness::wait::wait_until;

const BLOCK: usize = 4096;
const SLOTS: u64 = 256;
const FLUSH_EVERY: u64 = 16;

/// Block content for sequence number `seq`: the number, then a pattern
/// derived from it.
fn block(seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, byte) in b[8..].iter_mut().enumerate() {
        *byte = (seq.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
    }
    b
}

#[test]
fn flushed_writes_survive_kill_9() -> Result<()> {
    let dir = TestDir::new("blk-crash")?;
    let store = dir.subdir("store")?;
    let mut d = BlockdDaemon::start(&dir)?;
    let ok = |status: u16, what: &str| -> Result<()> {
        ensure!(status < 300, "{what}: HTTP {status}");
        Ok(())
    };
    let body = format!(r#"{{"name":"local","path":"{}"}}"#, store.display());
    ok(
        call(d.api(), "POST", "/v1/datastores", Some(&body))?.status,
        "datastore",
    )?;
    let body = format!(r#"{{"name":"v","size":{}}}"#, SLOTS * BLOCK as u64);
    ok(
        call(d.api(), "POST", "/v1/datastores/local/volumes", Some(&body))?.status,
        "volume",
    )?;
    ok(
        call(
            d.api(),
            "POST",
            "/v1/exports",
            Some(r#"{"id":"v","datastore":"local","volume":"v"}"#),
        )?
        .status,
        "export",
    )?;
    let socket = d.export_socket("v");

    // Writer: slot = seq % SLOTS, a flush every FLUSH_EVERY writes; it stops
    // at the first error (the daemon is gone).
    let writer_socket = socket.clone();
    let writer = std::thread::spawn(move || -> Result<(u64, u64)> {
        let mut client = BlkioClient::vhost_user(&writer_socket, 1, BLOCK)?;
        let mut flushed = None;
        let mut acked = None;
        for seq in 0u64.. {
            if client
                .write(0, (seq % SLOTS) * BLOCK as u64, &block(seq))
                .is_err()
            {
                break;
            }
            acked = Some(seq);
            if (seq + 1) % FLUSH_EVERY == 0 {
                if client.flush(0).is_err() {
                    break;
                }
                flushed = Some(seq);
            }
        }
        let flushed = flushed.ok_or_else(|| anyhow::anyhow!("no flush completed"))?;
        Ok((flushed, acked.unwrap_or(0)))
    });
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
    let (flushed, acked) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    ensure!(
        flushed >= SLOTS,
        "too few writes before the crash ({flushed}) to cover every slot"
    );

    d.restart()?;
    wait_until("the export's socket", Duration::from_secs(10), || {
        Ok(socket.exists().then_some(()))
    })?;
    let mut client = BlkioClient::vhost_user(&socket, 1, BLOCK)?;
    for slot in 0..SLOTS {
        let data = client.read(0, slot * BLOCK as u64, BLOCK)?;
        let seq = u64::from_le_bytes(data[..8].try_into()?);
        // The newest write to this slot that a completed flush covered.
        let floor = flushed - ((flushed + SLOTS - slot) % SLOTS);
        ensure!(
            seq % SLOTS == slot,
            "slot {slot} holds seq {seq} of another slot"
        );
        ensure!(
            seq >= floor,
            "slot {slot}: flushed seq {floor} lost, found {seq}"
        );
        ensure!(
            seq <= acked + 1,
            "slot {slot}: seq {seq} was never written (last {acked})"
        );
        ensure!(
            data == block(seq),
            "slot {slot}: block of seq {seq} is torn"
        );
    }
    d.ensure_running()?;
    Ok(())
}
