//! `/v1/exports`: volumes served to VMs, their limits and counters.

use std::time::Duration;

use control::server::Reply;
use control::{ApiError, error_chain};

use super::{Blockd, Export, to_json};
use crate::api::request::ExportRequest;
use crate::api::types::{ExportInfo, ExportSpec, ExportStats, NoSpace, Qos};
use crate::backing::BackingError;
use crate::datastore::validate_component;
use crate::vhost_blk::broken::RingFault;
use crate::vhost_blk::request::Fault;
use crate::vhost_blk::{BlkDevice, DeviceError, ExportOptions, ExportServer};

impl Blockd {
    pub(super) fn export_request(&mut self, request: ExportRequest) -> Result<Reply, ApiError> {
        match request {
            ExportRequest::List => {
                let list: Vec<ExportInfo> = self.exports.values().map(export_info).collect();
                Ok(Reply::Json(to_json(&list)?))
            }
            ExportRequest::Create(spec) => self.create_export(spec),
            ExportRequest::Get { id } => Ok(Reply::Json(to_json(&export_info(self.export(&id)?))?)),
            ExportRequest::Delete { id } => self.delete_export(id),
            ExportRequest::SetQos { id, qos } => self.set_qos(&id, qos),
        }
    }

    fn export(&self, id: &str) -> Result<&Export, ApiError> {
        self.exports
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("No export {id:?}")))
    }

    /// Opens and serves the export of `spec`, waiting up to `lock_wait`
    /// for another holder of the volume to let go.
    pub(super) fn start_export(
        &self,
        spec: &ExportSpec,
        lock_wait: Duration,
    ) -> Result<Export, ApiError> {
        validate_component(&spec.id).map_err(|e| ApiError::invalid(error_chain(&e)))?;
        spec.qos.validate()?;
        let datastore = self.datastore(&spec.datastore)?;
        let volume = datastore.volume(&spec.volume)?;
        let options = ExportOptions {
            num_queues: spec.queues,
            read_only: spec.read_only,
            blk_size: 512,
            serial: spec.id.clone(),
            poll_us: spec.poll_us,
            cpus: spec.cpus.clone(),
            lock_wait,
        };
        if spec.poll_us > 10_000 {
            return Err(ApiError::invalid(format!(
                "poll_us {} is above the 10000 µs maximum",
                spec.poll_us
            )));
        }
        let device = BlkDevice::new(&volume.path, &options).map_err(|e| match e {
            // Another blockd (perhaps on another host sharing the datastore)
            // has it: said in the volume's terms, as a conflict.
            DeviceError::Backing(BackingError::Locked { holder, .. }) => {
                datastore.locked(&spec.volume, holder, "exported").into()
            }
            e => ApiError::from(e),
        })?;
        device.set_qos(spec.qos);
        let socket = self.socket_path(&spec.id);
        let server = ExportServer::start(device, &socket)?;
        Ok(Export {
            spec: spec.clone(),
            server,
        })
    }

    fn create_export(&mut self, spec: ExportSpec) -> Result<Reply, ApiError> {
        if self.exports.contains_key(&spec.id) {
            return Err(ApiError::conflict(format!("Export {:?} exists", spec.id)));
        }
        if let Some(other) = self.exported(&spec.datastore, &spec.volume) {
            return Err(ApiError::conflict(format!(
                "Volume {:?} is already exported as {:?}",
                spec.volume, other.id
            )));
        }
        // Answered at once: a volume another writer holds is a conflict now.
        let export = self.start_export(&spec, Duration::ZERO)?;
        let info = export_info(&export);
        self.exports.insert(spec.id.clone(), export);
        if let Err(e) = self.save() {
            if let Some(export) = self.exports.remove(&spec.id) {
                export.server.stop();
            }
            return Err(e);
        }
        Ok(Reply::Created(to_json(&info)?))
    }

    fn delete_export(&mut self, id: String) -> Result<Reply, ApiError> {
        let export = self
            .exports
            .remove(&id)
            .ok_or_else(|| ApiError::not_found(format!("No export {id:?}")))?;
        if let Err(e) = self.save() {
            self.exports.insert(id, export);
            return Err(e);
        }
        export.server.stop();
        Ok(Reply::Empty)
    }

    fn set_qos(&mut self, id: &str, qos: Qos) -> Result<Reply, ApiError> {
        qos.validate()?;
        let export = self
            .exports
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("No export {id:?}")))?;
        let old = export.spec.qos;
        export.spec.qos = qos;
        if let Err(e) = self.save() {
            if let Some(export) = self.exports.get_mut(id) {
                export.spec.qos = old;
            }
            return Err(e);
        }
        let export = self.export(id)?;
        export.server.device().set_qos(qos);
        Ok(Reply::Json(to_json(&export_info(export))?))
    }
}

/// An export as the API shows it: its spec, socket and counters.
fn export_info(export: &Export) -> ExportInfo {
    let spec = &export.spec;
    ExportInfo {
        id: spec.id.clone(),
        datastore: spec.datastore.clone(),
        volume: spec.volume.clone(),
        read_only: spec.read_only,
        queues: spec.queues,
        poll_us: spec.poll_us,
        cpus: spec.cpus.clone(),
        qos: spec.qos,
        socket: export.server.socket().to_owned(),
        stats: export_stats(export.server.device()),
    }
}

fn export_stats(device: &BlkDevice) -> ExportStats {
    let m = device.metrics();
    ExportStats {
        reads: m.reads,
        writes: m.writes,
        flushes: m.flushes,
        discards: m.discards,
        write_zeroes: m.write_zeroes,
        read_bytes: m.read_bytes,
        write_bytes: m.write_bytes,
        io_errors: m.io_errors,
        in_flight: m.in_flight,
        throttled: m.throttled,
        write_back_error: device.write_back_failed(),
        no_space: NoSpace {
            held: m.no_space_held,
            since: m.no_space_since,
            holds: m.no_space_holds,
            retries: m.no_space_retries,
        },
        refused: Fault::ALL
            .iter()
            .map(|f| (f.reason().to_owned(), m.fault(*f)))
            .collect(),
        broken_queues: RingFault::ALL
            .iter()
            .map(|f| (f.reason().to_owned(), m.broken(*f)))
            .collect(),
    }
}
