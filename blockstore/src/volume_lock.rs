//! One writer per volume file: the lock sfera-blockd holds on a volume's
//! file while it writes it.
//!
//! A datastore may be a directory that several hosts mount (an NFS export,
//! as a vSphere NFS datastore is), each with its own sfera-blockd. The
//! cluster's volume lease in etcd says which host may export a volume; this
//! lock is the last line under it: whatever the control plane believes, two
//! blockd processes never both write one volume file. A blockd exporting a
//! volume for writing, resizing it or deleting it holds a write lock over
//! the whole file; a read-only export holds a read lock, so readers share a
//! volume with each other but never with a writer. A conflict is answered
//! at once (`F_OFD_SETLK`, not `F_OFD_SETLKW`): the API says 409, nothing
//! waits behind another host.
//!
//! Why fcntl open-file-description (OFD) locks, and not the others:
//! - A classic POSIX record lock (`F_SETLK`) belongs to the process, and the
//!   kernel drops *all* of a process's locks on a file when *any* of its
//!   descriptors of that file is closed. blockd opens a volume more than
//!   once (the `O_DIRECT` and the buffered descriptor of an export, a stat
//!   or a resize beside it): closing any of them would silently let a
//!   second writer in. An OFD lock belongs to one open file description and
//!   lives until that description's last descriptor is closed, so the lock
//!   is exactly as long-lived as the export's file. It also conflicts with
//!   another description of the same process, so two exports of one
//!   volume inside one blockd would collide too.
//! - OFD locks are byte-range fcntl locks, which the Linux NFS client
//!   forwards to the server (NFSv4 locks; NFSv3 through NLM), so a blockd
//!   on another host sharing the datastore sees them. `flock(2)` locks are
//!   not forwarded by every network filesystem (emulated locally, or mapped
//!   onto fcntl locks with different semantics), so they would protect only
//!   one host.
//! - The kernel drops the lock when the file is closed, also when blockd
//!   dies (SIGKILL, a crash): a dead blockd never keeps a volume.
//!
//! QEMU's image locking uses OFD locks on single bytes of the image, which a
//! write lock over the whole file covers: a `qemu-img` or QEMU opening an
//! exported volume sees it in use too. The lock is advisory: a program that
//! asks for no lock is not stopped, and on NFS a host cut off from the
//! server longer than its lease loses its locks, which is why the cluster
//! fences such a host (it stops its VMs) before another takes its volumes.

use std::fs::File;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// How a volume file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Shared: readers coexist.
    Read,
    /// Exclusive: no one else holds the file, for reading or writing.
    Write,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another open file description holds a conflicting lock: another
    /// process (another sfera-blockd, on this host or another sharing the
    /// datastore), or another export of the same file in this one.
    #[error("Another {} holds the file locked", holder.describe())]
    Held { holder: Hold },
    #[error("Cannot lock the file")]
    Io(#[source] std::io::Error),
}

impl Hold {
    fn lock_type(self) -> libc::c_short {
        let t = match self {
            Hold::Read => libc::F_RDLCK,
            Hold::Write => libc::F_WRLCK,
        };
        t as libc::c_short
    }

    /// Who holds a lock of this kind, in words for a message.
    pub fn describe(self) -> &'static str {
        match self {
            Hold::Read => "reader",
            Hold::Write => "writer",
        }
    }
}

/// A lock request over the whole file (`l_len` 0: to its end, however far
/// it grows). OFD locks want `l_pid` 0.
fn whole_file(lock_type: libc::c_short) -> libc::flock {
    libc::flock {
        l_type: lock_type,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Takes the lock on `file` for `hold`, without waiting; it lasts until
/// `file` (its open file description) is closed. A write lock needs a file
/// opened for writing, a read lock one opened for reading.
pub fn take(file: &File, hold: Hold) -> Result<(), LockError> {
    let lock = whole_file(hold.lock_type());
    match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN | Errno::EACCES) => Err(LockError::Held {
            // The holder may have let go in between: then name the hold
            // that was refused, which is what conflicted.
            holder: holder(file).map_err(LockError::Io)?.unwrap_or(match hold {
                Hold::Read => Hold::Write,
                Hold::Write => Hold::Read,
            }),
        }),
        Err(e) => Err(LockError::Io(e.into())),
    }
}

