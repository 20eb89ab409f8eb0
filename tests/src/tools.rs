//! Finding the external tools tests depend on, failing loudly when one is
//! missing.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const SYSTEM_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Returns the path of `tool` (a name looked up in `PATH` and the system
/// directories, or an absolute path), or an error naming the Debian package
/// that provides it.
pub fn require(tool: &str, package: &str) -> Result<PathBuf> {
    find(tool).ok_or_else(|| Error::MissingTool {
        tool: tool.to_owned(),
        package: package.to_owned(),
    })
}

fn find(tool: &str) -> Option<PathBuf> {
    let candidate = Path::new(tool);
    if candidate.is_absolute() {
        return is_executable(candidate).then(|| candidate.to_path_buf());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh() {
        assert!(require("sh", "dash").unwrap().ends_with("sh"));
    }

    #[test]
    fn names_the_package_of_a_missing_tool() {
        let err = require("sfera-no-such-tool", "sfera-pkg").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sfera-no-such-tool") && text.contains("sfera-pkg"),
            "{text}"
        );
    }
}
