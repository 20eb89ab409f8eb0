//! Host paths a client may name: only under configured roots. An
//! administrator is trusted with the VMs, not with the host's files, so an
//! image import, an ISO or a datastore comes from a directory set aside
//! for it (`<data-dir>/import`, `<data-dir>/datastores` and the
//! `--import-dir` / `--datastore-root` flags), never from `/etc`.
//!
//! A path is resolved first (symlinks and `..` followed, as the kernel
//! will when a program opens it) and checked after: a symlink in the
//! import directory that points at `/etc/shadow` is refused. What is
//! checked is what is used: callers pass the resolved path on.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// Directories under which a client may name host paths, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    dirs: Vec<PathBuf>,
}

impl Roots {
    /// `dirs`, each resolved; one that does not exist is an error (a
    /// misconfiguration, said at start).
    pub fn new(dirs: &[PathBuf]) -> std::io::Result<Self> {
        let mut resolved: Vec<PathBuf> = Vec::new();
        for d in dirs {
            let r = d
                .canonicalize()
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
            if !resolved.contains(&r) {
                resolved.push(r);
            }
        }
        Ok(Roots { dirs: resolved })
    }

    /// Both sets of roots.
    pub fn union(&self, other: &Roots) -> Roots {
        let mut dirs = self.dirs.clone();
        dirs.extend(
            other
                .dirs
                .iter()
                .filter(|d| !self.dirs.contains(d))
                .cloned(),
        );
        Roots { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn list(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `path` resolved, if it is absolute, exists and names no protocol.
    fn resolve(field: &str, path: &str) -> Result<PathBuf, Error> {
        if has_protocol_prefix(path) {
            return Err(Error::PathNotAllowed(format!(
                "{field} {path:?} names a protocol: give a file's path"
            )));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(Error::Invalid(format!(
                "{field} {path:?} must be an absolute path"
            )));
        }
        p.canonicalize()
            .map_err(|e| Error::Invalid(format!("{field} {path} is not a file on the host: {e}")))
    }

    /// Whether `resolved` is under one of the roots (`strictly`: not a
    /// root itself).
    fn holds(&self, resolved: &Path, strictly: bool) -> bool {
        self.dirs
            .iter()
            .any(|d| resolved.starts_with(d) && !(strictly && resolved == d))
    }

    /// A regular file under the roots, readable, resolved: an image to
    /// import or an ISO to boot.
    pub fn file(&self, field: &str, path: &str) -> Result<PathBuf, Error> {
        let resolved = Self::resolve(field, path)?;
        if !self.holds(&resolved, true) {
            return Err(Error::PathNotAllowed(format!(
                "{field} {path} is not inside an import directory ({}): copy the file there first",
                self.list()
            )));
        }
        // Opened without blocking (a FIFO swapped in would hang the open),
        // and its type read from the open file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&resolved)
            .map_err(|e| Error::Invalid(format!("{field} {path} cannot be read: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::Invalid(format!("{field} {path} cannot be read: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(Error::PathNotAllowed(format!(
                "{field} {path} is {}, not a regular file",
                kind(&meta.file_type())
            )));
        }
        Ok(resolved)
    }

    /// A datastore's place under the roots, resolved: a directory inside
    /// one (not a root itself, which holds other datastores), or a block
    /// device that is a root or inside one.
    pub fn datastore(&self, field: &str, path: &str) -> Result<PathBuf, Error> {
        let resolved = Self::resolve(field, path)?;
        let meta = std::fs::metadata(&resolved)
            .map_err(|e| Error::Invalid(format!("{field} {path} cannot be read: {e}")))?;
        let t = meta.file_type();
        let inside = if t.is_dir() {
            self.holds(&resolved, true)
        } else if t.is_block_device() {
            self.holds(&resolved, false)
        } else {
            return Err(Error::PathNotAllowed(format!(
                "{field} {path} is {}, not a directory or block device",
                kind(&t)
            )));
        };
        if !inside {
            return Err(Error::PathNotAllowed(format!(
                "{field} {path} is not inside a datastore root ({}): make the datastore's directory there (sfera-mgmtd --datastore-root adds roots)",
                self.list()
            )));
        }
        Ok(resolved)
    }
}

/// What a file is, for a refusal.
fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "a regular file"
    }
}

/// Whether QEMU would read `name` as `protocol:...` (`json:`, `nbd:`,
/// `http:`, `file:`): letters, digits, `+`, `-` or `.` then `:`, before
/// any `/`.
pub fn has_protocol_prefix(name: &str) -> bool {
    match name.split_once(':') {
        Some((head, _)) => {
            !head.is_empty()
                && head
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        roots: Roots,
    }

    /// `<tmp>/import` as the one root, with `outside/secret` beside it.
    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("import/sub")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), "secret").unwrap();
        std::fs::write(base.join("import/disk.qcow2"), "image").unwrap();
        let roots = Roots::new(&[base.join("import")]).unwrap();
        Tree {
            _tmp: tmp,
            base,
            roots,
        }
    }

    fn s(p: &Path) -> String {
        p.display().to_string()
    }

    #[test]
    fn a_file_inside_the_import_directory_is_taken_resolved() {
        let t = tree();
        let dotted = t.base.join("import/sub/../disk.qcow2");
        assert_eq!(
            t.roots.file("source", &s(&dotted)).unwrap(),
            t.base.join("import/disk.qcow2")
        );
        // A symlink that stays inside is fine, and resolved.
        std::os::unix::fs::symlink("../disk.qcow2", t.base.join("import/sub/link")).unwrap();
        assert_eq!(
            t.roots
                .file("source", &s(&t.base.join("import/sub/link")))
                .unwrap(),
            t.base.join("import/disk.qcow2")
        );
    }

    #[test]
    fn a_symlink_out_of_the_import_directory_is_refused() {
        let t = tree();
        let link = t.base.join("import/evil.qcow2");
        std::os::unix::fs::symlink(t.base.join("outside/secret"), &link).unwrap();
        let e = t.roots.file("source", &s(&link)).unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
        assert!(
            e.to_string().contains("not inside an import directory"),
            "{e}"
        );
        // A symlinked directory too.
        std::os::unix::fs::symlink("/etc", t.base.join("import/etc")).unwrap();
        let e = t
            .roots
            .file("source", &s(&t.base.join("import/etc/hostname")))
            .unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
    }

    #[test]
    fn dot_dot_out_of_the_import_directory_is_refused() {
        let t = tree();
        let e = t
            .roots
            .file("source", &s(&t.base.join("import/../outside/secret")))
            .unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
        let e = t.roots.file("source", "/etc/shadow").unwrap_err();
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
    }

    #[test]
    fn only_regular_files_are_images() {
        let t = tree();
        let fifo = t.base.join("import/fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = t.roots.file("source", &s(&fifo)).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = t
            .roots
            .file("source", &s(&t.base.join("import/sub")))
            .unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        // A device node: /dev/null, reached through a symlink, is outside;
        // a root that holds devices still refuses them.
        let dev = Roots::new(&[PathBuf::from("/dev")]).unwrap();
        let e = dev.file("source", "/dev/null").unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        assert!(matches!(e, Error::PathNotAllowed(_)), "{e}");
    }

    #[test]
    fn relative_missing_and_protocol_paths_are_refused() {
        let t = tree();
        for (path, word) in [
            ("disk.qcow2", "absolute"),
            ("json:{\"file.filename\":\"/etc/shadow\"}", "protocol"),
            ("nbd:localhost:10809", "protocol"),
            ("http://example.com/x.qcow2", "protocol"),
        ] {
            let e = t.roots.file("source", path).unwrap_err();
            assert!(e.to_string().contains(word), "{path}: {e}");
        }
        let e = t
            .roots
            .file("source", &s(&t.base.join("import/none")))
            .unwrap_err();
        assert!(e.to_string().contains("not a file"), "{e}");
        assert!(!has_protocol_prefix("/srv/a:b.qcow2"));
    }

    #[test]
    fn datastores_are_directories_inside_a_root() {
        let t = tree();
        let roots = Roots::new(&[t.base.join("outside")]).unwrap();
        std::fs::create_dir_all(t.base.join("outside/ds")).unwrap();
        assert_eq!(
            roots
                .datastore("path", &s(&t.base.join("outside/ds")))
                .unwrap(),
            t.base.join("outside/ds")
        );
        for bad in [
            s(&t.base.join("outside")),
            s(&t.base.join("import")),
            "/etc".to_owned(),
            "/".to_owned(),
            s(&t.base.join("outside/ds/../..")),
        ] {
            let e = roots.datastore("path", &bad).unwrap_err();
            assert!(matches!(e, Error::PathNotAllowed(_)), "{bad}: {e}");
        }
        let e = roots
            .datastore("path", &s(&t.base.join("outside/secret")))
            .unwrap_err();
        assert!(e.to_string().contains("a regular file"), "{e}");
    }
}
