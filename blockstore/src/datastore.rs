//! Datastores and their volumes.
//!
//! A datastore is a directory registered under a name (a raw block device
//! is a datastore holding exactly one volume, the device). In a directory
//! datastore, a volume `NAME` or `FOLDER/NAME` (a VM's folder) is:
//!
//! ```text
//! <datastore>/sfera-datastore.json       marker: format version, name
//! <datastore>/[FOLDER/]NAME.volume.json  metadata: size, creation, layers
//! <datastore>/[FOLDER/]NAME.img          data: a sparse raw file
//! ```
//!
//! The metadata lists the volume's layers, today one raw file. Snapshots and
//! linked clones add layers (a read-only base and a writable top) without
//! changing the layout. Metadata is written to a temporary file, synced and
//! renamed, so a crash leaves the old or the new version, never half of one.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use control::files::{WriteError, write_atomically};
use control::names::{self, RESERVED_SUFFIXES};
use serde::{Deserialize, Serialize};

pub use crate::api::types::{DatastoreInfo, DatastoreKind, VolumeInfo};
use crate::volume_lock::{self, Hold, LockError};

/// Format version of the datastore marker and volume metadata.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "sfera-datastore.json";
const META_SUFFIX: &str = ".volume.json";
const DATA_SUFFIX: &str = ".img";
/// The one volume of a block-device datastore.
pub const DEVICE_VOLUME: &str = "device";

/// Errors of datastore operations; each maps to an API error code.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("Invalid name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("Invalid size {size}: {why}")]
    InvalidSize { size: u64, why: &'static str },
    #[error("{} is not a directory or block device", path.display())]
    NotADatastore { path: PathBuf },
    #[error("{} belongs to datastore {other:?}", path.display())]
    ClaimedByOther { path: PathBuf, other: String },
    #[error("Volume {name:?} not found in datastore {datastore:?}")]
    VolumeNotFound { datastore: String, name: String },
    #[error("Volume {name:?} already exists in datastore {datastore:?}")]
    VolumeExists { datastore: String, name: String },
    #[error("Volume {name:?} can only grow: {size} is below its {current} bytes")]
    Shrink {
        name: String,
        size: u64,
        current: u64,
    },
    #[error(
        "Volume {name:?} of datastore {datastore:?} cannot be {what}: another {} holds its \
         file locked (another sfera-blockd, perhaps on another host sharing this datastore)",
        holder.describe()
    )]
    VolumeLocked {
        datastore: String,
        name: String,
        holder: Hold,
        what: &'static str,
    },
    #[error("Datastore {datastore:?} is a block device: its one volume cannot be {what}")]
    DeviceDatastore {
        datastore: String,
        what: &'static str,
    },
    #[error("Metadata of volume {name:?} is unreadable")]
    BadMetadata {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{what} ({})", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DatastoreError + 'a {
    move |source| DatastoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Checks a datastore name, an export id or a part of a volume name:
/// [`control::names`]' rule, not a name the datastore keeps for its own
/// files (a reserved suffix, the marker).
pub fn validate_component(name: &str) -> Result<(), DatastoreError> {
    let why = names::problem(name).or_else(|| reserved(name));
    match why {
        None => Ok(()),
        Some(why) => Err(DatastoreError::InvalidName {
            name: name.to_owned(),
            why,
        }),
    }
}

/// Why `name` is one of the datastore's own file names, if it is.
fn reserved(name: &str) -> Option<&'static str> {
    if RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        Some("must not end in .img or .volume.json")
    } else if name == MARKER {
        Some("is the name of the datastore's marker file")
    } else {
        None
    }
}

/// Checks a volume name: `NAME` or `FOLDER/NAME` by
/// [`names::check_volume`], no part named like the marker.
pub fn validate_volume_name(name: &str) -> Result<(), DatastoreError> {
    let why = match names::check_volume("volume", name) {
        Err(e) => Some(e.why),
        Ok(()) => name.split('/').find_map(reserved),
    };
    match why {
        None => Ok(()),
        Some(why) => Err(DatastoreError::InvalidName {
            name: name.to_owned(),
            why,
        }),
    }
}

