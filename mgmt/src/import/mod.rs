//! Disk image import: a raw, qcow2 or vmdk file in an import directory
//! becomes a thin volume on a datastore. The file must be a regular file
//! inside an import directory once its path is resolved
//! ([`crate::host_paths`]), and an image that names no other host file
//! ([`image`]). sfera-blockd makes the volume (its size the image's
//! virtual size), then `qemu-img convert` writes the image's data into it
//! as raw, skipping what is zero (the new volume reads as zeros already),
//! and reports progress that the task passes on; the volume is synced to
//! disk before the task succeeds. An import that fails deletes the
//! volume: the datastore is left as it was. An import cut short by
//! mgmtd's end (a crash, a power cut) leaves a marker in
//! `<data>/imports/`, by which the next mgmtd deletes its volume.

pub mod image;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::Error;
use crate::host_paths::Roots;
use crate::service::Mgmt;
use crate::tasks::TaskCtx;

/// Formats `qemu-img` reads for an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
    Vmdk,
}

impl ImageFormat {
    pub const NAMES: [&'static str; 3] = ["raw", "qcow2", "vmdk"];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
        }
    }
}

/// Body of `POST /api/v1/datastores/{datastore}/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DiskImport)]
pub struct ImportDisk {
    /// The new volume: `NAME` or `FOLDER/NAME`.
    #[schema(schema_with = crate::api::schema::new_volume_name)]
    pub volume: String,
    /// A regular file inside an import directory (<data-dir>/import, or
    /// the --import-dir of sfera-mgmtd), checked after symlinks and .. are
    /// resolved (else 400 path_not_allowed). The image must be in the
    /// format given, as qemu-img probes it, and name no other file: no
    /// backing file, no qcow2 data file, no vmdk extent in another file
    /// (else 400 image_not_allowed)
    #[schema(pattern = "^/")]
    pub source: String,
    #[schema(inline)]
    pub format: ImageFormat,
}

impl ImportDisk {
    /// Checks the fields that need no daemon: the volume name and the
    /// source file, a regular file inside one of `import_dirs`; the
    /// source's resolved path, the one to read.
    pub fn check(&self, import_dirs: &Roots) -> Result<PathBuf, Error> {
        control::names::check_volume("volume", &self.volume)?;
        import_dirs.file("source", &self.source)
    }
}

/// The percentages in `qemu-img convert -p` output (`    (12.50/100%)`).
pub fn progress_values(text: &str) -> Vec<f64> {
    text.split(['\r', '\n'])
        .filter_map(|part| {
            let inner = part.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
            inner.parse().ok()
        })
        .collect()
}

/// What an import in progress leaves in `<data>/imports/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct Marker {
    datastore: String,
    volume: String,
}

impl Mgmt {
    fn import_marker(&self, datastore: &str, volume: &str) -> PathBuf {
        let enc = crate::blockd::encode_segment;
        self.paths
            .data_dir
            .join("imports")
            .join(format!("{}@{}.json", enc(datastore), enc(volume)))
    }

