//! The cluster's state in etcd: JSON records under one key prefix, read
//! with their revision and written only if nobody changed them since
//! (compare-and-swap on etcd's `mod_revision`), so two hosts editing one
//! object never both win and nothing is half-applied.
//!
//! Keys are `<prefix><kind>/<name>`; a record's revision is the etcd
//! revision of its last write. Every call has a deadline: an etcd that has
//! lost its quorum, or cannot be reached, answers [`StoreError::Unavailable`]
//! instead of hanging the caller.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::Serialize;

use crate::pki::ClientTls;
use serde::de::DeserializeOwned;

/// How long one call to etcd may take before the store is reported
/// unavailable. etcd's own request timeout under a lost quorum is about
/// 7 s (5 s plus twice the election timeout); answering sooner keeps the
/// API responsive and the answer clear.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Records read per range request when listing a kind: keeps each answer
/// well under gRPC's 4 MiB message limit at any inventory size.
const PAGE: i64 = 500;

/// Errors of the cluster store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer in time, no connection, or no quorum. The outcome of a
    /// write that gets this is unknown: a member may hold it and commit it
    /// once the quorum is back (whole, never in part). Read again before
    /// deciding.
    #[error("the cluster store (etcd) is unavailable: {0}")]
    Unavailable(String),
    /// The record changed since it was read.
    #[error("{key} was changed by someone else since it was read (revision {expected})")]
    Conflict { key: String, expected: i64 },
    /// A create found the record there already.
    #[error("{key} exists already")]
    Exists { key: String },
    /// An update or delete found no record.
    #[error("{key} does not exist")]
    NotFound { key: String },
    /// A stored record is not what this version of Sfera reads.
    #[error("the record at {key} cannot be read")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// etcd refused the request (for example a value over its size limit).
    #[error("the cluster store refused the request: {0}")]
    Refused(String),
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => {
                StoreError::Unavailable(e.to_string())
            }
            E::GRpcStatus(ref status) => {
                use tonic_code::*;
                match status.code() as i32 {
                    UNAVAILABLE | DEADLINE_EXCEEDED | CANCELLED | UNKNOWN | ABORTED => {
                        StoreError::Unavailable(status.message().to_owned())
                    }
                    _ => StoreError::Refused(status.message().to_owned()),
                }
            }
            E::LeaseKeepAliveError(m) | E::WatchError(m) => StoreError::Unavailable(m),
            other => StoreError::Refused(other.to_string()),
        }
    }
}

/// gRPC status codes (`tonic::Code` as numbers: etcd-client does not
/// re-export the enum).
mod tonic_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const UNAVAILABLE: i32 = 14;
}

/// A record with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// etcd's `mod_revision` of the record: what an update must name.
    pub revision: i64,
}

/// One condition of a [`Batch`].
#[derive(Debug, Clone)]
enum Check {
    Absent(String),
    Present(String),
    At(String, i64),
}

/// One write of a [`Batch`].
#[derive(Debug, Clone)]
enum Write {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<i64>,
    },
    Delete(String),
}

