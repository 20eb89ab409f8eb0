//! The peers Sfera is measured against, run by the harness with private
//! state in the test's directory.

pub mod ovs;
pub mod qsd;
pub mod testpmd;

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_PREFIX: AtomicU32 = AtomicU32::new(0);

/// A DPDK `--file-prefix` unique to this process and call, so DPDK
/// processes of parallel tests never share runtime files.
pub(crate) fn dpdk_file_prefix(tool: &str) -> String {
    let n = NEXT_PREFIX.fetch_add(1, Ordering::Relaxed);
    format!("sfera-{tool}-{}-{n}", std::process::id())
}