    /// Deletes the volumes of imports that a previous mgmtd did not finish
    /// (called once sfera-blockd runs).
    pub async fn clean_abandoned_imports(&self) {
        let Ok(dir) = std::fs::read_dir(self.paths.data_dir.join("imports")) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let marker: Option<Marker> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(m) = marker else {
                tracing::warn!(file = %path.display(), "Not an import marker: removed");
                let _ = std::fs::remove_file(&path);
                continue;
            };
            match self.blockd.delete_volume(&m.datastore, &m.volume).await {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => {
                    tracing::warn!(volume = m.volume, "Cannot remove an abandoned import: {e}");
                    continue;
                }
            }
            let _ = std::fs::remove_file(&path);
            self.db.event(
                "warning",
                "volume.import_abandoned",
                &format!("{}/{}", m.datastore, m.volume),
                &format!(
                    "The import into {}/{} did not finish before mgmtd stopped: its volume was removed",
                    m.datastore, m.volume
                ),
                None,
            );
        }
    }

    /// Imports `source` (`req.source` checked and resolved) as `volume`
    /// of `datastore` (a task); the volume's size is `size` (the image's
    /// virtual size, rounded up to 512).
    pub async fn import_disk(
        self: Arc<Self>,
        datastore: String,
        req: ImportDisk,
        source: PathBuf,
        size: u64,
        user: String,
        ctx: TaskCtx,
    ) -> Result<serde_json::Value, Error> {
        ctx.progress(2, "creating the volume");
        self.need_blockd().await?;
        // The marker first: a crash after the volume is made must find it.
        let marker = self.import_marker(&datastore, &req.volume);
        let text = serde_json::to_vec(&Marker {
            datastore: datastore.clone(),
            volume: req.volume.clone(),
        })?;
        if let Some(dir) = marker.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::Internal(format!("Cannot create {}: {e}", dir.display())))?;
        }
        crate::tls::write_private(&marker, &text)
            .map_err(|e| Error::Internal(format!("Cannot write {}: {e}", marker.display())))?;
        let result = self
            .import_into_new_volume(&datastore, &req, &source, size, &user, &ctx)
            .await;
        let _ = std::fs::remove_file(&marker);
        result
    }

    async fn import_into_new_volume(
        &self,
        datastore: &str,
        req: &ImportDisk,
        source: &Path,
        size: u64,
        user: &str,
        ctx: &TaskCtx,
    ) -> Result<serde_json::Value, Error> {
        let info = self
            .blockd
            .create_volume(datastore, &req.volume, size)
            .await?;
        let target = info.path;
        match self.convert(req.format, source, &target, ctx).await {
            Ok(()) => {
                self.db.event(
                    "info",
                    "volume.imported",
                    &format!("{datastore}/{}", req.volume),
                    &format!(
                        "{} ({}) imported as {}/{} ({size} bytes)",
                        source.display(),
                        req.format.as_str(),
                        datastore,
                        req.volume
                    ),
                    Some(user),
                );
                Ok(json!({ "datastore": datastore, "volume": req.volume,
                           "size_bytes": size, "format": req.format.as_str() }))
            }
            Err(e) => {
                ctx.progress(99, "removing the partial volume");
                if let Err(d) = self.blockd.delete_volume(datastore, &req.volume).await {
                    tracing::error!(
                        volume = req.volume,
                        "Cannot remove a failed import's volume: {d}"
                    );
                }
                self.db.event(
                    "error",
                    "volume.import_failed",
                    &format!("{datastore}/{}", req.volume),
                    &format!("Import of {} failed: {e}", req.source),
                    Some(user),
                );
                Err(e)
            }
        }
    }

    /// `qemu-img convert` from `source` (checked by [`image::inspect`])
    /// into the volume file `target`, then both synced.
    ///
    /// The source is opened as `format` with `backing: null` and through
    /// the `file` driver: no format probe, no backing file, no protocol
    /// read from its name. The target is written with `-t writeback`
    /// (qemu-img's default for convert is `unsafe`, which drops its final
    /// flush), so the flush at the end is an fdatasync; `-t none`
    /// (O_DIRECT) would also skip the page cache but fails where the
    /// datastore's filesystem has no O_DIRECT. The file and its directory
    /// are fsynced here too before the import is reported done.
    async fn convert(
        &self,
        format: ImageFormat,
        source: &Path,
        target: &Path,
        ctx: &TaskCtx,
    ) -> Result<(), Error> {
        let spec = json!({
            "driver": format.as_str(),
            "backing": null,
            "file": { "driver": "file", "filename": source },
        });
        let mut child = tokio::process::Command::new(&self.paths.qemu_img)
            .args([
                "convert",
                "-p",
                "-n",
                "--target-is-zero",
                "-t",
                "writeback",
                "-f",
            ])
            .arg(format.as_str())
            .args(["-O", "raw"])
            .arg(format!("json:{spec}"))
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Unavailable(format!(
                    "Cannot run {} (Debian's qemu-utils): {e}",
                    self.paths.qemu_img.display()
                ))
            })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut buf = [0u8; 512];
        let mut last = -1.0;
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| Error::Internal(format!("Cannot read qemu-img's output: {e}")))?;
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some(p) = progress_values(&text).last().copied()
                && p >= last + 1.0
            {
                last = p;
                // 5..95: the volume before, the check after.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let pct = (5.0 + p * 0.9).clamp(5.0, 95.0) as u8;
                ctx.progress(pct, &format!("converting: {p:.0}%"));
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Error::Internal(format!("Cannot wait for qemu-img: {e}")))?;
        let errors = errors.await.unwrap_or_default();
        if !status.success() {
            return Err(Error::Invalid(format!(
                "qemu-img could not convert {} ({}): {}",
                source.display(),
                status,
                errors.trim()
            )));
        }
        ctx.progress(96, "syncing the volume");
        let target = target.to_owned();
        tokio::task::spawn_blocking(move || sync_file_and_dir(&target))
            .await
            .map_err(|e| Error::Internal(format!("The sync did not finish: {e}")))?
    }
}

/// fsyncs `file` and the directory that holds it.
fn sync_file_and_dir(file: &Path) -> Result<(), Error> {
    let sync = |p: &Path| {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::Internal(format!("Cannot sync {}: {e}", p.display())))
    };
    sync(file)?;
    match file.parent() {
        Some(dir) => sync(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_read_from_qemu_img_output() {
        assert_eq!(
            progress_values("    (0.00/100%)\r    (12.50/100%)\r    (100.00/100%)\n"),
            vec![0.0, 12.5, 100.0]
        );
        assert!(progress_values("garbage").is_empty());
    }

    #[test]
    fn bodies_are_checked() {
        let ok: ImportDisk = serde_json::from_str(
            r#"{"volume":"imports/disk-1","source":"/etc/hostname","format":"qcow2"}"#,
        )
        .unwrap();
        assert_eq!(ok.format, ImageFormat::Qcow2);
        let e =
            serde_json::from_str::<ImportDisk>(r#"{"volume":"v","source":"/x","format":"vdi"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("qcow2"), "{e}");
        let roots = Roots::new(&[PathBuf::from("/etc")]).unwrap();
        let bad_name = ImportDisk {
            volume: "a/b/c".into(),
            ..ok
        };
        assert!(
            bad_name
                .check(&roots)
                .unwrap_err()
                .to_string()
                .contains("volume")
        );
        let rel = ImportDisk {
            volume: "v".into(),
            source: "rel/x".into(),
            format: ImageFormat::Raw,
        };
        assert!(
            rel.check(&roots)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        let missing = ImportDisk {
            source: "/no/such/image".into(),
            ..rel
        };
        assert!(
            missing
                .check(&roots)
                .unwrap_err()
                .to_string()
                .contains("not a file")
        );
        let outside = ImportDisk {
            source: "/proc/self/status".into(),
            ..missing
        };
        let e = outside.check(&roots).unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
    }
}
