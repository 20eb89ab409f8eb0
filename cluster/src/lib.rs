//! Sfera's cluster state: etcd is the store (never one written here), and
//! this crate is what every host's mgmtd needs of it.
//!
//! - [`store`]: typed JSON records under one prefix, read with their
//!   revision and written with compare-and-swap, several at once in one
//!   transaction; a clear [`store::StoreError::Unavailable`] when etcd has
//!   no quorum.
//! - [`lease`]: a lease kept alive from this host, and when the host must
//!   count it lost (the fencing rule).
//! - [`watch`]: the changes of one kind of record from a revision on, for
//!   controller loops.
//! - [`member`]: the etcd member a host runs (Debian's etcd-server).
//! - [`pki`]: the cluster's certificate authority: members and clients
//!   accept only certificates it signed.

pub mod lease;
pub mod member;
pub mod pki;
pub mod store;
pub mod watch;

/// The etcd client, for what this crate does not wrap (cluster membership).
pub use etcd_client;
pub use lease::{Lease, LeaseState};
pub use member::{Member, MemberConfig, MemberError, MemberTls};
pub use pki::{ClientTls, TlsDir};
pub use store::{Batch, Store, StoreError, Versioned};
pub use watch::{Change, KindWatch, WatchEnded};

/// Makes `dir` (and its parents) and leaves it 0700: etcd's data and the
/// cluster's keys are no one else's.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
