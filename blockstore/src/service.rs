//! The daemon's control object: registered datastores, running exports, and
//! the state file that brings both back after a restart.
//!
//! Every request either succeeds completely or changes nothing: the state
//! file is rewritten only after the change it records has been made, and a
//! change whose recording fails is undone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::metrics_text;
use crate::api::request::{ApiError, ExportSpec, Request, Response, error_chain};
use crate::datastore::{self, Datastore};
use crate::vhost_blk::{BlkDevice, ExportOptions, ExportServer};

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
        for spec in &state.exports {
            match blockd.start_export(spec) {
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
        datastore::write_atomically(&self.config.data_dir.join(STATE_FILE), &bytes)
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

    fn start_export(&self, spec: &ExportSpec) -> Result<Export, ApiError> {
        datastore::validate_component(&spec.id).map_err(|e| ApiError::invalid(error_chain(&e)))?;
        spec.qos.validate()?;
        let volume = self.datastore(&spec.datastore)?.volume(&spec.volume)?;
        let options = ExportOptions {
            num_queues: spec.queues,
            read_only: spec.read_only,
            blk_size: 512,
            serial: spec.id.clone(),
            poll_us: spec.poll_us,
            cpus: spec.cpus.clone(),
        };
        if spec.poll_us > 10_000 {
            return Err(ApiError::invalid(format!(
                "poll_us {} is above the 10000 µs maximum",
                spec.poll_us
            )));
        }
        let device = BlkDevice::new(&volume.path, &options)?;
        device.set_qos(spec.qos);
        let socket = self.socket_path(&spec.id);
        let server = ExportServer::start(device, &socket)?;
        Ok(Export {
            spec: spec.clone(),
            server,
        })
    }

    /// The socket of export `id`.
    pub fn socket_path(&self, id: &str) -> PathBuf {
        self.config.run_dir.join(format!("{id}.sock"))
    }

    fn export_json(&self, export: &Export) -> serde_json::Value {
        let device = export.server.device();
        let m = device.metrics();
        serde_json::json!({
            "id": export.spec.id,
            "datastore": export.spec.datastore,
            "volume": export.spec.volume,
            "read_only": export.spec.read_only,
            "queues": export.spec.queues,
            "poll_us": export.spec.poll_us,
            "cpus": export.spec.cpus,
            "qos": export.spec.qos,
            "socket": export.server.socket(),
            "stats": {
                "reads": m.reads, "writes": m.writes, "flushes": m.flushes,
                "discards": m.discards, "write_zeroes": m.write_zeroes,
                "read_bytes": m.read_bytes, "write_bytes": m.write_bytes,
                "io_errors": m.io_errors, "in_flight": m.in_flight,
                "throttled": m.throttled,
                "write_back_error": device.write_back_failed(),
                // Writes waiting for space on the datastore (held, retried
                // every second), and since when (seconds since the epoch).
                "no_space": {
                    "held": m.no_space_held,
                    "since": m.no_space_since,
                    "holds": m.no_space_holds,
                    "retries": m.no_space_retries,
                },
                "refused": crate::vhost_blk::request::Fault::ALL
                    .iter()
                    .map(|f| (f.reason().to_owned(), serde_json::json!(m.fault(*f))))
                    .collect::<serde_json::Map<_, _>>(),
                "broken_queues": crate::vhost_blk::broken::RingFault::ALL
                    .iter()
                    .map(|f| (f.reason().to_owned(), serde_json::json!(m.broken(*f))))
                    .collect::<serde_json::Map<_, _>>(),
            },
        })
    }

    /// Carries out one request.
    pub fn handle(&mut self, request: Request) -> Result<Response, ApiError> {
        let json = |v: serde_json::Value| {
            Ok(Response::Json {
                created: false,
                body: v,
            })
        };
        let created = |v: serde_json::Value| {
            Ok(Response::Json {
                created: true,
                body: v,
            })
        };
        match request {
            Request::ListDatastores => {
                let list = self
                    .datastores
                    .values()
                    .map(|d| d.info().map_err(ApiError::from))
                    .collect::<Result<Vec<_>, _>>()?;
                json(to_json(&list)?)
            }
            Request::AddDatastore(body) => {
                if self.datastores.contains_key(&body.name) {
                    return Err(ApiError::conflict(format!(
                        "Datastore {:?} exists",
                        body.name
                    )));
                }
                let path = Path::new(&body.path);
                if !path.is_absolute() {
                    return Err(ApiError::invalid(format!(
                        "Path {:?} must be absolute",
                        body.path
                    )));
                }
                if let Some(other) = self.datastores.values().find(|d| d.path() == path) {
                    return Err(ApiError::conflict(format!(
                        "{} is already datastore {:?}",
                        body.path,
                        other.name()
                    )));
                }
                let ds = Datastore::open(&body.name, path)?;
                let info = ds.info()?;
                self.datastores.insert(body.name.clone(), ds);
                if let Err(e) = self.save() {
                    self.datastores.remove(&body.name);
                    return Err(e);
                }
                created(to_json(&info)?)
            }
            Request::GetDatastore { name } => json(to_json(&self.datastore(&name)?.info()?)?),
            Request::RemoveDatastore { name } => {
                self.datastore(&name)?;
                if let Some(e) = self.exports.values().find(|e| e.spec.datastore == name) {
                    return Err(ApiError::conflict(format!(
                        "Datastore {name:?} has export {:?}; delete it first",
                        e.spec.id
                    )));
                }
                let removed = self.datastores.remove(&name);
                if let Err(e) = self.save() {
                    if let Some(ds) = removed {
                        self.datastores.insert(name, ds);
                    }
                    return Err(e);
                }
                Ok(Response::Empty)
            }
            Request::ListVolumes { datastore } => {
                json(to_json(&self.datastore(&datastore)?.list_volumes()?)?)
            }
            Request::CreateVolume { datastore, body } => created(to_json(
                &self
                    .datastore(&datastore)?
                    .create_volume(&body.name, body.size)?,
            )?),
            Request::GetVolume { datastore, name } => {
                json(to_json(&self.datastore(&datastore)?.volume(&name)?)?)
            }
            Request::ResizeVolume {
                datastore,
                name,
                body,
            } => {
                if let Some(spec) = self.exported(&datastore, &name) {
                    return Err(ApiError::conflict(format!(
                        "Volume {name:?} is exported as {:?}; delete the export to resize it",
                        spec.id
                    )));
                }
                json(to_json(
                    &self
                        .datastore(&datastore)?
                        .resize_volume(&name, body.size)?,
                )?)
            }
            Request::DeleteVolume { datastore, name } => {
                if let Some(spec) = self.exported(&datastore, &name) {
                    return Err(ApiError::conflict(format!(
                        "Volume {name:?} is exported as {:?}; delete the export first",
                        spec.id
                    )));
                }
                self.datastore(&datastore)?.delete_volume(&name)?;
                Ok(Response::Empty)
            }
            Request::ListExports => {
                let list: Vec<_> = self.exports.values().map(|e| self.export_json(e)).collect();
                json(serde_json::Value::Array(list))
            }
            Request::CreateExport(spec) => {
                if self.exports.contains_key(&spec.id) {
                    return Err(ApiError::conflict(format!("Export {:?} exists", spec.id)));
                }
                if let Some(other) = self.exported(&spec.datastore, &spec.volume) {
                    return Err(ApiError::conflict(format!(
                        "Volume {:?} is already exported as {:?}",
                        spec.volume, other.id
                    )));
                }
                let export = self.start_export(&spec)?;
                let id = spec.id.clone();
                self.exports.insert(id.clone(), export);
                if let Err(e) = self.save() {
                    if let Some(export) = self.exports.remove(&id) {
                        export.server.stop();
                    }
                    return Err(e);
                }
                let body = self.exports.get(&id).map(|e| self.export_json(e));
                created(body.unwrap_or_default())
            }
            Request::GetExport { id } => {
                let export = self
                    .exports
                    .get(&id)
                    .ok_or_else(|| ApiError::not_found(format!("No export {id:?}")))?;
                json(self.export_json(export))
            }
            Request::DeleteExport { id } => {
                let export = self
                    .exports
                    .remove(&id)
                    .ok_or_else(|| ApiError::not_found(format!("No export {id:?}")))?;
                if let Err(e) = self.save() {
                    self.exports.insert(id, export);
                    return Err(e);
                }
                export.server.stop();
                Ok(Response::Empty)
            }
            Request::SetQos { id, qos } => {
                qos.validate()?;
                let export = self
                    .exports
                    .get_mut(&id)
                    .ok_or_else(|| ApiError::not_found(format!("No export {id:?}")))?;
                let old = export.spec.qos;
                export.spec.qos = qos;
                if let Err(e) = self.save() {
                    if let Some(export) = self.exports.get_mut(&id) {
                        export.spec.qos = old;
                    }
                    return Err(e);
                }
                let export = &self.exports[&id];
                export.server.device().set_qos(qos);
                json(self.export_json(export))
            }
            Request::Metrics => Ok(Response::Metrics(metrics_text::render(
                self.exports
                    .values()
                    .map(|e| (e.spec.id.as_str(), e.server.device().metrics())),
            ))),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(e.to_string()))
}
