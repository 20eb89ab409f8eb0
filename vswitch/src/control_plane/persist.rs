//! The configuration in force, kept across restarts: written atomically to
//! `<data-dir>/vswitch-state.json` after each change, read back at start.
//!
//! A state file that cannot be read, parsed or validated stops the start:
//! it is the only record of what the switch was, so it is never silently
//! replaced by a default.

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::control_plane::config::{BadConfig, SwitchConfig};

/// The state file's name in the data directory.
pub const STATE_FILE: &str = "vswitch-state.json";
/// The lock a daemon holds on its data directory while it runs.
pub const LOCK_FILE: &str = "vswitchd.lock";

/// Errors reading or writing a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("Cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a switch configuration (JSON)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} holds an invalid switch configuration", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: BadConfig,
    },
    #[error("Cannot save the switch configuration")]
    Write(#[source] control::files::WriteError),
    #[error("Cannot encode the switch configuration")]
    Encode(#[source] serde_json::Error),
    #[error("Another sfera-vswitchd uses {}", path.display())]
    Locked { path: PathBuf },
    #[error("Cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but cannot be used.
    #[error(
        "State file {} cannot be used; fix or remove it (it is never replaced by a default)",
        path.display()
    )]
    BadState {
        path: PathBuf,
        #[source]
        source: Box<PersistError>,
    },
}

/// Reads and validates a configuration file (the state file, or the
/// `--config` file).
pub fn read_config(path: &Path) -> Result<SwitchConfig, PersistError> {
    let bytes = std::fs::read(path).map_err(|source| PersistError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config: SwitchConfig =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Parse {
            path: path.to_owned(),
            source,
        })?;
    config.validate().map_err(|source| PersistError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok(config)
}

/// The state file of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file in `data_dir` (which must exist to save).
    pub fn in_dir(data_dir: &Path) -> Self {
        StateFile {
            path: data_dir.join(STATE_FILE),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved configuration; `None` when there is no state file yet.
    pub fn load(&self) -> Result<Option<SwitchConfig>, PersistError> {
        let bad = |source| PersistError::BadState {
            path: self.path.clone(),
            source: Box::new(source),
        };
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(bad(PersistError::Read {
                path: self.path.clone(),
                source,
            })),
            Ok(_) => read_config(&self.path).map(Some).map_err(bad),
        }
    }

    /// Replaces the saved configuration atomically
    /// ([`control::files::write_atomically`]): a crash leaves either the
    /// old file or the new one, and a temporary file left by a crash is
    /// replaced.
    pub fn save(&self, config: &SwitchConfig) -> Result<(), PersistError> {
        let mut bytes = serde_json::to_vec_pretty(config).map_err(PersistError::Encode)?;
        bytes.push(b'\n');
        control::files::write_atomically(&self.path, &bytes).map_err(PersistError::Write)
    }
}

/// Locks `data_dir` for this process (released when the file is closed,
/// as at exit), so two daemons never run one switch configuration.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, PersistError> {
    let path = data_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| PersistError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(PersistError::Locked {
            path: data_dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(PersistError::Lock { path, source }),
    }
}

/// Where the configuration at start came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    StateFile(PathBuf),
    ConfigFile(PathBuf),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::StateFile(p) => write!(f, "state file {}", p.display()),
            Origin::ConfigFile(p) => write!(f, "configuration file {}", p.display()),
            Origin::Default => f.write_str("default (one switch, nothing else)"),
        }
    }
}

/// The configuration to start with: the state file if there is one, else
/// `config_file` if given, else the default.
pub fn initial_config(
    state: Option<&StateFile>,
    config_file: Option<&Path>,
) -> Result<(SwitchConfig, Origin), PersistError> {
    if let Some(state) = state
        && let Some(config) = state.load()?
    {
        return Ok((config, Origin::StateFile(state.path.clone())));
    }
    match config_file {
        Some(path) => Ok((read_config(path)?, Origin::ConfigFile(path.to_owned()))),
        None => Ok((SwitchConfig::default(), Origin::Default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::error_chain;

    fn sample() -> SwitchConfig {
        serde_json::from_str(
            r#"{"port_groups":[{"name":"pg","vlan":{"mode":"access","id":10}}],
                "ports":[{"name":"a","socket":"/s","mac":"52:54:00:00:00:01","port_group":"pg"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        assert_eq!(state.load().unwrap(), None);
        state.save(&SwitchConfig::default()).unwrap();
        state.save(&sample()).unwrap();
        assert_eq!(state.load().unwrap(), Some(sample()));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE], "no temporary file is left");
        // A temporary file left by a crash before the rename is ignored
        // and replaced by the next save.
        std::fs::write(dir.path().join("vswitch-state.json.tmp"), "{garbage").unwrap();
        assert_eq!(state.load().unwrap(), Some(sample()));
        state.save(&SwitchConfig::default()).unwrap();
        assert_eq!(state.load().unwrap(), Some(SwitchConfig::default()));
    }

    #[test]
    fn a_bad_state_file_is_an_error_never_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        std::fs::write(state.path(), "{\"switches\": [").unwrap();
        let e = state.load().unwrap_err();
        let PersistError::BadState { source, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(matches!(**source, PersistError::Parse { .. }), "{e:?}");
        let text = error_chain(&e);
        assert!(
            text.contains(STATE_FILE) && text.contains("fix or remove"),
            "{text}"
        );
        assert!(text.contains("EOF"), "{text}");
        // Even with a configuration file to fall back on.
        let file = dir.path().join("switch.json");
        std::fs::write(&file, "{}").unwrap();
        let e = initial_config(Some(&state), Some(&file)).unwrap_err();
        assert!(matches!(e, PersistError::BadState { .. }));

        std::fs::write(
            state.path(),
            r#"{"port_groups":[{"name":"pg","switch":"x"}]}"#,
        )
        .unwrap();
        let e = state.load().unwrap_err();
        assert!(error_chain(&e).contains("does not exist"), "{e:?}");
        std::fs::write(state.path(), r#"{"bogus":1}"#).unwrap();
        assert!(error_chain(&state.load().unwrap_err()).contains("unknown field"));
    }

    #[test]
    fn one_daemon_per_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let e = lock_data_dir(dir.path()).unwrap_err();
        assert!(matches!(e, PersistError::Locked { .. }), "{e:?}");
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }

    #[test]
    fn start_takes_the_state_file_then_the_config_file_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        let file = dir.path().join("switch.json");
        std::fs::write(&file, serde_json::to_string(&sample()).unwrap()).unwrap();

        let (c, origin) = initial_config(Some(&state), None).unwrap();
        assert_eq!((c, origin), (SwitchConfig::default(), Origin::Default));
        let (c, origin) = initial_config(Some(&state), Some(&file)).unwrap();
        assert_eq!((c, origin), (sample(), Origin::ConfigFile(file.clone())));
        state.save(&SwitchConfig::default()).unwrap();
        let (c, origin) = initial_config(Some(&state), Some(&file)).unwrap();
        assert_eq!(c, SwitchConfig::default());
        assert_eq!(origin, Origin::StateFile(state.path().to_owned()));
        let (c, _) = initial_config(None, Some(&file)).unwrap();
        assert_eq!(c, sample());
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            initial_config(None, Some(&missing)),
            Err(PersistError::Read { .. })
        ));
    }
}