/// Several writes applied together or not at all, each guarded by a
/// condition on the records they depend on.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    checks: Vec<Check>,
    writes: Vec<Write>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `key`, which must not exist.
    pub fn create<T: Serialize>(mut self, key: &str, value: &T) -> Result<Self, StoreError> {
        self.checks.push(Check::Absent(key.to_owned()));
        self.writes.push(Write::Put {
            key: key.to_owned(),
            value: encode(key, value)?,
            lease: None,
        });
        Ok(self)
    }

    /// Replaces `key`, which must still be at `revision`.
    pub fn update<T: Serialize>(
        mut self,
        key: &str,
        value: &T,
        revision: i64,
    ) -> Result<Self, StoreError> {
        self.checks.push(Check::At(key.to_owned(), revision));
        self.writes.push(Write::Put {
            key: key.to_owned(),
            value: encode(key, value)?,
            lease: None,
        });
        Ok(self)
    }

    /// Writes `key` whatever is there, tied to `lease` when given: the
    /// record disappears when the lease ends.
    pub fn put<T: Serialize>(
        mut self,
        key: &str,
        value: &T,
        lease: Option<i64>,
    ) -> Result<Self, StoreError> {
        self.writes.push(Write::Put {
            key: key.to_owned(),
            value: encode(key, value)?,
            lease,
        });
        Ok(self)
    }

    /// Deletes `key`, which must still be at `revision`.
    pub fn delete(mut self, key: &str, revision: i64) -> Self {
        self.checks.push(Check::At(key.to_owned(), revision));
        self.writes.push(Write::Delete(key.to_owned()));
        self
    }

    /// Requires `key` to still be at `revision` without writing it (a
    /// record the change was decided on).
    pub fn require(mut self, key: &str, revision: i64) -> Self {
        self.checks.push(Check::At(key.to_owned(), revision));
        self
    }

    /// Requires `key` not to exist.
    pub fn require_absent(mut self, key: &str) -> Self {
        self.checks.push(Check::Absent(key.to_owned()));
        self
    }

    /// Requires `key` to exist, at any revision (the object a dependent
    /// record belongs to).
    pub fn require_present(mut self, key: &str) -> Self {
        self.checks.push(Check::Present(key.to_owned()));
        self
    }

    /// Deletes `key` if it is there, whatever its revision (a record that
    /// goes with one the batch checks).
    pub fn remove(mut self, key: &str) -> Self {
        self.writes.push(Write::Delete(key.to_owned()));
        self
    }
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

