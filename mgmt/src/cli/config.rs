//! The CLI's saved login: `$SFERA_CONFIG`, or `config.json` in
//! `$XDG_CONFIG_HOME/sfera` (`~/.config/sfera`), mode 0600.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What `sfera login` saves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) server: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) ca_cert: Option<PathBuf>,
}

pub(crate) fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SFERA_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sfera").join("config.json"))
}

pub(crate) fn load() -> Saved {
    path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub(crate) fn save(saved: &Saved) -> Result<PathBuf> {
    let path = path().context("No place for the configuration: set HOME or SFERA_CONFIG")?;
    if let Some(dir) = path.parent() {
        // The token in it is the user's alone.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .with_context(|| format!("Cannot create {}", dir.display()))?;
    }
    mgmt::tls::write_private(&path, serde_json::to_string_pretty(saved)?.as_bytes())
        .with_context(|| format!("Cannot write {}", path.display()))?;
    Ok(path)
}
