//! Following the records of one kind as they change: etcd's watch, from a
//! revision a list was read at, so that a list and the watch after it
//! together miss no change.
//!
//! A watch ends when etcd compacted the revisions it still had to send
//! (a watcher that fell far behind) or when its stream breaks (the member
//! it used went away). Either way the caller lists the kind again and
//! watches from that list's revision: [`WatchEnded`] says which.

use std::marker::PhantomData;

use etcd_client::{EventType, WatchOptions, WatchStream};
use serde::de::DeserializeOwned;

use crate::store::{Store, StoreError, Versioned, deadline, decode, prefix_end};

/// Why a watch ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchEnded {
    /// etcd no longer holds the revisions the watch still had to send.
    #[error("the cluster store compacted its history up to revision {0}")]
    Compacted(i64),
    /// The watch could not start, or its stream broke or was canceled.
    #[error("the watch of the cluster store ended: {0}")]
    Lost(String),
}

impl From<StoreError> for WatchEnded {
    fn from(e: StoreError) -> Self {
        WatchEnded::Lost(e.to_string())
    }
}

/// A change of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// The record `name` was written.
    Put(String, Versioned<T>),
    /// The record `name` was deleted, at `revision`.
    Delete(String, i64),
}

impl<T> Change<T> {
    /// The name of the record that changed.
    pub fn name(&self) -> &str {
        match self {
            Change::Put(name, _) | Change::Delete(name, _) => name,
        }
    }
}

/// A watch of every record of one kind.
pub struct KindWatch<T> {
    stream: WatchStream,
    prefix: String,
    kind: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for KindWatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindWatch")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Watches the records of `kind` changed after revision `after` (the
    /// revision of a list, or of a write whose consequences are awaited).
    pub async fn watch<T: DeserializeOwned>(
        &self,
        kind: &str,
        after: i64,
    ) -> Result<KindWatch<T>, WatchEnded> {
        let prefix = self.kind_prefix(kind);
        let options = WatchOptions::new()
            .with_range(prefix_end(&prefix))
            .with_start_revision(after + 1);
        let mut client = self.client();
        let stream = deadline(client.watch(prefix.as_str(), Some(options))).await?;
        Ok(KindWatch {
            stream,
            prefix,
            kind: PhantomData,
        })
    }
}

impl<T: DeserializeOwned> KindWatch<T> {
    /// The next changes, in the order etcd applied them (an answer that
    /// carries none, such as the watch's creation, is skipped).
    pub async fn next(&mut self) -> Result<Vec<Change<T>>, WatchEnded> {
        loop {
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(WatchEnded::Lost("the stream closed".into())),
                Err(e) => return Err(StoreError::from(e).into()),
            };
            if resp.compact_revision() > 0 {
                return Err(WatchEnded::Compacted(resp.compact_revision()));
            }
            if resp.canceled() {
                return Err(WatchEnded::Lost(format!(
                    "canceled by etcd: {}",
                    resp.cancel_reason()
                )));
            }
            let mut changes = Vec::new();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let Some(name) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                changes.push(match event.event_type() {
                    EventType::Put => Change::Put(
                        name.to_owned(),
                        Versioned {
                            value: decode(&key, kv.value())?,
                            revision: kv.mod_revision(),
                        },
                    ),
                    EventType::Delete => Change::Delete(name.to_owned(), kv.mod_revision()),
                });
            }
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}
