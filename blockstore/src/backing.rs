//! The file (or block device) behind an exported volume.
//!
//! It is opened twice: with `O_DIRECT` for the fast path, and through the
//! page cache for the rare request whose buffers do not meet the direct-I/O
//! alignment (both descriptors refer to the same inode, so a flush on either
//! makes both durable). Filesystems without `O_DIRECT` use the page cache for
//! everything.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::volume_lock::{self, Hold, LockError};

/// Errors opening a backing file.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    #[error("Cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is neither a regular file nor a block device", path.display())]
    NotAFileOrDevice { path: PathBuf },
    #[error("Cannot get the size of {}", path.display())]
    Size {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is empty or not a multiple of 512 bytes ({size} bytes)", path.display())]
    BadSize { path: PathBuf, size: u64 },
    #[error(
        "{} is in use: it is mounted, or another program (another export, a device mapper, \
         mkfs) holds it exclusively",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error(
        "{} is in use: another {} holds it locked (another sfera-blockd, perhaps on another \
         host sharing this datastore)",
        path.display(),
        holder.describe()
    )]
    Locked { path: PathBuf, holder: Hold },
    #[error("Cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An open backing store.
#[derive(Debug)]
pub struct Backing {
    path: PathBuf,
    direct: Option<File>,
    buffered: File,
    capacity: u64,
    read_only: bool,
    /// Alignment that direct I/O needs of buffer addresses and lengths.
    dio_mem_align: u64,
    /// Alignment that direct I/O needs of file offsets and lengths.
    dio_offset_align: u64,
    block_device: bool,
    /// Whether a flush (fdatasync) failed since the file was opened.
    write_back_error: AtomicBool,
}

impl Backing {
    /// Opens `path` for an export, refusing at once a file that another
    /// writer (or, for writing, a reader) holds: see
    /// [`Backing::open_waiting`].
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BackingError> {
        Self::open_waiting(path, read_only, Duration::ZERO)
    }