/// A connection to the cluster's etcd, with every key under `prefix`.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to etcd at `endpoints` (URLs such as `https://10.0.0.1:2379`;
    /// the client balances over them and skips members that are down),
    /// with `tls` when the members speak it.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Refused("no etcd endpoint given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // Without a leader a member refuses at once rather than
            // queueing the request until its timeout.
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls.options());
        }
        let client = tokio::time::timeout(CALL_TIMEOUT, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer from {endpoints:?}")))??;
        Ok(Store {
            client,
            prefix: prefix.to_owned(),
        })
    }

    /// The full key of `name` of `kind`.
    pub fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    /// The prefix of every key of `kind`.
    pub(crate) fn kind_prefix(&self, kind: &str) -> String {
        format!("{}{kind}/", self.prefix)
    }

    /// The etcd client, for what this module does not wrap (leases,
    /// watches, cluster membership).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads `key`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let kv = self.client.kv_client();
        let resp = retrying(|| {
            let mut kv = kv.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(r) => Ok(Some(Versioned {
                value: decode(key, r.value())?,
                revision: r.mod_revision(),
            })),
        }
    }

    /// Every record of `kind`, in key order, read at one revision (the
    /// pages after the first are read at the first page's revision, so the
    /// list is one consistent picture even while others write).
    pub async fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, Versioned<T>)>, StoreError> {
        Ok(self.list_at(kind).await?.0)
    }

    /// [`Store::list`], with the revision the list was read at: a watch
    /// of the kind from the revision after it misses no change.
    pub async fn list_at<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<(Vec<(String, Versioned<T>)>, i64), StoreError> {
        let prefix = self.kind_prefix(kind);
        let end = prefix_end(&prefix);
        let kv = self.client.kv_client();
        let mut out = Vec::new();
        let mut from = prefix.clone().into_bytes();
        let mut at = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at != 0 {
                options = options.with_revision(at);
            }
            let resp = retrying(|| {
                let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
                async move { kv.get(from, Some(options)).await }
            })
            .await?;
            if at == 0 {
                at = resp.header().map_or(0, |h| h.revision());
            }
            for r in resp.kvs() {
                let key = String::from_utf8_lossy(r.key()).into_owned();
                let name = key[prefix.len()..].to_owned();
                out.push((
                    name,
                    Versioned {
                        value: decode(&key, r.value())?,
                        revision: r.mod_revision(),
                    },
                ));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, at)),
            }
        }
    }

    /// Creates `key`: fails with [`StoreError::Exists`] if it is there.
    pub async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<i64, StoreError> {
        self.commit(Batch::new().create(key, value)?).await
    }

    /// Replaces `key` if it is still at `revision`; its new revision.
    pub async fn update<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: i64,
    ) -> Result<i64, StoreError> {
        self.commit(Batch::new().update(key, value, revision)?)
            .await
    }

    /// Deletes `key` if it is still at `revision`.
    pub async fn delete(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        self.commit(Batch::new().delete(key, revision))
            .await
            .map(|_| ())
    }

    /// Applies `batch` in one etcd transaction: every write or none. On a
    /// failed condition, the error names the first record that was not as
    /// required. The revision the writes got.
    pub async fn commit(&self, batch: Batch) -> Result<i64, StoreError> {
        let compares: Vec<Compare> = batch
            .checks
            .iter()
            .map(|c| match c {
                Check::Absent(k) => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
                Check::Present(k) => Compare::create_revision(k.as_str(), CompareOp::Greater, 0),
                Check::At(k, rev) => Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev),
            })
            .collect();
        let writes: Vec<TxnOp> = batch
            .writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value, lease } => TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    lease.map(|id| PutOptions::new().with_lease(id)),
                ),
                Write::Delete(key) => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        // When a condition fails, read the checked records in the same
        // transaction to say which one.
        let reads: Vec<TxnOp> = batch
            .checks
            .iter()
            .map(|c| match c {
                Check::Absent(k) | Check::Present(k) | Check::At(k, _) => {
                    TxnOp::get(k.as_str(), None)
                }
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        let kv = self.client.kv_client();
        let resp = retrying(|| {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(revision);
        }
        Err(failed_check(&batch.checks, &resp.op_responses()))
    }
}

/// The error for the first condition the records did not meet.
fn failed_check(checks: &[Check], reads: &[TxnOpResponse]) -> StoreError {
    for (check, read) in checks.iter().zip(reads) {
        let found = match read {
            TxnOpResponse::Get(r) => r.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        };
        match (check, found) {
            (Check::Absent(key), Some(_)) => return StoreError::Exists { key: key.clone() },
            (Check::Present(key), None) => return StoreError::NotFound { key: key.clone() },
            (Check::At(key, _), None) => return StoreError::NotFound { key: key.clone() },
            (Check::At(key, expected), Some(rev)) if rev != *expected => {
                return StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                };
            }
            _ => {}
        }
    }
    // Every record read back as required: it changed between the check
    // and the read, which is a conflict too.
    match checks.first() {
        Some(Check::Absent(key)) => StoreError::Exists { key: key.clone() },
        Some(Check::Present(key)) => StoreError::NotFound { key: key.clone() },
        Some(Check::At(key, expected)) => StoreError::Conflict {
            key: key.clone(),
            expected: *expected,
        },
        None => StoreError::Refused("a transaction without conditions failed".into()),
    }
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `call` within [`CALL_TIMEOUT`], tried again while it fails before
/// reaching etcd. The client spreads calls over every member; a call
/// routed to a member that is down fails to connect, and the next try goes
/// to another one. A call that reached a member is never repeated: its
/// outcome is unknown, and a repeated compare-and-swap would report its
/// own first write as someone else's.
pub(crate) async fn retrying<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    const PAUSE: Duration = Duration::from_millis(50);
    let until = tokio::time::Instant::now() + CALL_TIMEOUT;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if not_sent(&e) && tokio::time::Instant::now() + PAUSE < until => {
                tokio::time::sleep(PAUSE).await;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(timed_out()),
        }
    }
}

/// Whether `e` certainly happened before the request left this host.
fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() as i32 == tonic_code::UNAVAILABLE && s.message().contains("connect")
        }
        _ => false,
    }
}

fn timed_out() -> StoreError {
    StoreError::Unavailable(format!("no answer within {} s", CALL_TIMEOUT.as_secs()))
}

/// `call` within [`CALL_TIMEOUT`].
pub(crate) async fn deadline<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(_) => Err(timed_out()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end("/sfera/vms/"), b"/sfera/vms0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
