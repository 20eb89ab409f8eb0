//! Data made durable by FLUSH survives a simulated power cut (libblkio, a FUSE datastore).
//!
//! A power cut under sfera-blockd: its datastore is a FUSE filesystem that
//! loses every write not made durable by fsync (harness::powerloss_fs), so
//! unlike `kill -9` alone (block_crash.rs) this catches a FLUSH that does
//! not reach the disk. blockd does not offer VIRTIO_BLK_F_FUA, so FLUSH is
//! the campaign's only durability point.
//!
//! The cut comes after a random number of writes and lets a random number
//! of the volatile writes through (a disk that wrote part of its cache);
//! the seed is printed, and `SFERA_POWERLOSS_SEED` replays it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use harness::blkio_client::BlkioClient;
use harness::daemons::binary;
use harness::daemons::blockd::BlockdDaemon;
use harness::daemons::mutant_binary;
use harness::flush_campaign::{BLOCK, Campaign, export_volume};
use harness::powerloss_fs::PowerlossFs;
use harness::testdir::TestDir;
use harness::wait::wait_until;

const CAMPAIGN: Campaign = Campaign {
    slots: 256,
    flush_every: 16,
};

/// What one power cut left.
struct Aftermath {
    /// The campaign's check of the volume after the cut.
    verified: harness::Result<()>,
    /// fsyncs the datastore received during the campaign.
    syncs: u64,
}

fn seeded_rng() -> Result<fastrand::Rng> {
    let seed = match std::env::var("SFERA_POWERLOSS_SEED") {
        Ok(s) => s.parse()?,
        Err(_) => fastrand::u64(..),
    };
    eprintln!("power-loss seed {seed} (SFERA_POWERLOSS_SEED={seed} replays it)");
    Ok(fastrand::Rng::with_seed(seed))
}

/// Runs the campaign on `blockd` with its datastore on a power-loss
/// filesystem, cuts the power at a random point (`kill -9` of blockd and
/// the loss of all but `survivors` volatile writes, a random number when
/// None), restarts blockd and checks the volume.
fn power_cut(name: &str, blockd: &Path, survivors: Option<usize>) -> Result<Aftermath> {
    let mut rng = seeded_rng()?;
    let dir = TestDir::new(name)?;
    let mut fs = PowerlossFs::mount(&dir.subdir("store")?)?;
    let mut d = BlockdDaemon::start_binary_in(blockd, dir.path())?;
    let socket = export_volume(&d, fs.path(), CAMPAIGN)?;
    let before = fs.counters();
    let writer = CAMPAIGN.spawn_writer(socket.clone());
    let cut_at = before.writes + CAMPAIGN.slots + 2 * CAMPAIGN.flush_every;
    let cut_at = cut_at + rng.u64(..2 * CAMPAIGN.slots);
    wait_until("the writes before the cut", Duration::from_secs(60), || {
        d.ensure_running()?;
        Ok((fs.counters().writes >= cut_at).then_some(()))
    })?;
    d.kill();
    let written = CAMPAIGN.join(writer)?;
    let after = fs.counters();
    let survivors = survivors.unwrap_or_else(|| rng.usize(..=CAMPAIGN.flush_every as usize));
    eprintln!(
        "cut after {} writes to the datastore ({} acknowledged, {} flushed, {} fsyncs, \
         {} of {} opens O_DIRECT); {survivors} volatile writes survive",
        after.writes - before.writes,
        written.acked + 1,
        written.flushed + 1,
        after.syncs - before.syncs,
        after.direct_opens,
        after.opens,
    );
    fs.cut_power(survivors)?;

    d.restart()?;
    wait_until("the export's socket", Duration::from_secs(10), || {
        Ok(socket.exists().then_some(()))
    })?;
    let mut client = BlkioClient::vhost_user(&socket, 1, BLOCK)?;
    let verified = CAMPAIGN.verify(&mut client, written);
    d.ensure_running()?;
    Ok(Aftermath {
        verified,
        syncs: after.syncs - before.syncs,
    })
}

#[test]
fn flushed_writes_survive_a_power_cut() -> Result<()> {
    let blockd = binary("sfera-blockd")?;
    let aftermath = power_cut("blk-powerloss", &blockd, None)?;
    aftermath.verified?;
    ensure!(
        aftermath.syncs > 0,
        "no FLUSH reached the datastore as an fsync"
    );
    Ok(())
}

/// The test's teeth: blockd built with `fault-injection` answers FLUSH
/// without fdatasync (`make mutant-blockd`), and the power cut must show
/// it. No volatile write survives the cut here, so the loss is certain.
#[test]
fn a_flush_without_fdatasync_loses_data_on_a_power_cut() -> Result<()> {
    let mutant = mutant_binary("sfera-blockd")?;
    let aftermath = power_cut("blk-powerloss-mutant", &mutant, Some(0))?;
    ensure!(
        aftermath.syncs == 0,
        "the mutant sent {} fsyncs: it is not the mutant this test expects",
        aftermath.syncs
    );
    match aftermath.verified {
        Err(harness::Error::Integrity { what }) => {
            eprintln!("caught, as it must be: {what}");
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(()) => anyhow::bail!("the power cut lost no flushed write of a FLUSH that does nothing"),
    }
}
