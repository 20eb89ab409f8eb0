//! mgmtd's own Prometheus metrics, served at `GET /metrics` (authenticated
//! like the rest of the API): API requests by route and status, tasks by
//! kind and state, VMs by state and driver, the supervised daemons'
//! restarts, and how long the performance sampler's rounds take.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use control::prometheus::{Exposition, Kind};

use crate::service::Mgmt;

/// Counters kept in memory since mgmtd started.
#[derive(Debug, Default)]
pub struct OwnMetrics {
    /// (method, route template, status) -> requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    sampler: Mutex<SamplerTimes>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SamplerTimes {
    rounds: u64,
    seconds_total: f64,
    last_seconds: f64,
}

impl OwnMetrics {
    /// Counts one answered API request.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        let mut r = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *r.entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// Records one sampler round.
    pub fn sampler_round(&self, took: Duration) {
        let mut s = self
            .sampler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.rounds += 1;
        s.seconds_total += took.as_secs_f64();
        s.last_seconds = took.as_secs_f64();
    }

    /// The in-memory counters as Prometheus text.
    fn render_counters(&self, page: &mut Exposition) {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut family = page.family(
            "sfera_mgmtd_api_requests_total",
            Kind::Counter,
            "API requests answered, by route and status",
        );
        for ((method, route, status), n) in &requests {
            let status = status.to_string();
            family.sample(
                &[("method", method), ("route", route), ("status", &status)],
                n,
            );
        }
        let s = *self
            .sampler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        page.family(
            "sfera_mgmtd_sampler_rounds_total",
            Kind::Counter,
            "Performance sampling rounds",
        )
        .sample(&[], s.rounds);
        page.family(
            "sfera_mgmtd_sampler_seconds_total",
            Kind::Counter,
            "Time spent in sampling rounds",
        )
        .sample(&[], s.seconds_total);
        page.family(
            "sfera_mgmtd_sampler_last_round_seconds",
            Kind::Gauge,
            "Duration of the last sampling round",
        )
        .sample(&[], s.last_seconds);
    }
}

/// The whole text: the counters, and what the inventory and the
/// supervisors say now.
pub async fn render(mgmt: &Mgmt) -> Result<String, crate::error::Error> {
    let mut page = Exposition::new();
    mgmt.own_metrics.render_counters(&mut page);
    let mut tasks = page.family(
        "sfera_mgmtd_tasks",
        Kind::Gauge,
        "Tasks recorded, by kind and state",
    );
    for (kind, state, n) in mgmt.db.task_counts()? {
        tasks.sample(&[("kind", &kind), ("state", &state)], n);
    }
    let mut vms: BTreeMap<(String, String), u64> = BTreeMap::new();
    for state in ["creating", "stopped", "running", "paused", "deleting"] {
        for driver in crate::driver::Driver::NAMES {
            vms.insert((state.to_owned(), driver.to_owned()), 0);
        }
    }
    for vm in mgmt.inventory.vms_here().await? {
        *vms.entry((vm.state.as_str().to_owned(), vm.driver.clone()))
            .or_default() += 1;
    }
    let mut family = page.family(
        "sfera_mgmtd_vms",
        Kind::Gauge,
        "VMs by state and hypervisor driver",
    );
    for ((state, driver), n) in &vms {
        family.sample(&[("state", state), ("driver", driver)], n);
    }
    let daemons = [
        mgmt.blockd_supervisor.status(),
        mgmt.vswitchd.supervisor.status(),
    ];
    let mut restarts = page.family(
        "sfera_mgmtd_daemon_restarts_total",
        Kind::Counter,
        "Restarts of a supervised daemon after it died",
    );
    for d in &daemons {
        restarts.sample(&[("daemon", &d.name)], d.restarts);
    }
    let mut up = page.family(
        "sfera_mgmtd_daemon_up",
        Kind::Gauge,
        "The supervised daemon runs",
    );
    for d in &daemons {
        up.sample(&[("daemon", &d.name)], u8::from(d.state == "running"));
    }
    Ok(page.into_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_prometheus_text() {
        let m = OwnMetrics::default();
        m.request("GET", "/api/v1/vms/{vm}", 200);
        m.request("GET", "/api/v1/vms/{vm}", 200);
        m.request("POST", "/api/v1/vms", 400);
        m.sampler_round(Duration::from_millis(250));
        let mut page = Exposition::new();
        m.render_counters(&mut page);
        let out = page.into_text();
        assert!(out.contains(
            "sfera_mgmtd_api_requests_total{method=\"GET\",route=\"/api/v1/vms/{vm}\",status=\"200\"} 2"
        ), "{out}");
        assert!(out.contains("status=\"400\"} 1"), "{out}");
        assert!(out.contains("sfera_mgmtd_sampler_rounds_total 1"), "{out}");
        assert!(
            out.contains("sfera_mgmtd_sampler_last_round_seconds 0.25"),
            "{out}"
        );
    }
}
