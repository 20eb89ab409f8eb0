//! A datastore that loses what a power cut loses: a FUSE filesystem whose
//! files keep their written-but-not-synced data apart from their durable
//! data, and whose [`PowerlossFs::cut_power`] throws the former away.
//!
//! `kill -9` of a daemon leaves the host's page cache intact, so a crash
//! test on an ordinary filesystem cannot tell a FLUSH that reached the disk
//! from one that did nothing. This filesystem can: it honours what a disk
//! with a volatile write cache guarantees, and no more.
//!
//! - A write is volatile until an fsync or fdatasync of its file (FUSE sends
//!   both as `FSYNC`), which makes every earlier acknowledged write of that
//!   file durable.
//! - A write the kernel marks `O_DSYNC` (the file was opened with `O_DSYNC`
//!   or `O_SYNC`, or it is a `pwritev2(RWF_DSYNC)`, FUA's counterpart) is
//!   durable when it returns, with every earlier write of the file, as
//!   Linux's O_DSYNC flushes the disk's whole cache. (The kernel follows
//!   such a write with an `FSYNC` of its own too.)
//! - On a power cut, each file keeps its durable data plus, to model a disk
//!   that wrote some of its cache before the lights went out, the first `n`
//!   of its volatile writes in the order they arrived, whole.
//! - Metadata (create, rename, unlink, mkdir, a resize) is durable when the
//!   call returns, as on a filesystem that journals it synchronously; a
//!   resize first makes the file's earlier writes durable. Only file data is
//!   lost, which is what a block device's FLUSH is about.
//!
//! Reads and writes go through to the filesystem (no writeback cache is
//! negotiated), `O_DIRECT` opens are served as the kernel's FUSE does, and
//! everything lives in memory: it is for volumes of a few MiB.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::{Error, Result};

const ROOT: u64 = 1;
/// Attributes are not cached by the kernel: sizes change under it.
const TTL: Duration = Duration::ZERO;
/// What `statfs` reports: 4 GiB in 4 KiB blocks.
const FS_BLOCKS: u64 = 1 << 20;

/// What the filesystem has been asked to do since it was first mounted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Writes to any file.
    pub writes: u64,
    /// fsync or fdatasync calls on files.
    pub syncs: u64,
    /// Opens (and creates) of files.
    pub opens: u64,
    /// Of those, opens with `O_DIRECT`.
    pub direct_opens: u64,
}

/// One write not yet made durable.
#[derive(Debug)]
struct Pending {
    offset: usize,
    data: Vec<u8>,
}

/// A file's data: what reads see, what survives a power cut, and the
/// writes between the two.
#[derive(Debug, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply(buf: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[offset..end].copy_from_slice(data);
}

impl FileData {
    fn write(&mut self, offset: usize, data: &[u8]) {
        apply(&mut self.current, offset, data);
        self.pending.push(Pending {
            offset,
            data: data.to_vec(),
        });
    }

    /// What fsync does: every earlier write becomes durable.
    fn sync(&mut self) {
        for p in self.pending.drain(..) {
            apply(&mut self.durable, p.offset, &p.data);
        }
        self.durable.resize(self.current.len(), 0);
    }

    fn resize(&mut self, len: usize) {
        self.sync();
        self.current.resize(len, 0);
        self.durable.resize(len, 0);
    }

    /// Zeroes a range inside the file (a punched hole), as a volatile write.
    fn zero(&mut self, offset: usize, len: usize) {
        let end = (offset + len).min(self.current.len());
        if offset < end {
            self.write(offset, &vec![0; end - offset]);
        }
    }

    /// What is left after a power cut that let the first `survivors`
    /// volatile writes reach the disk.
    fn after_power_cut(&self, survivors: usize) -> FileData {
        let mut data = self.durable.clone();
        for p in self.pending.iter().take(survivors) {
            apply(&mut data, p.offset, &p.data);
        }
        FileData {
            current: data.clone(),
            durable: data,
            pending: Vec::new(),
        }
    }
}

#[derive(Debug)]
enum Node {
    Dir {
        parent: u64,
        entries: BTreeMap<OsString, u64>,
    },
    File(FileData),
}

/// The whole filesystem. `powered` turns false when the power is cut: the
/// mount that served it answers EIO from then on, whatever reaches it late.
#[derive(Debug)]
struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    counters: Counters,
    powered: bool,
}

impl Disk {
    fn new() -> Self {
        let root = Node::Dir {
            parent: ROOT,
            entries: BTreeMap::new(),
        };
        Disk {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            counters: Counters::default(),
            powered: true,
        }
    }

