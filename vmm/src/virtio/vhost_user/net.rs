//! virtio-net specifics of the frontend: the MAC address and MTU come from
//! the VM's configuration; offloads and mergeable buffers from the backend.

use super::connection::Session;
use crate::virtio::{F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, device_type};

const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
/// VIRTIO_NET_S_LINK_UP.
const LINK_UP: u16 = 1;

/// Backend features passed through: checksum and segmentation offloads,
/// mergeable receive buffers, link status, and the ring features.
pub const PASSED_THROUGH: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | F_STATUS
    | F_INDIRECT_DESC
    | F_EVENT_IDX
    | F_VERSION_1;

/// `struct virtio_net_config`: mac, status, max_virtqueue_pairs, mtu.
pub fn config_space(mac: [u8; 6], mtu: u16) -> Vec<u8> {
    let mut c = Vec::with_capacity(12);
    c.extend(mac);
    c.extend(LINK_UP.to_le_bytes());
    c.extend(1u16.to_le_bytes());
    c.extend(mtu.to_le_bytes());
    c
}

/// The driver's view: one queue pair (receive, transmit).
pub fn describe(session: &Session, mac: [u8; 6], mtu: u16) -> (u16, u64, u16, Vec<u8>) {
    let features = (session.backend_features & PASSED_THROUGH) | F_MAC | F_MTU;
    (device_type::NET, features, 2, config_space(mac, mtu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_layout() {
        let c = config_space([0x52, 0x54, 0, 1, 2, 3], 9000);
        assert_eq!(&c[..6], &[0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(u16::from_le_bytes([c[6], c[7]]), LINK_UP);
        assert_eq!(u16::from_le_bytes([c[8], c[9]]), 1);
        assert_eq!(u16::from_le_bytes([c[10], c[11]]), 9000);
    }
}
