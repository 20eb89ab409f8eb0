//! Prometheus text exposition of the exports' counters, one function per
//! group of families, written with [`control::prometheus`].

use control::prometheus::{Exposition, Kind};
use datapath::counters::Histogram;

use crate::vhost_blk::broken::RingFault;
use crate::vhost_blk::metrics::MetricsSnapshot;
use crate::vhost_blk::request::Fault;

/// An export's id and its summed counters.
type Export<'a> = (&'a str, MetricsSnapshot);

/// A family with one sample per export: name, type, help, value.
type PerExport = (
    &'static str,
    Kind,
    &'static str,
    fn(&MetricsSnapshot) -> u64,
);

/// Renders the counters of every export (by export id).
pub fn render<'a>(exports: impl Iterator<Item = Export<'a>>) -> String {
    let exports: Vec<Export<'a>> = exports.collect();
    let mut page = Exposition::new();
    traffic(&mut page, &exports);
    refusals(&mut page, &exports);
    holds(&mut page, &exports);
    latency(&mut page, &exports);
    page.into_text()
}

/// Requests and bytes.
fn traffic(page: &mut Exposition, exports: &[Export<'_>]) {
    let mut requests = page.family(
        "sfera_blk_requests_total",
        Kind::Counter,
        "Requests by export and operation.",
    );
    for (id, m) in exports {
        for (op, v) in [
            ("read", m.reads),
            ("write", m.writes),
            ("flush", m.flushes),
            ("discard", m.discards),
            ("write_zeroes", m.write_zeroes),
            ("get_id", m.get_ids),
        ] {
            requests.sample(&[("export", id), ("op", op)], v);
        }
    }
    let mut bytes = page.family(
        "sfera_blk_bytes_total",
        Kind::Counter,
        "Bytes transferred by export and direction.",
    );
    for (id, m) in exports {
        bytes
            .sample(&[("export", id), ("direction", "read")], m.read_bytes)
            .sample(&[("export", id), ("direction", "write")], m.write_bytes);
    }
}

/// Requests refused or failed, and queues stopped for a broken ring.
fn refusals(page: &mut Exposition, exports: &[Export<'_>]) {
    let mut errors = page.family(
        "sfera_blk_errors_total",
        Kind::Counter,
        "Requests refused or failed, by export and reason.",
    );
    for (id, m) in exports {
        for f in Fault::ALL {
            errors.sample(&[("export", id), ("reason", f.reason())], m.fault(f));
        }
        errors.sample(&[("export", id), ("reason", "io_error")], m.io_errors);
    }
    let mut broken = page.family(
        "sfera_blk_broken_queues_total",
        Kind::Counter,
        "Times a queue was stopped because the guest broke its ring, by export and reason.",
    );
    for (id, m) in exports {
        for f in RingFault::ALL {
            broken.sample(&[("export", id), ("reason", f.reason())], m.broken(f));
        }
    }
}

/// Requests held back: by QoS, for space, at the backing store.
fn holds(page: &mut Exposition, exports: &[Export<'_>]) {
    let families: [PerExport; 3] = [
        (
            "sfera_blk_throttled_total",
            Kind::Counter,
            "Times QoS held a request back.",
            |m| m.throttled,
        ),
        (
            "sfera_blk_no_space_held",
            Kind::Gauge,
            "Writes held because the datastore is out of space, retried until it has room.",
            |m| m.no_space_held,
        ),
        (
            "sfera_blk_queue_depth",
            Kind::Gauge,
            "Requests in flight at the backing store.",
            |m| m.in_flight,
        ),
    ];
    for (name, kind, help, value) in families {
        let mut family = page.family(name, kind, help);
        for (id, m) in exports {
            family.sample(&[("export", id)], value(m));
        }
    }
}

/// The completion latency histogram (cumulative buckets).
fn latency(page: &mut Exposition, exports: &[Export<'_>]) {
    let mut family = page.family(
        "sfera_blk_latency_seconds",
        Kind::Histogram,
        "Completion latency of reads and writes.",
    );
    for (id, m) in exports {
        let mut cumulative = 0u64;
        for (i, count) in m.latency_buckets.iter().enumerate() {
            cumulative += count;
            let le = match Histogram::bound_us(i) {
                Some(us) => format!("{}", us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            family.suffixed("_bucket", &[("export", id), ("le", &le)], cumulative);
        }
        family
            .suffixed("_sum", &[("export", id)], m.latency_sum_us as f64 / 1e6)
            .suffixed("_count", &[("export", id)], cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let mut m = MetricsSnapshot {
            reads: 5,
            read_bytes: 20480,
            ..MetricsSnapshot::default()
        };
        m.latency_buckets[3] = 2;
        m.latency_buckets[5] = 1;
        m.faults[Fault::OutOfRange.index()] = 7;
        m.broken_rings[RingFault::AvailIndex.index()] = 1;
        let text = render([("vm1-disk0", m)].into_iter());
        assert!(text.contains("sfera_blk_requests_total{export=\"vm1-disk0\",op=\"read\"} 5"));
        assert!(
            text.contains("sfera_blk_errors_total{export=\"vm1-disk0\",reason=\"out_of_range\"} 7")
        );
        assert!(text.contains(
            "sfera_blk_broken_queues_total{export=\"vm1-disk0\",reason=\"avail_index\"} 1"
        ));
        assert!(
            text.contains("sfera_blk_latency_seconds_bucket{export=\"vm1-disk0\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("sfera_blk_latency_seconds_count{export=\"vm1-disk0\"} 3"));
        assert!(text.contains("# TYPE sfera_blk_latency_seconds histogram"));
    }

    /// Every counter of two exports set to a distinct value.
    fn two_exports() -> Vec<(&'static str, MetricsSnapshot)> {
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n
        };
        let mut exports = Vec::new();
        for id in ["vm1-disk0", "vm2-disk1"] {
            let mut m = MetricsSnapshot {
                reads: next(),
                writes: next(),
                flushes: next(),
                discards: next(),
                write_zeroes: next(),
                get_ids: next(),
                read_bytes: next(),
                write_bytes: next(),
                io_errors: next(),
                throttled: next(),
                in_flight: next(),
                latency_sum_us: 1_234_567 * next(),
                no_space_holds: next(),
                no_space_retries: next(),
                no_space_held: next(),
                no_space_since: Some(next()),
                ..MetricsSnapshot::default()
            };
            for f in m.faults.iter_mut().chain(&mut m.broken_rings) {
                *f = next();
            }
            for b in &mut m.latency_buckets {
                *b = next();
            }
            exports.push((id, m));
        }
        exports
    }

    #[test]
    fn the_text_is_byte_for_byte_the_same() {
        let text = render(two_exports().into_iter());
        assert_eq!(text, include_str!("testdata/metrics.prom"));
    }
}
