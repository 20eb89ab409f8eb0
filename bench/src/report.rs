//! Benchmark results: one JSON file per comparison in `bench/results/`, and
//! a table on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// One comparison of Sfera with a peer, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub unit: String,
    pub ours: f64,
    pub peer: f64,
    pub peer_name: String,
    /// `ours / peer` (higher is better for throughput units).
    pub ratio: f64,
    /// Runs `ours` and `peer` are the medians of (absent: one run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<usize>,
    /// What the load generator reaches without any server in the way, in
    /// `unit`: a figure near it measures the generator, not the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<f64>,
    /// Frames or requests lost during the measurement, by who lost them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<serde_json::Value>,
    /// Further figures: latencies, CPU cost, the ceiling.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Comparison {
    /// A comparison of `ours` with `peer`.
    pub fn new(name: &str, unit: &str, ours: f64, peer: f64, peer_name: &str) -> Self {
        Comparison {
            name: name.to_owned(),
            unit: unit.to_owned(),
            ours,
            peer,
            peer_name: peer_name.to_owned(),
            ratio: if peer > 0.0 { ours / peer } else { 0.0 },
            runs: None,
            ceiling: None,
            drops: None,
            details: serde_json::Map::new(),
        }
    }

    /// Adds a detail figure.
    pub fn detail(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.details.insert(key.to_owned(), value.into());
    }

    /// Writes `<dir>/<name>.json`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The folder results go to: `bench/results` of the workspace.
pub fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// Prints rows as an aligned table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = String::new();
    out.push_str(&line(headers.iter().map(|h| (*h).to_owned()).collect()));
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    // A benchmark's table is its output.
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn optional_fields_are_left_out_when_absent() {
        let mut c = Comparison::new("n", "Mpps", 2.0, 1.0, "peer");
        let json = serde_json::to_value(&c).unwrap();
        for key in ["name", "unit", "ours", "peer", "peer_name", "ratio"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert!(json.get("runs").is_none());
        c.runs = Some(3);
        c.ceiling = Some(9.0);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            (json["runs"].as_u64(), json["ceiling"].as_f64()),
            (Some(3), Some(9.0))
        );
    }
}
