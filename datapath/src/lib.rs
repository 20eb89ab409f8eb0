//! Sfera's userspace dataplane library, shared by `sfera-blockd` and
//! `sfera-vswitchd`.
//!
//! - [`uring`]: one io_uring per worker thread, batched submission, an
//!   eventfd that signals completions to the worker's event loop.
//! - [`token_bucket`]: rate limits with burst, on an injectable clock.
//! - [`reactor`]: busy-poll with adaptive fall-back to eventfd waits, and
//!   CPU pinning, for worker threads.
//! - [`cycles`]: the TSC as a cycle counter, and its measured rate.
//! - [`counters`]: per-thread counters, written by their owner without
//!   atomic read-modify-write and summed when read.
//! - [`log_limit`]: rate limits for log lines a guest can trigger.
//! - [`seed_corpus`]: the fuzz targets' committed seeds, checked against
//!   the code that makes them.
//! - [`privileges`]: a daemon becoming its own user with only the
//!   capabilities it needs, and taking over state root made.
//! - [`ownership`]: a tree handed to a daemon's user without following
//!   symlinks out of it.

pub mod counters;
pub mod cycles;
pub mod log_limit;
pub mod ownership;
pub mod privileges;
pub mod reactor;
pub mod seed_corpus;
pub mod token_bucket;
pub mod uring;
