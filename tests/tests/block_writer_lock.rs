//! Two sfera-blockd sharing a datastore directory: one writer per volume, a 409 for the other.
//!
//! Issue 14's shared datastores: the same directory seen by several hosts'
//! sfera-blockd. Two daemons here, each with its own API, state and
//! sockets, share one datastore directory as two hosts would share an NFS
//! datastore. While the first exports a volume for writing, the second
//! can neither export it (for writing or reading), nor resize nor delete
//! it, and shows it in use elsewhere; readers share a volume; once the
//! first unexports it, or is killed with SIGKILL (the kernel drops its
//! lock with its files), the second exports it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use harness::daemons::blockd::BlockdDaemon;
use harness::http::{Answer, call};
use harness::scenario::case;
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::Value;

const VOLUME: &str = "/v1/datastores/shared/volumes/vm1/disk0";
const SIZE: u64 = 16 << 20;

fn api(d: &BlockdDaemon, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
    Ok(call(d.api(), method, path, body)?)
}

/// The body of an export of the volume as `id`.
fn export_spec(id: &str, read_only: bool) -> String {
    format!(r#"{{"id":"{id}","datastore":"shared","volume":"vm1/disk0","read_only":{read_only}}}"#)
}

fn export(d: &BlockdDaemon, id: &str, read_only: bool) -> Result<Answer> {
    api(d, "POST", "/v1/exports", Some(&export_spec(id, read_only)))
}

fn unexport(d: &BlockdDaemon, id: &str) -> Result<()> {
    let answer = api(d, "DELETE", &format!("/v1/exports/{id}"), None)?;
    ensure!(answer.status == 204, "unexport {id}: {answer:?}");
    Ok(())
}

/// Checks `answer` is a 409 whose message names the volume and says
/// another writer, another sfera-blockd, holds it.
fn expect_held_elsewhere(answer: &Answer, what: &str) -> Result<()> {
    answer.expect_error(409, "conflict", what)?;
    let message = answer.json()?["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        message.contains("\"vm1/disk0\"")
            && message.contains("another writer holds its file locked")
            && message.contains("another sfera-blockd, perhaps on another host"),
        "{what}: {message}"
    );
    Ok(())
}

fn volume(d: &BlockdDaemon) -> Result<Value> {
    Ok(api(d, "GET", VOLUME, None)?.expect(200, "get volume")?)
}

#[test]
fn a_volume_has_one_writer_across_blockd_processes() -> Result<()> {
    let dir = TestDir::new("blk-writer-lock")?;
    let store = dir.subdir("store")?;
    let first = BlockdDaemon::start_in(&dir.subdir("host-a")?)?;
    let mut second = BlockdDaemon::start_in(&dir.subdir("host-b")?)?;
    case("both_see_the_datastore", || {
        both_see_the_datastore(&first, &second, &store)
    })?;
    case("a_writer_keeps_the_other_blockd_out", || {
        a_writer_keeps_the_other_blockd_out(&first, &second)
    })?;
    case("the_other_blockd_cannot_resize_or_delete_it", || {
        the_other_blockd_cannot_resize_or_delete_it(&first, &second)
    })?;
    case("an_unexported_volume_can_be_exported_by_the_other", || {
        an_unexported_volume_can_be_exported_by_the_other(&first, &second)
    })?;
    case("readers_share_a_volume", || {
        readers_share_a_volume(&first, &second)
    })?;
    case("a_killed_writer_lets_go", || {
        a_killed_writer_lets_go(&first, &mut second)
    })?;
    Ok(())
}

