//! What mgmtd asks of sfera-blockd, over its API: datastores, volumes and
//! the vhost-user-blk exports VM disks are served from.

use std::path::PathBuf;

use hyper::Method;
use serde_json::json;

use crate::db::DatastoreRow;
use crate::db::now;
use control::client::{CallError, UnixApi};

/// sfera-blockd's API.
#[derive(Debug, Clone)]
pub struct Blockd {
    pub api: UnixApi,
}

pub use control::path::encode_segment;

impl Blockd {
    pub async fn datastores(&self) -> Result<Vec<DatastoreRow>, CallError> {
        let list = self.api.get("/v1/datastores").await?;
        let t = now();
        Ok(list
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|d| DatastoreRow {
                name: d["name"].as_str().unwrap_or_default().to_owned(),
                path: d["path"].as_str().unwrap_or_default().to_owned(),
                capacity_bytes: d["capacity"].as_u64(),
                free_bytes: d["free"].as_u64(),
                volumes: d["volumes"].as_u64(),
                updated_at: t,
            })
            .collect())
    }

    pub async fn add_datastore(
        &self,
        name: &str,
        path: &str,
    ) -> Result<serde_json::Value, CallError> {
        self.api
            .call(
                Method::POST,
                "/v1/datastores",
                Some(&json!({ "name": name, "path": path })),
            )
            .await
    }

    pub async fn volumes(&self, datastore: &str) -> Result<serde_json::Value, CallError> {
        self.api
            .get(&format!(
                "/v1/datastores/{}/volumes",
                encode_segment(datastore)
            ))
            .await
    }

    pub async fn create_volume(
        &self,
        datastore: &str,
        name: &str,
        size: u64,
    ) -> Result<serde_json::Value, CallError> {
        self.api
            .call(
                Method::POST,
                &format!("/v1/datastores/{}/volumes", encode_segment(datastore)),
                Some(&json!({ "name": name, "size": size })),
            )
            .await
    }

    pub async fn delete_volume(&self, datastore: &str, name: &str) -> Result<(), CallError> {
        self.api
            .call(
                Method::DELETE,
                &format!(
                    "/v1/datastores/{}/volumes/{}",
                    encode_segment(datastore),
                    encode_segment(name)
                ),
                None,
            )
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
    ) -> Result<serde_json::Value, CallError> {
        self.api
            .call(
                Method::PATCH,
                &format!(
                    "/v1/datastores/{}/volumes/{}",
                    encode_segment(datastore),
                    encode_segment(name)
                ),
                Some(&json!({ "size": size })),
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

    /// Exports a volume; returns its vhost-user-blk socket.
    pub async fn create_export(
        &self,
        id: &str,
        datastore: &str,
        volume: &str,
    ) -> Result<PathBuf, CallError> {
        let v = self
            .api
            .call(
                Method::POST,
                "/v1/exports",
                Some(&json!({ "id": id, "datastore": datastore, "volume": volume })),
            )
            .await?;
        Ok(PathBuf::from(v["socket"].as_str().unwrap_or_default()))
    }

    /// The socket of an existing export.
    pub async fn export_socket(&self, id: &str) -> Result<PathBuf, CallError> {
        let v = self
            .api
            .get(&format!("/v1/exports/{}", encode_segment(id)))
            .await?;
        Ok(PathBuf::from(v["socket"].as_str().unwrap_or_default()))
    }

    pub async fn delete_export(&self, id: &str) -> Result<(), CallError> {
        self.api
            .call(
                Method::DELETE,
                &format!("/v1/exports/{}", encode_segment(id)),
                None,
            )
            .await
            .map(drop)
    }

    /// The requests each export holds because its datastore is out of
    /// space (`stats.no_space.held`), by export id.
    pub async fn held_for_space(
        &self,
    ) -> Result<std::collections::HashMap<String, u64>, CallError> {
        let list = self.api.get("/v1/exports").await?;
        Ok(list
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let id = e["id"].as_str()?;
                Some((id.to_owned(), e["stats"]["no_space"]["held"].as_u64()?))
            })
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
