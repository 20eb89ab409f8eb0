//! The host and what runs on it: the host's resources, the supervised
//! daemons, their Prometheus metrics, and the performance series mgmtd
//! samples.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::page::{Page, PageOf};
use super::reply::{Reply, ok};
use super::request::ApiRequest;
use super::schema;
use crate::db::VmState;
use crate::db::metrics::{self as metrics_db, SampledObject};
use crate::host::HostFacts;
use crate::membership::ClusterHost;
use crate::service::Mgmt;

/// The host: its facts, its VMs counted, and which driver each VM has.
#[derive(Debug, Serialize, ToSchema)]
pub struct Host {
    #[serde(flatten)]
    facts: HostFacts,
    vms: VmCounts,
    /// Each VM's driver and why it got it
    vm_drivers: Vec<VmDriver>,
}

/// The host's VMs, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmCounts {
    total: usize,
    running: usize,
    paused: usize,
}

/// A VM's driver and why it got it, for the host page.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmDriver {
    id: String,
    name: String,
    state: VmState,
    #[schema(schema_with = schema::driver)]
    driver: String,
    driver_reason: String,
}

/// `GET /api/v1/host`: with its VMs counted, and which driver each has
/// and why.
pub async fn host(mgmt: &Mgmt) -> Result<Reply, ApiError> {
    let vms = mgmt.inventory.vms_here().await?;
    let count = |state| vms.iter().filter(|v| v.state == state).count();
    ok(Host {
        facts: mgmt.host.clone(),
        vms: VmCounts {
            total: vms.len(),
            running: count(VmState::Running),
            paused: count(VmState::Paused),
        },
        vm_drivers: vms
            .iter()
            .map(|vm| VmDriver {
                id: vm.id.clone(),
                name: vm.name.clone(),
                state: vm.state,
                driver: vm.driver.clone(),
                driver_reason: vm.driver_reason.clone(),
            })
            .collect(),
    })
}

/// `GET /api/v1/host/nics`.
pub fn nics(r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let nics = crate::host::nics(Path::new("/sys/class/net"))
        .map_err(|e| ApiError::internal(format!("Cannot list /sys/class/net: {e}")))?;
    ok(page.of(nics))
}

/// Every host of the cluster, with what its VMs use of it.
async fn hosts_with_usage(mgmt: &Mgmt) -> Result<Vec<ClusterHost>, ApiError> {
    let vms = mgmt.inventory.vms().await?;
    Ok(mgmt
        .cluster
        .hosts_with_usage(&vms)
        .await
        .map_err(crate::Error::from)?)
}

/// `GET /api/v1/hosts`: every host of the cluster, from its store.
pub async fn list_hosts(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    ok(page.of(hosts_with_usage(mgmt).await?))
}

/// `GET /api/v1/hosts/{host}`.
pub async fn get_host(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let name = r.param("host");
    super::rules::check_object_name("host", name)?;
    match hosts_with_usage(mgmt)
        .await?
        .into_iter()
        .find(|h| h.name == name)
    {
        Some(h) => ok(h),
        None => Err(ApiError::not_found(format!("No host {name:?}"))),
    }
}

/// `GET /api/v1/daemons`.
pub fn daemons(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    let mut daemons = vec![
        mgmt.blockd_supervisor.status(),
        mgmt.vswitchd.supervisor.status(),
    ];
    daemons.extend(mgmt.cluster.member.as_ref().map(|etcd| etcd.status()));
    ok(page.of(daemons))
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

/// The page of sampled objects, with the sampling's interval and
/// retention.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampledObjects {
    #[serde(flatten)]
    #[schema(inline)]
    page: PageOf<SampledObject>,
    /// Seconds between samples
    interval_s: u64,
    /// Seconds samples are kept
    raw_keep_s: i64,
    /// Seconds a rollup covers
    rollup_s: i64,
    /// Seconds rollups are kept
    rollup_keep_s: i64,
}

/// `GET /api/v1/metrics`: the objects sampled, with the sampling's
/// interval and retention.
pub fn sampled_objects(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let page = Page::from_query(&r.query)?;
    ok(SampledObjects {
        page: page.of(mgmt.db.sampled_objects()?),
        interval_s: mgmt.paths.sample_every.as_secs(),
        raw_keep_s: metrics_db::RAW_KEEP_S,
        rollup_s: metrics_db::ROLLUP_S,
        rollup_keep_s: metrics_db::ROLLUP_KEEP_S,
    })
}

/// Per metric, a value (or none) at each time of a series. (The fields
/// below spell the type out: utoipa sees an alias as a schema of its own.)
type Columns = BTreeMap<String, Vec<Option<f64>>>;

/// A series as columns: one `times` array and, per metric, its values at
/// those times.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricSeries {
    #[schema(schema_with = schema::metric_kind)]
    kind: String,
    object: String,
    #[schema(inline)]
    resolution: metrics_db::Resolution,
    /// Seconds between points
    interval_s: u64,
    /// Seconds since the epoch, oldest first
    times: Vec<i64>,
    /// Per metric, its value at each time (the average of the period for 5m)
    series: BTreeMap<String, Vec<Option<f64>>>,
    /// 5m only: per metric, the smallest sample of each period
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = BTreeMap<String, Vec<Option<f64>>>)]
    min: Option<BTreeMap<String, Vec<Option<f64>>>>,
    /// 5m only: per metric, the largest sample of each period
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = BTreeMap<String, Vec<Option<f64>>>)]
    max: Option<BTreeMap<String, Vec<Option<f64>>>>,
}

/// `GET /api/v1/metrics/{kind}/{object}`: the series as columns, one
/// `times` array and, per metric, its values at those times (`null` where
/// it has none), as charts take them.
pub async fn metric_series(mgmt: &Mgmt, r: &ApiRequest) -> Result<Reply, ApiError> {
    let kind = r.param("kind");
    if !crate::metrics::KINDS.contains(&kind) {
        return Err(ApiError::not_found(format!(
            "No kind {kind:?} (host, vm, volume or port)"
        )));
    }
    let mut object = r.param("object").to_owned();
    match kind {
        "vm" => {
            object = mgmt.find_vm(&object).await?.id;
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
    let rollup = resolution == metrics_db::Resolution::Rollup;
    let mut series = MetricSeries {
        kind: kind.to_owned(),
        object,
        resolution,
        interval_s: if rollup {
            metrics_db::ROLLUP_S.unsigned_abs()
        } else {
            mgmt.paths.sample_every.as_secs()
        },
        times: Vec::new(),
        series: Columns::new(),
        min: rollup.then(Columns::new),
        max: rollup.then(Columns::new),
    };
    series.fill(&rows);
    ok(series)
}

impl MetricSeries {
    /// Puts the rows in their columns: a column per metric, a slot per time.
    fn fill(&mut self, rows: &[metrics_db::SeriesRow]) {
        let mut times: Vec<i64> = rows.iter().map(|x| x.time).collect();
        times.dedup();
        let n = times.len();
        for row in rows {
            let Ok(i) = times.binary_search(&row.time) else {
                continue;
            };
            let set = |columns: &mut Columns, v: Option<f64>| {
                let column = columns
                    .entry(row.metric.clone())
                    .or_insert_with(|| vec![None; n]);
                if let Some(slot) = column.get_mut(i) {
                    *slot = v;
                }
            };
            set(&mut self.series, Some(row.value));
            if let Some(min) = &mut self.min {
                set(min, row.min);
            }
            if let Some(max) = &mut self.max {
                set(max, row.max);
            }
        }
        self.times = times;
    }
}
