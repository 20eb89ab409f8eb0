//! The typed control requests of sfera-blockd and the errors they end in.
//! The HTTP layer only turns HTTP into these and back; the bodies and
//! answers are in [`super::types`].

use control::files::WriteError;
use control::{ApiError, error_chain};

use super::types::{AddDatastore, CreateVolume, ExportSpec, Qos, ResizeVolume};
use crate::datastore::DatastoreError;
use crate::vhost_blk::DeviceError;

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
            return Err(ApiError::invalid("qos.iops_burst needs qos.iops"));
        }
        if self.bytes_per_sec.is_none() && self.bytes_burst.is_some() {
            return Err(ApiError::invalid("qos.bytes_burst needs qos.bytes_per_sec"));
        }
        Ok(())
    }
}

/// What the control API can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Datastore(DatastoreRequest),
    Volume(VolumeRequest),
    Export(ExportRequest),
    /// `GET /metrics`.
    Metrics,
}

/// Requests on `/v1/datastores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreRequest {
    List,
    Add(AddDatastore),
    Get { name: String },
    Remove { name: String },
}

/// Requests on `/v1/datastores/{ds}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeRequest {
    List {
        datastore: String,
    },
    Create {
        datastore: String,
        body: CreateVolume,
    },
    Get {
        datastore: String,
        name: String,
    },
    Resize {
        datastore: String,
        name: String,
        body: ResizeVolume,
    },
    Delete {
        datastore: String,
        name: String,
    },
}

/// Requests on `/v1/exports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportRequest {
    List,
    Create(ExportSpec),
    Get { id: String },
    Delete { id: String },
    SetQos { id: String, qos: Qos },
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
            | DatastoreError::DeviceDatastore { .. }
            | DatastoreError::VolumeLocked { .. } => ApiError::conflict(message),
            DatastoreError::Io { ref source, .. }
            | DatastoreError::Write(WriteError { ref source, .. })
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
            DatastoreError::BadMetadata { .. }
            | DatastoreError::Io { .. }
            | DatastoreError::Write(_) => ApiError::internal(message),
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

#[cfg(test)]
mod tests {
    use super::*;

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