/// Checks a volume size: a positive multiple of 512 bytes, at most 64 TiB.
pub fn validate_size(size: u64) -> Result<(), DatastoreError> {
    let bad = |why| Err(DatastoreError::InvalidSize { size, why });
    if size == 0 {
        return bad("must be positive");
    }
    if !size.is_multiple_of(512) {
        return bad("must be a multiple of 512 bytes");
    }
    if size > 64 << 40 {
        return bad("must be at most 64 TiB");
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    name: String,
}

/// One layer of a volume's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// File name relative to the volume's folder.
    pub file: String,
    /// `raw` today.
    pub format: String,
}

/// A volume's metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub format_version: u32,
    pub name: String,
    pub size: u64,
    pub created_unix: u64,
    /// Base first, writable top last.
    pub layers: Vec<Layer>,
}

/// An opened datastore.
#[derive(Debug, Clone)]
pub struct Datastore {
    name: String,
    path: PathBuf,
    kind: DatastoreKind,
}

impl Datastore {
    /// Opens the datastore at `path` under `name`; a directory without a
    /// marker is claimed (the marker is written), one claimed under another
    /// name is refused.
    pub fn open(name: &str, path: &Path) -> Result<Self, DatastoreError> {
        validate_component(name)?;
        let meta = std::fs::metadata(path).map_err(io("Cannot open datastore", path))?;
        if meta.file_type().is_block_device() {
            return Ok(Datastore {
                name: name.to_owned(),
                path: path.to_owned(),
                kind: DatastoreKind::BlockDevice,
            });
        }
        if !meta.is_dir() {
            return Err(DatastoreError::NotADatastore {
                path: path.to_owned(),
            });
        }
        let marker_path = path.join(MARKER);
        match std::fs::read(&marker_path) {
            Ok(bytes) => {
                let marker: Marker = serde_json::from_slice(&bytes).map_err(|source| {
                    DatastoreError::BadMetadata {
                        name: MARKER.to_owned(),
                        source,
                    }
                })?;
                if marker.name != name {
                    return Err(DatastoreError::ClaimedByOther {
                        path: path.to_owned(),
                        other: marker.name,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let marker = Marker {
                    format_version: FORMAT_VERSION,
                    name: name.to_owned(),
                };
                write_atomically(&marker_path, &to_json(&marker))?;
            }
            Err(e) => return Err(io("Cannot read datastore marker", &marker_path)(e)),
        }
        Ok(Datastore {
            name: name.to_owned(),
            path: path.to_owned(),
            kind: DatastoreKind::Directory,
        })
    }

    /// The datastore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Capacity, free space and volume count.
    pub fn info(&self) -> Result<DatastoreInfo, DatastoreError> {
        let (capacity, free) = match self.kind {
            DatastoreKind::BlockDevice => {
                let size = crate::backing::Backing::device_size(&self.path).unwrap_or(0);
                (size, 0)
            }
            DatastoreKind::Directory => statvfs(&self.path)?,
        };
        Ok(DatastoreInfo {
            name: self.name.clone(),
            path: self.path.clone(),
            kind: self.kind,
            capacity,
            free,
            volumes: self.list_volumes()?.len(),
        })
    }

    fn refuse_on_device(&self, what: &'static str) -> Result<(), DatastoreError> {
        if self.kind == DatastoreKind::BlockDevice {
            return Err(DatastoreError::DeviceDatastore {
                datastore: self.name.clone(),
                what,
            });
        }
        Ok(())
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{META_SUFFIX}"))
    }

    fn data_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{DATA_SUFFIX}"))
    }

    /// Creates a thin volume of `size` bytes.
    pub fn create_volume(&self, name: &str, size: u64) -> Result<VolumeInfo, DatastoreError> {
        validate_volume_name(name)?;
        validate_size(size)?;
        self.refuse_on_device("created")?;
        let meta_path = self.meta_path(name);
        let data_path = self.data_path(name);
        if meta_path.exists() || data_path.exists() {
            return Err(DatastoreError::VolumeExists {
                datastore: self.name.clone(),
                name: name.to_owned(),
            });
        }
        if let Some(folder) = meta_path.parent() {
            std::fs::create_dir_all(folder).map_err(io("Cannot create VM folder", folder))?;
        }
        // Data first, metadata last: a volume exists once its metadata does.
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(io("Cannot create volume data", &data_path))?;
        let created = file
            .set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(io("Cannot size volume data", &data_path));
        if let Err(e) = created {
            let _ = std::fs::remove_file(&data_path);
            return Err(e);
        }
        let file_name = Path::new(&format!("{name}{DATA_SUFFIX}"))
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = VolumeMeta {
            format_version: FORMAT_VERSION,
            name: name.to_owned(),
            size,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            layers: vec![Layer {
                file: file_name,
                format: "raw".to_owned(),
            }],
        };
        if let Err(e) = write_atomically(&meta_path, &to_json(&meta)) {
            let _ = std::fs::remove_file(&data_path);
            return Err(e.into());
        }
        self.volume(name)
    }

    fn read_meta(&self, name: &str) -> Result<VolumeMeta, DatastoreError> {
        validate_volume_name(name)?;
        let path = self.meta_path(name);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DatastoreError::VolumeNotFound {
                    datastore: self.name.clone(),
                    name: name.to_owned(),
                }
            } else {
                io("Cannot read volume metadata", &path)(e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|source| DatastoreError::BadMetadata {
            name: name.to_owned(),
            source,
        })
    }

    /// One volume.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, DatastoreError> {
        if self.kind == DatastoreKind::BlockDevice {
            if name != DEVICE_VOLUME {
                return Err(DatastoreError::VolumeNotFound {
                    datastore: self.name.clone(),
                    name: name.to_owned(),
                });
            }
            let size = crate::backing::Backing::device_size(&self.path).unwrap_or(0);
            return Ok(VolumeInfo {
                datastore: self.name.clone(),
                name: name.to_owned(),
                size,
                allocated: size,
                path: self.path.clone(),
                locked_elsewhere: locked_elsewhere(&self.path).unwrap_or(false),
            });
        }
        let meta = self.read_meta(name)?;
        let path = self.data_path(name);
        let allocated = std::fs::metadata(&path)
            .map(|m| m.blocks() * 512)
            .map_err(io("Cannot stat volume data", &path))?;
        Ok(VolumeInfo {
            datastore: self.name.clone(),
            name: meta.name,
            size: meta.size,
            allocated,
            locked_elsewhere: locked_elsewhere(&path)
                .map_err(io("Cannot check the lock of volume data", &path))?,
            path,
        })
    }

    /// Every volume, sorted by name.
    pub fn list_volumes(&self) -> Result<Vec<VolumeInfo>, DatastoreError> {
        if self.kind == DatastoreKind::BlockDevice {
            return Ok(vec![self.volume(DEVICE_VOLUME)?]);
        }
        let mut names = Vec::new();
        let mut dirs = vec![(self.path.clone(), String::new())];
        while let Some((dir, prefix)) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io("Cannot list datastore", &dir))?;
            for entry in entries {
                let entry = entry.map_err(io("Cannot list datastore", &dir))?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && prefix.is_empty() && validate_component(&file_name).is_ok() {
                    dirs.push((entry.path(), format!("{file_name}/")));
                } else if let Some(stem) = file_name.strip_suffix(META_SUFFIX) {
                    names.push(format!("{prefix}{stem}"));
                }
            }
        }
        names.sort();
        names.iter().map(|n| self.volume(n)).collect()
    }

    /// Takes the write lock on `file`, volume `name`'s data at `path`,
    /// to be `what` (see [`volume_lock`]): refused while another holds it.
    fn hold_for(
        &self,
        file: &File,
        path: &Path,
        name: &str,
        what: &'static str,
    ) -> Result<(), DatastoreError> {
        volume_lock::take(file, Hold::Write).map_err(|e| match e {
            LockError::Held { holder } => self.locked(name, holder, what),
            LockError::Io(source) => io("Cannot lock volume data", path)(source),
        })
    }

    /// The error for volume `name`, held by another `holder`, that cannot
    /// be `what`.
    pub fn locked(&self, name: &str, holder: Hold, what: &'static str) -> DatastoreError {
        DatastoreError::VolumeLocked {
            datastore: self.name.clone(),
            name: name.to_owned(),
            holder,
            what,
        }
    }

    /// Grows a volume to `size` bytes (it must not be exported: the caller
    /// checks; an export by another process is refused by its lock).
    pub fn resize_volume(&self, name: &str, size: u64) -> Result<VolumeInfo, DatastoreError> {
        validate_size(size)?;
        self.refuse_on_device("resized")?;
        let mut meta = self.read_meta(name)?;
        if size < meta.size {
            return Err(DatastoreError::Shrink {
                name: name.to_owned(),
                size,
                current: meta.size,
            });
        }
        let data_path = self.data_path(name);
        let file = File::options()
            .write(true)
            .open(&data_path)
            .map_err(io("Cannot open volume data", &data_path))?;
        // Held until the metadata says the new size too.
        self.hold_for(&file, &data_path, name, "resized")?;
        file.set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(io("Cannot grow volume data", &data_path))?;
        meta.size = size;
        write_atomically(&self.meta_path(name), &to_json(&meta))?;
        self.volume(name)
    }

    /// Deletes a volume (it must not be exported: the caller checks; an
    /// export by another process is refused by its lock).
    pub fn delete_volume(&self, name: &str) -> Result<(), DatastoreError> {
        self.refuse_on_device("deleted")?;
        let meta = self.read_meta(name)?;
        let meta_path = self.meta_path(name);
        let folder = meta_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // Every layer locked before anything goes, held until all is gone.
        let mut held = Vec::new();
        for layer in &meta.layers {
            let path = folder.join(&layer.file);
            match File::options().read(true).write(true).open(&path) {
                Ok(file) => {
                    self.hold_for(&file, &path, name, "deleted")?;
                    held.push(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("Cannot open volume data", &path)(e)),
            }
        }
        // Metadata first: a half-deleted volume is an orphan data file, not
        // a volume without data.
        std::fs::remove_file(&meta_path)
            .map_err(io("Cannot delete volume metadata", &meta_path))?;
        for layer in &meta.layers {
            let path = folder.join(&layer.file);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io("Cannot delete volume data", &path)(e));
            }
        }
        drop(held);
        // An emptied VM folder goes too.
        if folder != self.path {
            let _ = std::fs::remove_dir(&folder);
        }
        Ok(())
    }
}

