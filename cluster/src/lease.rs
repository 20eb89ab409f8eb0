//! An etcd lease kept alive from this process, and what the process may
//! assume about it.
//!
//! etcd ends a lease `ttl` after its last renewal. A renewal sent at time
//! `t` and answered keeps the lease at least until `t + ttl`, measured on
//! this host's monotonic clock (the server renewed it after `t`). When
//! renewals stop getting through (the host is partitioned, or etcd lost its
//! quorum), the holder cannot know whether the lease still exists, so it
//! counts it lost at that bound: that is when the rest of the cluster may
//! already have seen it expire. A lease counted lost is never used again;
//! the holder grants a new one.

use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{Store, StoreError, deadline, retrying};

/// What the holder may assume about its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// The lease exists at least until this instant.
    Held { until: Instant },
    /// The lease may have expired: whatever it guarded is someone else's.
    Lost,
}

/// A lease renewed every third of its TTL until dropped or revoked.
#[derive(Debug)]
pub struct Lease {
    id: i64,
    ttl: Duration,
    state: watch::Receiver<LeaseState>,
    keeper: JoinHandle<()>,
    store: Store,
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds, at least 2) and starts
    /// renewing it.
    pub async fn grant(store: &Store, ttl: Duration) -> Result<Self, StoreError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(2);
        let ttl = Duration::from_secs(secs.unsigned_abs());
        let leases = store.client().lease_client();
        let sent = Instant::now();
        let granted = retrying(|| {
            let mut leases = leases.clone();
            async move { leases.grant(secs, None).await }
        })
        .await?;
        let id = granted.id();
        let granted_ttl = Duration::from_secs(granted.ttl().max(0).unsigned_abs());
        let (tx, rx) = watch::channel(LeaseState::Held {
            until: sent + granted_ttl.min(ttl),
        });
        let keeper = tokio::spawn(keep(store.clone(), id, ttl, tx));
        Ok(Lease {
            id,
            ttl,
            state: rx,
            keeper,
            store: store.clone(),
        })
    }

    /// etcd's id of the lease, for records tied to it.
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease's state now.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// A receiver that sees the lease counted lost.
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Ends the lease now: every record tied to it disappears.
    pub async fn revoke(self) -> Result<(), StoreError> {
        self.keeper.abort();
        let (leases, id) = (self.store.client().lease_client(), self.id);
        retrying(|| {
            let mut leases = leases.clone();
            async move { leases.revoke(id).await }
        })
        .await
        .map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews lease `id` until it is gone or its holder cannot know that it
/// still exists.
async fn keep(store: Store, id: i64, ttl: Duration, state: watch::Sender<LeaseState>) {
    let every = ttl / 3;
    let mut until = match *state.borrow() {
        LeaseState::Held { until } => until,
        LeaseState::Lost => return,
    };
    let mut stream = None;
    loop {
        tokio::time::sleep_until((Instant::now() + every).min(until)).await;
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        // One renewal, bounded by the time the lease is known to last.
        let renewal = tokio::time::timeout(until - sent, renew(&store, id, &mut stream)).await;
        match renewal {
            Ok(Ok(left)) if left > 0 => {
                let left = Duration::from_secs(left.unsigned_abs()).min(ttl);
                until = sent + left;
                state.send_replace(LeaseState::Held { until });
            }
            Ok(Ok(_)) => {
                tracing::warn!(lease = id, "the lease expired in etcd");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = id, error = %e, "could not renew the lease; retrying");
                stream = None;
            }
            Err(_) => stream = None,
        }
    }
    tracing::warn!(lease = id, "the lease is counted lost");
    state.send_replace(LeaseState::Lost);
}

/// The keep-alive stream of one lease, opened once and reused.
type KeepAlive = (LeaseKeeper, LeaseKeepAliveStream);

/// Sends one keep-alive for `id` on `stream` (opened if there is none):
/// the TTL left, 0 when the lease is gone.
async fn renew(store: &Store, id: i64, stream: &mut Option<KeepAlive>) -> Result<i64, StoreError> {
    let (keeper, answers) = match stream {
        Some(s) => s,
        None => {
            let mut leases = store.client().lease_client();
            stream.insert(deadline(leases.keep_alive(id)).await?)
        }
    };
    deadline(keeper.keep_alive()).await?;
    match deadline(answers.message()).await? {
        Some(answer) => Ok(answer.ttl()),
        None => Err(StoreError::Unavailable(
            "the keep-alive stream closed".into(),
        )),
    }
}