fn both_see_the_datastore(first: &BlockdDaemon, second: &BlockdDaemon, store: &Path) -> Result<()> {
    let store_json = format!(r#"{{"name":"shared","path":"{}"}}"#, store.display());
    for d in [first, second] {
        api(d, "POST", "/v1/datastores", Some(&store_json))?.expect(201, "add datastore")?;
    }
    let create = format!(r#"{{"name":"vm1/disk0","size":{SIZE}}}"#);
    api(
        first,
        "POST",
        "/v1/datastores/shared/volumes",
        Some(&create),
    )?
    .expect(201, "create volume")?;
    let seen = volume(second)?;
    ensure!(
        seen["size"] == SIZE && seen["locked_elsewhere"] == false,
        "{seen}"
    );
    Ok(())
}

fn a_writer_keeps_the_other_blockd_out(first: &BlockdDaemon, second: &BlockdDaemon) -> Result<()> {
    export(first, "a", false)?.expect(201, "first export")?;
    expect_held_elsewhere(&export(second, "b", false)?, "second writer")?;
    expect_held_elsewhere(&export(second, "b", true)?, "reader beside a writer")?;
    ensure!(
        api(second, "GET", "/v1/exports", None)?.expect(200, "list")? == serde_json::json!([]),
        "a refused export was left behind"
    );
    let elsewhere = volume(second)?;
    ensure!(
        elsewhere["locked_elsewhere"] == true,
        "from the second: {elsewhere}"
    );
    let own = volume(first)?;
    ensure!(own["locked_elsewhere"] == false, "from its exporter: {own}");
    Ok(())
}

fn the_other_blockd_cannot_resize_or_delete_it(
    first: &BlockdDaemon,
    second: &BlockdDaemon,
) -> Result<()> {
    let grow = format!(r#"{{"size":{}}}"#, 2 * SIZE);
    expect_held_elsewhere(&api(second, "PATCH", VOLUME, Some(&grow))?, "resize")?;
    expect_held_elsewhere(&api(second, "DELETE", VOLUME, None)?, "delete")?;
    let kept = volume(first)?;
    ensure!(kept["size"] == SIZE, "changed under its writer: {kept}");
    let path = kept["path"].as_str().unwrap_or_default();
    ensure!(
        std::fs::metadata(path)?.len() == SIZE,
        "{path} resized under its writer"
    );
    Ok(())
}

fn an_unexported_volume_can_be_exported_by_the_other(
    first: &BlockdDaemon,
    second: &BlockdDaemon,
) -> Result<()> {
    unexport(first, "a")?;
    export(second, "b", false)?.expect(201, "export once the first let go")?;
    expect_held_elsewhere(&export(first, "a", false)?, "first again")?;
    unexport(second, "b")?;
    Ok(())
}

fn readers_share_a_volume(first: &BlockdDaemon, second: &BlockdDaemon) -> Result<()> {
    export(first, "a", true)?.expect(201, "first reader")?;
    let refused = export(second, "b", false)?;
    refused.expect_error(409, "conflict", "writer beside a reader")?;
    ensure!(
        refused
            .body
            .contains("another reader holds its file locked"),
        "{}",
        refused.body
    );
    export(second, "b", true)?.expect(201, "second reader")?;
    unexport(first, "a")?;
    unexport(second, "b")?;
    Ok(())
}

fn a_killed_writer_lets_go(first: &BlockdDaemon, second: &mut BlockdDaemon) -> Result<()> {
    export(second, "b", false)?.expect(201, "second writer")?;
    expect_held_elsewhere(&export(first, "a", false)?, "first while the second writes")?;
    second.kill();
    // The kernel drops the lock once the dead process's files are closed,
    // io_uring's too, a moment after it died.
    wait_until("the first to export", Duration::from_secs(10), || {
        let answer = call(
            first.api(),
            "POST",
            "/v1/exports",
            Some(&export_spec("a", false)),
        )?;
        match answer.status {
            201 => Ok(Some(())),
            409 => Ok(None),
            _ => Err(harness::Error::Parse {
                what: "export after the kill".to_owned(),
                text: format!("{answer:?}"),
            }),
        }
    })?;
    ensure!(volume(first)?["locked_elsewhere"] == false);
    Ok(())
}
