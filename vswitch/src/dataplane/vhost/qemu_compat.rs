//! A relay between a VMM and a port's vhost-user request handler that
//! makes QEMU 7.2 (Debian 12's) work.
//!
//! QEMU 7.2's vhost-user-net negotiates `VHOST_USER_F_PROTOCOL_FEATURES`
//! (it needs it to enable rings) but then sends `SET_FEATURES` without that
//! bit, followed by `SET_VRING_ENABLE`; the rust-vmm `vhost` crate's request
//! handler (rightly, by the letter of the spec) refuses `SET_VRING_ENABLE`
//! without the bit, and QEMU falls back to no networking. DPDK's vhost
//! library tolerates the sequence. Later QEMU versions send the bit.
//!
//! QEMU 7.2 also disables the rings with `SET_VRING_ENABLE` before it sends
//! any `SET_FEATURES`. The relay passes every message through unchanged,
//! with its file descriptors, except that once protocol features were
//! negotiated it sets the bit in `SET_FEATURES` again, and sends a
//! `SET_FEATURES` with just that bit ahead of a `SET_VRING_ENABLE` that
//! comes before any (without NEED_REPLY, so no reply is added). Only the control channel goes through
//! it; guest memory and eventfds are shared directly. It goes away when the
//! port's own request handling replaces vhost-user-backend.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const HEADER_LEN: usize = 12;
const SET_FEATURES: u32 = 2;
const SET_PROTOCOL_FEATURES: u32 = 16;
const SET_VRING_ENABLE: u32 = 18;
/// Header flags: protocol version 1, no reply requested.
const VERSION_1: u32 = 1;
const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
/// Largest message payload accepted (the memory table with 8 regions is
/// 328 bytes; vhost-user caps messages at 4 KiB).
const MAX_PAYLOAD: usize = 4096;
const MAX_FDS: usize = 8;

/// Relays between `vmm` and `handler` until either side closes.
pub(crate) fn relay(vmm: UnixStream, handler: UnixStream) -> std::io::Result<()> {
    let mut replies_from = handler.try_clone()?;
    let mut replies_to = vmm.try_clone()?;
    let back = std::thread::Builder::new()
        .name("vhost-relay".to_owned())
        .spawn(move || {
            // Replies and backend messages carry no descriptors here.
            let _ = std::io::copy(&mut replies_from, &mut replies_to);
            let _ = replies_to.shutdown(Shutdown::Both);
        })?;
    let result = forward_requests(&vmm, &handler);
    let _ = handler.shutdown(Shutdown::Both);
    let _ = vmm.shutdown(Shutdown::Both);
    let _ = back.join();
    result
}

fn forward_requests(vmm: &UnixStream, handler: &UnixStream) -> std::io::Result<()> {
    let mut negotiated = false;
    let mut features_sent = false;
    let mut payload = vec![0u8; MAX_PAYLOAD];
    loop {
        let mut header = [0u8; HEADER_LEN];
        let mut fds: [RawFd; MAX_FDS] = [-1; MAX_FDS];
        let mut iov = [libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: HEADER_LEN,
        }];
        // `fds` has room for MAX_FDS descriptors.
        // SAFETY: the iovec points to `header`, which lives through the call
        // and is only written within its length.
        let (n, nfds) = unsafe { vmm.recv_with_fds(&mut iov, &mut fds) }
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        // Own the received descriptors so they are closed after forwarding.
        let files: Vec<File> = fds[..nfds]
            .iter()
            // SAFETY: recvmsg just installed these descriptors in this
            // process; nothing else owns them.
            .map(|&fd| unsafe { File::from_raw_fd(fd) })
            .collect();
        if n == 0 {
            return Ok(());
        }
        let mut reader = vmm;
        if n < HEADER_LEN {
            reader.read_exact(&mut header[n..])?;
        }
        let request = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let size = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        if size > MAX_PAYLOAD {
            return Err(std::io::Error::other(format!(
                "vhost-user message of {size} bytes"
            )));
        }
        reader.read_exact(&mut payload[..size])?;
        if request == SET_PROTOCOL_FEATURES {
            negotiated = true;
        }
        if request == SET_VRING_ENABLE && negotiated && !features_sent {
            let mut injected = Vec::with_capacity(HEADER_LEN + 8);
            injected.extend_from_slice(&SET_FEATURES.to_le_bytes());
            injected.extend_from_slice(&VERSION_1.to_le_bytes());
            injected.extend_from_slice(&8u32.to_le_bytes());
            injected.extend_from_slice(&PROTOCOL_FEATURES_BIT.to_le_bytes());
            let mut writer = handler;
            writer.write_all(&injected)?;
            features_sent = true;
        }
        if request == SET_FEATURES {
            features_sent = true;
        }
        if request == SET_FEATURES && negotiated && size == 8 {
            let mut value = [0u8; 8];
            value.copy_from_slice(&payload[..8]);
            let value = u64::from_le_bytes(value) | PROTOCOL_FEATURES_BIT;
            payload[..8].copy_from_slice(&value.to_le_bytes());
        }
        let raw: Vec<RawFd> = fds[..nfds].to_vec();
        let mut message = Vec::with_capacity(HEADER_LEN + size);
        message.extend_from_slice(&header);
        message.extend_from_slice(&payload[..size]);
        let sent = handler
            .send_with_fds(&[message.as_slice()], &raw)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        if sent < message.len() {
            let mut writer = handler;
            writer.write_all(&message[sent..])?;
        }
        drop(files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(request: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&request.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn sets_the_protocol_bit_only_after_negotiation() {
        let (mut vmm, vmm_side) = UnixStream::pair().unwrap();
        let (handler_side, mut handler) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || relay(vmm_side, handler_side));
        let features = (1u64 << 32).to_le_bytes();
        vmm.write_all(&message(SET_FEATURES, &features)).unwrap();
        vmm.write_all(&message(SET_PROTOCOL_FEATURES, &3u64.to_le_bytes()))
            .unwrap();
        vmm.write_all(&message(SET_FEATURES, &features)).unwrap();
        let mut got = vec![0u8; 3 * 20];
        handler.read_exact(&mut got).unwrap();
        let value = |at: usize| u64::from_le_bytes(got[at + 12..at + 20].try_into().unwrap());
        assert_eq!(value(0), 1 << 32, "before negotiation: unchanged");
        assert_eq!(
            value(40),
            (1 << 32) | PROTOCOL_FEATURES_BIT,
            "after: bit set"
        );
        // Replies flow back unchanged.
        handler.write_all(b"reply").unwrap();
        let mut reply = [0u8; 5];
        vmm.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"reply");
        drop(vmm);
        t.join().unwrap().unwrap();
    }
}
