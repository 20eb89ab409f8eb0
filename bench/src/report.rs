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
