//! The filesystem against the kernel's FUSE, through ordinary file calls.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use super::*;

fn mounted() -> (tempfile::TempDir, PowerlossFs) {
    let dir = tempfile::tempdir_in("/var/tmp").expect("a temporary directory");
    let fs = PowerlossFs::mount(dir.path()).expect("mount the power-loss filesystem");
    (dir, fs)
}

/// A file `f` of `len` zero bytes, made durable.
fn sized_file(fs: &PowerlossFs, len: u64) -> PathBuf {
    let path = fs.path().join("f");
    let f = File::create(&path).unwrap();
    f.set_len(len).unwrap();
    path
}

fn contents(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .expect("read the file back");
    data
}

#[test]
fn unsynced_writes_are_lost_and_synced_ones_kept() {
    let (_dir, mut fs) = mounted();
    let path = fs.path().join("f");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"old").unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"new", 0).unwrap();
    assert_eq!(contents(&path), b"new", "reads see the volatile write");
    drop(f);
    fs.cut_power(0).unwrap();
    assert_eq!(contents(&path), b"old", "the unsynced write is gone");

    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"NEW", 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs.cut_power(0).unwrap();
    assert_eq!(contents(&path), b"NEW", "fsync made it durable");
    assert_eq!(fs.counters().syncs, 2);
}

#[test]
fn o_dsync_and_rwf_dsync_writes_are_durable_on_return() {
    let (_dir, mut fs) = mounted();
    let path = sized_file(&fs, 8);
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(&path)
        .unwrap();
    f.write_all_at(b"dsync", 0).unwrap();
    drop(f);

    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let data = b"rwf";
    let iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: one iovec over a live byte string, on an open fd.
    let n = unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, 5, libc::RWF_DSYNC) };
    assert_eq!(n, 3, "{}", std::io::Error::last_os_error());
    drop(f);
    fs.cut_power(0).unwrap();
    assert_eq!(contents(&path), b"dsyncrwf");
}

#[test]
fn o_direct_writes_are_volatile_too() {
    let (_dir, mut fs) = mounted();
    let path = sized_file(&fs, 4096);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("O_DIRECT opens work on FUSE");
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: a non-zero-sized layout; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc(layout) };
    assert!(!buf.is_null());
    // SAFETY: `buf` holds 4096 bytes, exclusively ours until freed.
    let block = unsafe { std::slice::from_raw_parts_mut(buf, 4096) };
    block.fill(0xab);
    f.write_all_at(block, 0).unwrap();
    // SAFETY: allocated above with this layout, no reference to it is left.
    unsafe { std::alloc::dealloc(buf, layout) };
    drop(f);
    assert_eq!(fs.counters().direct_opens, 1);
    assert_eq!(contents(&path), vec![0xab; 4096]);
    fs.cut_power(0).unwrap();
    assert_eq!(contents(&path), vec![0; 4096]);
}

#[test]
fn survivors_are_the_first_writes_whole() {
    let (_dir, mut fs) = mounted();
    let path = sized_file(&fs, 8);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"aaaa", 0).unwrap();
    f.write_all_at(b"bbbb", 4).unwrap();
    f.write_all_at(b"cc", 0).unwrap();
    drop(f);
    fs.cut_power(1).unwrap();
    assert_eq!(contents(&path), b"aaaa\0\0\0\0");
}

#[test]
fn metadata_is_durable_at_once() {
    let (_dir, mut fs) = mounted();
    std::fs::create_dir(fs.path().join("d")).unwrap();
    std::fs::write(fs.path().join("d/a.tmp"), b"x").unwrap();
    std::fs::rename(fs.path().join("d/a.tmp"), fs.path().join("d/a")).unwrap();
    std::fs::write(fs.path().join("gone"), b"x").unwrap();
    std::fs::remove_file(fs.path().join("gone")).unwrap();
    fs.cut_power(0).unwrap();
    let names: Vec<_> = std::fs::read_dir(fs.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a"]);
    assert!(!fs.path().join("gone").exists());
    assert_eq!(
        contents(&fs.path().join("d/a")),
        b"",
        "its data was never synced"
    );
}
