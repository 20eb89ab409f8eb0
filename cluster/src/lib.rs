//! Sfera's cluster state: etcd is the store (never one written here), and
//! this crate is what every host's mgmtd needs of it.
//!
//! - [`store`]: typed JSON records under one prefix, read with their
//!   revision and written with compare-and-swap, several at once in one
//!   transaction; a clear [`store::StoreError::Unavailable`] when etcd has
//!   no quorum.
//! - [`lease`]: a lease kept alive from this host, and when the host must
//!   count it lost (the fencing rule).
//! - [`member`]: the etcd member a host runs (Debian's etcd-server).
//! - [`pki`]: the cluster's certificate authority: members and clients
//!   accept only certificates it signed.

pub mod lease;
pub mod member;
pub mod pki;
pub mod store;

pub use lease::{Lease, LeaseState};
pub use member::{Member, MemberConfig, MemberError, MemberTls};
pub use pki::{ClientTls, TlsDir};
pub use store::{Batch, Store, StoreError, Versioned};
