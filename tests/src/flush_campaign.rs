//! A write campaign that checks what a crash may lose and what it may not:
//! a libblkio client writes numbered blocks round-robin over a few slots
//! of an exported volume, flushing every few writes, until its server
//! dies; after the restart, every slot must hold a whole block (never a
//! torn one) written no earlier than the last flush that covered it and
//! no later than the last write sent.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::blkio_client::BlkioClient;
use crate::daemons::blockd::BlockdDaemon;
use crate::http::call;
use crate::{Error, Result};

/// The size of one write, and of one slot.
pub const BLOCK: usize = 4096;

/// The campaign's shape: how many slots the writes cycle over and how
/// many writes go between two flushes.
#[derive(Debug, Clone, Copy)]
pub struct Campaign {
    pub slots: u64,
    pub flush_every: u64,
}

/// How far the writer got before its server died.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// The last write a completed flush covers.
    pub flushed: u64,
    /// The last write acknowledged.
    pub acked: u64,
}

/// Block content for sequence number `seq`: the number, then a pattern
/// derived from it.
pub fn block(seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, byte) in b[8..].iter_mut().enumerate() {
        *byte = (seq.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
    }
    b
}

fn integrity(what: String) -> Error {
    Error::Integrity { what }
}

/// Creates datastore `local` at `store`, a volume `v` the campaign's size
/// on it and export `v` of it; returns the export's socket.
pub fn export_volume(d: &BlockdDaemon, store: &Path, campaign: Campaign) -> Result<PathBuf> {
    let datastore = format!(r#"{{"name":"local","path":"{}"}}"#, store.display());
    let volume = format!(r#"{{"name":"v","size":{}}}"#, campaign.size());
    let export = r#"{"id":"v","datastore":"local","volume":"v"}"#;
    for (path, body) in [
        ("/v1/datastores", datastore.as_str()),
        ("/v1/datastores/local/volumes", volume.as_str()),
        ("/v1/exports", export),
    ] {
        let answer = call(d.api(), "POST", path, Some(body))?;
        if answer.status >= 300 {
            return Err(Error::CommandFailed {
                command: format!("POST {path}"),
                status: format!("HTTP {}", answer.status),
                stderr: answer.body,
            });
        }
    }
    Ok(d.export_socket("v"))
}

impl Campaign {
    /// The volume's size: one block per slot.
    pub fn size(&self) -> u64 {
        self.slots * BLOCK as u64
    }

    /// Starts the writer on `socket`: slot = seq % slots, a flush every
    /// `flush_every` writes; it stops at the first error (the server is
    /// gone) and fails if no flush completed.
    pub fn spawn_writer(self, socket: PathBuf) -> JoinHandle<Result<Written>> {
        std::thread::spawn(move || {
            let mut client = BlkioClient::vhost_user(&socket, 1, BLOCK)?;
            let mut flushed = None;
            let mut acked = None;
            for seq in 0u64.. {
                let offset = (seq % self.slots) * BLOCK as u64;
                if client.write(0, offset, &block(seq)).is_err() {
                    break;
                }
                acked = Some(seq);
                if (seq + 1) % self.flush_every == 0 {
                    if client.flush(0).is_err() {
                        break;
                    }
                    flushed = Some(seq);
                }
            }
            let flushed = flushed.ok_or_else(|| integrity("no flush completed".to_owned()))?;
            Ok(Written {
                flushed,
                acked: acked.unwrap_or(0),
            })
        })
    }

    /// Waits for the writer and checks it covered every slot with a flush.
    pub fn join(&self, writer: JoinHandle<Result<Written>>) -> Result<Written> {
        let written = writer
            .join()
            .map_err(|_| integrity("the writer panicked".to_owned()))??;
        if written.flushed < self.slots {
            return Err(integrity(format!(
                "too few writes before the crash ({}) to cover every slot",
                written.flushed
            )));
        }
        Ok(written)
    }

    /// Reads every slot back through `client` and checks it against what
    /// was written.
    pub fn verify(&self, client: &mut BlkioClient, written: Written) -> Result<()> {
        let Written { flushed, acked } = written;
        for slot in 0..self.slots {
            let data = client.read(0, slot * BLOCK as u64, BLOCK)?;
            let mut seq_bytes = [0u8; 8];
            seq_bytes.copy_from_slice(&data[..8]);
            let seq = u64::from_le_bytes(seq_bytes);
            // The newest write to this slot that a completed flush covered.
            let floor = flushed - ((flushed + self.slots - slot) % self.slots);
            if seq % self.slots != slot {
                return Err(integrity(format!(
                    "slot {slot} holds seq {seq} of another slot"
                )));
            }
            if seq < floor {
                return Err(integrity(format!(
                    "slot {slot}: flushed seq {floor} lost, found {seq}"
                )));
            }
            if seq > acked + 1 {
                return Err(integrity(format!(
                    "slot {slot}: seq {seq} was never written (last {acked})"
                )));
            }
            if data != block(seq) {
                return Err(integrity(format!(
                    "slot {slot}: block of seq {seq} is torn"
                )));
            }
        }
        Ok(())
    }
}
