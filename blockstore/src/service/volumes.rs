//! `/v1/datastores/{ds}/volumes`: volumes, refused while exported where
//! a change would pull the disk from under a VM, by this blockd (its
//! exports) or by another sharing the datastore (the volume's lock).

use control::ApiError;
use control::server::Reply;

use super::{Blockd, to_json};
use crate::api::request::VolumeRequest;
use crate::api::types::VolumeInfo;

impl Blockd {
    pub(super) fn volume_request(&mut self, request: VolumeRequest) -> Result<Reply, ApiError> {
        match request {
            VolumeRequest::List { datastore } => {
                let mut list = self.datastore(&datastore)?.list_volumes()?;
                for v in &mut list {
                    self.own_lock_is_not_elsewhere(v);
                }
                Ok(Reply::Json(to_json(&list)?))
            }
            VolumeRequest::Create { datastore, body } => Ok(Reply::Created(to_json(
                &self
                    .datastore(&datastore)?
                    .create_volume(&body.name, body.size)?,
            )?)),
            VolumeRequest::Get { datastore, name } => {
                let mut volume = self.datastore(&datastore)?.volume(&name)?;
                self.own_lock_is_not_elsewhere(&mut volume);
                Ok(Reply::Json(to_json(&volume)?))
            }
            VolumeRequest::Resize {
                datastore,
                name,
                body,
            } => self.resize_volume(&datastore, &name, body.size),
            VolumeRequest::Delete { datastore, name } => self.delete_volume(&datastore, &name),
        }
    }

    /// The lock on a volume this blockd exports is its own: the file's
    /// lock cannot tell one open of it in this process from another's.
    fn own_lock_is_not_elsewhere(&self, volume: &mut VolumeInfo) {
        if self.exported(&volume.datastore, &volume.name).is_some() {
            volume.locked_elsewhere = false;
        }
    }

    fn resize_volume(&self, datastore: &str, name: &str, size: u64) -> Result<Reply, ApiError> {
        if let Some(spec) = self.exported(datastore, name) {
            return Err(ApiError::conflict(format!(
                "Volume {name:?} is exported as {:?}; delete the export to resize it",
                spec.id
            )));
        }
        let info = self.datastore(datastore)?.resize_volume(name, size)?;
        Ok(Reply::Json(to_json(&info)?))
    }

    fn delete_volume(&self, datastore: &str, name: &str) -> Result<Reply, ApiError> {
        if let Some(spec) = self.exported(datastore, name) {
            return Err(ApiError::conflict(format!(
                "Volume {name:?} is exported as {:?}; delete the export first",
                spec.id
            )));
        }
        self.datastore(datastore)?.delete_volume(name)?;
        Ok(Reply::Empty)
    }
}
