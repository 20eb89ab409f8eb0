//! The daemon's control object: registered datastores, running exports, and
//! the state file that brings both back after a restart.
//!
//! Every request either succeeds completely or changes nothing: the state
//! file is rewritten only after the change it records has been made, and a
//! change whose recording fails is undone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use control::server::{PROMETHEUS_TEXT, Reply};
use control::{ApiError, error_chain};

use crate::api::metrics_text;
use crate::api::request::Request;
use crate::api::types::ExportSpec;
use crate::datastore::Datastore;
use crate::vhost_blk::{ExportServer, RESTART_LOCK_WAIT};

mod datastores;
mod exports;
mod volumes;

const STATE_FILE: &str = "blockd-state.json";

/// Where the daemon keeps its state and its sockets.
#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent state (`blockd-state.json`).
    pub data_dir: PathBuf,
    /// Export sockets (`<id>.sock`).
    pub run_dir: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DatastoreEntry {
    name: String,
    path: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    datastores: Vec<DatastoreEntry>,
    #[serde(default)]
    exports: Vec<ExportSpec>,
}

struct Export {
    spec: ExportSpec,
    server: ExportServer,
}

/// sfera-blockd's control object.
pub struct Blockd {
    config: Config,
    datastores: BTreeMap<String, Datastore>,
    exports: BTreeMap<String, Export>,
}

impl std::fmt::Debug for Blockd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blockd")
            .field("config", &self.config)
            .field("datastores", &self.datastores.keys().collect::<Vec<_>>())
            .field("exports", &self.exports.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The state file in `data_dir` (empty when there is none yet).
fn read_state(data_dir: &Path) -> Result<State, ApiError> {
    let path = data_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::internal(format!("State file {} is unreadable: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(ApiError::internal(format!(
            "Cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The paths of the datastores the state file in `data_dir` records,
/// read before the daemon opens them (to hand them to its user).
pub fn datastore_paths(data_dir: &Path) -> Result<Vec<PathBuf>, ApiError> {
    Ok(read_state(data_dir)?
        .datastores
        .into_iter()
        .map(|d| d.path)
        .collect())
}

impl Blockd {
    /// Loads the state file and brings back its datastores and exports.
    /// One that cannot come back is logged and left out of the running set,
    /// but kept in the state file, so fixing its cause and restarting
    /// restores it.
    pub fn open(config: Config) -> Result<Self, ApiError> {
        for dir in [&config.data_dir, &config.run_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| ApiError::internal(format!("Cannot create {}: {e}", dir.display())))?;
        }
        let state = read_state(&config.data_dir)?;
        let mut blockd = Blockd {
            config,
            datastores: BTreeMap::new(),
            exports: BTreeMap::new(),
        };
        for entry in &state.datastores {
            match Datastore::open(&entry.name, &entry.path) {
                Ok(ds) => {
                    blockd.datastores.insert(entry.name.clone(), ds);
                }
                Err(e) => {
                    tracing::error!(datastore = %entry.name, "Cannot open datastore: {}", error_chain(&e));
                }
            }
        }
        for ds in blockd.datastores.values() {
            note_volumes_locked_elsewhere(ds);
        }
        // The blockd this one replaces may have died a moment ago: its
        // files stay locked until the kernel has reaped its I/O. One wait
        // for all, so volumes that another host now exports (their locks
        // never go) delay the start by RESTART_LOCK_WAIT at most.
        let deadline = Instant::now() + RESTART_LOCK_WAIT;
        for spec in &state.exports {
            let lock_wait = deadline.saturating_duration_since(Instant::now());
            match blockd.start_export(spec, lock_wait) {
                Ok(export) => {
                    blockd.exports.insert(spec.id.clone(), export);
                }
                Err(e) => tracing::error!(export = %spec.id, "Cannot restore export: {e}"),
            }
        }
        Ok(blockd)
    }

    fn state(&self) -> State {
        State {
            datastores: self
                .datastores
                .values()
                .map(|d| DatastoreEntry {
                    name: d.name().to_owned(),
                    path: d.path().to_owned(),
                })
                .collect(),
            exports: self.exports.values().map(|e| e.spec.clone()).collect(),
        }
    }

    fn save(&self) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec_pretty(&self.state())
            .map_err(|e| ApiError::internal(format!("Cannot encode state: {e}")))?;
        control::files::write_atomically(&self.config.data_dir.join(STATE_FILE), &bytes)
            .map_err(|e| ApiError::internal(error_chain(&e)))
    }

    fn datastore(&self, name: &str) -> Result<&Datastore, ApiError> {
        self.datastores
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("No datastore {name:?}")))
    }

    fn exported(&self, datastore: &str, volume: &str) -> Option<&ExportSpec> {
        self.exports
            .values()
            .map(|e| &e.spec)
            .find(|s| s.datastore == datastore && s.volume == volume)
    }

    /// The socket of export `id`.
    pub fn socket_path(&self, id: &str) -> PathBuf {
        self.config.run_dir.join(format!("{id}.sock"))
    }

    /// Carries out one request.
    pub fn handle(&mut self, request: Request) -> Result<Reply, ApiError> {
        match request {
            Request::Datastore(r) => self.datastore_request(r),
            Request::Volume(r) => self.volume_request(r),
            Request::Export(r) => self.export_request(r),
            Request::Metrics => Ok(Reply::Text {
                content_type: PROMETHEUS_TEXT,
                body: metrics_text::render(
                    self.exports
                        .values()
                        .map(|e| (e.spec.id.as_str(), e.server.device().metrics())),
                ),
            }),
        }
    }
}

/// Logs the volumes of `ds` that another process holds (another
/// sfera-blockd sharing the datastore, say): this blockd will not write them.
fn note_volumes_locked_elsewhere(ds: &Datastore) {
    match ds.list_volumes() {
        Ok(volumes) => {
            for v in volumes.iter().filter(|v| v.locked_elsewhere) {
                tracing::info!(datastore = %ds.name(), volume = %v.name, "Volume in use by another writer");
            }
        }
        Err(e) => {
            tracing::warn!(datastore = %ds.name(), "Cannot list volumes: {}", error_chain(&e));
        }
    }
}

/// `value` as the JSON of an answer.
fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(e.to_string()))
}
