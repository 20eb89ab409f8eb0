//! Hugepages for DPDK tools (testpmd, OVS-DPDK).
//!
//! A [`Hugepages`] reservation adds its pages to the kernel's 2 MiB pool and
//! mounts a private hugetlbfs, limited to those pages, for the tool's
//! `--huge-dir`. Dropping it unmounts and takes the same number of pages back
//! out, so the pool returns to its previous size. Reservations of tests that
//! run in parallel compose: each adds and removes only its own share, under a
//! lock file shared by all test processes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;
use crate::testdir::TestDir;
use crate::{Error, Result, tools};

const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
const LOCK_FILE: &str = "/run/lock/sfera-hugepages.lock";
const COMPACT_MEMORY: &str = "/proc/sys/vm/compact_memory";
/// How often a short reservation compacts memory and tries again.
const COMPACT_TRIES: usize = 3;

/// A reservation of 2 MiB hugepages with its own hugetlbfs mount.
#[derive(Debug)]
pub struct Hugepages {
    pages: u64,
    mount: PathBuf,
}

impl Hugepages {
    /// Adds `pages` 2 MiB pages to the pool and mounts a hugetlbfs limited to
    /// them at `<dir>/hugepages`.
    pub fn reserve(dir: &TestDir, pages: u64) -> Result<Self> {
        {
            let _lock = lock()?;
            let before = read_count()?;
            write_count(before + pages)?;
            let mut after = read_count()?;
            // Memory full of page cache may have too few free 2 MiB blocks
            // at first: compacting it makes more, so try again.
            for attempt in 0..COMPACT_TRIES {
                if after >= before + pages {
                    break;
                }
                if attempt > 0 {
                    // Compaction alone was not enough: clean page cache
                    // is the rest (it is only a cache; the test machine's
                    // files stay as they are).
                    drop_page_cache();
                }
                compact_memory();
                write_count(before + pages)?;
                after = read_count()?;
            }
            if after < before + pages {
                write_count(before)?;
                return Err(Error::Hugepages {
                    wanted: pages,
                    got: after.saturating_sub(before),
                });
            }
        }
        // From here on, Drop gives the pages back if mounting fails.
        let mut reservation = Hugepages {
            pages,
            mount: PathBuf::new(),
        };
        let mount = dir.subdir("hugepages")?;
        let mut command = Command::new(tools::require("mount", "mount")?);
        command.args(["-t", "hugetlbfs", "-o"]);
        command.arg(format!("pagesize=2M,size={}M", pages * 2));
        command.arg("nodev").arg(&mount);
        run(command)?;
        reservation.mount = mount;
        Ok(reservation)
    }

    /// The hugetlbfs mount to give DPDK as `--huge-dir`.
    pub fn dir(&self) -> &Path {
        &self.mount
    }

    /// The reservation's size in MiB.
    pub fn megabytes(&self) -> u64 {
        self.pages * 2
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if !self.mount.as_os_str().is_empty() {
            let mut command = Command::new("umount");
            command.arg("--lazy").arg(&self.mount);
            if let Err(e) = run(command) {
                eprintln!("cannot unmount {}: {e}", self.mount.display());
            }
        }
        let restored = lock().and_then(|_lock| {
            let now = read_count()?;
            write_count(now.saturating_sub(self.pages))
        });
        if let Err(e) = restored {
            eprintln!("cannot give back {} hugepages: {e}", self.pages);
        }
    }
}

fn lock() -> Result<File> {
    let path = Path::new(LOCK_FILE);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("Cannot create", parent, e))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("Cannot open hugepage lock", path, e))?;
    file.lock()
        .map_err(|e| Error::io("Cannot lock hugepage lock", path, e))?;
    Ok(file)
}

/// Writes dirty pages out and drops the clean page cache, so that its
/// memory can form 2 MiB blocks; a failure only means fewer pages.
fn drop_page_cache() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "1") {
        eprintln!("cannot drop the page cache for hugepages: {e}");
    }
}

/// Asks the kernel to compact all memory (it returns when done); a failure
/// only means the retry finds no more pages.
fn compact_memory() {
    if let Err(e) = std::fs::write(COMPACT_MEMORY, "1") {
        eprintln!("cannot compact memory for hugepages: {e}");
    }
}

fn read_count() -> Result<u64> {
    let text = std::fs::read_to_string(NR_HUGEPAGES)
        .map_err(|e| Error::io("Cannot read hugepage count", NR_HUGEPAGES, e))?;
    text.trim().parse().map_err(|_| Error::Parse {
        what: NR_HUGEPAGES.to_owned(),
        text,
    })
}

fn write_count(pages: u64) -> Result<()> {
    std::fs::write(NR_HUGEPAGES, pages.to_string())
        .map_err(|e| Error::io("Cannot set hugepage count", NR_HUGEPAGES, e))
}