    fn after_power_cut(&self, survivors: usize) -> Disk {
        let nodes = self
            .nodes
            .iter()
            .map(|(&ino, node)| {
                let node = match node {
                    Node::Dir { parent, entries } => Node::Dir {
                        parent: *parent,
                        entries: entries.clone(),
                    },
                    Node::File(f) => Node::File(f.after_power_cut(survivors)),
                };
                (ino, node)
            })
            .collect();
        Disk {
            nodes,
            next_ino: self.next_ino,
            counters: self.counters,
            powered: true,
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (kind, perm, size) = match node {
            Node::Dir { entries, .. } => (FileType::Directory, 0o755, entries.len() as u64),
            Node::File(f) => (FileType::RegularFile, 0o644, f.current.len() as u64),
        };
        let now = SystemTime::now();
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        if !self.powered {
            return Err(Errno::EIO);
        }
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Adds `node` as `name` in `parent`; fails if the name is taken.
    fn insert(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if !self.powered {
            return Err(Errno::EIO);
        }
        let ino = self.next_ino;
        let entries = self.entries_mut(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_owned(), ino);
        self.nodes.insert(ino, node);
        self.next_ino += 1;
        Ok(ino)
    }

    /// Removes `name` from `parent`, refusing a non-empty directory, or a
    /// directory when `dir` is false and a file when it is true.
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (self.nodes.get(&ino), dir) {
            (Some(Node::Dir { entries, .. }), true) if !entries.is_empty() => {
                return Err(Errno::ENOTEMPTY);
            }
            (Some(Node::Dir { .. }), false) => return Err(Errno::EISDIR),
            (Some(Node::File(_)), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.nodes.remove(&ino);
        Ok(())
    }

    fn rename(
        &mut self,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let ino = self.lookup(parent, name)?;
        match self.lookup(new_parent, new_name) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => return Err(Errno::EEXIST),
            Ok(old) if old == ino => return Ok(()),
            Ok(_) => self.remove(new_parent, new_name, false)?,
            Err(_) => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        if let Some(Node::Dir { parent, .. }) = self.nodes.get_mut(&ino) {
            *parent = new_parent;
        }
        Ok(())
    }

    fn note_open(&mut self, flags: i32) {
        self.counters.opens += 1;
        if flags & libc::O_DIRECT != 0 {
            self.counters.direct_opens += 1;
        }
    }
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The FUSE side: every request works on the shared [`Disk`].
#[derive(Debug)]
struct Fs {
    disk: Arc<Mutex<Disk>>,
}

impl Fs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }

    fn reply_entry(&self, ino: Result<u64, Errno>, reply: ReplyEntry) {
        let disk = self.disk();
        match ino.and_then(|ino| disk.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn to_usize(value: u64) -> Result<usize, Errno> {
    usize::try_from(value).map_err(|_| Errno::EFBIG)
}

impl fuser::Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = self.disk().lookup(parent.0, name);
        self.reply_entry(ino, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        let resized = match size {
            Some(size) => to_usize(size).and_then(|len| disk.file(ino.0).map(|f| f.resize(len))),
            None => Ok(()),
        };
        match resized.and_then(|()| disk.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let dir = Node::Dir {
            parent: parent.0,
            entries: BTreeMap::new(),
        };
        let ino = self.disk().insert(parent.0, name, dir);
        self.reply_entry(ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.disk().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.disk().remove(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let renamed = self
            .disk()
            .rename((parent.0, name), (new_parent.0, new_name), flags);
        empty(renamed, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok(_) => {
                disk.note_open(flags.0);
                reply.opened(FileHandle(0), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        let ino = match disk.lookup(parent.0, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(ino) => Ok(ino),
            Err(_) => disk.insert(parent.0, name, Node::File(FileData::default())),
        };
        match ino.and_then(|ino| disk.attr(ino)) {
            Ok(attr) => {
                disk.note_open(flags);
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok(f) => {
                let len = f.current.len();
                let start = usize::try_from(offset).unwrap_or(len).min(len);
                let end = start.saturating_add(size as usize).min(len);
                reply.data(&f.current[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut disk = self.disk();
        let written = to_usize(offset).and_then(|offset| {
            let f = disk.file(ino.0)?;
            f.write(offset, data);
            if flags.0 & libc::O_DSYNC != 0 {
                f.sync();
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                disk.counters.writes += 1;
                reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2), not a durability point.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let synced = disk.file(ino.0).map(FileData::sync);
        if synced.is_ok() {
            disk.counters.syncs += 1;
        }
        empty(synced, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let disk = self.disk();
        let (parent, entries) = match disk.nodes.get(&ino.0) {
            Some(Node::Dir { parent, entries }) => (*parent, entries),
            Some(Node::File(_)) => return reply.error(Errno::ENOTDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let dots = [(ino.0, OsStr::new(".")), (parent, OsStr::new(".."))];
        let children = entries
            .iter()
            .map(|(name, &child)| (child, name.as_os_str()));
        for (i, (child, name)) in dots.into_iter().chain(children).enumerate() {
            if (i as u64) < offset {
                continue;
            }
            let kind = match disk.nodes.get(&child) {
                Some(Node::File(_)) => FileType::RegularFile,
                _ => FileType::Directory,
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is durable when it changes.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let disk = self.disk();
        let used: u64 = disk
            .nodes
            .values()
            .map(|n| match n {
                Node::File(f) => (f.current.len() as u64).div_ceil(4096),
                Node::Dir { .. } => 0,
            })
            .sum();
        let free = FS_BLOCKS.saturating_sub(used);
        reply.statfs(FS_BLOCKS, free, free, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let result = to_usize(offset).and_then(|offset| {
            let len = to_usize(length)?;
            let f = disk.file(ino.0)?;
            match mode {
                m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                    f.zero(offset, len);
                }
                0 if f.current.len() < offset + len => f.resize(offset + len),
                0 | libc::FALLOC_FL_KEEP_SIZE => {}
                _ => return Err(Errno::EOPNOTSUPP),
            }
            Ok(())
        });
        if result.is_ok() && mode != 0 && mode != libc::FALLOC_FL_KEEP_SIZE {
            disk.counters.writes += 1;
        }
        empty(result, reply);
    }
}

/// A mounted [`Fs`] and the disk behind it, which outlives its mounts.
#[derive(Debug)]
pub struct PowerlossFs {
    mountpoint: PathBuf,
    disk: Arc<Mutex<Disk>>,
    session: Option<BackgroundSession>,
}

impl PowerlossFs {
    /// Mounts an empty filesystem on `mountpoint` (an existing directory).
    pub fn mount(mountpoint: &Path) -> Result<Self> {
        let mut fs = PowerlossFs {
            mountpoint: mountpoint.to_owned(),
            disk: Arc::new(Mutex::new(Disk::new())),
            session: None,
        };
        fs.session = Some(fs.spawn()?);
        Ok(fs)
    }

    fn spawn(&self) -> Result<BackgroundSession> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("sfera-powerloss".to_owned()),
            MountOption::Subtype("sfera-powerloss".to_owned()),
        ];
        let fs = Fs {
            disk: Arc::clone(&self.disk),
        };
        fuser::spawn_mount(fs, &self.mountpoint, &config).map_err(|e| {
            Error::io(
                "Cannot mount the power-loss filesystem",
                &self.mountpoint,
                e,
            )
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// What it has been asked to do since [`PowerlossFs::mount`].
    pub fn counters(&self) -> Counters {
        lock(&self.disk).counters
    }

    /// Cuts the power and brings it back: every file keeps its durable data
    /// and the first `survivors` of its volatile writes, and the filesystem
    /// is mounted again on the same path. Stop whatever uses it first (a
    /// process killed in the middle of a write is fine): the old mount
    /// answers EIO to anything that reaches it after the cut.
    pub fn cut_power(&mut self, survivors: usize) -> Result<()> {
        let after = {
            let mut disk = lock(&self.disk);
            disk.powered = false;
            disk.after_power_cut(survivors)
        };
        self.unmount()?;
        self.disk = Arc::new(Mutex::new(after));
        self.session = Some(self.spawn()?);
        Ok(())
    }

    /// Unmounts; lazily (detached, gone once its last user is) when a
    /// process still holds a file open on it.
    fn unmount(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.umount_and_join().is_ok() {
            return Ok(());
        }
        let path =
            CString::new(self.mountpoint.as_os_str().as_bytes()).map_err(|_| Error::Parse {
                what: "mount point".to_owned(),
                text: self.mountpoint.display().to_string(),
            })?;
        // SAFETY: umount2 reads a NUL-terminated path that lives across the
        // call; no memory is shared with the kernel beyond it.
        let rc = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        // EINVAL: it was unmounted after all.
        let error = std::io::Error::last_os_error();
        if rc != 0 && error.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::io(
                "Cannot unmount the power-loss filesystem",
                &self.mountpoint,
                error,
            ));
        }
        Ok(())
    }
}

impl Drop for PowerlossFs {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

#[cfg(test)]
mod tests;
