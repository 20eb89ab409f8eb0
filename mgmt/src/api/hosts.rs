//! The host and what runs on it: the host's resources, the supervised
//! daemons, their Prometheus metrics, and the performance series mgmtd
//! samples.

use serde_json::{Value, json};

use super::error::ApiError;
use super::page::Page;
use super::reply::{Reply, ok, to_json, to_json_all};
use super::request::ApiRequest;
use crate::db::VmState;
use crate::db::metrics as metrics_db;
use crate::service::Mgmt;

/// `GET /api/v1/host`: with its VMs counted, and which driver each has
/// and why.
pub fn host(mgmt: &Mgmt) -> Result<Reply, ApiError> {
    let vms = mgmt.db.vms()?;
    let mut v = to_json(&mgmt.host)?;
    v["vms"] = json!({
        "total": vms.len(),
        "running": vms.iter().filter(|v| v.state == VmState::Running).count(),
        "paused": vms.iter().filter(|v| v.state == VmState::Paused).count(),
    });
    // Which driver each VM uses and why, for the host page.
    v["vm_drivers"] = json!(
        vms.iter()
            .map(
                |vm| json!({ "id": vm.id, "name": vm.name, "state": vm.state,
                              "driver": vm.driver, "driver_reason": vm.driver_reason })
            )
            .collect::<Vec<_>>()
    );
    ok(v)
}

/// `GET /api/v1/daemons`.
pub fn daemons(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let b = to_json(&mgmt.blockd_supervisor.status())?;
    let s = to_json(&mgmt.vswitchd.supervisor.status())?;
    ok(page.of(vec![b, s]))
}

/// `GET /api/v1/metrics/{daemon}`: the daemon's Prometheus text.
pub async fn daemon_metrics(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    match r.param("daemon") {
        "blockd" => Ok(Reply::Text(mgmt.blockd.metrics().await?)),
        "vswitchd" => Ok(Reply::Text(mgmt.vswitchd.metrics().await?)),
        other => Err(ApiError::not_found(format!(
            "No daemon {other:?} (blockd or vswitchd)"
        ))),
    }
}

/// `GET /api/v1/metrics`: the objects sampled, with the sampling's
/// interval and retention.
pub fn sampled_objects(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let objects = mgmt.db.sampled_objects()?;
    let mut v = page.of(to_json_all(&objects)?);
    v["interval_s"] = json!(mgmt.paths.sample_every.as_secs());
    v["raw_keep_s"] = json!(metrics_db::RAW_KEEP_S);
    v["rollup_s"] = json!(metrics_db::ROLLUP_S);
    v["rollup_keep_s"] = json!(metrics_db::ROLLUP_KEEP_S);
    ok(v)
}

/// `GET /api/v1/metrics/{kind}/{object}`: the series as columns, one
/// `times` array and, per metric, its values at those times (`null` where
/// it has none), as charts take them.
pub fn metric_series(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let kind = r.param("kind");
    if !crate::metrics::KINDS.contains(&kind) {
        return Err(ApiError::not_found(format!(
            "No kind {kind:?} (host, vm, volume or port)"
        )));
    }
    let mut object = r.param("object").to_owned();
    match kind {
        "vm" => {
            object = mgmt.find_vm(&object)?.id;
        }
        "host" if object != mgmt.host.hostname => {
            return Err(ApiError::not_found(format!(
                "The host is {:?}",
                mgmt.host.hostname
            )));
        }
        _ => {}
    }
    let (resolution, keep) = match r.query.get("resolution").map(String::as_str) {
        None | Some("raw") => (metrics_db::Resolution::Raw, metrics_db::RAW_KEEP_S),
        Some("5m") => (metrics_db::Resolution::Rollup, metrics_db::ROLLUP_KEEP_S),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "resolution {other:?} must be raw or 5m"
            )));
        }
    };
    let since = match r.query.get("since") {
        None => crate::db::now() - keep,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("since must be an integer (seconds since the epoch)"))?,
    };
    let rows = mgmt.db.metric_series(kind, &object, resolution, since)?;
    let mut times: Vec<i64> = rows.iter().map(|x| x.time).collect();
    times.dedup();
    let mut series = serde_json::Map::new();
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    for row in &rows {
        let Ok(i) = times.binary_search(&row.time) else {
            continue;
        };
        let set = |m: &mut serde_json::Map<String, Value>, v: Option<f64>| {
            let col = m
                .entry(row.metric.clone())
                .or_insert_with(|| Value::Array(vec![Value::Null; times.len()]));
            if let Some(slot) = col.as_array_mut().and_then(|c| c.get_mut(i)) {
                *slot = v.map_or(Value::Null, |v| json!(v));
            }
        };
        set(&mut series, Some(row.value));
        if resolution == metrics_db::Resolution::Rollup {
            set(&mut min, row.min);
            set(&mut max, row.max);
        }
    }
    let mut v = json!({
        "kind": kind,
        "object": object,
        "resolution": if resolution == metrics_db::Resolution::Raw { "raw" } else { "5m" },
        "interval_s": if resolution == metrics_db::Resolution::Raw {
            mgmt.paths.sample_every.as_secs()
        } else {
            metrics_db::ROLLUP_S.unsigned_abs()
        },
        "times": times,
        "series": series,
    });
    if resolution == metrics_db::Resolution::Rollup {
        v["min"] = Value::Object(min);
        v["max"] = Value::Object(max);
    }
    ok(v)
}