    /// Opens `path` for an export, waiting up to `lock_wait` for another
    /// holder of it to let go.
    ///
    /// The file is locked ([`volume_lock`]) for as long as the export has it
    /// open: for writing, or shared with other readers when `read_only`, so
    /// that no second sfera-blockd, here or on another host sharing the
    /// datastore, writes it at the same time. A blockd that restarts after
    /// a crash waits a little (`lock_wait`): its predecessor's file stays
    /// open, and locked, until the kernel has reaped that process's io_uring
    /// requests in flight.
    ///
    /// A block device is claimed exclusively (`O_EXCL` without `O_CREAT`):
    /// while it is exported nothing can mount it, and no other exclusive
    /// user (a second export of it, mkfs, a device mapper) can take it,
    /// as a filesystem's or a VM's data would be written from two sides.
    /// A device found busy is tried again for up to 10 s: a blockd killed
    /// a moment ago keeps its claim until the kernel has finished the I/O
    /// it had in flight, and its successor must be able to take over (seen
    /// in `block_inflight`, whose device throttles writes).
    pub fn open_waiting(
        path: &Path,
        read_only: bool,
        lock_wait: Duration,
    ) -> Result<Self, BackingError> {
        let exclusive = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
        let open = |direct: bool, exclusive: bool| {
            let mut options = OpenOptions::new();
            options.read(true).write(!read_only);
            let mut flags = 0;
            if direct {
                flags |= libc::O_DIRECT;
            }
            if exclusive {
                flags |= libc::O_EXCL;
            }
            options.custom_flags(flags);
            options.open(path)
        };
        // A blockd that crashed a moment ago may still hold the claim while
        // the kernel finishes its I/O in flight: wait a little for it.
        let mut tries = 0;
        let first = loop {
            match open(false, exclusive) {
                Err(e) if exclusive && e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other,
            }
        };
        let buffered = first.map_err(|source| match source.raw_os_error() {
            Some(libc::EBUSY) if exclusive => BackingError::InUse {
                path: path.to_owned(),
            },
            _ => BackingError::Open {
                path: path.to_owned(),
                source,
            },
        })?;
        // The buffered descriptor is the export's for its whole life: its
        // open file description holds the lock.
        lock(&buffered, path, read_only, lock_wait)?;
        let meta = buffered.metadata().map_err(|source| BackingError::Size {
            path: path.to_owned(),
            source,
        })?;
        let block_device = meta.file_type().is_block_device();
        if !meta.is_file() && !block_device {
            return Err(BackingError::NotAFileOrDevice {
                path: path.to_owned(),
            });
        }
        let capacity = if block_device {
            block_device_size(&buffered).map_err(|source| BackingError::Size {
                path: path.to_owned(),
                source,
            })?
        } else {
            meta.len()
        };
        if capacity == 0 || capacity % 512 != 0 {
            return Err(BackingError::BadSize {
                path: path.to_owned(),
                size: capacity,
            });
        }
        // The buffered descriptor holds the claim; a second exclusive
        // open, even from here, would find the device busy.
        let direct = match open(true, false) {
            Ok(f) => Some(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %path.display(), "O_DIRECT not supported here; using the page cache");
                None
            }
            Err(source) => {
                return Err(BackingError::Open {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let (dio_mem_align, dio_offset_align) = direct
            .as_ref()
            .and_then(dio_alignment)
            .unwrap_or((4096, 4096));
        Ok(Backing {
            path: path.to_owned(),
            direct,
            buffered,
            capacity,
            read_only,
            dio_mem_align,
            dio_offset_align,
            block_device,
            write_back_error: AtomicBool::new(false),
        })
    }

    /// The size of the block device at `path`, without claiming it (an
    /// export may hold it).
    pub fn device_size(path: &Path) -> std::io::Result<u64> {
        block_device_size(&File::open(path)?)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether it is a block device rather than a file.
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The descriptors to register with io_uring: index 0 is the direct one
    /// (or the buffered one again when direct I/O is unavailable), index 1
    /// the buffered one.
    pub fn fds(&self) -> [RawFd; 2] {
        let buffered = self.buffered.as_raw_fd();
        [
            self.direct.as_ref().map_or(buffered, AsRawFd::as_raw_fd),
            buffered,
        ]
    }

    /// Notes that a flush failed; true the first time since the file was
    /// opened.
    ///
    /// A failed fdatasync may have left written pages clean in the page
    /// cache but not on disk, and a later fdatasync would not see them: it
    /// would succeed. So the error is sticky, as QEMU's file driver keeps
    /// it (`page_cache_inconsistent`): every later flush of this open file
    /// fails, until the volume is opened again.
    pub fn note_write_back_error(&self) -> bool {
        !self.write_back_error.swap(true, Ordering::AcqRel)
    }

    /// Whether a flush failed since the file was opened (see
    /// [`Backing::note_write_back_error`]).
    pub fn write_back_failed(&self) -> bool {
        self.write_back_error.load(Ordering::Acquire)
    }

    /// Whether a transfer at `offset` with these buffers can use direct I/O.
    pub fn direct_ok(&self, offset: u64, buffers: impl Iterator<Item = (u64, u64)>) -> bool {
        if self.direct.is_none() || !offset.is_multiple_of(self.dio_offset_align) {
            return false;
        }
        let (m, o) = (self.dio_mem_align, self.dio_offset_align);
        let mut ok = true;
        for (addr, len) in buffers {
            ok &= addr % m == 0 && len % m == 0 && len % o == 0;
        }
        ok
    }
}

impl Drop for Backing {
    /// Lets go of the volume's lock now. The descriptors may outlive this
    /// object by a moment: an io_uring that registered them releases them
    /// in the kernel's deferred teardown of the ring, after the workers are
    /// gone, and until then the lock would keep a volume that blockd no
    /// longer exports (a resize or a new export right after an unexport
    /// would be refused). Nothing of this export is in flight by now: the
    /// frontend's GET_VRING_BASE drains a queue before it stops, and a ring
    /// torn down with requests in it has the kernel finish them as it goes.
    /// A blockd that dies instead keeps the lock until the kernel has
    /// reaped its I/O, which is what [`RESTART_LOCK_WAIT`] waits for.
    ///
    /// [`RESTART_LOCK_WAIT`]: crate::vhost_blk::RESTART_LOCK_WAIT
    fn drop(&mut self) {
        if let Err(e) = volume_lock::release(&self.buffered) {
            tracing::warn!(path = %self.path.display(), "Cannot unlock the volume: {e}");
        }
    }
}

/// Locks `file` (opened from `path`) for reading or writing, trying again
/// every 100 ms for up to `wait` while another holds it.
fn lock(file: &File, path: &Path, read_only: bool, wait: Duration) -> Result<(), BackingError> {
    let hold = if read_only { Hold::Read } else { Hold::Write };
    let deadline = Instant::now() + wait;
    loop {
        match volume_lock::take(file, hold) {
            Ok(()) => return Ok(()),
            Err(LockError::Held { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(LockError::Held { holder }) => {
                return Err(BackingError::Locked {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err(LockError::Io(source)) => {
                return Err(BackingError::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Direct-I/O alignment of an open file (statx `STATX_DIOALIGN`, Linux 6.1+).
fn dio_alignment(file: &File) -> Option<(u64, u64)> {
    // SAFETY: statx is all-integer plain data, valid when zeroed.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open, the path is "" with AT_EMPTY_PATH, and `stx`
    // is a valid, exclusively borrowed statx buffer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_mem_align == 0 {
        return None;
    }
    Some((
        u64::from(stx.stx_dio_mem_align),
        u64::from(stx.stx_dio_offset_align.max(1)),
    ))
}

fn block_device_size(file: &File) -> std::io::Result<u64> {
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // to a live local; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_a_sparse_file_with_its_size() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("v.img");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let b = Backing::open(&path, false).unwrap();
        assert_eq!(b.capacity(), 1 << 20);
        assert!(!b.read_only());
        assert!(b.direct_ok(4096, [(0x10000, 4096)].into_iter()) || b.fds()[0] == b.fds()[1]);
        assert!(!b.direct_ok(4096, [(0x10001, 4096)].into_iter()));
    }

    /// A loop device over a 1 MiB file, detached on drop.
    struct Loop {
        dev: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Loop {
        fn new() -> Loop {
            let dir = tempfile::tempdir_in("/var/tmp").unwrap();
            let image = dir.path().join("disk.img");
            File::create(&image).unwrap().set_len(1 << 20).unwrap();
            let out = std::process::Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image)
                .output()
                .expect("losetup (util-linux) runs");
            assert!(
                out.status.success(),
                "losetup needs root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Loop {
                dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
                _dir: dir,
            }
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&self.dev)
                .status();
        }
    }

    #[test]
    fn a_block_device_is_held_exclusively_while_open() {
        let dev = Loop::new();
        let first = Backing::open(&dev.dev, false).unwrap();
        assert!(first.is_block_device());
        assert_eq!(first.capacity(), 1 << 20);
        // A second export of it, or a mount, finds it busy.
        assert!(matches!(
            Backing::open(&dev.dev, false),
            Err(BackingError::InUse { .. })
        ));
        drop(first);
        Backing::open(&dev.dev, true).expect("free again once closed");
    }

    #[test]
    fn a_file_has_one_writer_or_many_readers() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("v.img");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let writer = Backing::open(&path, false).unwrap();
        for read_only in [false, true] {
            match Backing::open(&path, read_only) {
                Err(BackingError::Locked {
                    holder: Hold::Write,
                    ..
                }) => {}
                other => panic!("second open (read-only {read_only}): {other:?}"),
            }
        }
        drop(writer);
        let reader = Backing::open(&path, true).unwrap();
        let _another = Backing::open(&path, true).expect("readers share");
        let refused = Backing::open(&path, false).unwrap_err();
        assert!(
            matches!(
                refused,
                BackingError::Locked {
                    holder: Hold::Read,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(
            refused
                .to_string()
                .contains("another reader holds it locked")
        );
        drop(reader);
    }

    #[test]
    fn a_restart_waits_for_the_lock_to_be_let_go() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("v.img");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let dying = Backing::open(&path, false).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(dying);
        });
        Backing::open_waiting(&path, false, Duration::from_secs(10))
            .expect("taken once the other let go");
        letting_go.join().unwrap();
    }

    #[test]
    fn rejects_empty_and_odd_sizes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("v.img");
        File::create(&path).unwrap();
        assert!(matches!(
            Backing::open(&path, false),
            Err(BackingError::BadSize { .. })
        ));
        File::create(&path).unwrap().set_len(1000).unwrap();
        assert!(matches!(
            Backing::open(&path, false),
            Err(BackingError::BadSize { .. })
        ));
        assert!(matches!(
            Backing::open(&dir.path().join("missing"), false),
            Err(BackingError::Open { .. })
        ));
    }
}