/// Whether another process (or another open of it here) holds the file at
/// `path` locked.
fn locked_elsewhere(path: &Path) -> std::io::Result<bool> {
    Ok(volume_lock::holder(&File::open(path)?)?.is_some())
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("plain data serialises");
    bytes.push(b'\n');
    bytes
}

fn statvfs(path: &Path) -> Result<(u64, u64), DatastoreError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        DatastoreError::NotADatastore {
            path: path.to_owned(),
        }
    })?;
    // SAFETY: statvfs is plain integer data, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a valid,
    // exclusively borrowed statvfs buffer for the duration of the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io("Cannot measure datastore", path)(
            std::io::Error::last_os_error(),
        ));
    }
    let frsize = st.f_frsize;
    Ok((st.f_blocks * frsize, st.f_bavail * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Datastore) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let ds = Datastore::open("local", dir.path()).unwrap();
        (dir, ds)
    }

    #[test]
    fn volumes_are_thin_listed_grown_and_deleted() {
        let (_dir, ds) = store();
        let v = ds.create_volume("vm1/disk0", 1 << 30).unwrap();
        assert_eq!(v.size, 1 << 30);
        assert!(v.allocated < 1 << 20, "thin: {} allocated", v.allocated);
        ds.create_volume("scratch", 1 << 20).unwrap();
        let names: Vec<String> = ds
            .list_volumes()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["scratch", "vm1/disk0"]);
        let grown = ds.resize_volume("vm1/disk0", 2 << 30).unwrap();
        assert_eq!(grown.size, 2 << 30);
        assert_eq!(std::fs::metadata(&grown.path).unwrap().len(), 2 << 30);
        assert!(matches!(
            ds.resize_volume("vm1/disk0", 1 << 30),
            Err(DatastoreError::Shrink { .. })
        ));
        ds.delete_volume("vm1/disk0").unwrap();
        assert!(!ds.path().join("vm1").exists(), "empty VM folder removed");
        assert!(matches!(
            ds.volume("vm1/disk0"),
            Err(DatastoreError::VolumeNotFound { .. })
        ));
        assert_eq!(ds.info().unwrap().volumes, 1);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let (_dir, ds) = store();
        ds.create_volume("keep", 4096).unwrap();
        for name in ["", "../x", "a/b/c", ".hidden", "x y", "v.img", "-x"] {
            assert!(
                matches!(
                    ds.create_volume(name, 4096),
                    Err(DatastoreError::InvalidName { .. })
                ),
                "{name:?}"
            );
        }
        for size in [0, 1000, u64::MAX - 511] {
            assert!(matches!(
                ds.create_volume("v", size),
                Err(DatastoreError::InvalidSize { .. })
            ));
        }
        assert!(matches!(
            ds.create_volume("keep", 8192),
            Err(DatastoreError::VolumeExists { .. })
        ));
        let names: Vec<String> = ds
            .list_volumes()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["keep"]);
        assert_eq!(ds.volume("keep").unwrap().size, 4096);
    }

    #[test]
    fn a_volume_another_writer_holds_is_shown_and_kept() {
        let (_dir, ds) = store();
        let v = ds.create_volume("vm1/disk0", 1 << 20).unwrap();
        assert!(!v.locked_elsewhere);
        // Another sfera-blockd's export, as its lock on the file.
        let other = File::options()
            .read(true)
            .write(true)
            .open(&v.path)
            .unwrap();
        volume_lock::take(&other, Hold::Write).unwrap();
        assert!(ds.volume("vm1/disk0").unwrap().locked_elsewhere);
        assert!(ds.list_volumes().unwrap()[0].locked_elsewhere);
        for refused in [
            ds.resize_volume("vm1/disk0", 2 << 20).map(|_| ()),
            ds.delete_volume("vm1/disk0"),
        ] {
            let e = refused.unwrap_err();
            assert!(matches!(e, DatastoreError::VolumeLocked { .. }), "{e:?}");
            assert!(
                e.to_string()
                    .contains("another writer holds its file locked"),
                "{e}"
            );
        }
        let kept = ds.volume("vm1/disk0").unwrap();
        assert_eq!(kept.size, 1 << 20, "nothing changed");
        assert_eq!(std::fs::metadata(&kept.path).unwrap().len(), 1 << 20);
        drop(other);
        assert!(!ds.volume("vm1/disk0").unwrap().locked_elsewhere);
        ds.delete_volume("vm1/disk0")
            .expect("free once the other let go");
    }

    #[test]
    fn a_datastore_keeps_its_name() {
        let (dir, _ds) = store();
        assert!(Datastore::open("local", dir.path()).is_ok());
        assert!(matches!(
            Datastore::open("other", dir.path()),
            Err(DatastoreError::ClaimedByOther { .. })
        ));
    }
}
