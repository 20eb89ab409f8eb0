//! What an image to import is, read with `qemu-img info`, and whether it
//! is safe to convert: an image that names another host file (a qcow2
//! backing file or external data file, a vmdk extent elsewhere) would
//! have `qemu-img convert` copy that file (`/etc/shadow`, say) into the
//! guest's disk, so it is refused.
//!
//! The format is read twice: probed (`qemu-img info` without `-f`), which
//! must give the format the client named, one of [`ImageFormat`]; then
//! with `-f` that format, whose answer is checked. The conversion names
//! the format too, and opens the image with `backing: null`, so qemu-img
//! never guesses a format nor follows a backing file, even one written
//! into the file after these checks.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::ImageFormat;
use crate::Error;

/// How long `qemu-img info` may take (a crafted image can make it slow).
const INFO_TIMEOUT: Duration = Duration::from_secs(30);

/// `qemu-img info --output=json [-f format] source`.
async fn info(qemu_img: &Path, source: &Path, format: Option<ImageFormat>) -> Result<Value, Error> {
    let mut cmd = tokio::process::Command::new(qemu_img);
    cmd.args(["info", "--output=json"]);
    if let Some(f) = format {
        cmd.args(["-f", f.as_str()]);
    }
    cmd.arg(source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = cmd.output();
    let out = tokio::time::timeout(INFO_TIMEOUT, run)
        .await
        .map_err(|_| {
            Error::Invalid(format!(
                "qemu-img info on {} took more than {} s",
                source.display(),
                INFO_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            Error::Unavailable(format!(
                "Cannot run {} (Debian's qemu-utils): {e}",
                qemu_img.display()
            ))
        })?;
    if !out.status.success() {
        let what = format.map_or("disk", ImageFormat::as_str);
        return Err(Error::Invalid(format!(
            "source {} is not a readable {what} image: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Internal(format!("qemu-img info printed no JSON: {e}")))
}

/// Reads `source` (a resolved path) and checks that it is a `format`
/// image that names no other file; its virtual size.
pub async fn inspect(qemu_img: &Path, source: &Path, format: ImageFormat) -> Result<u64, Error> {
    let probed = info(qemu_img, source, None).await?;
    check_probed(&probed, source, format)?;
    let info = info(qemu_img, source, Some(format)).await?;
    check_info(&info, source, format)
}

/// The probed format is the one the client named.
pub fn check_probed(info: &Value, source: &Path, format: ImageFormat) -> Result<(), Error> {
    let probed = info["format"].as_str().unwrap_or("unknown");
    if probed == format.as_str() {
        return Ok(());
    }
    let hint = if ImageFormat::NAMES.contains(&probed) {
        format!("import it as {probed}")
    } else {
        format!(
            "imports take {} only: convert it first",
            ImageFormat::NAMES.join(", ")
        )
    };
    Err(Error::ImageNotAllowed(format!(
        "source {} is a {probed} image, not {}: {hint}",
        source.display(),
        format.as_str()
    )))
}

/// Checks `qemu-img info -f format`'s answer for `source`: no backing
/// file, no external data file, no extent or other file but `source`
/// itself, a size; the virtual size.
pub fn check_info(info: &Value, source: &Path, format: ImageFormat) -> Result<u64, Error> {
    let name = source.display().to_string();
    if info["format"].as_str() != Some(format.as_str()) {
        return Err(Error::ImageNotAllowed(format!(
            "source {name} is not read as a {} image: {}",
            format.as_str(),
            info["format"]
        )));
    }
    for key in [
        "backing-filename",
        "full-backing-filename",
        "backing-filename-format",
    ] {
        if let Some(b) = info.get(key) {
            return Err(Error::ImageNotAllowed(format!(
                "source {name} has a backing file ({b}): imports take standalone images only (qemu-img convert makes one)"
            )));
        }
    }
    if let Some(specific) = info.get("format-specific") {
        check_named_files(specific, &name)?;
    }
    // qemu-img 8 and later list the nodes under the image.
    if let Some(children) = info.get("children") {
        check_named_files(children, &name)?;
    }
    let size = info["virtual-size"]
        .as_u64()
        .ok_or_else(|| Error::Internal(format!("qemu-img info gave no virtual-size: {info}")))?;
    if size == 0 {
        return Err(Error::Invalid(format!("source {name} is an empty image")));
    }
    Ok(size)
}

/// Refuses a qcow2 `data-file`, and any `filename` (a vmdk extent, a
/// child node) other than the image's own, anywhere in `v`.
fn check_named_files(v: &Value, name: &str) -> Result<(), Error> {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("data-file", f) => {
                        return Err(Error::ImageNotAllowed(format!(
                            "source {name} keeps its data in another file ({f}): imports take standalone images only"
                        )));
                    }
                    ("filename", Value::String(f)) if f != name => {
                        return Err(Error::ImageNotAllowed(format!(
                            "source {name} reads another file ({f:?}, a vmdk extent?): imports take single-file images only (a flat vmdk's -flat.vmdk file imports as raw)"
                        )));
                    }
                    _ => check_named_files(value, name)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| check_named_files(i, name)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use serde_json::json;

    use super::*;

    fn qcow2_info(extra: Value) -> Value {
        let mut v = json!({
            "virtual-size": 1_048_576, "filename": "/i/a.qcow2", "cluster-size": 65536,
            "format": "qcow2", "actual-size": 200_704, "dirty-flag": false,
            "format-specific": { "type": "qcow2", "data": { "compat": "1.1",
                "compression-type": "zlib", "lazy-refcounts": false, "refcount-bits": 16,
                "corrupt": false, "extended-l2": false } }
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn samples_of_qemu_img_info() {
        let src = Path::new("/i/a.qcow2");
        let q = ImageFormat::Qcow2;
        assert_eq!(check_info(&qcow2_info(json!({})), src, q).unwrap(), 1 << 20);
        let backing = qcow2_info(json!({ "backing-filename": "/etc/shadow",
            "full-backing-filename": "/etc/shadow", "backing-filename-format": "raw" }));
        let e = check_info(&backing, src, q).unwrap_err();
        assert!(matches!(e, Error::ImageNotAllowed(_)), "{e}");
        assert!(e.to_string().contains("backing file"), "{e}");
        let mut data_file = qcow2_info(json!({}));
        data_file["format-specific"]["data"]["data-file"] = json!("/etc/shadow");
        let e = check_info(&data_file, src, q).unwrap_err();
        assert!(e.to_string().contains("another file"), "{e}");
        let vmdk = |extent: &str| {
            json!({ "virtual-size": 1024, "filename": "/i/a.vmdk", "format": "vmdk",
                "format-specific": { "type": "vmdk", "data": { "create-type": "monolithicFlat",
                    "extents": [{ "virtual-size": 512, "filename": extent, "format": "FLAT" }] } } })
        };
        let v = Path::new("/i/a.vmdk");
        assert!(check_info(&vmdk("/i/a.vmdk"), v, ImageFormat::Vmdk).is_ok());
        let e = check_info(&vmdk("/etc/hostname"), v, ImageFormat::Vmdk).unwrap_err();
        assert!(e.to_string().contains("/etc/hostname"), "{e}");
        // qemu-img 8's child nodes.
        let children = qcow2_info(json!({ "children": [{ "name": "file",
            "info": { "filename": "/etc/shadow", "format": "file" } }] }));
        assert!(check_info(&children, src, q).is_err());
        // Said raw, probed qcow2: refused, with the way out.
        let e = check_probed(&qcow2_info(json!({})), src, ImageFormat::Raw).unwrap_err();
        assert!(e.to_string().contains("import it as qcow2"), "{e}");
        let e = check_probed(&json!({ "format": "vdi" }), src, ImageFormat::Raw).unwrap_err();
        assert!(e.to_string().contains("vdi image"), "{e}");
        assert!(check_info(&qcow2_info(json!({ "virtual-size": 0 })), src, q).is_err());
    }

    fn qemu_img() -> PathBuf {
        PathBuf::from("qemu-img")
    }

    fn make(dir: &Path, args: &[&str]) {
        let ok = Command::new(qemu_img())
            .arg("create")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("qemu-img (qemu-utils)")
            .success();
        assert!(ok, "qemu-img create {args:?}");
    }

    fn inspect_now(path: &Path, format: ImageFormat) -> Result<u64, Error> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(inspect(&qemu_img(), path, format))
    }

    #[test]
    fn real_images_that_name_other_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().canonicalize().unwrap();
        make(&d, &["-f", "qcow2", "good.qcow2", "1M"]);
        make(&d, &["-f", "vmdk", "good.vmdk", "1M"]);
        make(&d, &["-f", "raw", "good.raw", "1M"]);
        assert_eq!(
            inspect_now(&d.join("good.qcow2"), ImageFormat::Qcow2).unwrap(),
            1 << 20
        );
        assert_eq!(
            inspect_now(&d.join("good.vmdk"), ImageFormat::Vmdk).unwrap(),
            1 << 20
        );
        assert_eq!(
            inspect_now(&d.join("good.raw"), ImageFormat::Raw).unwrap(),
            1 << 20
        );

        make(
            &d,
            &[
                "-f",
                "qcow2",
                "-b",
                "/etc/hostname",
                "-F",
                "raw",
                "evil.qcow2",
            ],
        );
        let e = inspect_now(&d.join("evil.qcow2"), ImageFormat::Qcow2).unwrap_err();
        assert!(matches!(e, Error::ImageNotAllowed(_)), "{e}");
        assert!(e.to_string().contains("backing file"), "{e}");
        // Said raw, it is still a qcow2 (whose backing file a probe-happy
        // reader would follow).
        let e = inspect_now(&d.join("evil.qcow2"), ImageFormat::Raw).unwrap_err();
        assert!(e.to_string().contains("is a qcow2 image, not raw"), "{e}");

        let data = d.join("data.raw");
        make(
            &d,
            &[
                "-f",
                "qcow2",
                "-o",
                &format!("data_file={}", data.display()),
                "df.qcow2",
                "1M",
            ],
        );
        let e = inspect_now(&d.join("df.qcow2"), ImageFormat::Qcow2).unwrap_err();
        assert!(e.to_string().contains("another file"), "{e}");

        // A vmdk descriptor whose extent is a host file.
        std::fs::write(
            d.join("evil.vmdk"),
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\nRW 1 FLAT \"/etc/hostname\" 0\n",
        )
        .unwrap();
        let e = inspect_now(&d.join("evil.vmdk"), ImageFormat::Vmdk).unwrap_err();
        assert!(e.to_string().contains("/etc/hostname"), "{e}");
        // A flat vmdk made by qemu-img: its extent is another file too.
        make(
            &d,
            &[
                "-f",
                "vmdk",
                "-o",
                "subformat=monolithicFlat",
                "flat.vmdk",
                "1M",
            ],
        );
        let e = inspect_now(&d.join("flat.vmdk"), ImageFormat::Vmdk).unwrap_err();
        assert!(e.to_string().contains("flat-flat.vmdk"), "{e}");
    }
}
