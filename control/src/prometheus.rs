//! The Prometheus text exposition format (0.0.4), written by hand: a few
//! lines of text, where a registry crate would keep a second copy of every
//! counter the daemons' workers already keep.
//!
//! ```text
//! # HELP sfera_blk_bytes_total Bytes transferred by export and direction.
//! # TYPE sfera_blk_bytes_total counter
//! sfera_blk_bytes_total{export="vm1-disk0",direction="read"} 4096
//! ```

use std::fmt::{Display, Write};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `HELP` and `TYPE` lines; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        Family {
            text: &mut self.text,
            name: name.to_owned(),
        }
    }

    /// The text written.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// The samples of one family.
#[derive(Debug)]
pub struct Family<'a> {
    text: &'a mut String,
    name: String,
}

impl Family<'_> {
    /// Writes `name{labels} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.suffixed("", labels, value)
    }

    /// Writes `name<suffix>{labels} value`: a histogram's `_bucket`, `_sum`
    /// and `_count`.
    pub fn suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        let _ = write!(self.text, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A help text with `\` and newlines escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut page = Exposition::new();
        page.family("sfera_x_total", Kind::Counter, "Things.")
            .sample(&[("port", "a\"b\\c\nd"), ("dir", "rx")], 5u64)
            .sample(&[], 7u64);
        page.family("sfera_lat_seconds", Kind::Histogram, "Latency.")
            .suffixed("_bucket", &[("le", "+Inf")], 3u64)
            .suffixed("_sum", &[], 0.25f64);
        assert_eq!(
            page.into_text(),
            "# HELP sfera_x_total Things.\n# TYPE sfera_x_total counter\n\
             sfera_x_total{port=\"a\\\"b\\\\c\\nd\",dir=\"rx\"} 5\n\
             sfera_x_total 7\n\
             # HELP sfera_lat_seconds Latency.\n# TYPE sfera_lat_seconds histogram\n\
             sfera_lat_seconds_bucket{le=\"+Inf\"} 3\n\
             sfera_lat_seconds_sum 0.25\n"
        );
    }
}
