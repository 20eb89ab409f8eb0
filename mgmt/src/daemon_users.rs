//! The system users sfera-blockd and sfera-vswitchd run as (one each, so
//! the switch cannot read disks and the datastore daemon cannot touch the
//! network), made on first start when the set-up has not made them, and
//! the directories mgmtd makes for them given to them.
//! `docs/privileges.md` says who runs as whom.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use datapath::privileges::{self, Account, PrivilegeError};

/// sfera-blockd's user by default.
pub const BLOCKD_USER: &str = "sfera-blockd";
/// sfera-vswitchd's user by default.
pub const VSWITCHD_USER: &str = "sfera-vswitchd";
/// The name that keeps a daemon running as root, as before.
pub const ROOT: &str = "root";

/// The accounts the daemons run as (`None`: as mgmtd, root).
#[derive(Debug, Clone, Default)]
pub struct DaemonUsers {
    pub blockd: Option<Account>,
    pub vswitchd: Option<Account>,
}

impl DaemonUsers {
    /// The accounts named, made when missing. When mgmtd is not root the
    /// daemons run as mgmtd's user: it cannot switch them to another.
    pub async fn ensure(blockd: &str, vswitchd: &str) -> Result<Self> {
        if !privileges::is_root() {
            tracing::warn!(
                "sfera-mgmtd is not root: sfera-blockd and sfera-vswitchd run as its user"
            );
            return Ok(DaemonUsers::default());
        }
        Ok(DaemonUsers {
            // `disk`: block-device datastores (root:disk 0660 on Debian).
            blockd: ensure_user(blockd, Some("disk")).await?,
            vswitchd: ensure_user(vswitchd, None).await?,
        })
    }
}

/// `name`'s account, made with useradd when it does not exist; `None` for
/// root.
async fn ensure_user(name: &str, group: Option<&str>) -> Result<Option<Account>> {
    if name == ROOT {
        return Ok(None);
    }
    match Account::lookup(name) {
        Ok(account) => return Ok(Some(account)),
        Err(PrivilegeError::NoSuchUser { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut cmd = tokio::process::Command::new("useradd");
    cmd.args([
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "Sfera daemon",
    ]);
    if let Some(group) = group {
        cmd.args(["--groups", group]);
    }
    let out = cmd.arg(name).output().await.with_context(|| {
        format!("Cannot run useradd to make user {name} (Debian's passwd package)")
    })?;
    // Another mgmtd may have made it at the same moment: look again.
    match Account::lookup(name) {
        Ok(account) => {
            tracing::info!(
                user = name,
                uid = account.uid,
                "Made the daemon's system user"
            );
            Ok(Some(account))
        }
        Err(_) if !out.status.success() => bail!(
            "Cannot make user {name}: useradd says: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Gives `dir` (and what is in it) to `account`; with no account (the
/// daemon runs as root) leaves it alone.
pub fn give(dir: &Path, account: Option<&Account>) -> Result<()> {
    match account {
        Some(a) => Ok(datapath::ownership::give_tree(dir, a)?),
        None => Ok(()),
    }
}

/// Refuses a directory the daemon's user cannot reach: every directory
/// above it must let others through (o+x), or the daemon fails later
/// with a bare "Permission denied" in its log.
pub fn check_reachable(daemon: &str, account: Option<&Account>, dir: &Path) -> Result<()> {
    let Some(account) = account else {
        return Ok(());
    };
    for above in dir.ancestors().skip(1) {
        let meta =
            std::fs::metadata(above).with_context(|| format!("Cannot read {}", above.display()))?;
        let through =
            meta.mode() & 0o001 != 0 || (meta.uid() == account.uid && meta.mode() & 0o100 != 0);
        if !through {
            bail!(
                "{daemon} runs as user {}, which cannot reach {}: {} has mode {:o}; \
                 `chmod o+x {}`, or keep {daemon} as root with --{}-user root",
                account.name,
                dir.display(),
                above.display(),
                meta.mode() & 0o7777,
                above.display(),
                daemon.trim_start_matches("sfera-"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_behind_a_closed_one_is_refused_with_the_fix() {
        let base = tempfile::tempdir().unwrap();
        let closed = base.path().join("closed");
        let dir = closed.join("data/blockd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let e = check_reachable("sfera-blockd", Some(&nobody), &dir).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("chmod o+x") && text.contains("--blockd-user root"),
            "{text}"
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable("sfera-blockd", Some(&nobody), &dir).unwrap();
        // Root needs no way through.
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_reachable("sfera-blockd", None, &dir).unwrap();
    }
}
