//! An AF_PACKET socket as an uplink: a raw socket bound to one existing
//! host interface, seeing every frame that arrives on it (promiscuous) and
//! sending frames out of it as they are.
//!
//! The socket does not read back what it (or the host) transmits
//! (`PACKET_IGNORE_OUTGOING`), and reports tags the kernel took off
//! received frames (`PACKET_AUXDATA`), which are put back in the frame.

use std::io::{self, IoSlice};
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

use super::auxdata::{CONTROL_LEN, ControlBuf, restore_tag, stripped_tag};
use super::link::{check, check_len, socket};
use super::{Failed, StepExt};

/// Frames received in one `recvmmsg`; larger bursts take several calls.
const CHUNK: usize = 32;

/// An AF_PACKET socket bound to an interface.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

/// Sets a socket option whose value is `value`.
fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = size_of::<T>() as libc::socklen_t;
    // Which type an option expects is the caller's concern: a wrong
    // size makes the call fail, not read beyond `value`.
    // SAFETY: the kernel reads `len` bytes, the size of `*value`, from a live reference.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(value).cast(),
            len,
        )
    })?;
    Ok(())
}

/// ETH_P_ALL in network byte order, as `sockaddr_ll` and `socket` take it.
fn eth_p_all() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

impl PacketSocket {
    /// Opens a raw socket bound to interface `ifindex`, promiscuous, with
    /// auxdata on and outgoing frames ignored.
    pub(crate) fn open(ifindex: libc::c_int) -> Result<Self, Failed> {
        // Protocol 0: the socket receives nothing until bind() names both
        // the protocol and the interface, so no frame of another interface
        // is ever queued on it.
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, 0)
            .step("open an AF_PACKET socket")?;
        let on: libc::c_int = 1;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, &on)
            .step("turn on PACKET_AUXDATA")?;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &on)
            .step("set PACKET_IGNORE_OUTGOING")?;

        // SAFETY: `sockaddr_ll` is integers and byte arrays; all zeroes is
        // a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = eth_p_all();
        addr.sll_ifindex = ifindex;
        let addr_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: bind(2) reads `addr_len` bytes from `addr`, a live
        // `sockaddr_ll` of exactly that size.
        check(unsafe { libc::bind(fd.as_raw_fd(), ptr::from_ref(&addr).cast(), addr_len) })
            .step("bind the AF_PACKET socket to the interface")?;

        // SAFETY: `packet_mreq` is integers and a byte array; all zeroes is
        // a valid value.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .step("make the interface promiscuous (PACKET_MR_PROMISC)")?;
        Ok(PacketSocket { fd })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Receives one frame, tag restored. Returns its length on the wire,
    /// more than `buf.len()` when it did not fit.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = ControlBuf::new();
        // SAFETY: `msghdr` is integers and raw pointers; all zeroes is a
        // valid value (no name, no buffers).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_LEN as _;
        // `msg` points at one iovec covering `buf` and at `control`
        // (CONTROL_LEN bytes); the kernel writes only within those lengths.
        // SAFETY: all three are exclusively borrowed locals that outlive the call.
        let ret = unsafe { libc::recvmsg(self.fd(), &mut msg, libc::MSG_TRUNC) };
        let len = match check_len(ret) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let control_len = (msg.msg_controllen as usize).min(CONTROL_LEN);
        Ok(Some(match stripped_tag(&control.0[..control_len]) {
            Some(tag) => restore_tag(buf, len, tag),
            None => len,
        }))
    }

    /// Receives up to `min(bufs.len(), lens.len())` frames with `recvmmsg`,
    /// tags restored; `lens` gets their wire lengths (more than the buffer
    /// when one did not fit).
    pub(crate) fn recv_burst(
        &self,
        bufs: &mut [&mut [u8]],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let want = bufs.len().min(lens.len());
        let mut done = 0;
        while done < want {
            let end = want.min(done + CHUNK);
            let got = match self.recv_chunk(&mut bufs[done..end], &mut lens[done..end]) {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                // Frames already received are returned; a lasting error
                // shows on the next call.
                Err(_) => break,
            };
            let asked = end - done;
            done += got;
            if got < asked {
                break;
            }
        }
        Ok(done)
    }

    /// One `recvmmsg` of at most CHUNK frames; `WouldBlock` is 0 frames.
    fn recv_chunk(&self, bufs: &mut [&mut [u8]], lens: &mut [usize]) -> io::Result<usize> {
        let n = bufs.len().min(lens.len()).min(CHUNK);
        let mut iovs = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; CHUNK];
        let mut controls = [ControlBuf::new(); CHUNK];
        // SAFETY: `mmsghdr` is integers and raw pointers; all zeroes is a
        // valid value.
        let mut msgs: [libc::mmsghdr; CHUNK] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = controls[i].0.as_mut_ptr().cast();
            hdr.msg_controllen = CONTROL_LEN as _;
        }
        // The first `n` headers each point at one iovec covering `bufs[i]` and
        // at `controls[i]` (CONTROL_LEN bytes); the kernel writes only within
        // those lengths and into the `n` headers. A null timeout is allowed.
        // SAFETY: `bufs` is exclusively borrowed; `iovs`, `controls`, `msgs` outlive the call.
        let ret = unsafe {
            libc::recvmmsg(
                self.fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_TRUNC,
                ptr::null_mut(),
            )
        };
        let got = match check(ret) {
            Ok(got) => got as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        for i in 0..got.min(n) {
            let len = msgs[i].msg_len as usize;
            let control_len = (msgs[i].msg_hdr.msg_controllen as usize).min(CONTROL_LEN);
            lens[i] = match stripped_tag(&controls[i].0[..control_len]) {
                Some(tag) => restore_tag(bufs[i], len, tag),
                None => len,
            };
        }
        Ok(got.min(n))
    }

    /// Sends one frame gathered from `frame` out of the bound interface.
    pub(crate) fn send(&self, frame: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: `msghdr` is integers and raw pointers; all zeroes is a
        // valid value (no name: the bound interface and protocol are used).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `iovec` on Unix; sendmsg only
        // reads through this pointer despite its `*mut` type.
        msg.msg_iov = frame.as_ptr().cast_mut().cast();
        msg.msg_iovlen = frame.len() as _;
        // `msg` points at `frame.len()` iovecs in `frame`; the kernel only reads.
        // SAFETY: the iovecs and the bytes they point to stay borrowed for the call.
        let ret = unsafe { libc::sendmsg(self.fd(), &msg, libc::MSG_DONTWAIT) };
        check_len(ret)
    }
}
