//! Counters of ports and uplinks, written by the forwarding worker only
//! (single writer: a relaxed load and store per increment) and read by
//! the control API.

use std::collections::BTreeMap;

use datapath::counters::Counter;

use crate::dataplane::frame::DropReason;

/// Counters of one port or uplink. `rx` is toward the guest (or from the
/// host network, for an uplink), `tx` from the guest (to the network).
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Deliveries to the guest retried because its receive ring was full
    /// (each retry counts; a frame that still finds no room after
    /// [`RX_RETRIES`](crate::dataplane::forward::RX_RETRIES) is a
    /// `no_rx_buffer` drop).
    pub rx_retries: Counter,
    drops: [Counter; DropReason::ALL.len()],
}

impl PortCounters {
    /// Counts a dropped frame.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].inc();
    }

    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].get()
    }

    /// Every reason with its count (zeros included, so metrics have a
    /// stable set of series).
    pub fn drops(&self) -> BTreeMap<String, u64> {
        DropReason::ALL
            .iter()
            .map(|r| (r.label().to_owned(), self.dropped(*r)))
            .collect()
    }
}

/// Counters of the forwarding worker, as OVS's PMD statistics count:
/// rounds that moved frames, the TSC cycles they took, the frames.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub busy_rounds: Counter,
    pub busy_cycles: Counter,
    pub packets: Counter,
}

/// The cycle counter of the worker's busy time (the TSC on x86-64).
pub use datapath::cycles::now as cycles;
