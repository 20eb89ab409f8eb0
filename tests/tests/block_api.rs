//! sfera-blockd's API manages datastores, volumes, exports and QoS (curl, libblkio).
//!
//! sfera-blockd's control API end to end, with curl as the HTTP client and
//! libblkio as the block client: datastores, volumes, exports, stats,
//! metrics, QoS, bad requests that change nothing, and a crash (SIGKILL)
//! after which everything comes back with the data acknowledged by a flush.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use harness::blkio_client::BlkioClient;
use harness::daemons::blockd::BlockdDaemon;
use harness::http::{Answer, call};
use harness::scenario::case;
use harness::testdir::TestDir;
use harness::wait::wait_until;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn api(d: &BlockdDaemon, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
    Ok(call(d.api(), method, path, body)?)
}

/// [`Answer::expect`], for anyhow.
fn expect(answer: &Answer, status: u16, what: &str) -> Result<Value> {
    Ok(answer.expect(status, what)?)
}

/// [`Answer::expect_error`], for anyhow.
fn expect_error(answer: &Answer, status: u16, code: &str, what: &str) -> Result<()> {
    Ok(answer.expect_error(status, code, what)?)
}

#[test]
fn datastores_volumes_exports_through_the_api() -> Result<()> {
    let dir = TestDir::new("blk-api")?;
    let store = dir.subdir("store")?;
    let mut d = BlockdDaemon::start(&dir)?;
    case("a_datastore_is_added_once", || {
        a_datastore_is_added_once(&d, &store)
    })?;
    case("a_thin_volume_is_created_once", || {
        a_thin_volume_is_created_once(&d)
    })?;
    case("an_export_is_made_once", || an_export_is_made_once(&d))?;
    case("data_goes_through_the_export_and_is_counted", || {
        data_goes_through_the_export_and_is_counted(&d)
    })?;
    case("an_exported_volume_cannot_be_resized_or_deleted", || {
        an_exported_volume_cannot_be_resized_or_deleted(&d)
    })?;
    case("a_crash_brings_everything_back_with_the_data", || {
        a_crash_brings_everything_back_with_the_data(&mut d)
    })?;
    case("unexport_grow_and_delete", || unexport_grow_and_delete(&d))?;
    d.ensure_running()?;
    Ok(())
}

/// What the test writes through the export: 1 MiB, at 8 MiB.
fn data() -> Vec<u8> {
    (0..MIB as usize).map(|i| (i * 7 + 3) as u8).collect()
}

