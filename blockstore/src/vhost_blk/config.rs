//! The virtio-blk device the guest sees: feature bits and config space.

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY,
    VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::request::{
    MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS, SECTOR_SIZE, SEG_MAX, SIZE_MAX,
};

/// Size of the config space this device implements (through
/// `write_zeroes_may_unmap` and its padding).
pub const CONFIG_LEN: usize = 60;

/// The properties of one exported disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkGeometry {
    pub capacity_bytes: u64,
    /// Logical block size the guest should use (512 or 4096).
    pub blk_size: u32,
    pub num_queues: u16,
    pub read_only: bool,
}

/// The virtio feature bits offered.
pub fn features(geometry: &BlkGeometry) -> u64 {
    let mut bits = (1u64 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_BLK_F_SIZE_MAX)
        | (1 << VIRTIO_BLK_F_SEG_MAX)
        | (1 << VIRTIO_BLK_F_BLK_SIZE)
        | (1 << VIRTIO_BLK_F_TOPOLOGY)
        | (1 << VIRTIO_BLK_F_FLUSH)
        | (1 << VIRTIO_BLK_F_MQ)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    if geometry.read_only {
        bits |= 1 << VIRTIO_BLK_F_RO;
    } else {
        bits |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
    }
    bits
}

/// The vhost-user protocol features offered.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::INFLIGHT_SHMFD
}

/// The config space bytes (virtio 1.2, 5.2.4), little endian.
pub fn config_space(geometry: &BlkGeometry) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let put32 = |c: &mut [u8; CONFIG_LEN], at: usize, v: u32| {
        c[at..at + 4].copy_from_slice(&v.to_le_bytes());
    };
    c[0..8].copy_from_slice(&(geometry.capacity_bytes / SECTOR_SIZE).to_le_bytes());
    // size_max: the largest single segment.
    put32(&mut c, 8, u32::try_from(SIZE_MAX).unwrap_or(u32::MAX));
    // seg_max.
    put32(&mut c, 12, u32::try_from(SEG_MAX).unwrap_or(u32::MAX));
    // geometry (16..20) left zero: not offered.
    put32(&mut c, 20, geometry.blk_size);
    // topology: physical_block_exp, alignment_offset, min_io_size (in
    // logical blocks), opt_io_size.
    c[24] = 0;
    c[25] = 0;
    c[26..28].copy_from_slice(&1u16.to_le_bytes());
    put32(&mut c, 28, 0);
    // writeback (32) and unused (33): WCE not offered, the cache is write-back
    // and FLUSH makes it durable.
    c[34..36].copy_from_slice(&geometry.num_queues.to_le_bytes());
    // Discard and write zeroes: the limits the parser enforces (see
    // request::decide), ranges aligned to the block size.
    put32(&mut c, 36, MAX_DISCARD_SECTORS);
    put32(&mut c, 40, MAX_DISCARD_SEG);
    put32(&mut c, 44, geometry.blk_size / SECTOR_SIZE as u32);
    put32(&mut c, 48, MAX_WRITE_ZEROES_SECTORS);
    put32(&mut c, 52, MAX_DISCARD_SEG);
    c[56] = 1; // write_zeroes_may_unmap
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_layout() {
        let g = BlkGeometry {
            capacity_bytes: 1 << 30,
            blk_size: 512,
            num_queues: 2,
            read_only: false,
        };
        let c = config_space(&g);
        assert_eq!(
            u64::from_le_bytes(c[0..8].try_into().unwrap()),
            2 * 1024 * 1024
        );
        assert_eq!(
            u32::from_le_bytes(c[12..16].try_into().unwrap()),
            SEG_MAX as u32
        );
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 2);
        let at = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
        assert_eq!(at(36), MAX_DISCARD_SECTORS);
        assert_eq!(at(40), MAX_DISCARD_SEG);
        assert_eq!(at(44), 1, "discard_sector_alignment");
        assert_eq!(at(48), MAX_WRITE_ZEROES_SECTORS);
        assert_eq!(at(52), MAX_DISCARD_SEG);
        assert_eq!(c[56], 1);
    }

    #[test]
    fn read_only_exports_offer_ro_and_no_discard() {
        let mut g = BlkGeometry {
            capacity_bytes: 1 << 20,
            blk_size: 512,
            num_queues: 1,
            read_only: true,
        };
        let f = features(&g);
        assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
        g.read_only = false;
        let f = features(&g);
        assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(f & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
    }
}
