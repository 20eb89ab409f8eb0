//! The typed control requests of sfera-blockd, their answers and errors.
//! The HTTP layer only turns HTTP into these and back.

use serde::{Deserialize, Serialize};

use crate::datastore::DatastoreError;
use crate::vhost_blk::DeviceError;

/// Per-export limits. A missing limit is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qos {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u64>,
    /// Requests that may pass at once above the rate (default: one second's
    /// worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops_burst: Option<u64>,
    /// Bytes per second (reads and writes together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_sec: Option<u64>,
    /// Bytes that may pass at once above the rate (default: one second's
    /// worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_burst: Option<u64>,
}

impl Qos {
    /// Checks that limits are positive where given.
    pub fn validate(&self) -> Result<(), ApiError> {
        for (name, v) in [
            ("iops", self.iops),
            ("iops_burst", self.iops_burst),
            ("bytes_per_sec", self.bytes_per_sec),
            ("bytes_burst", self.bytes_burst),
        ] {
            if v == Some(0) {
                return Err(ApiError::invalid(format!(
                    "qos.{name} must be positive when given"
                )));
            }
        }
        if self.iops.is_none() && self.iops_burst.is_some() {
            return Err(ApiError::invalid(
                "qos.iops_burst needs qos.iops".to_owned(),
            ));
        }
        if self.bytes_per_sec.is_none() && self.bytes_burst.is_some() {
            return Err(ApiError::invalid(
                "qos.bytes_burst needs qos.bytes_per_sec".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Body of `POST /v1/datastores`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDatastore {
    pub name: String,
    pub path: String,
}

/// Body of `POST /v1/datastores/{ds}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    pub size: u64,
}

/// Body of `PATCH /v1/datastores/{ds}/volumes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    pub size: u64,
}

/// An export: which volume, how, and its limits. Body of `POST /v1/exports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// Names the export and its socket (`<run-dir>/<id>.sock`).
    pub id: String,
    pub datastore: String,
    pub volume: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default = "one")]
    pub queues: u16,
    #[serde(default)]
    pub qos: Qos,
    /// Busy-poll budget in µs after each event (0: sleep on eventfds only).
    #[serde(default = "default_poll_us")]
    pub poll_us: u32,
    /// CPUs to pin queue threads to; empty: not pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<usize>,
}

fn one() -> u16 {
    1
}

/// The default busy-poll budget: long enough to catch the next request of
/// a busy queue without a wake-up, short enough to cost little when idle.
pub const DEFAULT_POLL_US: u32 = 50;

fn default_poll_us() -> u32 {
    DEFAULT_POLL_US
}

/// What the control API can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ListDatastores,
    AddDatastore(AddDatastore),
    GetDatastore {
        name: String,
    },
    RemoveDatastore {
        name: String,
    },
    ListVolumes {
        datastore: String,
    },
    CreateVolume {
        datastore: String,
        body: CreateVolume,
    },
    GetVolume {
        datastore: String,
        name: String,
    },
    ResizeVolume {
        datastore: String,
        name: String,
        body: ResizeVolume,
    },
    DeleteVolume {
        datastore: String,
        name: String,
    },
    ListExports,
    CreateExport(ExportSpec),
    GetExport {
        id: String,
    },
    DeleteExport {
        id: String,
    },
    SetQos {
        id: String,
        qos: Qos,
    },
    Metrics,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// JSON with status 200, or 201 when `created`.
    Json {
        created: bool,
        body: serde_json::Value,
    },
    /// Nothing (204).
    Empty,
    /// Prometheus text exposition.
    Metrics(String),
}

/// A refused or failed request: HTTP status, a stable code, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: String) -> Self {
        ApiError {
            status: 400,
            code: "invalid_request",
            message,
        }
    }

    pub fn not_found(message: String) -> Self {
        ApiError {
            status: 404,
            code: "not_found",
            message,
        }
    }

    pub fn conflict(message: String) -> Self {
        ApiError {
            status: 409,
            code: "conflict",
            message,
        }
    }

    pub fn internal(message: String) -> Self {
        ApiError {
            status: 500,
            code: "internal",
            message,
        }
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<DatastoreError> for ApiError {
    fn from(e: DatastoreError) -> Self {
        let message = error_chain(&e);
        match e {
            DatastoreError::InvalidName { .. }
            | DatastoreError::InvalidSize { .. }
            | DatastoreError::NotADatastore { .. }
            | DatastoreError::Shrink { .. } => ApiError::invalid(message),
            DatastoreError::VolumeNotFound { .. } => ApiError::not_found(message),
            DatastoreError::VolumeExists { .. }
            | DatastoreError::ClaimedByOther { .. }
            | DatastoreError::DeviceDatastore { .. } => ApiError::conflict(message),
            DatastoreError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                ApiError::invalid(message)
            }
            // A size beyond what the datastore's filesystem can hold in
            // one file (EFBIG): the request's size is wrong for it.
            DatastoreError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::FileTooLarge =>
            {
                ApiError::invalid(message)
            }
            DatastoreError::BadMetadata { .. } | DatastoreError::Io { .. } => {
                ApiError::internal(message)
            }
        }
    }
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        let message = error_chain(&e);
        match e {
            DeviceError::Queues(_) | DeviceError::BlockSize(_) => ApiError::invalid(message),
            _ => ApiError::internal(message),
        }
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_spec_defaults_and_unknown_fields() {
        let spec: ExportSpec =
            serde_json::from_str(r#"{"id":"e","datastore":"d","volume":"v"}"#).unwrap();
        assert_eq!(spec.queues, 1);
        assert!(!spec.read_only);
        assert_eq!(spec.qos, Qos::default());
        assert!(
            serde_json::from_str::<ExportSpec>(r#"{"id":"e","datastore":"d","volume":"v","x":1}"#)
                .is_err()
        );
    }

    #[test]
    fn qos_validation() {
        assert!(
            Qos {
                iops: Some(0),
                ..Qos::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Qos {
                iops_burst: Some(5),
                ..Qos::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Qos {
                iops: Some(100),
                iops_burst: Some(5),
                ..Qos::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        let e: ApiError = DatastoreError::VolumeNotFound {
            datastore: "d".into(),
            name: "v".into(),
        }
        .into();
        assert_eq!((e.status, e.code), (404, "not_found"));
        let e: ApiError = DatastoreError::InvalidSize { size: 3, why: "x" }.into();
        assert_eq!(e.status, 400);
        assert_eq!(e.body()["error"]["code"], "invalid_request");
        let io = |kind| -> ApiError {
            DatastoreError::Io {
                what: "Cannot size volume data",
                path: "v.img".into(),
                source: std::io::Error::from(kind),
            }
            .into()
        };
        assert_eq!(io(std::io::ErrorKind::FileTooLarge).status, 400);
        assert_eq!(io(std::io::ErrorKind::PermissionDenied).status, 500);
    }
}
