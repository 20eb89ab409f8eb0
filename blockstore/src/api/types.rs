//! The contract of sfera-blockd's API: every request body it reads and
//! every answer it sends, as serde types, so that a client (sfera-mgmtd)
//! compiles against the same types the daemon answers with. The JSON on
//! the wire is these types' serde form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Per-export limits. A missing limit is no limit. Body of
/// `PUT /v1/exports/{id}/qos`, and part of an export.
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

/// Body of `POST /v1/datastores`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDatastore {
    pub name: String,
    pub path: String,
}

/// Body of `POST /v1/datastores/{ds}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    pub size: u64,
}

/// Body of `PATCH /v1/datastores/{ds}/volumes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Whether a datastore is a directory or a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DatastoreKind {
    Directory,
    BlockDevice,
}

/// A datastore: the answer of `GET /v1/datastores/{ds}` and
/// `POST /v1/datastores`, an item of `GET /v1/datastores`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Datastore))]
pub struct DatastoreInfo {
    pub name: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub path: PathBuf,
    #[cfg_attr(feature = "utoipa", schema(inline))]
    pub kind: DatastoreKind,
    /// Bytes the datastore's filesystem or device holds.
    pub capacity: u64,
    /// Bytes free on it.
    pub free: u64,
    pub volumes: usize,
}

/// A volume: the answer of `GET`, `POST` and `PATCH` on volumes, an item
/// of `GET /v1/datastores/{ds}/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Volume))]
pub struct VolumeInfo {
    pub datastore: String,
    pub name: String,
    pub size: u64,
    /// Bytes the volume occupies on the host (thin volumes start near 0).
    pub allocated: u64,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub path: PathBuf,
    /// Another process holds the volume's file locked: another
    /// sfera-blockd, perhaps on another host sharing the datastore, exports
    /// it (or a program such as qemu-img has it open). This blockd cannot
    /// export it for writing, resize or delete it until that one lets go.
    #[serde(default)]
    pub locked_elsewhere: bool,
}

/// A running export and its counters: the answer of `GET`, `POST` and
/// `PUT .../qos` on exports, an item of `GET /v1/exports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub id: String,
    pub datastore: String,
    pub volume: String,
    pub read_only: bool,
    pub queues: u16,
    pub poll_us: u32,
    /// Always present (empty: not pinned), unlike in [`ExportSpec`].
    pub cpus: Vec<usize>,
    pub qos: Qos,
    pub socket: PathBuf,
    pub stats: ExportStats,
}

/// An export's counters, summed over its queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub write_zeroes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub io_errors: u64,
    pub in_flight: u64,
    pub throttled: u64,
    /// A write-back failed: the volume's data may be behind what the guest
    /// was told.
    pub write_back_error: bool,
    pub no_space: NoSpace,
    /// Requests refused, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Queues stopped because the guest broke their ring, by reason.
    pub broken_queues: BTreeMap<String, u64>,
}

/// Writes waiting for space on the datastore (held, retried every second).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoSpace {
    /// Held right now.
    pub held: u64,
    /// Since when the oldest current hold waits (seconds since the epoch).
    pub since: Option<u64>,
    /// Times a write was held.
    pub holds: u64,
    /// Times a held write was submitted again.
    pub retries: u64,
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
    fn an_export_reads_back_as_it_was_written() {
        let info = ExportInfo {
            id: "e".into(),
            datastore: "d".into(),
            volume: "vm1/disk0".into(),
            read_only: false,
            queues: 2,
            poll_us: DEFAULT_POLL_US,
            cpus: Vec::new(),
            qos: Qos {
                iops: Some(100),
                ..Qos::default()
            },
            socket: "/run/sfera/blk/e.sock".into(),
            stats: ExportStats {
                refused: [("out_of_range".to_owned(), 3)].into(),
                ..ExportStats::default()
            },
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["cpus"], serde_json::json!([]));
        assert_eq!(json["qos"], serde_json::json!({ "iops": 100 }));
        assert_eq!(json["stats"]["no_space"]["since"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<ExportInfo>(json).unwrap(), info);
    }
}
