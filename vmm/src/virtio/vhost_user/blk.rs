//! virtio-blk specifics of the frontend: which backend features the driver
//! is offered, and the configuration space, read from the backend with
//! GET_CONFIG.

use vhost::vhost_user::VhostUserFrontend;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};

use super::connection::{Session, SessionError};
use crate::virtio::{F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, device_type};

/// Request queues at most.
pub const MAX_QUEUES: u16 = 16;
/// `struct virtio_blk_config` up to `write_zeroes_may_unmap` and padding.
pub const CONFIG_LEN: usize = 60;
/// Offset of `num_queues` in the configuration.
const NUM_QUEUES_OFFSET: usize = 34;

pub const F_RO: u64 = 1 << 5;
const F_MQ: u64 = 1 << 12;

/// Device features passed through from the backend: SIZE_MAX, SEG_MAX,
/// GEOMETRY, RO, BLK_SIZE, FLUSH, TOPOLOGY, CONFIG_WCE, MQ, DISCARD,
/// WRITE_ZEROES, and the ring features.
pub const PASSED_THROUGH: u64 = (1 << 1)
    | (1 << 2)
    | (1 << 4)
    | F_RO
    | (1 << 6)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | F_MQ
    | (1 << 13)
    | (1 << 14)
    | F_INDIRECT_DESC
    | F_EVENT_IDX
    | F_VERSION_1;

/// The driver's view: features, queue count and configuration space.
pub fn offer(
    backend_features: u64,
    read_only: bool,
    mut config: Vec<u8>,
    backend_queues: u64,
) -> (u64, u16, Vec<u8>) {
    let mut features = backend_features & PASSED_THROUGH;
    if read_only {
        // The driver will not write; the backend's export should refuse
        // writes too (the frontend cannot enforce it).
        features |= F_RO;
    }
    config.resize(CONFIG_LEN, 0);
    let mut queues = 1;
    if features & F_MQ != 0 {
        let offered =
            u16::from_le_bytes([config[NUM_QUEUES_OFFSET], config[NUM_QUEUES_OFFSET + 1]]);
        let backend = u16::try_from(backend_queues).unwrap_or(MAX_QUEUES);
        queues = offered.clamp(1, MAX_QUEUES).min(backend.max(1));
        config[NUM_QUEUES_OFFSET..NUM_QUEUES_OFFSET + 2].copy_from_slice(&queues.to_le_bytes());
    }
    (features, queues, config)
}

/// Reads the backend's configuration and works out the driver's view.
pub fn describe(
    session: &mut Session,
    read_only: bool,
) -> Result<(u16, u64, u16, Vec<u8>), SessionError> {
    if !session.protocol.contains(VhostUserProtocolFeatures::CONFIG) {
        return Err(SessionError::Protocol {
            step: "GET_CONFIG (the backend does not offer the CONFIG protocol feature)",
            source: vhost::Error::VhostUserProtocol(vhost::vhost_user::Error::InactiveOperation(
                VhostUserProtocolFeatures::CONFIG,
            )),
        });
    }
    let (_, payload) = session
        .frontend
        .get_config(
            0,
            CONFIG_LEN as u32,
            VhostUserConfigFlags::empty(),
            &[0u8; CONFIG_LEN],
        )
        .map_err(|source| SessionError::Protocol {
            step: "GET_CONFIG",
            source,
        })?;
    let (features, queues, config) = offer(
        session.backend_features,
        read_only,
        payload.to_vec(),
        session.queue_num,
    );
    Ok((device_type::BLOCK, features, queues, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_filtered_and_queues_capped() {
        let backend = F_VERSION_1 | F_MQ | (1 << 9) | (1 << 30) | (1 << 34);
        let mut config = vec![0u8; 40];
        config[0] = 8; // capacity
        config[NUM_QUEUES_OFFSET] = 32;
        let (features, queues, config) = offer(backend, false, config, 4);
        assert_eq!(features, F_VERSION_1 | F_MQ | (1 << 9));
        assert_eq!(queues, 4);
        assert_eq!(config.len(), CONFIG_LEN);
        assert_eq!(config[NUM_QUEUES_OFFSET], 4);
        assert_eq!(config[0], 8);
        let (features, queues, _) = offer(F_VERSION_1, true, vec![], 1);
        assert_eq!((features & F_RO, queues), (F_RO, 1));
    }
}
