//! Prometheus text exposition of the exports' counters. Written by hand: the
//! format is a few lines of text, and a registry crate would add a second
//! copy of every counter the workers already keep.

use std::fmt::Write;

use datapath::counters::Histogram;

use crate::vhost_blk::broken::RingFault;
use crate::vhost_blk::metrics::MetricsSnapshot;
use crate::vhost_blk::request::Fault;

/// Renders the counters of every export (by export id).
pub fn render<'a>(exports: impl Iterator<Item = (&'a str, MetricsSnapshot)>) -> String {
    let exports: Vec<(&str, MetricsSnapshot)> = exports.collect();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        rows(&mut out);
    };
    family(
        "sfera_blk_requests_total",
        "counter",
        "Requests by export and operation.",
        &mut |out| {
            for (id, m) in &exports {
                for (op, v) in [
                    ("read", m.reads),
                    ("write", m.writes),
                    ("flush", m.flushes),
                    ("discard", m.discards),
                    ("write_zeroes", m.write_zeroes),
                    ("get_id", m.get_ids),
                ] {
                    let _ = writeln!(
                        out,
                        "sfera_blk_requests_total{{export=\"{id}\",op=\"{op}\"}} {v}"
                    );
                }
            }
        },
    );
    family(
        "sfera_blk_bytes_total",
        "counter",
        "Bytes transferred by export and direction.",
        &mut |out| {
            for (id, m) in &exports {
                let _ = writeln!(
                    out,
                    "sfera_blk_bytes_total{{export=\"{id}\",direction=\"read\"}} {}",
                    m.read_bytes
                );
                let _ = writeln!(
                    out,
                    "sfera_blk_bytes_total{{export=\"{id}\",direction=\"write\"}} {}",
                    m.write_bytes
                );
            }
        },
    );
    family(
        "sfera_blk_errors_total",
        "counter",
        "Requests refused or failed, by export and reason.",
        &mut |out| {
            for (id, m) in &exports {
                for f in Fault::ALL {
                    let _ = writeln!(
                        out,
                        "sfera_blk_errors_total{{export=\"{id}\",reason=\"{}\"}} {}",
                        f.reason(),
                        m.fault(f)
                    );
                }
                let _ = writeln!(
                    out,
                    "sfera_blk_errors_total{{export=\"{id}\",reason=\"io_error\"}} {}",
                    m.io_errors
                );
            }
        },
    );
    family(
        "sfera_blk_broken_queues_total",
        "counter",
        "Times a queue was stopped because the guest broke its ring, by export and reason.",
        &mut |out| {
            for (id, m) in &exports {
                for f in RingFault::ALL {
                    let _ = writeln!(
                        out,
                        "sfera_blk_broken_queues_total{{export=\"{id}\",reason=\"{}\"}} {}",
                        f.reason(),
                        m.broken(f)
                    );
                }
            }
        },
    );
    family(
        "sfera_blk_throttled_total",
        "counter",
        "Times QoS held a request back.",
        &mut |out| {
            for (id, m) in &exports {
                let _ = writeln!(
                    out,
                    "sfera_blk_throttled_total{{export=\"{id}\"}} {}",
                    m.throttled
                );
            }
        },
    );
    family(
        "sfera_blk_no_space_held",
        "gauge",
        "Writes held because the datastore is out of space, retried until it has room.",
        &mut |out| {
            for (id, m) in &exports {
                let _ = writeln!(
                    out,
                    "sfera_blk_no_space_held{{export=\"{id}\"}} {}",
                    m.no_space_held
                );
            }
        },
    );
    family(
        "sfera_blk_queue_depth",
        "gauge",
        "Requests in flight at the backing store.",
        &mut |out| {
            for (id, m) in &exports {
                let _ = writeln!(
                    out,
                    "sfera_blk_queue_depth{{export=\"{id}\"}} {}",
                    m.in_flight
                );
            }
        },
    );
    family(
        "sfera_blk_latency_seconds",
        "histogram",
        "Completion latency of reads and writes.",
        &mut |out| {
            for (id, m) in &exports {
                let mut cumulative = 0u64;
                for (i, count) in m.latency_buckets.iter().enumerate() {
                    cumulative += count;
                    let le = match Histogram::bound_us(i) {
                        Some(us) => format!("{}", us as f64 / 1e6),
                        None => "+Inf".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "sfera_blk_latency_seconds_bucket{{export=\"{id}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "sfera_blk_latency_seconds_sum{{export=\"{id}\"}} {}",
                    m.latency_sum_us as f64 / 1e6
                );
                let _ = writeln!(
                    out,
                    "sfera_blk_latency_seconds_count{{export=\"{id}\"}} {cumulative}"
                );
            }
        },
    );
    out
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
