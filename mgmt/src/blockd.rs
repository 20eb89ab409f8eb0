//! What mgmtd asks of sfera-blockd, over its API: datastores, volumes and
//! the vhost-user-blk exports VM disks are served from.

use std::collections::HashMap;
use std::path::PathBuf;

use blockstore::api::types::{
    AddDatastore, CreateVolume, DatastoreInfo, ExportInfo, ExportSpec, ResizeVolume, VolumeInfo,
};
use hyper::Method;
use serde::Serialize;

use crate::db::DatastoreRow;
use crate::db::now;
use control::client::{CallError, UnixApi};

/// sfera-blockd's API.
#[derive(Debug, Clone)]
pub struct Blockd {
    pub api: UnixApi,
}

pub use control::path::encode_segment;

/// A body as the client sends it.
pub(crate) fn body<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("a request body serialises")
}

fn volumes_path(datastore: &str) -> String {
    format!("/v1/datastores/{}/volumes", encode_segment(datastore))
}

fn volume_path(datastore: &str, name: &str) -> String {
    format!("{}/{}", volumes_path(datastore), encode_segment(name))
}

fn export_path(id: &str) -> String {
    format!("/v1/exports/{}", encode_segment(id))
}

impl Blockd {
    pub async fn datastores(&self) -> Result<Vec<DatastoreRow>, CallError> {
        let list: Vec<DatastoreInfo> = self.api.get_as("/v1/datastores").await?;
        let t = now();
        Ok(list
            .into_iter()
            .map(|d| DatastoreRow {
                name: d.name,
                path: d.path.display().to_string(),
                capacity_bytes: Some(d.capacity),
                free_bytes: Some(d.free),
                volumes: u64::try_from(d.volumes).ok(),
                updated_at: t,
            })
            .collect())
    }

    pub async fn datastore(&self, name: &str) -> Result<DatastoreInfo, CallError> {
        self.api
            .get_as(&format!("/v1/datastores/{}", encode_segment(name)))
            .await
    }

    pub async fn add_datastore(&self, name: &str, path: &str) -> Result<DatastoreInfo, CallError> {
        let request = AddDatastore {
            name: name.to_owned(),
            path: path.to_owned(),
        };
        self.api
            .call_as(Method::POST, "/v1/datastores", Some(&body(&request)))
            .await
    }

    pub async fn volumes(&self, datastore: &str) -> Result<Vec<VolumeInfo>, CallError> {
        self.api.get_as(&volumes_path(datastore)).await
    }

    pub async fn create_volume(
        &self,
        datastore: &str,
        name: &str,
        size: u64,
    ) -> Result<VolumeInfo, CallError> {
        let request = CreateVolume {
            name: name.to_owned(),
            size,
        };
        self.api
            .call_as(
                Method::POST,
                &volumes_path(datastore),
                Some(&body(&request)),
            )
            .await
    }

    pub async fn delete_volume(&self, datastore: &str, name: &str) -> Result<(), CallError> {
        self.api
            .call(Method::DELETE, &volume_path(datastore, name), None)
            .await
            .map(drop)
    }

    /// Grows a volume (sfera-blockd refuses while it is exported, and to
    /// shrink it).
    pub async fn resize_volume(
        &self,
        datastore: &str,
        name: &str,
        size: u64,
    ) -> Result<VolumeInfo, CallError> {
        let request = ResizeVolume { size };
        self.api
            .call_as(
                Method::PATCH,
                &volume_path(datastore, name),
                Some(&body(&request)),
            )
            .await
    }

    /// Unregisters a datastore (its files stay).
    pub async fn remove_datastore(&self, name: &str) -> Result<(), CallError> {
        self.api
            .call(
                Method::DELETE,
                &format!("/v1/datastores/{}", encode_segment(name)),
                None,
            )
            .await
            .map(drop)
    }

    /// Exports a volume with sfera-blockd's defaults; returns its
    /// vhost-user-blk socket.
    pub async fn create_export(
        &self,
        id: &str,
        datastore: &str,
        volume: &str,
    ) -> Result<PathBuf, CallError> {
        // The defaults are the JSON's: the spec is read as blockd reads
        // a body that names only these three.
        let request: ExportSpec = serde_json::from_value(serde_json::json!({
            "id": id, "datastore": datastore, "volume": volume
        }))
        .expect("an export of three names is a valid spec");
        let export: ExportInfo = self
            .api
            .call_as(Method::POST, "/v1/exports", Some(&body(&request)))
            .await?;
        Ok(export.socket)
    }

    /// The socket of an existing export.
    pub async fn export_socket(&self, id: &str) -> Result<PathBuf, CallError> {
        let export: ExportInfo = self.api.get_as(&export_path(id)).await?;
        Ok(export.socket)
    }

    pub async fn delete_export(&self, id: &str) -> Result<(), CallError> {
        self.api
            .call(Method::DELETE, &export_path(id), None)
            .await
            .map(drop)
    }

    /// The requests each export holds because its datastore is out of
    /// space (`stats.no_space.held`), by export id.
    pub async fn held_for_space(&self) -> Result<HashMap<String, u64>, CallError> {
        let list: Vec<ExportInfo> = self.api.get_as("/v1/exports").await?;
        Ok(list
            .into_iter()
            .map(|e| (e.id, e.stats.no_space.held))
            .collect())
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> Result<String, CallError> {
        let (_, body) = self.api.raw(Method::GET, "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(encode_segment("vm1/disk0"), "vm1%2Fdisk0");
        assert_eq!(encode_segment("a b"), "a%20b");
        assert_eq!(encode_segment("ok-1_2.3"), "ok-1_2.3");
    }
}