fn grow() -> String {
    format!(r#"{{"size":{}}}"#, 128 * MIB)
}

fn a_datastore_is_added_once(d: &BlockdDaemon, store: &Path) -> Result<()> {
    let store_json = format!(r#"{{"name":"local","path":"{}"}}"#, store.display());

    expect(
        &api(d, "POST", "/v1/datastores", Some(&store_json))?,
        201,
        "add datastore",
    )?;
    expect_error(
        &api(d, "POST", "/v1/datastores", Some(&store_json))?,
        409,
        "conflict",
        "add twice",
    )?;
    expect_error(
        &api(
            d,
            "POST",
            "/v1/datastores",
            Some(r#"{"name":"../x","path":"/tmp"}"#),
        )?,
        400,
        "invalid_request",
        "bad datastore name",
    )?;
    expect_error(
        &api(d, "POST", "/v1/datastores", Some("{oops"))?,
        400,
        "invalid_request",
        "bad JSON",
    )?;
    let list = expect(
        &api(d, "GET", "/v1/datastores", None)?,
        200,
        "list datastores",
    )?;
    ensure!(
        list.as_array().map(Vec::len) == Some(1),
        "failed adds changed the list: {list}"
    );

    Ok(())
}

fn a_thin_volume_is_created_once(d: &BlockdDaemon) -> Result<()> {
    let vol = format!(r#"{{"name":"vm1/disk0","size":{}}}"#, 64 * MIB);
    let v = expect(
        &api(d, "POST", "/v1/datastores/local/volumes", Some(&vol))?,
        201,
        "create volume",
    )?;
    ensure!(
        v["size"] == 64 * MIB && v["allocated"].as_u64() < Some(MIB),
        "thin volume: {v}"
    );
    expect_error(
        &api(
            d,
            "POST",
            "/v1/datastores/local/volumes",
            Some(r#"{"name":"v2","size":1000}"#),
        )?,
        400,
        "invalid_request",
        "unaligned size",
    )?;
    expect_error(
        &api(d, "POST", "/v1/datastores/local/volumes", Some(&vol))?,
        409,
        "conflict",
        "volume twice",
    )?;
    expect_error(
        &api(d, "GET", "/v1/datastores/nope/volumes", None)?,
        404,
        "not_found",
        "no datastore",
    )?;

    Ok(())
}

fn an_export_is_made_once(d: &BlockdDaemon) -> Result<()> {
    let export = r#"{"id":"vm1-disk0","datastore":"local","volume":"vm1/disk0","queues":2}"#;
    let e = expect(
        &api(d, "POST", "/v1/exports", Some(export))?,
        201,
        "create export",
    )?;
    ensure!(e["socket"].as_str().is_some(), "{e}");
    expect_error(
        &api(
            d,
            "POST",
            "/v1/exports",
            Some(r#"{"id":"x","datastore":"local","volume":"nope"}"#),
        )?,
        404,
        "not_found",
        "export of a missing volume",
    )?;
    expect_error(
        &api(
            d,
            "POST",
            "/v1/exports",
            Some(r#"{"id":"x","datastore":"local","volume":"vm1/disk0","queues":0}"#),
        )?,
        409,
        "conflict",
        "second export of the same volume",
    )?;

    Ok(())
}

/// Data through the export, acknowledged by a flush.
fn data_goes_through_the_export_and_is_counted(d: &BlockdDaemon) -> Result<()> {
    let data = data();
    {
        let mut client =
            BlkioClient::vhost_user(&d.export_socket("vm1-disk0"), 2, 2 * MIB as usize)?;
        client.write(0, 8 * MIB, &data)?;
        client.flush(1)?;
        ensure!(
            client.read(1, 8 * MIB, MIB as usize)? == data,
            "read back through the export"
        );
    }
    let e = expect(
        &api(d, "GET", "/v1/exports/vm1-disk0", None)?,
        200,
        "export stats",
    )?;
    ensure!(
        e["stats"]["writes"].as_u64() >= Some(1) && e["stats"]["flushes"].as_u64() >= Some(1),
        "{e}"
    );
    let metrics = api(d, "GET", "/metrics", None)?;
    ensure!(metrics.status == 200, "metrics: {}", metrics.status);
    ensure!(
        metrics
            .body
            .contains("sfera_blk_requests_total{export=\"vm1-disk0\",op=\"write\"}")
            && metrics.body.contains("sfera_blk_latency_seconds_bucket"),
        "metrics text:\n{}",
        metrics.body
    );

    Ok(())
}

fn an_exported_volume_cannot_be_resized_or_deleted(d: &BlockdDaemon) -> Result<()> {
    let grow = grow();
    expect_error(
        &api(
            d,
            "PATCH",
            "/v1/datastores/local/volumes/vm1/disk0",
            Some(&grow),
        )?,
        409,
        "conflict",
        "resize exported",
    )?;
    expect_error(
        &api(d, "DELETE", "/v1/datastores/local/volumes/vm1/disk0", None)?,
        409,
        "conflict",
        "delete exported",
    )?;

    Ok(())
}

/// A crash: everything comes back from the state file, with the data.
fn a_crash_brings_everything_back_with_the_data(d: &mut BlockdDaemon) -> Result<()> {
    d.kill();
    d.restart()?;
    let e = expect(
        &api(d, "GET", "/v1/exports/vm1-disk0", None)?,
        200,
        "export after restart",
    )?;
    ensure!(e["queues"] == 2, "{e}");
    let socket = d.export_socket("vm1-disk0");
    wait_until("the export's socket", Duration::from_secs(10), || {
        Ok(socket.exists().then_some(()))
    })?;
    {
        let mut client = BlkioClient::vhost_user(&socket, 1, 2 * MIB as usize)?;
        ensure!(
            client.read(0, 8 * MIB, MIB as usize)? == data(),
            "flushed data after a crash"
        );
    }

    Ok(())
}

fn unexport_grow_and_delete(d: &BlockdDaemon) -> Result<()> {
    let socket = d.export_socket("vm1-disk0");
    let grow = grow();
    ensure!(
        api(d, "DELETE", "/v1/exports/vm1-disk0", None)?.status == 204,
        "delete export"
    );
    ensure!(!socket.exists(), "socket left after unexport");
    let v = expect(
        &api(
            d,
            "PATCH",
            "/v1/datastores/local/volumes/vm1%2Fdisk0",
            Some(&grow),
        )?,
        200,
        "grow",
    )?;
    ensure!(v["size"] == 128 * MIB, "{v}");
    let shrink = format!(r#"{{"size":{}}}"#, MIB);
    expect_error(
        &api(
            d,
            "PATCH",
            "/v1/datastores/local/volumes/vm1/disk0",
            Some(&shrink),
        )?,
        400,
        "invalid_request",
        "shrink",
    )?;
    ensure!(
        api(d, "DELETE", "/v1/datastores/local/volumes/vm1/disk0", None)?.status == 204,
        "delete volume"
    );
    ensure!(
        api(d, "DELETE", "/v1/datastores/local", None)?.status == 204,
        "remove datastore"
    );
    Ok(())
}

#[test]
fn qos_limits_iops_while_in_use_and_the_cli_sees_it() -> Result<()> {
    let dir = TestDir::new("blk-qos")?;
    let store = dir.subdir("store")?;
    let mut d = BlockdDaemon::start(&dir)?;
    let blockd = harness::daemons::binary("sfera-blockd")?;
    let cli = |args: &[&str]| -> Result<String> {
        let mut command = std::process::Command::new(&blockd);
        command.arg("--api").arg(d.api()).args(args);
        Ok(harness::process::run(command)?)
    };
    cli(&["datastore", "add", "local", &store.display().to_string()])?;
    cli(&["volume", "create", "local", "v", "16M"])?;
    cli(&["export-ctl", "create", "v", "local", "v"])?;
    let listed: Value = serde_json::from_str(&cli(&["--json", "export-ctl", "list"])?)?;
    ensure!(listed[0]["id"] == "v", "{listed}");
    // A bad request through the CLI fails with the API's message.
    let err = cli(&["volume", "create", "local", "bad", "1000"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("multiple of 512"), "{err}");

    let mut client = BlkioClient::vhost_user(&d.export_socket("v"), 1, MIB as usize)?;
    client.read(0, 0, 4096)?;
    // 50 IOPS with a burst of 5, set while the client is connected.
    cli(&[
        "export-ctl",
        "qos",
        "v",
        "--iops",
        "50",
        "--iops-burst",
        "5",
    ])?;
    let start = Instant::now();
    for i in 0..60u64 {
        client.read(0, i * 4096, 4096)?;
    }
    let took = start.elapsed();
    // 55 requests beyond the burst at 50/s take at least 1.1 s; a lower
    // bound cannot fail because the machine is slow.
    ensure!(
        took >= Duration::from_millis(1000),
        "60 reads at 50 IOPS took {took:?}"
    );
    let stats: Value = serde_json::from_str(&cli(&["--json", "export-ctl", "show", "v"])?)?;
    ensure!(stats["stats"]["throttled"].as_u64() > Some(0), "{stats}");

    // Limits lifted while in use: nothing is held back any more.
    cli(&["export-ctl", "qos", "v"])?;
    client.read(0, 0, 4096)?; // the worker picks up the change at this batch
    let before = serde_json::from_str::<Value>(&cli(&[
        "--json",
        "export-ctl",
        "show",
        "v",
    ])?)?["stats"]["throttled"]
        .clone();
    for i in 0..200u64 {
        client.read(0, i * 4096, 4096)?;
    }
    let after = serde_json::from_str::<Value>(&cli(&[
        "--json",
        "export-ctl",
        "show",
        "v",
    ])?)?["stats"]["throttled"]
        .clone();
    ensure!(
        before == after,
        "throttled after the limit was lifted: {before} -> {after}"
    );
    let metrics = cli(&["metrics"])?;
    ensure!(
        metrics.contains("sfera_blk_throttled_total{export=\"v\"}"),
        "{metrics}"
    );
    d.ensure_running()?;
    Ok(())
}
