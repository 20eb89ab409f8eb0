//! Sfera's own daemons, started from the workspace's build output.

pub mod blockd;
pub mod vswitchd;

use std::path::PathBuf;

use crate::{Error, Result};

/// The path of a workspace binary: in `$SFERA_BIN_DIR`, or in the profile
/// directory the running test executable was built into
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("SFERA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir()?,
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool {
            tool: path.display().to_string(),
            package: "this workspace (cargo build --workspace)".to_owned(),
        })
    }
}

/// The path of a mutant build of a daemon (one with a fault compiled in,
/// which a test must catch): in `$SFERA_MUTANT_BIN_DIR`, or where `make
/// mutant-blockd` builds it, its own target directory `target/mutant` (so
/// that the workspace's binaries are never the mutants).
pub fn mutant_binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("SFERA_MUTANT_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let profile = profile_dir()?;
            let target = profile.parent().map(PathBuf::from).unwrap_or_default();
            target.join("mutant").join("debug")
        }
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingMutant { path })
    }
}

/// `target/<profile>`, from the running test executable's path.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("Cannot find the running executable", "", e))?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}
