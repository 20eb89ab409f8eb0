//! `/v1/datastores/{ds}/volumes`: volumes, refused while exported where
//! a change would pull the disk from under a VM.

use control::ApiError;
use control::server::Reply;

use super::{Blockd, to_json};
use crate::api::request::VolumeRequest;

impl Blockd {
    pub(super) fn volume_request(&mut self, request: VolumeRequest) -> Result<Reply, ApiError> {
        match request {
            VolumeRequest::List { datastore } => Ok(Reply::Json(to_json(
                &self.datastore(&datastore)?.list_volumes()?,
            )?)),
            VolumeRequest::Create { datastore, body } => Ok(Reply::Created(to_json(
                &self
                    .datastore(&datastore)?
                    .create_volume(&body.name, body.size)?,
            )?)),
            VolumeRequest::Get { datastore, name } => Ok(Reply::Json(to_json(
                &self.datastore(&datastore)?.volume(&name)?,
            )?)),
            VolumeRequest::Resize {
                datastore,
                name,
                body,
            } => self.resize_volume(&datastore, &name, body.size),
            VolumeRequest::Delete { datastore, name } => self.delete_volume(&datastore, &name),
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
