//! The committed seed corpora of the fuzz targets, kept in step with the
//! code that makes them.
//!
//! Each fuzz target's seeds are built by a function next to the target
//! (valid rings, requests, API calls), and committed under
//! `<crate>/fuzz/corpus/<target>` so the fuzzer starts from inputs that
//! reach deep. A unit test per target calls [`check`]: it fails when the
//! committed files differ from what the code makes now (the input layout
//! changed and the seeds went stale), and `make fuzz-seeds` (which sets
//! `SFERA_WRITE_SEEDS=1`) writes them afresh instead.

use std::path::Path;

/// Checks (or, with `SFERA_WRITE_SEEDS=1`, writes) the seed files `seeds`
/// in `dir`. Panics with what to run when they differ: it is for tests.
pub fn check<N: AsRef<str>>(dir: &Path, seeds: impl IntoIterator<Item = (N, Vec<u8>)>) {
    let write = std::env::var_os("SFERA_WRITE_SEEDS").is_some_and(|v| v == "1");
    if write {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("Cannot create {}: {e}", dir.display()));
    }
    for (name, seed) in seeds {
        let path = dir.join(name.as_ref());
        if write {
            std::fs::write(&path, &seed)
                .unwrap_or_else(|e| panic!("Cannot write {}: {e}", path.display()));
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == seed,
            "{} is not the seed the code makes now (the input layout changed?); \
             run `make fuzz-seeds` and commit the corpus",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_seeds_pass() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"ring").unwrap();
        check(d.path(), [("a", b"ring".to_vec())]);
    }

    #[test]
    #[should_panic(expected = "make fuzz-seeds")]
    fn a_stale_seed_fails() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"old").unwrap();
        check(d.path(), [("a", b"new".to_vec())]);
    }

    #[test]
    #[should_panic(expected = "make fuzz-seeds")]
    fn a_missing_seed_fails() {
        let d = tempfile::tempdir().unwrap();
        check(d.path(), [("a", b"new".to_vec())]);
    }
}