/// Lets go of the lock taken through `file` at once, before the file is
/// closed.
pub fn release(file: &File) -> std::io::Result<()> {
    let lock = whole_file(libc::F_UNLCK as libc::c_short);
    fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&lock))?;
    Ok(())
}

/// The kind of lock that another open file description (another process,
/// or another open of the file in this one) holds on `file`, if any: a
/// writer's lock, or else a reader's. Any descriptor of the file will do,
/// read-only too; asking takes no lock and, unlike a POSIX lock, the answer
/// does not count locks held through `file` itself.
pub fn holder(file: &File) -> std::io::Result<Option<Hold>> {
    let mut lock = whole_file(Hold::Write.lock_type());
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut lock))?;
    Ok(match i32::from(lock.l_type) {
        libc::F_UNLCK => None,
        libc::F_RDLCK => Some(Hold::Read),
        _ => Some(Hold::Write),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("v.img");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        (dir, path)
    }

    fn open_rw(path: &std::path::Path) -> File {
        File::options().read(true).write(true).open(path).unwrap()
    }

    #[test]
    fn a_writer_excludes_every_other_open_of_the_file() {
        let (_dir, path) = volume();
        let writer = open_rw(&path);
        take(&writer, Hold::Write).unwrap();
        // Another open file description, even in this process, is refused
        // both ways, and is told a writer holds it.
        let other = open_rw(&path);
        for hold in [Hold::Write, Hold::Read] {
            assert!(matches!(
                take(&other, hold),
                Err(LockError::Held {
                    holder: Hold::Write
                })
            ));
        }
        assert_eq!(holder(&other).unwrap(), Some(Hold::Write));
        assert_eq!(
            holder(&writer).unwrap(),
            None,
            "its own lock is no one else's"
        );
    }

    #[test]
    fn readers_share_and_keep_a_writer_out() {
        let (_dir, path) = volume();
        let a = File::open(&path).unwrap();
        let b = File::open(&path).unwrap();
        take(&a, Hold::Read).unwrap();
        take(&b, Hold::Read).unwrap();
        let writer = open_rw(&path);
        assert!(matches!(
            take(&writer, Hold::Write),
            Err(LockError::Held { holder: Hold::Read })
        ));
        drop((a, b));
        take(&writer, Hold::Write).expect("free once the readers closed it");
    }

    #[test]
    fn closing_another_descriptor_of_the_file_keeps_the_lock() {
        // The POSIX-lock trap: with F_SETLK, this close would drop the lock.
        let (_dir, path) = volume();
        let writer = open_rw(&path);
        take(&writer, Hold::Write).unwrap();
        drop(File::open(&path).unwrap());
        let other = open_rw(&path);
        assert!(matches!(
            take(&other, Hold::Write),
            Err(LockError::Held { .. })
        ));
        drop(writer);
        take(&other, Hold::Write).expect("free once the writer closed it");
    }

    #[test]
    fn a_released_lock_is_free_while_its_file_stays_open() {
        let (_dir, path) = volume();
        let writer = open_rw(&path);
        take(&writer, Hold::Write).unwrap();
        release(&writer).unwrap();
        take(&open_rw(&path), Hold::Write).expect("free again");
    }

    #[test]
    fn a_lock_taken_again_through_its_own_file_is_kept() {
        let (_dir, path) = volume();
        let writer = open_rw(&path);
        take(&writer, Hold::Write).unwrap();
        take(&writer, Hold::Write).expect("the holder may ask again");
        assert_eq!(
            holder(&File::open(&path).unwrap()).unwrap(),
            Some(Hold::Write)
        );
    }
}
