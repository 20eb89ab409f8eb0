//! mgmtd's own Prometheus metrics, served at `GET /metrics` (authenticated
//! like the rest of the API): API requests by route and status, tasks by
//! kind and state, VMs by state and driver, the supervised daemons'
//! restarts, and how long the performance sampler's rounds take.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

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

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    fn render_counters(&self, out: &mut String) {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let _ = writeln!(
            out,
            "# HELP sfera_mgmtd_api_requests_total API requests answered, by route and status\n# TYPE sfera_mgmtd_api_requests_total counter"
        );
        for ((method, route, status), n) in &requests {
            let _ = writeln!(
                out,
                "sfera_mgmtd_api_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                label(method),
                label(route)
            );
        }
        let s = *self
            .sampler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(
            out,
            "# HELP sfera_mgmtd_sampler_rounds_total Performance sampling rounds\n# TYPE sfera_mgmtd_sampler_rounds_total counter\nsfera_mgmtd_sampler_rounds_total {}",
            s.rounds
        );
        let _ = writeln!(
            out,
            "# HELP sfera_mgmtd_sampler_seconds_total Time spent in sampling rounds\n# TYPE sfera_mgmtd_sampler_seconds_total counter\nsfera_mgmtd_sampler_seconds_total {}",
            s.seconds_total
        );
        let _ = writeln!(
            out,
            "# HELP sfera_mgmtd_sampler_last_round_seconds Duration of the last sampling round\n# TYPE sfera_mgmtd_sampler_last_round_seconds gauge\nsfera_mgmtd_sampler_last_round_seconds {}",
            s.last_seconds
        );
    }
}

/// The whole text: the counters, and what the inventory and the
/// supervisors say now.
pub fn render(mgmt: &Mgmt) -> Result<String, crate::db::DbError> {
    let mut out = String::new();
    mgmt.own_metrics.render_counters(&mut out);
    let _ = writeln!(
        out,
        "# HELP sfera_mgmtd_tasks Tasks recorded, by kind and state\n# TYPE sfera_mgmtd_tasks gauge"
    );
    for (kind, state, n) in mgmt.db.task_counts()? {
        let _ = writeln!(
            out,
            "sfera_mgmtd_tasks{{kind=\"{}\",state=\"{}\"}} {n}",
            label(&kind),
            label(&state)
        );
    }
    let mut vms: BTreeMap<(String, String), u64> = BTreeMap::new();
    for state in ["creating", "stopped", "running", "paused", "deleting"] {
        for driver in crate::driver::Driver::NAMES {
            vms.insert((state.to_owned(), driver.to_owned()), 0);
        }
    }
    for vm in mgmt.db.vms()? {
        *vms.entry((vm.state.as_str().to_owned(), vm.driver.clone()))
            .or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP sfera_mgmtd_vms VMs by state and hypervisor driver\n# TYPE sfera_mgmtd_vms gauge"
    );
    for ((state, driver), n) in &vms {
        let _ = writeln!(
            out,
            "sfera_mgmtd_vms{{state=\"{state}\",driver=\"{}\"}} {n}",
            label(driver)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sfera_mgmtd_daemon_restarts_total Restarts of a supervised daemon after it died\n# TYPE sfera_mgmtd_daemon_restarts_total counter"
    );
    let _ = writeln!(
        out,
        "# HELP sfera_mgmtd_daemon_up The supervised daemon runs\n# TYPE sfera_mgmtd_daemon_up gauge"
    );
    for d in [
        mgmt.blockd_supervisor.status(),
        mgmt.vswitchd.supervisor.status(),
    ] {
        let name = label(&d.name);
        let _ = writeln!(
            out,
            "sfera_mgmtd_daemon_restarts_total{{daemon=\"{name}\"}} {}\nsfera_mgmtd_daemon_up{{daemon=\"{name}\"}} {}",
            d.restarts,
            u8::from(d.state == "running")
        );
    }
    Ok(out)
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
        let mut out = String::new();
        m.render_counters(&mut out);
        assert!(out.contains(
            "sfera_mgmtd_api_requests_total{method=\"GET\",route=\"/api/v1/vms/{vm}\",status=\"200\"} 2"
        ), "{out}");
        assert!(out.contains("status=\"400\"} 1"), "{out}");
        assert!(out.contains("sfera_mgmtd_sampler_rounds_total 1"), "{out}");
        assert!(
            out.contains("sfera_mgmtd_sampler_last_round_seconds 0.25"),
            "{out}"
        );
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
