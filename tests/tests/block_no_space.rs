//! A write without space waits, is reported, and completes once space is freed (libblkio).
//!
//! A thin volume whose datastore fills up: sfera-blockd holds the write
//! that has no space (libblkio, the client, sees no error, only a wait),
//! reports it in the export's stats, and completes it, with the data
//! intact, once space is freed on the datastore's filesystem.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::blkio_client::BlkioClient;
use harness::daemons::blockd::BlockdDaemon;
use harness::http::call;
use harness::small_fs::SmallFs;
use harness::testdir::TestDir;
use harness::wait::wait_until;

const MIB: u64 = 1 << 20;
/// The datastore's filesystem: much smaller than the volume on it.
const FS_MIB: u64 = 16;

fn export_stats(api: &Path) -> Result<serde_json::Value> {
    let answer = call(api, "GET", "/v1/exports/v", None)?;
    ensure!(answer.status == 200, "export stats: {}", answer.body);
    Ok(answer.json()?["stats"].clone())
}

fn post(api: &Path, path: &str, body: &str) -> Result<()> {
    let answer = call(api, "POST", path, Some(body))?;
    ensure!(answer.status == 201, "POST {path}: {}", answer.body);
    Ok(())
}

#[test]
fn a_write_without_space_waits_and_completes_once_space_is_freed() -> Result<()> {
    // Before the hold, the write failed at once with an I/O error.
    let dir = TestDir::new("blk-no-space")?;
    let fs = SmallFs::mount(dir.join("fs"), FS_MIB)?;
    let d = BlockdDaemon::start(&dir)?;
    let api = d.api().to_owned();
    post(
        &api,
        "/v1/datastores",
        &format!(r#"{{"name":"thin","path":"{}"}}"#, fs.path().display()),
    )?;
    post(
        &api,
        "/v1/datastores/thin/volumes",
        &format!(r#"{{"name":"v","size":{}}}"#, 64 * MIB),
    )?;
    post(
        &api,
        "/v1/exports",
        r#"{"id":"v","datastore":"thin","volume":"v","queues":1}"#,
    )?;
    let filler = fs.fill("filler")?;
    let mut client = BlkioClient::vhost_user(&d.export_socket("v"), 1, 2 * MIB as usize)?;

    // Someone frees space once blockd reports the write held.
    let freer = std::thread::spawn(move || -> Result<serde_json::Value> {
        let held = wait_until("a write held for space", Duration::from_secs(8), || {
            let stats = call(&api, "GET", "/v1/exports/v", None)?.json()?["stats"].clone();
            Ok((stats["no_space"]["held"].as_u64() >= Some(1)).then_some(stats))
        })?;
        std::fs::remove_file(&filler)?;
        Ok(held)
    });
    let data: Vec<u8> = (0..2 * MIB as usize).map(|i| (i * 13 + 7) as u8).collect();
    let written = client.write(0, 8 * MIB, &data);
    let held = freer.join().expect("the freeing thread panicked");
    written.context("the write while the datastore is full")?;
    let held = held?;
    ensure!(held["no_space"]["since"].as_u64() > Some(0), "{held}");
    ensure!(held["io_errors"] == 0, "{held}");

    client.flush(0)?;
    ensure!(
        client.read(0, 8 * MIB, data.len())? == data,
        "the held write's data reads back"
    );
    let stats = export_stats(d.api())?;
    ensure!(
        stats["no_space"]["held"] == 0
            && stats["no_space"]["since"].is_null()
            && stats["no_space"]["holds"].as_u64() >= Some(1)
            && stats["io_errors"] == 0,
        "{stats}"
    );
    Ok(())
}
