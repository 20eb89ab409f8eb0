//! `/v1/datastores`: registering, showing and unregistering datastores.

use std::path::Path;

use control::ApiError;
use control::server::Reply;

use super::{Blockd, to_json};
use crate::api::request::DatastoreRequest;
use crate::api::types::{AddDatastore, DatastoreInfo};
use crate::datastore::Datastore;

impl Blockd {
    pub(super) fn datastore_request(
        &mut self,
        request: DatastoreRequest,
    ) -> Result<Reply, ApiError> {
        match request {
            DatastoreRequest::List => self.list_datastores(),
            DatastoreRequest::Add(body) => self.add_datastore(body),
            DatastoreRequest::Get { name } => {
                Ok(Reply::Json(to_json(&self.datastore(&name)?.info()?)?))
            }
            DatastoreRequest::Remove { name } => self.remove_datastore(name),
        }
    }

    fn list_datastores(&self) -> Result<Reply, ApiError> {
        let list = self
            .datastores
            .values()
            .map(|d| d.info().map_err(ApiError::from))
            .collect::<Result<Vec<DatastoreInfo>, _>>()?;
        Ok(Reply::Json(to_json(&list)?))
    }

    fn add_datastore(&mut self, body: AddDatastore) -> Result<Reply, ApiError> {
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
        Ok(Reply::Created(to_json(&info)?))
    }

    fn remove_datastore(&mut self, name: String) -> Result<Reply, ApiError> {
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
        Ok(Reply::Empty)
    }
}
